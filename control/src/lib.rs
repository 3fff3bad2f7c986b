//! vxdp's control plane as a library: the `vxdp` binary and the tests use it.

pub mod conntrack_gc;
pub mod daemon;
pub mod dataplane;
pub mod definitions;
pub mod direct;
pub mod dnsmasq;
pub mod docgen;
pub mod follow;
pub mod metrics;
pub mod nat6;
pub mod netlink;
pub mod network;
pub mod pinned;
pub mod ports;
pub mod reconcile;
pub mod report;
pub mod state;
pub mod status;
pub mod tap;
pub mod users;
pub mod xml;

/// The compiled eBPF object (built by build.rs).
pub fn dataplane_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vxdp-dataplane"))
}

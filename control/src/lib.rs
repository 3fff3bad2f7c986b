//! vxdp's control plane as a library: the `vxdp` binary and the tests use it.
//!
//! Layers, each using only those listed before it:
//! `xml` (libvirt's network and interface XML), `dataplane` (the pinned
//! eBPF programs and maps), `host` (netlink, taps, state directory,
//! dnsmasq), `modes` (realizing each kind of network), `ops` (the verbs:
//! define, start, stop, plug, reconcile) and `daemon` (`vxdp serve`,
//! metrics, status). The CLI (`main.rs`) sits on top; `docgen` (man
//! pages and completions from its clap definitions) stands apart.

pub mod daemon;
pub mod dataplane;
pub mod docgen;
pub mod host;
pub mod model;
pub mod modes;
pub mod ops;
pub mod xml;

/// The compiled eBPF object (built by build.rs).
pub fn dataplane_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vxdp-dataplane"))
}

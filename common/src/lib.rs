//! Types shared by the eBPF dataplane and the control plane: map keys and
//! values, drop reasons, counter slots and fixed limits.
//!
//! Every map value is `#[repr(C)]`, `Pod`, explicitly padded and has its size
//! asserted, so both sides agree on the layout byte for byte. Addresses and
//! ports are stored in network byte order (as they appear in packets) unless
//! a field's doc says otherwise.
#![no_std]

pub mod conntrack;
pub mod counters;
pub mod network;
pub mod port_counters;

pub use conntrack::*;
pub use counters::*;
pub use network::*;
pub use port_counters::*;

/// Names of the maps and programs, shared so the control plane pins and finds
/// exactly what the object defines.
pub mod names {
    pub const MAP_NETWORKS: &str = "VXDP_NETWORKS";
    pub const MAP_ENDPOINTS: &str = "VXDP_ENDPOINTS";
    pub const MAP_SUBNETS: &str = "VXDP_SUBNETS";
    pub const MAP_CONNTRACK: &str = "VXDP_CONNTRACK";
    pub const MAP_COUNTERS: &str = "VXDP_COUNTERS";
    pub const MAP_PORTS: &str = "VXDP_PORTS";
    pub const MAP_TIMEOUTS: &str = "VXDP_TIMEOUTS";
    pub const MAP_PORT_COUNTERS: &str = "VXDP_PORT_STATS";
    pub const PROG_GUEST_INGRESS: &str = "vxdp_guest_in";
    pub const PROG_UPLINK_INGRESS: &str = "vxdp_uplink_in";
    /// Every map, for pinning and unpinning.
    pub const ALL_MAPS: [&str; 8] = [
        MAP_NETWORKS,
        MAP_ENDPOINTS,
        MAP_SUBNETS,
        MAP_CONNTRACK,
        MAP_COUNTERS,
        MAP_PORTS,
        MAP_TIMEOUTS,
        MAP_PORT_COUNTERS,
    ];
}

/// Implements `aya::Pod` for the listed types on the userspace side.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: #[repr(C)], no implicit padding (asserted by size checks
            // and bytemuck's Pod derive), every bit pattern valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use user_pod;

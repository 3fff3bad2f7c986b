//! Types shared by the eBPF dataplane and the control plane: map keys and
//! values, drop reasons, counter slots and fixed limits.
//!
//! Every map value is `#[repr(C)]`, `Pod`, explicitly padded and has its size
//! asserted, so both sides agree on the layout byte for byte. Addresses and
//! ports are stored in network byte order (as they appear in packets) unless
//! a field's doc says otherwise.
#![cfg_attr(not(test), no_std)]

pub mod conntrack;
pub mod conntrack6;
pub mod counters;
pub mod flow;
pub mod forward;
pub mod network;
pub mod port_counters;
pub mod tcp;

pub use conntrack::*;
pub use conntrack6::*;
pub use counters::*;
pub use flow::*;
pub use forward::*;
pub use network::*;
pub use port_counters::*;

/// Names of the maps and programs, shared so the control plane pins and finds
/// exactly what the object defines.
pub mod names {
    pub const MAP_NETWORKS: &str = "VXDP_NETWORKS";
    pub const MAP_ENDPOINTS: &str = "VXDP_ENDPOINTS";
    pub const MAP_SUBNETS: &str = "VXDP_SUBNETS";
    pub const MAP_SUBNETS6: &str = "VXDP_SUBNETS6";
    pub const MAP_CONNTRACK: &str = "VXDP_CONNTRACK";
    pub const MAP_COUNTERS: &str = "VXDP_COUNTERS";
    pub const MAP_PORTS: &str = "VXDP_PORTS";
    pub const MAP_TIMEOUTS: &str = "VXDP_TIMEOUTS";
    pub const MAP_PORT_COUNTERS: &str = "VXDP_PORT_STATS";
    /// Program array the guest-port program tail-calls into (`jump` slots).
    pub const MAP_GUEST_JUMP: &str = "VXDP_GUEST_JUMP";
    /// Guest MACs per network: which port a frame to that MAC goes out of.
    pub const MAP_MACS: &str = "VXDP_MACS";
    /// Direct networks: NIC ifindex → network and guest ports.
    pub const MAP_DIRECT_NICS: &str = "VXDP_DIRECT_NICS";
    /// Direct networks: guest port ifindex → its NIC.
    pub const MAP_DIRECT_PORTS: &str = "VXDP_DIRECT_PORTS";
    /// NAT66: the IPv6 conntrack table and the per-network NAT66 settings.
    pub const MAP_CONNTRACK6: &str = "VXDP_CONNTRACK6";
    pub const MAP_NAT6: &str = "VXDP_NAT6";
    /// Admission control: flows held and allowed per guest port and network.
    pub const MAP_FLOW_QUOTAS: &str = "VXDP_FLOW_QUOTAS";
    /// Bandwidth: the outbound token bucket of each rate-limited guest port.
    pub const MAP_RATE_LIMITS: &str = "VXDP_RATE_LIMITS";
    /// Port forwards into NAT networks: public address, protocol, port →
    /// guest.
    pub const MAP_FORWARDS: &str = "VXDP_FORWARDS";
    /// Static `<route>`s: IPv4 prefix → network and gateway guest.
    pub const MAP_ROUTES: &str = "VXDP_ROUTES";
    /// The cgroup socket programs' settings (the namespace they serve).
    pub const MAP_HOST_CONFIG: &str = "VXDP_HOST_CONFIG";
    pub const PROG_GUEST_INGRESS: &str = "vxdp_guest_in";
    /// XDP on tap guest ports (`--guest-xdp`): `vxdp_guest_in`'s code on
    /// the frames it can finish, the rest left to `vxdp_guest_in`.
    pub const PROG_GUEST_XDP: &str = "vxdp_guest_xdp";
    /// Program array `vxdp_guest_xdp` tail-calls into (`jump` slots).
    pub const MAP_GUEST_XDP_JUMP: &str = "VXDP_GUEST_XDP_JUMP";
    /// The XDP path programs and their `VXDP_GUEST_XDP_JUMP` slot (direct
    /// and hairpin stay empty: those frames go to the TC program).
    pub const GUEST_XDP_JUMPS: [(&str, u32); 3] = [
        ("vxdp_guest_xdp_nat", crate::jump::NAT),
        ("vxdp_guest_xdp_route", crate::jump::ROUTE),
        ("vxdp_guest_xdp_nat6", crate::jump::NAT6),
    ];
    pub const PROG_UPLINK_INGRESS: &str = "vxdp_uplink_in";
    /// Tail-called by `vxdp_guest_in`: NAT networks' guest → outside path.
    pub const PROG_GUEST_NAT: &str = "vxdp_guest_nat";
    /// Tail-called by `vxdp_guest_in`: routing without NAT (route/open,
    /// IPv6 of every mode).
    pub const PROG_GUEST_ROUTE: &str = "vxdp_guest_route";
    /// Tail-called by `vxdp_guest_in`: direct (macvtap-like) networks.
    pub const PROG_GUEST_DIRECT: &str = "vxdp_guest_direct";
    /// TC ingress on a direct network's NIC: floods broadcasts to guests.
    pub const PROG_NIC_INGRESS: &str = "vxdp_nic_in";
    /// TC egress on a direct network's NIC: the host → its guests.
    pub const PROG_NIC_EGRESS: &str = "vxdp_nic_out";
    /// Tail-called by `vxdp_guest_in`: NAT66 (a NAT network's guest IPv6
    /// with `<nat ipv6='yes'>`).
    pub const PROG_GUEST_NAT6: &str = "vxdp_guest_nat6";
    /// TC ingress on every interface with the uplink XDP program: the same
    /// uplink logic for frames XDP left to the socket-buffer path.
    pub const PROG_UPLINK_TC: &str = "vxdp_uplink_tc";
    /// TC egress on the bridges vxdp creates: what the host forwards into a
    /// network from any interface meets the uplink's inbound refusals.
    pub const PROG_BRIDGE_EGRESS: &str = "vxdp_bridge_out";
    /// Tracepoint programs (`xdp:xdp_devmap_xmit`, `xdp:xdp_redirect_err`):
    /// XDP redirects the kernel refused become drops.
    pub const PROG_TP_DEVMAP_XMIT: &str = "vxdp_xdp_xmit";
    pub const PROG_TP_REDIRECT_ERR: &str = "vxdp_xdp_redirect_err";
    /// Per-CPU: XDP redirects to guest ports the kernel has not reported on
    /// yet (see `DropReason::XdpRedirectRefused`).
    pub const MAP_XDP_INFLIGHT: &str = "VXDP_XDP_INFLIGHT";
    /// Cgroup socket programs (attached to the root cgroup v2): port
    /// forwards used by the host itself. `connect4` rewrites a TCP or UDP
    /// socket's destination, `sendmsg4` an unconnected UDP datagram's;
    /// `recvmsg4` and `getpeername4` show the public address again.
    pub const PROG_HOST_CONNECT4: &str = "vxdp_host_connect4";
    pub const PROG_HOST_SENDMSG4: &str = "vxdp_host_sendmsg4";
    pub const PROG_HOST_RECVMSG4: &str = "vxdp_host_recvmsg4";
    pub const PROG_HOST_GETPEERNAME4: &str = "vxdp_host_getpeername4";
    /// The tail-called programs and their `VXDP_GUEST_JUMP` slot.
    pub const GUEST_JUMPS: [(&str, u32); 5] = [
        (PROG_GUEST_NAT, crate::jump::NAT),
        (PROG_GUEST_ROUTE, crate::jump::ROUTE),
        (PROG_GUEST_DIRECT, crate::jump::DIRECT),
        (PROG_GUEST_NAT6, crate::jump::NAT6),
        (PROG_UPLINK_TC, crate::jump::HAIRPIN),
    ];
    /// Every map, for pinning and unpinning.
    pub const ALL_MAPS: [&str; 22] = [
        MAP_NETWORKS,
        MAP_ENDPOINTS,
        MAP_SUBNETS,
        MAP_SUBNETS6,
        MAP_CONNTRACK,
        MAP_COUNTERS,
        MAP_PORTS,
        MAP_TIMEOUTS,
        MAP_PORT_COUNTERS,
        MAP_GUEST_JUMP,
        MAP_MACS,
        MAP_DIRECT_NICS,
        MAP_DIRECT_PORTS,
        MAP_CONNTRACK6,
        MAP_NAT6,
        MAP_XDP_INFLIGHT,
        MAP_FLOW_QUOTAS,
        MAP_RATE_LIMITS,
        MAP_FORWARDS,
        MAP_ROUTES,
        MAP_HOST_CONFIG,
        MAP_GUEST_XDP_JUMP,
    ];
}

/// XDP metadata (`bpf_xdp_adjust_meta`) the uplink's XDP program (and a
/// tap guest port's) puts in front of a frame it passes to the kernel after
/// judging it, so the interface's TC program leaves it alone. A frame without it was left to the
/// TC program (or its driver keeps no metadata): TC runs the uplink logic.
pub const XDP_META_JUDGED: u32 = 0x7678_6a21;

/// Slots of `VXDP_GUEST_JUMP`. Each path of the guest-port program is its
/// own program, verified on its own: together they exceed what the verifier
/// explores in one program.
pub mod jump {
    pub const NAT: u32 = 0;
    pub const ROUTE: u32 = 1;
    pub const DIRECT: u32 = 2;
    /// NAT66 (`vxdp_guest_nat6`).
    pub const NAT6: u32 = 3;
    /// Hairpin: a guest's packet to a port forward, source-NATed by
    /// `vxdp_guest_nat`, continues in the uplink's TC program
    /// (`vxdp_uplink_tc`) as if it came from the outside.
    pub const HAIRPIN: u32 = 4;
    pub const COUNT: u32 = 5;
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

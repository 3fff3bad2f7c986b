//! The guest port a tail-called program runs for: its endpoint and
//! network, the verdicts every guest path shares, and the tail call.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use vxdp_common::{Action, DropReason, Endpoint, NetworkConfig};

use crate::base::{
    ctx::tc_ifindex,
    fib::{self, FibParams},
    maps::{VXDP_ENDPOINTS, VXDP_GUEST_JUMP, VXDP_NETWORKS},
    policy,
    stats::{Drop, count},
};

/// Where a NAT network's guest packet goes by its route lookup's answer
/// (`rc`, `p` filled, `FIB_*`): `Some(resolved)` out of the uplink
/// (`resolved`: the next hop's MAC is in `p`); `None` to the kernel — to the
/// host itself (not NATed, as with libvirt), unroutable (the kernel
/// answers), or larger than the uplink's MTU when `may_answer_too_big` (DF
/// set, or IPv6: the kernel answers "fragmentation needed" / "packet too
/// big", so path MTU discovery works); a drop otherwise (IPv4 without DF:
/// the kernel would fragment it un-NATed).
#[inline(always)]
pub fn nat_exit(
    rc: i64,
    p: &FibParams,
    net: &NetworkConfig,
    net_id: u32,
    may_answer_too_big: bool,
) -> Result<Option<bool>, Drop> {
    match rc {
        fib::FIB_SUCCESS | fib::FIB_NO_NEIGH if p.ifindex == net.uplink_ifindex => {
            Ok(Some(rc == fib::FIB_SUCCESS))
        }
        fib::FIB_SUCCESS | fib::FIB_NO_NEIGH => {
            Err(Drop::new(DropReason::RouteNotViaUplink, net_id))
        }
        fib::FIB_NOT_FWDED | fib::FIB_BLACKHOLE..=fib::FIB_PROHIBIT => Ok(None),
        fib::FIB_FWD_DISABLED => Err(Drop::new(DropReason::ForwardingDisabled, net_id)),
        fib::FIB_FRAG_NEEDED if may_answer_too_big => Ok(None),
        fib::FIB_FRAG_NEEDED => Err(Drop::new(DropReason::FragmentationNeeded, net_id)),
        _ => Err(Drop::new(DropReason::RouteNotViaUplink, net_id)),
    }
}

/// Left to the bridge (other guests, the host, ARP, DHCP, broadcast).
#[inline(always)]
pub fn pass(ctx: &TcContext, net_id: u32) -> Result<i32, Drop> {
    count(ctx, net_id, Action::GuestPassed);
    Ok(TC_ACT_OK)
}

/// The port's endpoint and its (active) network.
#[inline(always)]
pub fn port_network(
    ctx: &TcContext,
) -> Result<(u32, &'static Endpoint, &'static NetworkConfig), Drop> {
    let ifindex = tc_ifindex(ctx);
    let endpoint =
        unsafe { VXDP_ENDPOINTS.get(&ifindex) }.ok_or(Drop::new(DropReason::UnknownPort, 0))?;
    let net = VXDP_NETWORKS
        .get(endpoint.network_id)
        .filter(|n| policy::active(n))
        .ok_or(Drop::new(DropReason::UnknownPort, endpoint.network_id))?;
    Ok((ifindex, endpoint, net))
}

/// Continues in the program of `slot`; returns only if that fails.
#[inline(always)]
pub fn tail(ctx: &TcContext, slot: u32, net_id: u32) -> Result<i32, Drop> {
    unsafe { VXDP_GUEST_JUMP.tail_call(ctx, slot) };
    Err(Drop::new(DropReason::TailCallFailed, net_id))
}

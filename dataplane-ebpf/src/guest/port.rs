//! The guest port a tail-called program runs for: its endpoint and
//! network, the verdicts every guest path shares, and the tail call.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use vxdp_common::{Action, DropReason, Endpoint, NetworkConfig};

use crate::base::{
    ctx::tc_ifindex,
    maps::{VXDP_ENDPOINTS, VXDP_GUEST_JUMP, VXDP_NETWORKS},
    policy,
    stats::{Drop, count},
};

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

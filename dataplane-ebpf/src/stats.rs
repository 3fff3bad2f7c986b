//! Counters: per-CPU, per network, per action and per drop reason.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action},
    programs::{TcContext, XdpContext},
};
use vxdp_common::{Action, DropReason, counter_index};

use crate::{ctx::PacketCtx, maps::VXDP_COUNTERS};

/// A drop: why, and which network to charge it to (0 when unknown).
#[derive(Clone, Copy)]
pub struct Drop {
    pub reason: DropReason,
    pub network_id: u32,
}

impl Drop {
    #[inline(always)]
    pub const fn new(reason: DropReason, network_id: u32) -> Self {
        Self { reason, network_id }
    }
}

#[inline(always)]
fn add(network_id: u32, slot: u32, bytes: u32) {
    if let Some(counter) = VXDP_COUNTERS.get_ptr_mut(counter_index(network_id, slot)) {
        // Per-CPU slot: no other writer, plain adds suffice.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn count<C: PacketCtx>(ctx: &C, network_id: u32, action: Action) {
    add(network_id, action.slot(), ctx.packet_len());
    crate::port_stats::add(ctx.ingress_ifindex(), network_id, action.slot(), ctx.packet_len());
}

#[inline(always)]
pub fn count_event(network_id: u32, action: Action) {
    add(network_id, action.slot(), 0);
}

#[inline(always)]
fn count_drop<C: PacketCtx>(ctx: &C, drop: Drop) {
    add(drop.network_id, drop.reason.slot(), ctx.packet_len());
    crate::port_stats::add(ctx.ingress_ifindex(), drop.network_id, drop.reason.slot(), ctx.packet_len());
}

#[inline(always)]
pub fn count_and_drop_tc(ctx: &TcContext, drop: Drop) -> i32 {
    count_drop(ctx, drop);
    TC_ACT_SHOT
}

#[inline(always)]
pub fn count_and_drop_xdp(ctx: &XdpContext, drop: Drop) -> u32 {
    count_drop(ctx, drop);
    xdp_action::XDP_DROP
}

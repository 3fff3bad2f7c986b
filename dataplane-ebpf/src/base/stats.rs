//! Counters: per-CPU, per network, per action and per drop reason.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action},
    programs::{TcContext, XdpContext},
};
use vxdp_common::{Action, Counter, DropReason, PortCounterKey, counter_index};

use super::{
    ctx::PacketCtx,
    maps::{VXDP_COUNTERS, VXDP_XDP_INFLIGHT},
    port_stats,
};

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

/// Takes `packets`/`bytes` back out of a counter slot (this CPU's, which
/// counted them).
#[inline(always)]
fn sub(network_id: u32, slot: u32, packets: u64, bytes: u64) {
    if let Some(counter) = VXDP_COUNTERS.get_ptr_mut(counter_index(network_id, slot)) {
        unsafe {
            (*counter).packets = (*counter).packets.saturating_sub(packets);
            (*counter).bytes = (*counter).bytes.saturating_sub(bytes);
        }
    }
}

/// Frames counted as `action` that the kernel then dropped: moved to drop
/// reason `XdpRedirectRefused`, per network and per interface they arrived
/// on (`ingress`).
#[inline(always)]
pub fn refused(network_id: u32, action_slot: u32, ingress: u32, packets: u64, bytes: u64) {
    let drop_slot = DropReason::XdpRedirectRefused.slot();
    sub(network_id, action_slot, packets, bytes);
    if let Some(counter) = VXDP_COUNTERS.get_ptr_mut(counter_index(network_id, drop_slot)) {
        unsafe {
            (*counter).packets += packets;
            (*counter).bytes += bytes;
        }
    }
    port_stats::sub(ingress, network_id, action_slot, packets, bytes);
    port_stats::add_many(ingress, network_id, drop_slot, packets, bytes);
}

/// Records an XDP redirect to `port` until the kernel reports on it.
#[inline(always)]
pub fn inflight_add(port: u32, network_id: u32, action: Action, bytes: u32) {
    let key = PortCounterKey {
        ifindex: port,
        network_id: network_id as u16,
        slot: action.slot() as u16,
    };
    if let Some(c) = VXDP_XDP_INFLIGHT.get_ptr_mut(&key) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
        return;
    }
    let _ = VXDP_XDP_INFLIGHT.insert(
        &key,
        &Counter {
            packets: 1,
            bytes: bytes as u64,
        },
        0,
    );
}

#[inline(always)]
pub fn count<C: PacketCtx>(ctx: &C, network_id: u32, action: Action) {
    add(network_id, action.slot(), ctx.packet_len());
    port_stats::add(
        ctx.ingress_ifindex(),
        network_id,
        action.slot(),
        ctx.packet_len(),
    );
}

#[inline(always)]
pub fn count_event(network_id: u32, action: Action) {
    add(network_id, action.slot(), 0);
}

#[inline(always)]
fn count_drop<C: PacketCtx>(ctx: &C, drop: Drop) {
    add(drop.network_id, drop.reason.slot(), ctx.packet_len());
    port_stats::add(
        ctx.ingress_ifindex(),
        drop.network_id,
        drop.reason.slot(),
        ctx.packet_len(),
    );
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

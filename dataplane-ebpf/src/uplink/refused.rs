//! XDP redirects the kernel refused. An XDP program's redirect only queues
//! the frame; the kernel transmits it after the program returned (when the
//! driver flushes its redirects) and may drop it then: a tap nobody reads
//! (`tun_xdp_xmit` has no queue), a device that is down, lacks XDP
//! transmit or is full. The program has counted it as forwarded by then.
//! Two tracepoints report the outcome, on the CPU that redirected:
//! `xdp:xdp_devmap_xmit` (per flushed batch: sent and dropped frames to one
//! device) and `xdp:xdp_redirect_err` (one frame the redirect itself
//! failed for). Their programs take the frames back out of
//! `VXDP_XDP_INFLIGHT` and move the dropped ones from the action they were
//! counted under to drop reason `xdp_redirect_refused`.
//!
//! Tracepoints are global: other programs' redirects (other dataplanes,
//! other namespaces) are seen too, and ignored, since only frames this
//! dataplane's XDP program recorded are in its in-flight table.

use vxdp_common::{Action, PortCounterKey};

use aya_ebpf::programs::TracePointContext;

use crate::base::{
    maps::{VXDP_ENDPOINTS, VXDP_XDP_INFLIGHT},
    stats,
};

/// `vxdp_xdp_xmit` (`xdp:xdp_devmap_xmit`): the kernel sent or dropped a
/// batch of frames an XDP program redirected to one device.
#[inline(always)]
pub fn devmap_xmit(ctx: &TracePointContext) {
    // Offsets from the event's format: from_ifindex 8, to_ifindex 16,
    // drops 20, sent 24.
    let read = |off| unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0);
    let (from, to, drops, sent) = (read(8), read(16), read(20), read(24));
    if to > 0 && (sent > 0 || drops > 0) {
        settle(
            from as u32,
            to as u32,
            sent.max(0) as u32,
            drops.max(0) as u32,
        );
    }
}

/// `vxdp_xdp_redirect_err` (`xdp:xdp_redirect_err`): an XDP redirect the
/// kernel could not carry out (one frame, dropped).
#[inline(always)]
pub fn redirect_err(ctx: &TracePointContext) {
    // Offsets from the event's format: ifindex 16, to_ifindex 24.
    let read = |off| unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0);
    let (from, to) = (read(16), read(24));
    if to > 0 {
        settle(from as u32, to as u32, 0, 1);
    }
}

/// The actions an XDP redirect to a guest port is counted under.
const XDP_ACTIONS: [Action; 7] = [
    Action::DnatForwarded,
    // A tap guest port's XDP program: to a sibling guest's port, out of
    // the uplink.
    Action::PortForwarded,
    Action::SnatForwarded,
    Action::RouteForwarded,
    Action::RouteInboundForwarded,
    Action::DirectFromWire,
    Action::IcmpErrorTranslated,
];

/// The kernel reported `sent` frames delivered to and `dropped` frames
/// dropped on their way to `port`, redirected by XDP on `ingress`. The
/// network is the guest port's: the destination's (from the uplink, or to
/// a sibling), else the sender's (a tap guest port's XDP program out of
/// the uplink).
#[inline(always)]
fn settle(ingress: u32, port: u32, sent: u32, dropped: u32) {
    let ep = unsafe { VXDP_ENDPOINTS.get(&port) }.or(unsafe { VXDP_ENDPOINTS.get(&ingress) });
    let Some(ep) = ep else {
        return;
    };
    let net_id = ep.network_id;
    let mut sent = sent as u64;
    let mut dropped = dropped as u64;
    for action in XDP_ACTIONS {
        if sent + dropped == 0 {
            break;
        }
        let slot = action.slot();
        let key = PortCounterKey {
            ifindex: port,
            network_id: net_id as u16,
            slot: slot as u16,
        };
        let Some(c) = VXDP_XDP_INFLIGHT.get_ptr_mut(&key) else {
            continue;
        };
        let c = unsafe { &mut *c };
        let pending = c.packets;
        if pending == 0 {
            continue;
        }
        let lost = if dropped < pending { dropped } else { pending };
        let left = pending - lost;
        let delivered = if sent < left { sent } else { left };
        let per_frame = c.bytes.checked_div(pending).unwrap_or(0);
        if lost > 0 {
            stats::refused(net_id, slot, ingress, lost, lost * per_frame);
        }
        let done = lost + delivered;
        c.packets = pending - done;
        c.bytes = if c.packets == 0 {
            0
        } else {
            c.bytes.saturating_sub(done * per_frame)
        };
        dropped -= lost;
        sent -= delivered;
    }
}

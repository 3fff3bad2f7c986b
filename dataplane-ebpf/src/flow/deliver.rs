//! Delivery to a guest port from the uplink. [`Hook`] is what differs
//! between the uplink's XDP program (`vxdp_uplink_in`) and its TC program
//! (`vxdp_uplink_tc`), which run the same uplink logic: how a translated
//! frame reaches a guest port, how a frame goes on to the kernel, and
//! whether a frame may be delivered from this hook at all.
//! [`prepare_for_guest`] readies a translated frame for its guest.
//!
//! XDP delivers a frame to a guest port only when all of these hold,
//! otherwise it leaves the frame untouched to the TC program
//! ([`Hook::defer`]), whose socket-buffer redirect works for every device
//! and keeps the frame's checksum state:
//! * the port takes XDP frames (`endpoint_flags::XDP_FRAMES`: a tap; a veth
//!   drops them unless its peer has NAPI, which vxdp does not control);
//! * the frame fits the port's MTU (a larger one is a GRO/GSO super-frame
//!   generic XDP linearised, which only a socket buffer can carry);
//! * its L4 checksum is finished ([`super::partial_csum::finished`]): XDP cannot
//!   see CHECKSUM_PARTIAL, and a redirect would deliver the unfinished
//!   field to the guest;
//! * it is not a TCP segment with a bulk payload ([`bulk_tcp`], uplink
//!   only): XDP redirects frame by frame, past GRO, so a bulk stream
//!   would reach the guest's tap one MTU frame per read. Passed, the
//!   interface's GRO (on by default on a NIC; off on a veth unless asked
//!   for: since Linux 6.9 an XDP program no longer turns it on) coalesces
//!   the stream's segments into one socket buffer of up to 64 KB before
//!   the TC program reverse-NATs and redirects it, as the kernel path
//!   delivers it. Acknowledgements and small request/response segments
//!   keep XDP's fast path.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_REDIRECT, TC_ACT_UNSPEC, xdp_action},
    helpers::{bpf_check_mtu, bpf_redirect, bpf_xdp_adjust_meta},
    programs::{TcContext, XdpContext},
};
use vxdp_common::{Action, DropReason, PROTO_TCP, XDP_META_JUDGED, endpoint_flags};

use super::partial_csum;
use crate::base::{
    ctx::{PacketCtx, ptr_at},
    l2::set_macs,
    maps::{VXDP_ENDPOINTS, VXDP_NETWORKS, VXDP_PORTS},
    parse::{self, ETH_P_IP, ETH_P_IPV6, IP_OFF, IP6_L4_OFF},
    police, policy,
    stats::{self, Drop, count},
};

pub trait Hook: PacketCtx + EbpfContext {
    type Verdict: Copy;
    /// XDP sees every frame from the wire first. The TC program sees only
    /// what XDP left to it, and frames vxdp's guest programs redirected
    /// into the interface's ingress (a direct guest's frames to the host).
    const FROM_WIRE_ONLY: bool;
    /// Whether the frame, as it is now, can be delivered to guest `port`
    /// from this hook.
    fn deliverable(&self, port: u32) -> bool;
    /// Sends the frame to guest `port`; counted as `action` of `net_id`
    /// once the redirect is accepted.
    fn to_port(&self, port: u32, net_id: u32, action: Action) -> Result<Self::Verdict, Drop>;
    /// The kernel takes the frame from here (host traffic, slow path),
    /// judged by this hook.
    fn pass(&self) -> Self::Verdict;
    /// XDP: the frame goes to the TC program, unmodified. Only called when
    /// [`Hook::deliverable`] said no, which TC never does.
    fn defer(&self) -> Self::Verdict;
}

impl Hook for XdpContext {
    type Verdict = u32;
    const FROM_WIRE_ONLY: bool = true;

    #[inline(always)]
    fn deliverable(&self, port: u32) -> bool {
        // In this order: after the endpoint lookup, `bulk_tcp`'s registers
        // pushed `vxdp_uplink_in`'s stack (with the calls below it) past
        // the kernel's 512 bytes.
        !bulk_tcp(self) && xdp_deliverable(self, port)
    }

    #[inline(always)]
    fn to_port(&self, port: u32, net_id: u32, action: Action) -> Result<u32, Drop> {
        let verdict = VXDP_PORTS
            .redirect(port, 0)
            .map_err(|_| Drop::new(DropReason::RedirectFailed, net_id))?;
        count(self, net_id, action);
        // The kernel may still refuse it after the program returns: the
        // tracepoint programs settle it (`refused`).
        stats::inflight_add(port, net_id, action, self.packet_len());
        Ok(verdict)
    }

    #[inline(always)]
    fn pass(&self) -> u32 {
        pass_judged(self)
    }

    #[inline(always)]
    fn defer(&self) -> u32 {
        xdp_action::XDP_PASS
    }
}

/// [`Hook::deliverable`] for XDP.
#[inline(always)]
pub fn xdp_deliverable(ctx: &XdpContext, port: u32) -> bool {
    xdp_port_takes(ctx, port) && partial_csum::finished(ctx)
}

/// Whether guest port `port` takes this frame from XDP, its L4 checksum
/// aside: the port takes XDP frames and the frame fits its MTU.
#[inline(always)]
pub fn xdp_port_takes(ctx: &XdpContext, port: u32) -> bool {
    let takes_xdp = unsafe { VXDP_ENDPOINTS.get(&port) }
        .is_some_and(|ep| ep.flags & endpoint_flags::XDP_FRAMES != 0);
    if !takes_xdp {
        return false;
    }
    let mut mtu_len: u32 = 0;
    // 0: the frame fits the port's MTU (plus its link-layer header).
    unsafe { bpf_check_mtu(ctx.as_ptr(), port, &mut mtu_len, 0, 0) == 0 }
}

/// TCP payload from which the uplink's XDP leaves a segment to GRO and the
/// TC program: below the 536-byte MSS every TCP host must accept (RFC 9293
/// 3.7.1), so every full-sized segment of a bulk stream reaches it whatever
/// the path's MSS, and GRO only coalesces full-sized segments anyway; pure
/// ACKs, keystrokes and small requests and responses stay below it.
pub const BULK_TCP_PAYLOAD: usize = 512;

const TCP_DOFF: usize = 12;
const IP6_PAYLOAD_LEN: usize = 4;
const IP6_NEXT_HEADER: usize = 6;

/// Whether the frame is a TCP segment carrying at least
/// [`BULK_TCP_PAYLOAD`] bytes, by its IP and TCP headers' lengths (a
/// frame that lies about them is merely delivered by the TC program, which
/// checks everything XDP does). IPv4 fragments are not: a first fragment's
/// lengths are not its segment's, and the rest follow it by their own
/// rule. TCP behind IPv6 extension headers is left to TC anyway
/// ([`partial_csum::finished`]).
#[inline(always)]
pub fn bulk_tcp(ctx: &XdpContext) -> bool {
    let (l4_off, l4_len) = match parse::ether_type(ctx) {
        Ok(ETH_P_IP) => {
            let Ok(h) = ptr_at::<XdpContext, [u8; 20]>(ctx, IP_OFF) else {
                return false;
            };
            let h = unsafe { &*h };
            // Version 4, TCP, neither More Fragments nor an offset.
            if h[0] >> 4 != 4 || h[9] != PROTO_TCP || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0
            {
                return false;
            }
            let hdr_len = ((h[0] & 0x0f) as usize) * 4;
            let tot_len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let Some(l4_len) = tot_len.checked_sub(hdr_len) else {
                return false;
            };
            (IP_OFF + hdr_len, l4_len)
        }
        Ok(ETH_P_IPV6) => {
            let Ok(h) = ptr_at::<XdpContext, [u8; 8]>(ctx, IP_OFF) else {
                return false;
            };
            let h = unsafe { &*h };
            if h[0] >> 4 != 6 || h[IP6_NEXT_HEADER] != PROTO_TCP {
                return false;
            }
            let payload_len = u16::from_be_bytes([h[IP6_PAYLOAD_LEN], h[IP6_PAYLOAD_LEN + 1]]);
            (IP6_L4_OFF, payload_len as usize)
        }
        _ => return false,
    };
    // The data offset and the flags: a one-byte read at a variable offset
    // compiles to a bounds check the verifier does not follow.
    let Ok(doff) = ptr_at::<XdpContext, [u8; 2]>(ctx, l4_off + TCP_DOFF) else {
        return false;
    };
    let tcp_hdr_len = ((unsafe { (*doff)[0] } >> 4) as usize) * 4;
    l4_len >= tcp_hdr_len + BULK_TCP_PAYLOAD
}

impl Hook for TcContext {
    type Verdict = i32;
    const FROM_WIRE_ONLY: bool = false;

    #[inline(always)]
    fn deliverable(&self, _port: u32) -> bool {
        true
    }

    #[inline(always)]
    fn to_port(&self, port: u32, net_id: u32, action: Action) -> Result<i32, Drop> {
        if unsafe { bpf_redirect(port, 0) } as i32 != TC_ACT_REDIRECT {
            return Err(Drop::new(DropReason::RedirectFailed, net_id));
        }
        count(self, net_id, action);
        Ok(TC_ACT_REDIRECT)
    }

    #[inline(always)]
    fn pass(&self) -> i32 {
        // The next TC program on the interface (a direct NIC's), else the
        // kernel.
        TC_ACT_UNSPEC
    }

    #[inline(always)]
    fn defer(&self) -> i32 {
        TC_ACT_UNSPEC
    }
}

/// `XDP_PASS` with [`XDP_META_JUDGED`] in front of the frame, so the
/// interface's TC program lets it through without judging (or counting) it
/// again; a driver without metadata support gets the frame unmarked and TC
/// judges it again, which is correct.
#[inline(always)]
pub fn pass_judged(ctx: &XdpContext) -> u32 {
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -4) } == 0 {
        let meta = ctx.metadata();
        if meta + 4 <= ctx.data() {
            unsafe { *(meta as *mut u32) = XDP_META_JUDGED };
        }
    }
    xdp_action::XDP_PASS
}

/// Whether the uplink's XDP program judged this frame already (it passed
/// it with [`XDP_META_JUDGED`] in front).
#[inline(always)]
pub fn judged_by_xdp(ctx: &TcContext) -> bool {
    let skb = ctx.as_ptr() as *const __sk_buff;
    let meta = unsafe { (*skb).data_meta } as usize;
    let data = ctx.data();
    if meta + 4 > data {
        return false;
    }
    unsafe { *(meta as *const u32) == XDP_META_JUDGED }
}

/// Before a translated packet from the uplink goes to its guest: the
/// guest's network must be active and the packet must survive this hop
/// (`ttl`: TTL or hop limit); its MACs become bridge → guest.
#[inline(always)]
pub fn prepare_for_guest<C: PacketCtx>(
    ctx: &C,
    net_id: u32,
    ttl: u8,
    guest_mac: &[u8; 6],
) -> Result<(), Drop> {
    let net = VXDP_NETWORKS
        .get(net_id)
        .filter(|n| policy::active(n))
        .ok_or(Drop::new(DropReason::UnknownPort, net_id))?;
    if ttl <= 1 {
        return Err(Drop::new(DropReason::TtlExpired, net_id));
    }
    if !police::network_inbound(net, net_id, ctx.packet_len()) {
        return Err(Drop::new(DropReason::RateLimited, net_id));
    }
    set_macs(ctx, guest_mac, &net.bridge_mac).map_err(|_| Drop::new(DropReason::Malformed, net_id))
}

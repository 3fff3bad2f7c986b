//! Inbound ICMP errors about NAT flows (the uplink, XDP or TC): a router or the
//! outside host answers a packet vxdp sent after SNAT with destination
//! unreachable (including "fragmentation needed", which path-MTU discovery
//! depends on), time exceeded or parameter problem. The error is addressed
//! to the NAT address and quotes the NATed packet; it is translated back as
//! the guest's kernel expects it: outer destination → the guest, quoted
//! source address and port (or echo id) → the guest's, every checksum
//! updated incrementally, and delivered to the guest's port like a reply.
//!
//! The flow's conntrack entries are only looked up, never touched: an error
//! is not a reply and must not establish the flow or extend its life.

use network_types::ip::Ipv4Hdr;
use vxdp_common::{
    Action, Conntrack6Key, ConntrackKey, DIR_REPLY, DropReason, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP,
};

use crate::{
    conntrack,
    ctx::{PacketCtx, csum_update},
    hook::Hook,
    nat::prepare_for_guest,
    parse::{
        self, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, IP_CHECK_OFF, IP_DST_OFF, IP_TTL_OFF,
        IP6_DST_OFF, IP6_HOP_LIMIT_OFF, IP6_L4_OFF, Ipv4, Ipv6,
    },
    stats::Drop,
};

pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// ICMP header (type, code, checksum, 4 bytes of type-specific data) before
/// the quoted packet.
const ICMP_HDR_LEN: usize = 8;
/// The quoted IPv4 header: only IHL 5 is translated (vxdp never sends
/// options after SNAT, so an error about its packet quotes none).
const INNER_IP_LEN: usize = 20;
const INNER_CHECK: usize = 10;
const INNER_SRC: usize = 12;
/// Where the quoted L4 checksum sits, from the quoted L4 header.
const UDP_CHECK: usize = 6;
const TCP_CHECK: usize = 16;
const ICMP_CHECK: usize = 2;
const ICMP_ID: usize = 4;

/// The 16-bit word at `off`, as it sits in memory.
#[inline(always)]
fn read16<C: PacketCtx>(ctx: &C, off: usize) -> Result<u16, ()> {
    let p = parse::ptr_at::<_, [u8; 2]>(ctx, off)?;
    Ok(u16::from_ne_bytes(unsafe { *p }))
}

#[inline(always)]
fn write16<C: PacketCtx>(ctx: &C, off: usize, v: u16) -> Result<(), ()> {
    let p = parse::ptr_at::<_, [u8; 2]>(ctx, off)?;
    unsafe { *p = v.to_ne_bytes() };
    Ok(())
}

/// If `ip` is an ICMP error about a tracked NAT flow, translates it and
/// redirects it to the guest (`Some(verdict)`); otherwise `None` and the
/// packet is left to the usual uplink handling.
#[inline(always)]
pub fn uplink_icmp_error<C: Hook>(ctx: &C, ip: &Ipv4) -> Result<Option<C::Verdict>, Drop> {
    if ip.proto != PROTO_ICMP || ip.fragment {
        return Ok(None);
    }
    let icmp_off = ip.l4_off;
    let Ok(hdr) = parse::ptr_at::<_, [u8; ICMP_HDR_LEN]>(ctx, icmp_off) else {
        return Ok(None);
    };
    let icmp_type = unsafe { (*hdr)[0] };
    if !matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    ) {
        return Ok(None);
    }
    let inner_off = icmp_off + ICMP_HDR_LEN;
    let Ok(inner) = parse::ptr_at::<_, Ipv4Hdr>(ctx, inner_off) else {
        return Ok(None);
    };
    let inner = unsafe { &*inner };
    // Not a first fragment: no L4 header quoted, nothing to key on.
    if inner.vihl != 0x45 || u16::from_be_bytes(inner.frags) & 0x1fff != 0 {
        return Ok(None);
    }
    let inner_src = u32::from_ne_bytes(inner.src_addr);
    let inner_dst = u32::from_ne_bytes(inner.dst_addr);
    let proto = inner.proto;
    // The quoted packet was sent from the address the error comes back to.
    if inner_src != ip.dst {
        return Ok(None);
    }
    let l4_off = inner_off + INNER_IP_LEN;
    // RFC 792: at least the first 8 bytes of the L4 header are quoted.
    let Ok(l4) = parse::ptr_at::<_, [u8; 8]>(ctx, l4_off) else {
        return Ok(None);
    };
    // ... inside the error's own datagram: bytes past its total length are
    // link padding, which a receiver does not checksum. Rewriting a quote
    // there would leave the ICMP checksum wrong for the guest (found by the
    // fuzzer).
    let Ok(outer) = parse::ptr_at::<_, Ipv4Hdr>(ctx, parse::IP_OFF) else {
        return Ok(None);
    };
    if (u16::from_be_bytes(unsafe { (*outer).tot_len }) as usize) < l4_off + 8 - parse::IP_OFF {
        return Ok(None);
    }
    // The quoted packet went guest → outside; the reply-direction key is the
    // tuple the outside's answers carry (see `nat::create_flow`).
    let Some(q) = quoted_ports(
        unsafe { &*l4 },
        l4_off,
        proto,
        PROTO_ICMP,
        ICMP_ECHO_REQUEST,
    ) else {
        return Ok(None);
    };
    let key = ConntrackKey {
        src_addr: inner_dst,
        dst_addr: inner_src,
        src_port: q.src_port,
        dst_port: q.dst_port,
        proto,
        _pad: [0; 3],
    };
    let Some(entry) = conntrack::lookup(&key, conntrack::now()) else {
        return Ok(None);
    };
    let e = unsafe { *entry };
    if e.direction != DIR_REPLY {
        return Ok(None);
    }

    let net_id = e.network_id as u32;
    if !ctx.deliverable(e.ifindex) {
        return Ok(Some(ctx.defer()));
    }
    prepare_for_guest(ctx, net_id, ip.ttl, &e.mac)?;
    translate(
        ctx,
        ip,
        icmp_off,
        inner_off,
        proto,
        q.port_off,
        q.csum_off,
        e.rewrite_addr,
        e.rewrite_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(e.ifindex, net_id, Action::IcmpErrorTranslated)
        .map(Some)
}

/// Where a quoted packet's port (or echo id) and L4 checksum sit, and the
/// reply-direction key's ports (the outside's port, then the NAT port or
/// echo id; 0 for ICMP's source side).
struct QuotedPorts {
    port_off: usize,
    csum_off: usize,
    src_port: u16,
    dst_port: u16,
}

/// [`QuotedPorts`] of the first 8 quoted L4 bytes `l4` at `l4_off`: TCP and
/// UDP, or an echo request of `icmp_proto`; `None` for anything else.
#[inline(always)]
fn quoted_ports(
    l4: &[u8; 8],
    l4_off: usize,
    proto: u8,
    icmp_proto: u8,
    echo_request: u8,
) -> Option<QuotedPorts> {
    if proto == PROTO_TCP || proto == PROTO_UDP {
        let csum = if proto == PROTO_TCP {
            TCP_CHECK
        } else {
            UDP_CHECK
        };
        return Some(QuotedPorts {
            port_off: l4_off,
            csum_off: l4_off + csum,
            src_port: u16::from_ne_bytes([l4[2], l4[3]]),
            dst_port: u16::from_ne_bytes([l4[0], l4[1]]),
        });
    }
    if proto == icmp_proto && l4[0] == echo_request {
        return Some(QuotedPorts {
            port_off: l4_off + ICMP_ID,
            csum_off: l4_off + ICMP_CHECK,
            src_port: 0,
            dst_port: u16::from_ne_bytes([l4[4], l4[5]]),
        });
    }
    None
}

/// The rewrite itself. Outer header: destination → guest, TTL − 1, header
/// checksum. Quoted packet: source → guest (its header checksum and, when
/// quoted, its TCP/UDP checksum, whose pseudo-header holds the source),
/// source port or echo id → the guest's (and the L4 checksum again). The
/// ICMP checksum covers the whole message, so it takes every quoted word
/// that changed, the quoted checksums included.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn translate<C: PacketCtx>(
    ctx: &C,
    ip: &Ipv4,
    icmp_off: usize,
    inner_off: usize,
    proto: u8,
    port_off: usize,
    csum_off: usize,
    guest_addr: u32,
    guest_port: u16,
) -> Result<(), ()> {
    let nat_addr = ip.dst;

    // Outer IPv4 header.
    let dst = parse::ptr_at::<_, [u8; 4]>(ctx, IP_DST_OFF)?;
    unsafe { *dst = guest_addr.to_ne_bytes() };
    let old_ttl_word = read16(ctx, IP_TTL_OFF)?;
    let new_ttl_word = u16::from_ne_bytes([ip.ttl - 1, ip.proto]);
    write16(ctx, IP_TTL_OFF, new_ttl_word)?;
    let mut check = read16(ctx, IP_CHECK_OFF)?;
    check = csum_update(check, nat_addr, guest_addr, true);
    check = csum_update(check, old_ttl_word as u32, new_ttl_word as u32, false);
    write16(ctx, IP_CHECK_OFF, check)?;

    let icmp_check_off = icmp_off + 2;
    let mut icmp_check = read16(ctx, icmp_check_off)?;

    // Quoted IPv4 header: source address and its checksum.
    let src = parse::ptr_at::<_, [u8; 4]>(ctx, inner_off + INNER_SRC)?;
    unsafe { *src = guest_addr.to_ne_bytes() };
    icmp_check = csum_update(icmp_check, nat_addr, guest_addr, true);
    let old_inner_check = read16(ctx, inner_off + INNER_CHECK)?;
    let new_inner_check = csum_update(old_inner_check, nat_addr, guest_addr, true);
    write16(ctx, inner_off + INNER_CHECK, new_inner_check)?;
    icmp_check = csum_update(
        icmp_check,
        old_inner_check as u32,
        new_inner_check as u32,
        false,
    );

    // Quoted source port / echo id.
    let old_port = read16(ctx, port_off)?;
    write16(ctx, port_off, guest_port)?;
    icmp_check = csum_update(icmp_check, old_port as u32, guest_port as u32, false);

    // Quoted L4 checksum: UDP's and ICMP's are in the 8 bytes every error
    // quotes; TCP's only when the sender quoted at least 18 bytes of the
    // segment (Linux quotes up to 576 bytes of the packet). A missing one
    // is left alone: the guest cannot check what it does not have.
    // Bytes past the IPv4 total length (Ethernet padding) are not part of
    // the message the ICMP checksum covers.
    let tot_len = u16::from_be(read16(ctx, parse::IP_OFF + 2)?) as usize;
    let quoted = csum_off + 2 <= parse::IP_OFF + tot_len;
    if quoted && let Ok(old_l4) = read16(ctx, csum_off) {
        let udp_none = proto == PROTO_UDP && old_l4 == 0;
        if !udp_none {
            let mut new_l4 = old_l4;
            if proto != PROTO_ICMP {
                // Pseudo-header source address.
                new_l4 = csum_update(new_l4, nat_addr, guest_addr, true);
            }
            new_l4 = csum_update(new_l4, old_port as u32, guest_port as u32, false);
            if proto == PROTO_UDP && new_l4 == 0 {
                new_l4 = 0xffff;
            }
            write16(ctx, csum_off, new_l4)?;
            icmp_check = csum_update(icmp_check, old_l4 as u32, new_l4 as u32, false);
        }
    }
    write16(ctx, icmp_check_off, icmp_check)
}

// ---------------------------------------------------------------------------
// NAT66: ICMPv6 errors (RFC 4443: destination unreachable 1, packet too big
// 2, time exceeded 3, parameter problem 4) about NAT66 flows.

pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
const INNER_IP6_LEN: usize = 40;
const INNER6_SRC: usize = 8;
/// The outer IPv6 header's payload length (Ethernet + 4).
const IP6_PAYLOAD_LEN_OFF: usize = 14 + 4;

/// One 32-bit word of an address as it sits in memory.
#[inline(always)]
fn word6(a: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

/// [`uplink_icmp_error`] for NAT66: an ICMPv6 error addressed to the NAT66
/// address quoting a packet vxdp sent after SNAT (no extension headers in
/// the quote) is translated back and redirected to the guest.
#[inline(always)]
pub fn uplink_icmp6_error<C: Hook>(ctx: &C, ip: &Ipv6) -> Result<Option<C::Verdict>, Drop> {
    if ip.next_header != PROTO_ICMPV6 {
        return Ok(None);
    }
    let icmp_off = IP6_L4_OFF;
    let Ok(hdr) = parse::ptr_at::<_, [u8; ICMP_HDR_LEN]>(ctx, icmp_off) else {
        return Ok(None);
    };
    let icmp_type = unsafe { (*hdr)[0] };
    if !(ICMPV6_DEST_UNREACHABLE..=ICMPV6_PARAMETER_PROBLEM).contains(&icmp_type) {
        return Ok(None);
    }
    let inner_off = icmp_off + ICMP_HDR_LEN;
    let Ok(inner) = parse::ptr_at::<_, [u8; INNER_IP6_LEN]>(ctx, inner_off) else {
        return Ok(None);
    };
    let inner = unsafe { &*inner };
    if inner[0] >> 4 != 6 || inner[8..24] != ip.dst {
        return Ok(None);
    }
    let proto = inner[6];
    let l4_off = inner_off + INNER_IP6_LEN;
    let Ok(l4) = parse::ptr_at::<_, [u8; 8]>(ctx, l4_off) else {
        return Ok(None);
    };
    let Some(q) = quoted_ports(
        unsafe { &*l4 },
        l4_off,
        proto,
        PROTO_ICMPV6,
        ICMPV6_ECHO_REQUEST,
    ) else {
        return Ok(None);
    };
    let mut key = Conntrack6Key {
        src_addr: [0; 16],
        dst_addr: ip.dst,
        src_port: q.src_port,
        dst_port: q.dst_port,
        proto,
        _pad: [0; 3],
    };
    key.src_addr.copy_from_slice(&inner[24..40]);
    let Some(entry) = conntrack::lookup(&key, conntrack::now()) else {
        return Ok(None);
    };
    let e = unsafe { &*entry };
    if e.direction != DIR_REPLY {
        return Ok(None);
    }
    let (guest_addr, guest_port, mac, ifindex) = (e.rewrite_addr, e.rewrite_port, e.mac, e.ifindex);
    let net_id = e.network_id as u32;
    if !ctx.deliverable(ifindex) {
        return Ok(Some(ctx.defer()));
    }
    prepare_for_guest(ctx, net_id, ip.hop_limit, &mac)?;
    translate6(
        ctx,
        ip,
        inner_off,
        proto,
        q.port_off,
        q.csum_off,
        &guest_addr,
        guest_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(ifindex, net_id, Action::IcmpErrorTranslated)
        .map(Some)
}

/// [`translate`] for IPv6: no header checksums, but the ICMPv6 checksum
/// covers the pseudo-header (the outer destination) as well as the quote,
/// and the quoted TCP/UDP/ICMPv6 checksum covers the quoted source.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn translate6<C: PacketCtx>(
    ctx: &C,
    ip: &Ipv6,
    inner_off: usize,
    proto: u8,
    port_off: usize,
    csum_off: usize,
    guest_addr: &[u8; 16],
    guest_port: u16,
) -> Result<(), ()> {
    let nat_addr = &ip.dst;
    let dst = parse::ptr_at::<_, [u8; 16]>(ctx, IP6_DST_OFF)?;
    unsafe { *dst = *guest_addr };
    let hop = parse::ptr_at::<_, u8>(ctx, IP6_HOP_LIMIT_OFF)?;
    unsafe { *hop = ip.hop_limit - 1 };
    let src = parse::ptr_at::<_, [u8; 16]>(ctx, inner_off + INNER6_SRC)?;
    unsafe { *src = *guest_addr };
    let old_port = read16(ctx, port_off)?;
    write16(ctx, port_off, guest_port)?;

    let icmp_check_off = IP6_L4_OFF + 2;
    let mut icmp_check = read16(ctx, icmp_check_off)?;
    for i in 0..4 {
        let (from, to) = (word6(nat_addr, i), word6(guest_addr, i));
        // Once for the pseudo-header's destination, once for the quote's
        // source.
        icmp_check = csum_update(icmp_check, from, to, true);
        icmp_check = csum_update(icmp_check, from, to, true);
    }
    icmp_check = csum_update(icmp_check, old_port as u32, guest_port as u32, false);

    // Bytes past the payload length (Ethernet padding) are not part of the
    // message the ICMPv6 checksum covers.
    let payload_len = u16::from_be(read16(ctx, IP6_PAYLOAD_LEN_OFF)?) as usize;
    let quoted = csum_off + 2 <= IP6_L4_OFF + payload_len;
    if quoted && let Ok(old_l4) = read16(ctx, csum_off) {
        if !(proto == PROTO_UDP && old_l4 == 0) {
            let mut new_l4 = old_l4;
            for i in 0..4 {
                new_l4 = csum_update(new_l4, word6(nat_addr, i), word6(guest_addr, i), true);
            }
            new_l4 = csum_update(new_l4, old_port as u32, guest_port as u32, false);
            if proto == PROTO_UDP && new_l4 == 0 {
                new_l4 = 0xffff;
            }
            write16(ctx, csum_off, new_l4)?;
            icmp_check = csum_update(icmp_check, old_l4 as u32, new_l4 as u32, false);
        }
    }
    write16(ctx, icmp_check_off, icmp_check)
}

//! Inbound ICMP and ICMPv6 errors about NAT flows (the uplink, XDP or TC): a router or the
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
//!
//! Reading the quote differs by family ([`Quoting`]: ICMP types, header
//! layouts); the lookup, the rewrite and the delivery are written once.

use network_types::ip::Ipv4Hdr;
use vxdp_common::{
    Action, Conntrack6Key, ConntrackKey, DIR_REPLY, DropReason, FlowEntry, FlowKey, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::{
    base::{
        csum,
        ctx::{PacketCtx, ptr_at},
        family::Family,
        parse::{self, IP6_L4_OFF, Ipv4, Ipv6},
        stats::Drop,
    },
    flow::{
        conntrack::{self, Peer, Table},
        deliver::{Hook, prepare_for_guest},
    },
};

pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// RFC 4443: destination unreachable 1, packet too big 2, time exceeded 3,
/// parameter problem 4.
pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;

/// ICMP header (type, code, checksum, 4 bytes of type-specific data) before
/// the quoted packet.
const ICMP_HDR_LEN: usize = 8;
/// The quoted IPv4 header: only IHL 5 is translated (vxdp never sends
/// options after SNAT, so an error about its packet quotes none).
const INNER_IP_LEN: usize = 20;
const INNER_IP6_LEN: usize = 40;
/// Where the quoted L4 checksum sits, from the quoted L4 header.
const UDP_CHECK: usize = 6;
const TCP_CHECK: usize = 16;
const ICMP_CHECK: usize = 2;
const ICMP_ID: usize = 4;

/// The 16-bit word at `off`, as it sits in memory.
#[inline(always)]
fn read16<C: PacketCtx>(ctx: &C, off: usize) -> Result<u16, ()> {
    let p = ptr_at::<_, [u8; 2]>(ctx, off)?;
    Ok(u16::from_ne_bytes(unsafe { *p }))
}

#[inline(always)]
fn write16<C: PacketCtx>(ctx: &C, off: usize, v: u16) -> Result<(), ()> {
    let p = ptr_at::<_, [u8; 2]>(ctx, off)?;
    unsafe { *p = v.to_ne_bytes() };
    Ok(())
}

/// An ICMP error's quote of a packet vxdp sent after SNAT.
pub struct Quote<K> {
    /// The reply-direction key of the quoted packet's flow: the tuple the
    /// outside's answers carry (see `flow::snat::create_flow`).
    key: K,
    /// Where the ICMP header and the quoted IP header start.
    icmp_off: usize,
    inner_off: usize,
    proto: u8,
    ports: QuotedPorts,
}

/// How a family's ICMP errors quote a packet.
pub trait Quoting: Family {
    /// The quote, if `self` is an ICMP error quoting a packet vxdp could
    /// have sent after SNAT (from the address the error comes back to).
    fn quote<C: PacketCtx>(&self, ctx: &C) -> Option<Quote<Self::Key>>;
}

impl Quoting for Ipv4 {
    #[inline(always)]
    fn quote<C: PacketCtx>(&self, ctx: &C) -> Option<Quote<ConntrackKey>> {
        let ip = self;
        if ip.proto != PROTO_ICMP || ip.fragment {
            return None;
        }
        let icmp_off = ip.l4_off;
        let Ok(hdr) = ptr_at::<_, [u8; ICMP_HDR_LEN]>(ctx, icmp_off) else {
            return None;
        };
        let icmp_type = unsafe { (*hdr)[0] };
        if !matches!(
            icmp_type,
            ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
        ) {
            return None;
        }
        let inner_off = icmp_off + ICMP_HDR_LEN;
        let Ok(inner) = ptr_at::<_, Ipv4Hdr>(ctx, inner_off) else {
            return None;
        };
        let inner = unsafe { &*inner };
        // Not a first fragment: no L4 header quoted, nothing to key on.
        if inner.vihl != 0x45 || u16::from_be_bytes(inner.frags) & 0x1fff != 0 {
            return None;
        }
        let inner_src = u32::from_ne_bytes(inner.src_addr);
        let inner_dst = u32::from_ne_bytes(inner.dst_addr);
        let proto = inner.proto;
        // The quoted packet was sent from the address the error comes back to.
        if inner_src != ip.dst {
            return None;
        }
        let l4_off = inner_off + INNER_IP_LEN;
        // RFC 792: at least the first 8 bytes of the L4 header are quoted.
        let Ok(l4) = ptr_at::<_, [u8; 8]>(ctx, l4_off) else {
            return None;
        };
        // ... inside the error's own datagram: bytes past its total length are
        // link padding, which a receiver does not checksum. Rewriting a quote
        // there would leave the ICMP checksum wrong for the guest (found by the
        // fuzzer).
        let Ok(outer) = ptr_at::<_, Ipv4Hdr>(ctx, parse::IP_OFF) else {
            return None;
        };
        if (u16::from_be_bytes(unsafe { (*outer).tot_len }) as usize) < l4_off + 8 - parse::IP_OFF {
            return None;
        }
        let ports = quoted_ports::<Self>(unsafe { &*l4 }, l4_off, proto)?;
        Some(Quote {
            key: ConntrackKey::new(
                &inner_dst,
                &inner_src,
                ports.src_port,
                ports.dst_port,
                proto,
            ),
            icmp_off,
            inner_off,
            proto,
            ports,
        })
    }
}

impl Quoting for Ipv6 {
    /// No extension headers in the quote.
    #[inline(always)]
    fn quote<C: PacketCtx>(&self, ctx: &C) -> Option<Quote<Conntrack6Key>> {
        let ip = self;
        if ip.next_header != PROTO_ICMPV6 {
            return None;
        }
        let icmp_off = IP6_L4_OFF;
        let Ok(hdr) = ptr_at::<_, [u8; ICMP_HDR_LEN]>(ctx, icmp_off) else {
            return None;
        };
        let icmp_type = unsafe { (*hdr)[0] };
        if !(ICMPV6_DEST_UNREACHABLE..=ICMPV6_PARAMETER_PROBLEM).contains(&icmp_type) {
            return None;
        }
        let inner_off = icmp_off + ICMP_HDR_LEN;
        let Ok(inner) = ptr_at::<_, [u8; INNER_IP6_LEN]>(ctx, inner_off) else {
            return None;
        };
        let inner = unsafe { &*inner };
        if inner[0] >> 4 != 6 || inner[8..24] != ip.dst {
            return None;
        }
        let proto = inner[6];
        let l4_off = inner_off + INNER_IP6_LEN;
        let Ok(l4) = ptr_at::<_, [u8; 8]>(ctx, l4_off) else {
            return None;
        };
        let ports = quoted_ports::<Self>(unsafe { &*l4 }, l4_off, proto)?;
        let mut remote = [0u8; 16];
        remote.copy_from_slice(&inner[24..40]);
        Some(Quote {
            key: Conntrack6Key::new(&remote, &ip.dst, ports.src_port, ports.dst_port, proto),
            icmp_off,
            inner_off,
            proto,
            ports,
        })
    }
}

/// If `ip` is an ICMP error about a tracked NAT flow, translates it and
/// redirects it to the guest (`Some(verdict)`); otherwise `None` and the
/// packet is left to the usual uplink handling.
#[inline(always)]
pub fn uplink_icmp_error<C: Hook, F: Quoting>(ctx: &C, ip: &F) -> Result<Option<C::Verdict>, Drop>
where
    F::Key: Table,
{
    let Some(q) = ip.quote(ctx) else {
        return Ok(None);
    };
    let Some(entry) = conntrack::lookup(&q.key, conntrack::now()) else {
        return Ok(None);
    };
    let e = unsafe { *entry };
    if e.direction() != DIR_REPLY {
        return Ok(None);
    }
    let net_id = e.network_id();
    // As for the flow's own replies: a reply entry that outlived its flow
    // must not deliver.
    let mut peer_key = q.key;
    if let Peer::Stale = conntrack::peer(&q.key, entry, &mut peer_key) {
        conntrack::remove(&q.key);
        return Err(Drop::new(DropReason::ConntrackMismatch, net_id));
    }
    if !ctx.deliverable(e.ifindex()) {
        return Ok(Some(ctx.defer()));
    }
    prepare_for_guest(ctx, net_id, ip.ttl(), e.mac())?;
    translate(ctx, ip, &q, e.rewrite_addr(), e.rewrite_port())
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(e.ifindex(), net_id, Action::IcmpErrorTranslated)
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
/// UDP, or an echo request of the family's ICMP; `None` for anything else.
#[inline(always)]
fn quoted_ports<F: Family>(l4: &[u8; 8], l4_off: usize, proto: u8) -> Option<QuotedPorts> {
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
    if proto == F::ICMP && l4[0] == F::ECHO_REQUEST {
        return Some(QuotedPorts {
            port_off: l4_off + ICMP_ID,
            csum_off: l4_off + ICMP_CHECK,
            src_port: 0,
            dst_port: u16::from_ne_bytes([l4[4], l4[5]]),
        });
    }
    None
}

/// The rewrite itself. Outer header: destination → guest, TTL (hop limit)
/// − 1, IPv4's header checksum. Quoted packet: source → guest (IPv4: its
/// header checksum; when quoted, its L4 checksum where that covers the
/// pseudo-header), source port or echo id → the guest's (and the L4
/// checksum again). The ICMP checksum covers the whole message, so it takes
/// every quoted word that changed, the quoted checksums included, and for
/// ICMPv6 the pseudo-header's destination too.
#[inline(always)]
fn translate<C: PacketCtx, F: Family>(
    ctx: &C,
    ip: &F,
    q: &Quote<F::Key>,
    guest_addr: &F::Addr,
    guest_port: u16,
) -> Result<(), ()> {
    let nat_addr = ip.dst();
    let (port_off, csum_off) = (q.ports.port_off, q.ports.csum_off);

    // Outer header.
    F::write_addr(ctx, F::DST_OFF, guest_addr)?;
    let (old_ttl, new_ttl) = ip.write_ttl(ctx)?;
    if F::HEADER_CSUM {
        let mut check = read16(ctx, F::CHECK_OFF)?;
        check = F::csum_addr(check, nat_addr, guest_addr);
        check = csum::update(check, old_ttl as u32, new_ttl as u32, false);
        write16(ctx, F::CHECK_OFF, check)?;
    }

    let icmp_check_off = q.icmp_off + 2;
    let mut icmp_check = read16(ctx, icmp_check_off)?;
    if F::pseudo_header(F::ICMP) {
        // The pseudo-header's destination.
        icmp_check = F::csum_addr(icmp_check, nat_addr, guest_addr);
    }

    // Quoted IP header: source address (and IPv4's header checksum).
    F::write_addr(ctx, q.inner_off + F::SRC_IN_HEADER, guest_addr)?;
    icmp_check = F::csum_addr(icmp_check, nat_addr, guest_addr);
    if F::HEADER_CSUM {
        let off = q.inner_off + F::CHECK_IN_HEADER;
        let old_inner_check = read16(ctx, off)?;
        let new_inner_check = F::csum_addr(old_inner_check, nat_addr, guest_addr);
        write16(ctx, off, new_inner_check)?;
        icmp_check = csum::update(
            icmp_check,
            old_inner_check as u32,
            new_inner_check as u32,
            false,
        );
    }

    // Quoted source port / echo id.
    let old_port = read16(ctx, port_off)?;
    write16(ctx, port_off, guest_port)?;
    icmp_check = csum::update(icmp_check, old_port as u32, guest_port as u32, false);

    // Quoted L4 checksum: UDP's and ICMP's are in the 8 bytes every error
    // quotes; TCP's only when the sender quoted at least 18 bytes of the
    // segment (Linux quotes up to 576 bytes of the packet). A missing one
    // is left alone: the guest cannot check what it does not have.
    // Bytes past the IP length (Ethernet padding) are not part of the
    // message the ICMP checksum covers.
    let len = u16::from_be(read16(ctx, F::LEN_OFF)?) as usize;
    let quoted = csum_off + 2 <= F::LEN_FROM + len;
    if quoted && let Ok(old_l4) = read16(ctx, csum_off) {
        let udp_none = q.proto == PROTO_UDP && old_l4 == 0;
        if !udp_none {
            let mut new_l4 = old_l4;
            if F::pseudo_header(q.proto) {
                // Pseudo-header source address.
                new_l4 = F::csum_addr(new_l4, nat_addr, guest_addr);
            }
            new_l4 = csum::update(new_l4, old_port as u32, guest_port as u32, false);
            if q.proto == PROTO_UDP && new_l4 == 0 {
                new_l4 = 0xffff;
            }
            write16(ctx, csum_off, new_l4)?;
            icmp_check = csum::update(icmp_check, old_l4 as u32, new_l4 as u32, false);
        }
    }
    write16(ctx, icmp_check_off, icmp_check)
}

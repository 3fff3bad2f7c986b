//! Packet parsing: other modules get copies of header fields and offsets,
//! and read or write packet memory only through [`ptr_at`] (bounds-checked
//! in `ctx`).

use core::mem::offset_of;

use network_types::{eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};
use vxdp_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, tcp::Segment};

use super::ctx::{PacketCtx, ptr_at};

pub const ETH_P_IP: u16 = 0x0800;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;

pub use vxdp_common::tcp::TCP_RST;

/// Why a frame could not be parsed as IPv4.
pub enum ParseError {
    /// Not IPv4 (ARP, IPv6, ...): not ours to judge here.
    NotIpv4,
    /// Claims to be IPv4 but is truncated or has an invalid header.
    Malformed,
}

/// The IPv4 header fields vxdp needs, copied out of the packet.
/// Addresses are as they sit in memory (network byte order).
#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub ttl: u8,
    /// More-fragments flag set or non-zero fragment offset.
    pub fragment: bool,
    /// Fragment offset zero: the L4 header is in this packet (a whole
    /// packet or a first fragment).
    pub first_fragment: bool,
    /// Don't-fragment flag: a router must answer "fragmentation needed"
    /// rather than fragment it.
    pub dont_fragment: bool,
    /// The identification field (as in the packet): which datagram a
    /// fragment belongs to.
    pub id: u16,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
    /// Bytes from the L4 header to the end of the packet, by the header's
    /// total length.
    pub l4_len: u16,
}

pub const IP_OFF: usize = EthHdr::LEN;
/// Bytes of headers the parser needs in the linear part of a socket buffer:
/// Ethernet, IPv4 with options, TCP without options.
pub const HEADERS_MAX: u32 = 14 + 60 + 20;
pub const IP_CHECK_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, check);
pub const IP_SRC_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, dst_addr);
pub const IP_TTL_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, ttl);

#[inline(always)]
pub fn eth<C: PacketCtx>(ctx: &C) -> Result<*mut EthHdr, ParseError> {
    ptr_at::<C, EthHdr>(ctx, 0).map_err(|_| ParseError::Malformed)
}

/// Parses the Ethernet and IPv4 headers.
#[inline(always)]
pub fn ipv4<C: PacketCtx>(ctx: &C) -> Result<Ipv4, ParseError> {
    let eth = eth(ctx)?;
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IP {
        return Err(ParseError::NotIpv4);
    }
    let ip = ptr_at::<C, Ipv4Hdr>(ctx, IP_OFF).map_err(|_| ParseError::Malformed)?;
    let ip = unsafe { &*ip };
    let ihl = (ip.vihl & 0x0f) as usize;
    if ip.vihl >> 4 != 4 || ihl < 5 {
        return Err(ParseError::Malformed);
    }
    let frags = u16::from_be_bytes(ip.frags);
    Ok(Ipv4 {
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        proto: ip.proto,
        ttl: ip.ttl,
        // MF flag (0x2000) or a fragment offset (low 13 bits).
        fragment: frags & 0x3fff != 0,
        first_fragment: frags & 0x1fff == 0,
        dont_fragment: frags & 0x4000 != 0,
        id: u16::from_ne_bytes(ip.id),
        l4_off: IP_OFF + ihl * 4,
        l4_len: u16::from_be_bytes(ip.tot_len).saturating_sub(ihl as u16 * 4),
    })
}

/// The L4 fields conntrack keys on, copied out of the packet.
#[derive(Clone, Copy)]
pub struct L4 {
    /// Source and destination port (ICMP echo: see [`l4`]), in memory order.
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP's flags and sequence numbers (all 0 for other protocols).
    pub tcp: Segment,
    /// ICMP type (0 for other protocols).
    pub icmp_type: u8,
    /// Offset of the L4 checksum field.
    pub csum_off: usize,
    /// Offsets of the source and destination port fields (ICMP: both the id).
    pub src_port_off: usize,
    pub dst_port_off: usize,
}

/// Why an L4 header was not usable.
pub enum L4Error {
    Truncated,
    UnsupportedProtocol,
    /// ICMP other than echo request/reply.
    UnsupportedIcmp,
}

/// Parses the L4 header of TCP, UDP and ICMP echo. For ICMP echo the
/// identifier is reported as the source port of a request and as the
/// destination port of a reply, so that both directions key the same way.
#[inline(always)]
pub fn l4<C: PacketCtx>(ctx: &C, ip: &Ipv4) -> Result<L4, L4Error> {
    l4_at(ctx, ip.proto, ip.l4_off, ip.l4_len)
}

/// [`l4`] for the protocol `proto` whose header starts at `off`, `len`
/// bytes to the end of the packet.
#[inline(always)]
fn l4_at<C: PacketCtx>(ctx: &C, proto: u8, off: usize, len: u16) -> Result<L4, L4Error> {
    match proto {
        PROTO_TCP => {
            let tcp_ptr = ptr_at::<C, TcpHdr>(ctx, off).map_err(|_| L4Error::Truncated)?;
            let tcp = unsafe { &*tcp_ptr };
            // Data offset and flags are the 13th and 14th bytes of the
            // header; read through the checked header pointer so the
            // verifier sees them in bounds.
            let b = unsafe { *((tcp_ptr as *const u8).add(12) as *const [u8; 2]) };
            let header_len = (b[0] >> 4) as u16 * 4;
            Ok(L4 {
                src_port: u16::from_ne_bytes(tcp.source),
                dst_port: u16::from_ne_bytes(tcp.dest),
                tcp: Segment {
                    flags: b[1],
                    seq: u32::from_be_bytes(tcp.seq),
                    ack: u32::from_be_bytes(tcp.ack_seq),
                    len: len.saturating_sub(header_len) as u32,
                },
                icmp_type: 0,
                csum_off: off + offset_of!(TcpHdr, check),
                src_port_off: off + offset_of!(TcpHdr, source),
                dst_port_off: off + offset_of!(TcpHdr, dest),
            })
        }
        PROTO_UDP => {
            let udp = ptr_at::<C, UdpHdr>(ctx, off).map_err(|_| L4Error::Truncated)?;
            let udp = unsafe { &*udp };
            Ok(L4 {
                src_port: u16::from_ne_bytes(udp.src),
                dst_port: u16::from_ne_bytes(udp.dst),
                tcp: Segment::default(),
                icmp_type: 0,
                csum_off: off + offset_of!(UdpHdr, check),
                src_port_off: off + offset_of!(UdpHdr, src),
                dst_port_off: off + offset_of!(UdpHdr, dst),
            })
        }
        PROTO_ICMP => {
            let icmp = ptr_at::<C, Icmpv4Hdr>(ctx, off).map_err(|_| L4Error::Truncated)?;
            let icmp = unsafe { &*icmp };
            // The echo identifier is the first half of the rest-of-header.
            let id = u16::from_ne_bytes([icmp.data[0], icmp.data[1]]);
            let id_off = off + offset_of!(Icmpv4Hdr, data);
            let (src_port, dst_port) = match icmp.type_ {
                ICMP_ECHO_REQUEST => (id, 0),
                ICMP_ECHO_REPLY => (0, id),
                _ => return Err(L4Error::UnsupportedIcmp),
            };
            Ok(L4 {
                src_port,
                dst_port,
                tcp: Segment::default(),
                icmp_type: icmp.type_,
                csum_off: off + offset_of!(Icmpv4Hdr, check),
                src_port_off: id_off,
                dst_port_off: id_off,
            })
        }
        _ => Err(L4Error::UnsupportedProtocol),
    }
}

pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// UDP ports of DHCP: a server sends from 67 (v4) and 547 (v6), a client
/// to 67.
pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP6_SERVER_PORT: u16 = 547;
/// ICMPv6 router advertisement, neighbour advertisement, redirect.
pub const ICMPV6_ROUTER_ADVERT: u8 = 134;
pub const ICMPV6_NEIGH_ADVERT: u8 = 136;
pub const ICMPV6_REDIRECT: u8 = 137;

/// Offset of the client hardware address in a BOOTP/DHCP message:
/// op(1) htype(1) hlen(1) hops(1) xid(4) secs(2) flags(2) ciaddr(4)
/// yiaddr(4) siaddr(4) giaddr(4).
const BOOTP_CHADDR_OFF: usize = 28;

/// The client hardware address of the DHCP message in the UDP datagram
/// whose header starts at `udp_off`.
#[inline(always)]
pub fn dhcp_chaddr<C: PacketCtx>(ctx: &C, udp_off: usize) -> Result<[u8; 6], ()> {
    let p = ptr_at::<C, [u8; 6]>(ctx, udp_off + 8 + BOOTP_CHADDR_OFF)?;
    Ok(unsafe { *p })
}

/// The upper-layer header of an IPv6 packet: walks up to
/// [`IPV6_EXT_MAX`] hop-by-hop, routing and destination-options headers
/// (MLD reports carry a hop-by-hop header) and returns the next-header
/// value and offset found there. A fragment header or anything else is
/// returned as is: the caller decides what it cannot see past.
#[inline(always)]
pub fn ipv6_upper<C: PacketCtx>(ctx: &C, ip: &Ipv6) -> Result<(u8, usize), ()> {
    let mut nh = ip.next_header;
    let mut off = IP6_L4_OFF;
    for _ in 0..IPV6_EXT_MAX {
        if !matches!(nh, 0 | 43 | 60) {
            break;
        }
        // next header(1) length in 8-octet units beyond the first 8(1)
        let h = ptr_at::<C, [u8; 2]>(ctx, off)?;
        let h = unsafe { *h };
        nh = h[0];
        off += (h[1] as usize + 1) * 8;
    }
    Ok((nh, off))
}

/// Extension headers [`ipv6_upper`] walks before giving up.
pub const IPV6_EXT_MAX: usize = 4;

/// The type of the ICMPv6 message at `off`.
#[inline(always)]
pub fn icmpv6_type<C: PacketCtx>(ctx: &C, off: usize) -> Result<u8, ()> {
    // Type and code: a one-byte check compiles into a comparison the
    // verifier does not take as a bounds check.
    let p = ptr_at::<C, [u8; 2]>(ctx, off)?;
    Ok(unsafe { (*p)[0] })
}

/// The target address of the neighbour advertisement at `off`:
/// type(1) code(1) checksum(2) flags(4) target(16).
#[inline(always)]
pub fn neigh_advert_target<C: PacketCtx>(ctx: &C, off: usize) -> Result<[u8; 16], ()> {
    let p = ptr_at::<C, [u8; 16]>(ctx, off + 8)?;
    Ok(unsafe { *p })
}

/// The source and destination ports of the UDP header at `off`, host byte
/// order.
#[inline(always)]
pub fn udp_ports<C: PacketCtx>(ctx: &C, off: usize) -> Result<(u16, u16), ()> {
    let p = ptr_at::<C, [u8; 4]>(ctx, off)?;
    let p = unsafe { *p };
    Ok((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

/// The EtherType of a frame (no VLAN tags: guest ports are untagged).
#[inline(always)]
pub fn ether_type<C: PacketCtx>(ctx: &C) -> Result<u16, ParseError> {
    let eth = eth(ctx)?;
    Ok(u16::from_be(unsafe { (*eth).ether_type }))
}

/// The sender fields of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy)]
pub struct ArpSender {
    pub mac: [u8; 6],
    /// Network byte order, as in the packet.
    pub ipv4: u32,
}

/// ARP body: htype(2) ptype(2) hlen(1) plen(1) op(2) sha(6) spa(4) tha(6) tpa(4).
const ARP_LEN: usize = 28;

#[inline(always)]
pub fn arp_sender<C: PacketCtx>(ctx: &C) -> Result<ArpSender, ParseError> {
    let arp = ptr_at::<C, [u8; ARP_LEN]>(ctx, EthHdr::LEN).map_err(|_| ParseError::Malformed)?;
    let a = unsafe { &*arp };
    Ok(ArpSender {
        mac: [a[8], a[9], a[10], a[11], a[12], a[13]],
        ipv4: u32::from_ne_bytes([a[14], a[15], a[16], a[17]]),
    })
}

/// The IPv6 header fields vxdp needs. Extension headers are not walked:
/// `next_header` is the first one, which only feeds the route lookup.
#[derive(Clone, Copy)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
    pub hop_limit: u8,
    /// The payload length field: bytes after the fixed header.
    pub payload_len: u16,
}

const IPV6_HDR_LEN: usize = 40;

/// Parses the Ethernet and IPv6 headers.
#[inline(always)]
pub fn ipv6<C: PacketCtx>(ctx: &C) -> Result<Ipv6, ParseError> {
    if ether_type(ctx)? != ETH_P_IPV6 {
        return Err(ParseError::NotIpv4);
    }
    let h = ptr_at::<C, [u8; IPV6_HDR_LEN]>(ctx, EthHdr::LEN).map_err(|_| ParseError::Malformed)?;
    let h = unsafe { &*h };
    if h[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Ok(Ipv6 {
        src,
        dst,
        next_header: h[6],
        hop_limit: h[7],
        payload_len: u16::from_be_bytes([h[4], h[5]]),
    })
}

/// fe80::/10 (link-local) or ff00::/8 (multicast): stays on the link.
#[inline(always)]
pub fn ipv6_link_scoped(a: &[u8; 16]) -> bool {
    a[0] == 0xff || (a[0] == 0xfe && a[1] & 0xc0 == 0x80)
}

pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// The IPv6 fragment header's next-header number.
pub const IPV6_NH_FRAGMENT: u8 = 44;

/// Whether `nh` is an IPv6 extension header (IANA's list: hop-by-hop,
/// routing, fragment, ESP, AH, destination options, mobility, HIP, shim6,
/// experimental), which vxdp does not walk.
#[inline(always)]
pub fn ipv6_extension_header(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

pub const IP6_SRC_OFF: usize = EthHdr::LEN + 8;
pub const IP6_DST_OFF: usize = EthHdr::LEN + 24;
/// The L4 header of an IPv6 packet without extension headers.
pub const IP6_L4_OFF: usize = EthHdr::LEN + IPV6_HDR_LEN;

/// [`l4`] for IPv6 without extension headers: TCP, UDP and ICMPv6 echo
/// (the identifier keyed as in IPv4).
#[inline(always)]
pub fn l4_v6<C: PacketCtx>(ctx: &C, ip: &Ipv6) -> Result<L4, L4Error> {
    let off = IP6_L4_OFF;
    if ip.next_header != vxdp_common::PROTO_ICMPV6 {
        return l4_at(ctx, ip.next_header, off, ip.payload_len);
    }
    // type(1) code(1) checksum(2) identifier(2) sequence(2)
    let icmp = ptr_at::<C, [u8; 8]>(ctx, off).map_err(|_| L4Error::Truncated)?;
    let icmp = unsafe { &*icmp };
    let id = u16::from_ne_bytes([icmp[4], icmp[5]]);
    let (src_port, dst_port) = match icmp[0] {
        ICMPV6_ECHO_REQUEST => (id, 0),
        ICMPV6_ECHO_REPLY => (0, id),
        _ => return Err(L4Error::UnsupportedIcmp),
    };
    Ok(L4 {
        src_port,
        dst_port,
        tcp: Segment::default(),
        icmp_type: icmp[0],
        csum_off: off + 2,
        src_port_off: off + 4,
        dst_port_off: off + 4,
    })
}

//! What IPv4 and IPv6 differ in, as one trait over their parsed headers
//! ([`Ipv4`], [`Ipv6`]): address width, header offsets, IPv4's header
//! checksum, which L4 checksums cover a pseudo-header, TTL and hop limit.
//! Flow, rewrite and delivery code is written once over [`Family`].

use vxdp_common::{
    Conntrack6Key, ConntrackKey, FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use super::{
    ctx::{CSUM_FIELD_2, CSUM_FIELD_4, PacketCtx, ptr_at},
    parse::{
        self, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, IP_CHECK_OFF, IP_DST_OFF, IP_OFF, IP_SRC_OFF,
        IP_TTL_OFF, IP6_DST_OFF, IP6_L4_OFF, IP6_SRC_OFF, Ipv4, Ipv6, L4, L4Error,
    },
};

pub trait Family: Copy {
    /// An address as it sits in packets.
    type Addr: Copy;
    /// The family's conntrack key.
    type Key: FlowKey<Addr = Self::Addr>;
    /// 32-bit words in an address (checksums are updated word by word).
    const WORDS: usize;
    /// Offsets in the frame of the source and destination addresses.
    const SRC_OFF: usize;
    const DST_OFF: usize;
    /// Offset of the source address from the start of the IP header (in a
    /// packet an ICMP error quotes).
    const SRC_IN_HEADER: usize;
    /// IPv4: the header has a checksum, at `CHECK_OFF` in the frame and
    /// `CHECK_IN_HEADER` from the header's start.
    const HEADER_CSUM: bool;
    const CHECK_OFF: usize;
    const CHECK_IN_HEADER: usize;
    /// The 16-bit word holding the TTL (hop limit), and which byte of it.
    const TTL_WORD_OFF: usize;
    const TTL_BYTE: usize;
    /// The length field that says where the packet's IP payload ends, and
    /// the offset it counts from.
    const LEN_OFF: usize;
    const LEN_FROM: usize;
    /// The family's ICMP protocol and echo request type.
    const ICMP: u8;
    const ECHO_REQUEST: u8;

    fn src(&self) -> &Self::Addr;
    fn dst(&self) -> &Self::Addr;
    /// The L4 protocol (IPv6: the first next header).
    fn proto(&self) -> u8;
    /// TTL or hop limit.
    fn ttl(&self) -> u8;
    /// Whether NAT can see and translate the whole L4 header: IPv4 with
    /// fragment offset 0 (a whole packet or a first fragment, whose
    /// datagram's later fragments `flow::frag` follows); IPv6 with TCP, UDP
    /// or ICMPv6 right after its header.
    fn whole_l4(&self) -> bool;
    /// The L4 fields conntrack keys on: TCP, UDP, ICMP echo.
    fn l4<C: PacketCtx>(&self, ctx: &C) -> Result<L4, L4Error>;
    /// Word `i` of an address, as it sits in memory.
    fn word(a: &Self::Addr, i: usize) -> u32;
    /// Writes an address at `off`.
    fn write_addr<C: PacketCtx>(ctx: &C, off: usize, a: &Self::Addr) -> Result<(), ()>;
    /// Whether the L4 checksum of `proto` covers the pseudo-header (the
    /// addresses): TCP's and UDP's; of ICMP's, only ICMPv6's.
    #[inline(always)]
    fn pseudo_header(proto: u8) -> bool {
        proto == PROTO_TCP || proto == PROTO_UDP || proto == PROTO_ICMPV6
    }

    /// The conntrack key of a packet as it is.
    #[inline(always)]
    fn flow_key(&self, l4: &L4) -> Self::Key {
        Self::Key::new(
            self.src(),
            self.dst(),
            l4.src_port,
            l4.dst_port,
            self.proto(),
        )
    }

    /// `check` updated for an address changing from `from` to `to`.
    #[inline(always)]
    fn csum_addr(mut check: u16, from: &Self::Addr, to: &Self::Addr) -> u16 {
        for i in 0..Self::WORDS {
            check = super::csum::update(check, Self::word(from, i), Self::word(to, i), true);
        }
        check
    }

    /// Writes TTL − 1 (hop limit − 1) into the packet; returns the 16-bit
    /// word that holds it before and after, for IPv4's header checksum.
    /// Read as two bytes: a one-byte bounds check is not one to the verifier.
    #[inline(always)]
    fn write_ttl<C: PacketCtx>(&self, ctx: &C) -> Result<(u16, u16), ()> {
        let field = ptr_at::<C, [u8; 2]>(ctx, Self::TTL_WORD_OFF)?;
        let old = unsafe { *field };
        let mut new = old;
        new[Self::TTL_BYTE] = self.ttl() - 1;
        unsafe { *field = new };
        Ok((u16::from_ne_bytes(old), u16::from_ne_bytes(new)))
    }

    /// IPv4's header checksum after [`Family::write_ttl`] changed the word
    /// `old` to `new` (nothing for IPv6), through the context's helper.
    #[inline(always)]
    fn header_csum_ttl<C: PacketCtx>(ctx: &C, (old, new): (u16, u16)) -> Result<(), ()> {
        if Self::HEADER_CSUM {
            ctx.l3_csum_replace(Self::CHECK_OFF, old as u32, new as u32, CSUM_FIELD_2)?;
        }
        Ok(())
    }

    /// IPv4's header checksum after the address at one side changed from
    /// `from` to `to` (nothing for IPv6).
    #[inline(always)]
    fn header_csum_addr<C: PacketCtx>(
        ctx: &C,
        from: &Self::Addr,
        to: &Self::Addr,
    ) -> Result<(), ()> {
        if Self::HEADER_CSUM {
            for i in 0..Self::WORDS {
                let (f, t) = (Self::word(from, i), Self::word(to, i));
                ctx.l3_csum_replace(Self::CHECK_OFF, f, t, CSUM_FIELD_4)?;
            }
        }
        Ok(())
    }
}

impl Family for Ipv4 {
    type Addr = u32;
    type Key = ConntrackKey;
    const WORDS: usize = 1;
    const SRC_OFF: usize = IP_SRC_OFF;
    const DST_OFF: usize = IP_DST_OFF;
    const SRC_IN_HEADER: usize = IP_SRC_OFF - IP_OFF;
    const HEADER_CSUM: bool = true;
    const CHECK_OFF: usize = IP_CHECK_OFF;
    const CHECK_IN_HEADER: usize = IP_CHECK_OFF - IP_OFF;
    // TTL, then the protocol.
    const TTL_WORD_OFF: usize = IP_TTL_OFF;
    const TTL_BYTE: usize = 0;
    // The total length counts from the IPv4 header.
    const LEN_OFF: usize = IP_OFF + 2;
    const LEN_FROM: usize = IP_OFF;
    const ICMP: u8 = PROTO_ICMP;
    const ECHO_REQUEST: u8 = ICMP_ECHO_REQUEST;

    #[inline(always)]
    fn src(&self) -> &u32 {
        &self.src
    }
    #[inline(always)]
    fn dst(&self) -> &u32 {
        &self.dst
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn ttl(&self) -> u8 {
        self.ttl
    }
    #[inline(always)]
    fn whole_l4(&self) -> bool {
        self.first_fragment
    }
    #[inline(always)]
    fn l4<C: PacketCtx>(&self, ctx: &C) -> Result<L4, L4Error> {
        parse::l4(ctx, self)
    }
    #[inline(always)]
    fn word(a: &u32, _i: usize) -> u32 {
        *a
    }
    #[inline(always)]
    fn write_addr<C: PacketCtx>(ctx: &C, off: usize, a: &u32) -> Result<(), ()> {
        let field = ptr_at::<C, [u8; 4]>(ctx, off)?;
        unsafe { *field = a.to_ne_bytes() };
        Ok(())
    }
}

impl Family for Ipv6 {
    type Addr = [u8; 16];
    type Key = Conntrack6Key;
    const WORDS: usize = 4;
    const SRC_OFF: usize = IP6_SRC_OFF;
    const DST_OFF: usize = IP6_DST_OFF;
    const SRC_IN_HEADER: usize = IP6_SRC_OFF - IP_OFF;
    const HEADER_CSUM: bool = false;
    const CHECK_OFF: usize = 0;
    const CHECK_IN_HEADER: usize = 0;
    // The next header, then the hop limit.
    const TTL_WORD_OFF: usize = IP_OFF + 6;
    const TTL_BYTE: usize = 1;
    // The payload length counts from the end of the fixed header.
    const LEN_OFF: usize = IP_OFF + 4;
    const LEN_FROM: usize = IP6_L4_OFF;
    const ICMP: u8 = PROTO_ICMPV6;
    const ECHO_REQUEST: u8 = ICMPV6_ECHO_REQUEST;

    #[inline(always)]
    fn src(&self) -> &[u8; 16] {
        &self.src
    }
    #[inline(always)]
    fn dst(&self) -> &[u8; 16] {
        &self.dst
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.next_header
    }
    #[inline(always)]
    fn ttl(&self) -> u8 {
        self.hop_limit
    }
    #[inline(always)]
    fn whole_l4(&self) -> bool {
        matches!(self.next_header, PROTO_TCP | PROTO_UDP | PROTO_ICMPV6)
    }
    /// Every IPv6 L4 checksum vxdp translates covers the pseudo-header.
    #[inline(always)]
    fn pseudo_header(_proto: u8) -> bool {
        true
    }
    #[inline(always)]
    fn l4<C: PacketCtx>(&self, ctx: &C) -> Result<L4, L4Error> {
        parse::l4_v6(ctx, self)
    }
    #[inline(always)]
    fn word(a: &[u8; 16], i: usize) -> u32 {
        u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
    }
    #[inline(always)]
    fn write_addr<C: PacketCtx>(ctx: &C, off: usize, a: &[u8; 16]) -> Result<(), ()> {
        let field = ptr_at::<C, [u8; 16]>(ctx, off)?;
        unsafe { *field = *a };
        Ok(())
    }
}

//! Unfinished L4 checksums in XDP. A local sender with checksum offload (a
//! guest behind a tap whose virtio-net header says NEEDS_CSUM, a veth peer
//! with its default settings, the host itself) hands over TCP/UDP with
//! CHECKSUM_PARTIAL: the checksum field holds only the folded pseudo-header
//! sum and the device (or the receiving stack) is to finish it. XDP cannot
//! see that state, and a redirect loses it. The virtio spec (5.1.6.2) gives
//! the tell: such a field equals the folded pseudo-header sum (a finished
//! checksum does so with a chance of about 2^-16, and is then merely sent
//! the slow way).

use vxdp_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::base::{
    ctx::{PacketCtx, ptr_at},
    parse::{self, ETH_P_IP, ETH_P_IPV6, IP_OFF, IP6_L4_OFF},
};

/// Offset of the checksum in the TCP and UDP headers.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// Adds the 16-bit words of `v` (as they sit in memory) to `sum`.
#[inline(always)]
fn add32(sum: u32, v: u32) -> u32 {
    sum + (v & 0xffff) + (v >> 16)
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The word at `off` as it sits in memory.
#[inline(always)]
fn word<C: PacketCtx>(ctx: &C, off: usize) -> Option<u16> {
    let p = ptr_at::<C, [u8; 2]>(ctx, off).ok()?;
    Some(u16::from_ne_bytes(unsafe { *p }))
}

/// Whether `check` is the folded pseudo-header sum `sum` (one's complement
/// has two zeros).
#[inline(always)]
fn is_pseudo_sum(check: u16, sum: u32) -> bool {
    let f = fold(sum);
    check == f || (f == 0xffff && check == 0) || (f == 0 && check == 0xffff)
}

/// Whether the frame's L4 checksum is known to be finished, so an XDP
/// redirect delivers a valid frame. TCP and UDP over IPv4 and IPv6 (no
/// extension headers): finished unless the field holds the pseudo-header
/// sum (UDP's 0 means "no checksum"). ICMP, ICMPv6, non-first fragments and
/// non-IP frames carry no offloadable checksum. Anything else (extension
/// headers, other protocols) is not known to be finished.
#[inline(always)]
pub fn finished<C: PacketCtx>(ctx: &C) -> bool {
    match parse::ether_type(ctx) {
        Ok(ETH_P_IP) => finished_v4(ctx),
        Ok(ETH_P_IPV6) => finished_v6(ctx),
        Ok(_) => true,
        Err(_) => false,
    }
}

#[inline(always)]
fn finished_v4<C: PacketCtx>(ctx: &C) -> bool {
    let Ok(ip) = parse::ipv4(ctx) else {
        return false;
    };
    if ip.fragment {
        // Fragmenting needs a finished checksum first; later fragments
        // have no L4 header.
        return true;
    }
    let csum_off = match ip.proto {
        PROTO_ICMP => return true,
        PROTO_TCP => ip.l4_off + TCP_CHECK,
        PROTO_UDP => ip.l4_off + UDP_CHECK,
        _ => return false,
    };
    let Some(tot_len) = word(ctx, IP_OFF + 2) else {
        return false;
    };
    let tot_len = u16::from_be(tot_len) as usize;
    let hdr_len = ip.l4_off - IP_OFF;
    if tot_len < hdr_len {
        return false;
    }
    let Some(check) = word(ctx, csum_off) else {
        return false;
    };
    if ip.proto == PROTO_UDP && check == 0 {
        return true;
    }
    let l4_len = (tot_len - hdr_len) as u16;
    let mut sum = add32(0, ip.src);
    sum = add32(sum, ip.dst);
    sum += u16::from_ne_bytes([0, ip.proto]) as u32;
    sum += u16::from_ne_bytes(l4_len.to_be_bytes()) as u32;
    !is_pseudo_sum(check, sum)
}

#[inline(always)]
fn finished_v6<C: PacketCtx>(ctx: &C) -> bool {
    let Some(h) = ptr_at::<C, [u8; 40]>(ctx, IP_OFF).ok() else {
        return false;
    };
    let h = unsafe { &*h };
    if h[0] >> 4 != 6 {
        return false;
    }
    let next_header = h[6];
    let csum_off = match next_header {
        PROTO_ICMPV6 => return true,
        PROTO_TCP => IP6_L4_OFF + TCP_CHECK,
        PROTO_UDP => IP6_L4_OFF + UDP_CHECK,
        _ => return false,
    };
    let Some(check) = word(ctx, csum_off) else {
        return false;
    };
    if next_header == PROTO_UDP && check == 0 {
        // Not valid over IPv6, but nothing XDP could break either.
        return true;
    }
    // Source and destination (bytes 8..40), the upper-layer length (the
    // payload length, no extension headers; its high half is 0) and the
    // next header.
    let mut sum = u16::from_ne_bytes([h[4], h[5]]) as u32;
    sum += u16::from_ne_bytes([0, next_header]) as u32;
    let mut i = 8;
    while i < 40 {
        sum += u16::from_ne_bytes([h[i], h[i + 1]]) as u32;
        i += 2;
    }
    !is_pseudo_sum(check, sum)
}

//! Unfinished L4 checksums in XDP. A local sender with checksum offload (a
//! guest behind a tap whose virtio-net header says NEEDS_CSUM, a veth peer
//! with its default settings, the host itself) hands over TCP/UDP with
//! CHECKSUM_PARTIAL: the checksum field holds only the folded pseudo-header
//! sum and the device (or the receiving stack) is to finish it. XDP cannot
//! see that state, and a redirect loses it. The virtio spec (5.1.6.2) gives
//! the tell: such a field equals the folded pseudo-header sum (a finished
//! checksum does so with a chance of about 2^-16, and is then merely sent
//! the slow way).
//!
//! The guest port's XDP program finishes such checksums itself
//! ([`finish`]) on the paths where it redirects the frame, so that a Linux
//! guest's TCP and UDP need not go to TC. Finishing is the device's job
//! done early: the one's complement sum of the L4 segment (from its header
//! to the end of the IP payload, with the field as it is, holding the
//! pseudo-header sum), complemented, written into the field. A frame whose
//! checksum was already finished but happens to equal the pseudo-header sum
//! is safe too: the field holds the same value either way, so the same sum
//! gives the same result, which for a finished checksum is the value it
//! already had.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use vxdp_common::{CSUM_CHUNK, CsumScratch, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::base::{
    ctx::{PacketCtx, ptr_at},
    maps::VXDP_CSUM_SCRATCH,
    parse::{self, ETH_P_IP, ETH_P_IPV6, IP_OFF, IP6_L4_OFF},
};

/// Offset of the checksum in the TCP and UDP headers.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;
/// The shortest TCP and UDP headers.
const TCP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// The longest frame [`finish`] finishes. tun runs native XDP (on the frame
/// as written, before a socket buffer exists) only on frames that fit a
/// page with its headroom and shared info (`tun_can_build_skb`: 3456 bytes
/// with 4 KiB pages); a longer one gets generic XDP on a socket buffer that
/// still says CHECKSUM_PARTIAL, and whatever sends it later would finish
/// the checksum a second time over the finished field. Those stay with TC.
/// Smaller frames get generic XDP too when tun cannot build them in place
/// (a blocking writer, a limited send buffer, zerocopy, a GSO type), which
/// the program cannot tell: see docs/architecture.md, "Unfinished
/// checksums".
pub const FINISH_MAX: u32 = 3456;
/// Chunks of [`CSUM_CHUNK`] bytes that cover [`FINISH_MAX`].
const FINISH_CHUNKS: u32 = FINISH_MAX.div_ceil(CSUM_CHUNK as u32);

/// What XDP knows of a frame's L4 checksum.
#[derive(Clone, Copy)]
pub enum L4Csum {
    /// Finished, or none to finish (see [`finished`]).
    Finished,
    /// TCP or UDP whose field holds the pseudo-header sum: the segment is
    /// `len` bytes from `l4_off` (the IP payload, inside the frame), the
    /// field at `csum_off`.
    Unfinished {
        l4_off: u32,
        len: u32,
        csum_off: u32,
        udp: bool,
    },
    /// Not known (extension headers, other protocols, a truncated header,
    /// an IP length beyond the frame): left to TC.
    Unknown,
}

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
    matches!(state(ctx), L4Csum::Finished)
}

/// The frame's L4 checksum as [`finished`] judges it, with where an
/// unfinished one's segment lies.
#[inline(always)]
pub fn state<C: PacketCtx>(ctx: &C) -> L4Csum {
    match parse::ether_type(ctx) {
        Ok(ETH_P_IP) => state_v4(ctx),
        Ok(ETH_P_IPV6) => state_v6(ctx),
        Ok(_) => L4Csum::Finished,
        Err(_) => L4Csum::Unknown,
    }
}

/// An unfinished segment of `len` bytes at `l4_off`, if the frame holds it
/// whole and it is long enough for its header: otherwise not known (an IP
/// length beyond the frame must not be summed over, and garbage after the
/// IP payload must not count).
#[inline(always)]
fn unfinished<C: PacketCtx>(ctx: &C, l4_off: usize, len: usize, proto: u8) -> L4Csum {
    let (header, check) = if proto == PROTO_UDP {
        (UDP_HEADER, UDP_CHECK)
    } else {
        (TCP_HEADER, TCP_CHECK)
    };
    if len < header || l4_off + len > ctx.packet_len() as usize {
        return L4Csum::Unknown;
    }
    L4Csum::Unfinished {
        l4_off: l4_off as u32,
        len: len as u32,
        csum_off: (l4_off + check) as u32,
        udp: proto == PROTO_UDP,
    }
}

#[inline(always)]
fn state_v4<C: PacketCtx>(ctx: &C) -> L4Csum {
    let Ok(ip) = parse::ipv4(ctx) else {
        return L4Csum::Unknown;
    };
    if ip.fragment {
        // Fragmenting needs a finished checksum first; later fragments
        // have no L4 header.
        return L4Csum::Finished;
    }
    let csum_off = match ip.proto {
        PROTO_ICMP => return L4Csum::Finished,
        PROTO_TCP => ip.l4_off + TCP_CHECK,
        PROTO_UDP => ip.l4_off + UDP_CHECK,
        _ => return L4Csum::Unknown,
    };
    let Some(tot_len) = word(ctx, IP_OFF + 2) else {
        return L4Csum::Unknown;
    };
    let tot_len = u16::from_be(tot_len) as usize;
    let hdr_len = ip.l4_off - IP_OFF;
    if tot_len < hdr_len {
        return L4Csum::Unknown;
    }
    let Some(check) = word(ctx, csum_off) else {
        return L4Csum::Unknown;
    };
    if ip.proto == PROTO_UDP && check == 0 {
        return L4Csum::Finished;
    }
    let l4_len = (tot_len - hdr_len) as u16;
    let mut sum = add32(0, ip.src);
    sum = add32(sum, ip.dst);
    sum += u16::from_ne_bytes([0, ip.proto]) as u32;
    sum += u16::from_ne_bytes(l4_len.to_be_bytes()) as u32;
    if !is_pseudo_sum(check, sum) {
        return L4Csum::Finished;
    }
    unfinished(ctx, ip.l4_off, l4_len as usize, ip.proto)
}

#[inline(always)]
fn state_v6<C: PacketCtx>(ctx: &C) -> L4Csum {
    let Some(h) = ptr_at::<C, [u8; 40]>(ctx, IP_OFF).ok() else {
        return L4Csum::Unknown;
    };
    let h = unsafe { &*h };
    if h[0] >> 4 != 6 {
        return L4Csum::Unknown;
    }
    let next_header = h[6];
    let csum_off = match next_header {
        PROTO_ICMPV6 => return L4Csum::Finished,
        PROTO_TCP => IP6_L4_OFF + TCP_CHECK,
        PROTO_UDP => IP6_L4_OFF + UDP_CHECK,
        _ => return L4Csum::Unknown,
    };
    let Some(check) = word(ctx, csum_off) else {
        return L4Csum::Unknown;
    };
    if next_header == PROTO_UDP && check == 0 {
        // Not valid over IPv6, but nothing XDP could break either.
        return L4Csum::Finished;
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
    if !is_pseudo_sum(check, sum) {
        return L4Csum::Finished;
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]) as usize;
    unfinished(ctx, IP6_L4_OFF, payload_len, next_header)
}

/// Makes sure the frame leaves XDP with a finished L4 checksum: finishes an
/// unfinished one (see the module's text). `false`: it could not (not
/// known, longer than [`FINISH_MAX`], a helper failed) and the frame is as
/// it came, for TC. Call only where the frame is then redirected: a frame
/// passed to the kernel keeps the socket buffer's CHECKSUM_PARTIAL, which
/// needs the pseudo-header sum in the field.
#[inline(always)]
pub fn finish(ctx: &XdpContext) -> bool {
    match state(ctx) {
        L4Csum::Finished => true,
        L4Csum::Unknown => false,
        L4Csum::Unfinished {
            l4_off,
            len,
            csum_off,
            udp,
        } => ctx.packet_len() <= FINISH_MAX && finish_segment(ctx, l4_off, len, csum_off, udp),
    }
}

/// Sums the segment in chunks copied into `VXDP_CSUM_SCRATCH` (the stack
/// has no room for one) and writes the complement into the field; the
/// only write is the last step. A subprogram: its frame stays off the
/// calling program's.
#[inline(never)]
fn finish_segment(ctx: &XdpContext, l4_off: u32, len: u32, csum_off: u32, udp: bool) -> bool {
    let Some(scratch) = VXDP_CSUM_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let scratch = unsafe { &mut *scratch };
    let full = len / CSUM_CHUNK as u32;
    if full > FINISH_CHUNKS {
        return false;
    }
    let mut off = l4_off;
    let mut sum: u32 = 0;
    // Whole chunks (a constant length: nothing for the verifier to doubt).
    for i in 0..FINISH_CHUNKS {
        if i >= full {
            break;
        }
        let Some(s) = sum_chunk(ctx, scratch, off, CSUM_CHUNK as u32, sum) else {
            return false;
        };
        sum = s;
        off += CSUM_CHUNK as u32;
    }
    // The rest, rounded up to whole words with zeros: an odd tail is summed
    // as if padded with a zero byte, as the checksum defines.
    let rest = len & (CSUM_CHUNK as u32 - 1);
    if rest != 0 {
        let Some(s) = sum_chunk(ctx, scratch, off, rest, sum) else {
            return false;
        };
        sum = s;
    }
    if csum_off > 0xff {
        return false;
    }
    let mut check = !fold(sum);
    if udp && check == 0 {
        // UDP's 0 means "no checksum".
        check = 0xffff;
    }
    let Ok(field) = ptr_at::<XdpContext, [u8; 2]>(ctx, (csum_off & 0xff) as usize) else {
        return false;
    };
    unsafe { *field = check.to_ne_bytes() };
    true
}

/// Adds the `n` bytes (1 to [`CSUM_CHUNK`]) at `off` to `sum`, the bytes of
/// the last word past them taken as zeros.
#[inline(always)]
fn sum_chunk(
    ctx: &XdpContext,
    scratch: &mut CsumScratch,
    off: u32,
    n: u32,
    sum: u32,
) -> Option<u32> {
    if n == 0 || n > CSUM_CHUNK as u32 {
        return None;
    }
    let buf = scratch.words.as_mut_ptr();
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, off, buf.cast(), n) } != 0 {
        return None;
    }
    let tail = n & 3;
    if tail != 0 {
        let w = scratch.words.get_mut((n >> 2) as usize)?;
        let mut b = w.to_ne_bytes();
        b[3] = 0;
        if tail < 3 {
            b[2] = 0;
        }
        if tail < 2 {
            b[1] = 0;
        }
        *w = u32::from_ne_bytes(b);
    }
    let rounded = (n + 3) & !3;
    let r = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            scratch.words.as_mut_ptr(),
            rounded,
            sum,
        )
    };
    if r < 0 {
        return None;
    }
    Some(r as u32)
}

//! One trait over `XdpContext` and `TcContext`, so parsing, conntrack and NAT
//! are written once and used from both hooks, and [`ptr_at`], the one place
//! packet memory is bounds-checked.
//!
//! The checksum methods differ underneath: TC uses the kernel helpers, which
//! understand `CHECKSUM_PARTIAL` socket buffers (locally generated or
//! offloaded guest packets); XDP has no such state and patches the checksum
//! field incrementally (RFC 1624). Callers do all direct packet writes first
//! and the checksum updates last, because the TC helpers invalidate packet
//! pointers.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::{TcContext, XdpContext},
};

use super::csum;

/// `flags` for [`PacketCtx::l4_csum_replace`]: the field size in the low bits.
pub const CSUM_FIELD_2: u64 = 2;
pub const CSUM_FIELD_4: u64 = 4;
/// The changed field is part of the L4 pseudo-header (an IP address).
pub const CSUM_PSEUDO: u64 = BPF_F_PSEUDO_HDR as u64;
/// UDP: a 0 checksum means "none" and stays 0; a computed 0 becomes 0xffff.
pub const CSUM_UDP: u64 = BPF_F_MARK_MANGLED_0 as u64;

pub trait PacketCtx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole packet, for byte counters.
    fn packet_len(&self) -> u32;
    /// The interface the packet arrived on (per-port counters).
    fn ingress_ifindex(&self) -> u32;
    /// Update the IPv4 header checksum at `off` for a field changing from
    /// `from` to `to` (`size` 2 or 4 bytes, values as they sit in memory).
    fn l3_csum_replace(&self, off: usize, from: u32, to: u32, size: u64) -> Result<(), ()>;
    /// Update an L4 checksum at `off`; `flags` = field size | CSUM_* bits.
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), ()>;
}

impl PacketCtx for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> u32 {
        self.len()
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        tc_ifindex(self)
    }
    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u32, to: u32, size: u64) -> Result<(), ()> {
        TcContext::l3_csum_replace(self, off, from as u64, to as u64, size).map_err(|_| ())
    }
    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), ()> {
        TcContext::l4_csum_replace(self, off, from as u64, to as u64, flags).map_err(|_| ())
    }
}

/// The interface a TC program's packet arrived on.
#[inline(always)]
pub fn tc_ifindex(ctx: &TcContext) -> u32 {
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex }
}

/// The interface a socket buffer was received on (`skb_iif`): on an egress
/// hook, 0 for a packet the host itself sent, the receiving interface for
/// one it forwards.
#[inline(always)]
pub fn tc_received_on(ctx: &TcContext) -> u32 {
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ingress_ifindex }
}

/// Whether the kernel moved a VLAN tag out of the frame into the socket
/// buffer (it does so for an outer 802.1Q/802.1ad tag before TC runs).
#[inline(always)]
pub fn tc_vlan_present(ctx: &TcContext) -> bool {
    unsafe { (*(ctx.as_ptr() as *const __sk_buff)).vlan_present != 0 }
}

impl PacketCtx for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        unsafe { (*self.ctx).ingress_ifindex }
    }
    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u32, to: u32, size: u64) -> Result<(), ()> {
        let field = ptr_at::<_, [u8; 2]>(self, off)?;
        let old = u16::from_ne_bytes(unsafe { *field });
        let new = csum::update(old, from, to, size == CSUM_FIELD_4);
        unsafe { *field = new.to_ne_bytes() };
        Ok(())
    }
    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), ()> {
        let field = ptr_at::<_, [u8; 2]>(self, off)?;
        let old = u16::from_ne_bytes(unsafe { *field });
        if flags & CSUM_UDP != 0 && old == 0 {
            return Ok(());
        }
        let mut new = csum::update(old, from, to, flags & 0xf == CSUM_FIELD_4);
        if flags & CSUM_UDP != 0 && new == 0 {
            new = 0xffff;
        }
        unsafe { *field = new.to_ne_bytes() };
        Ok(())
    }
}

/// A pointer to a `T` at `off` bytes into the packet, or `Err` if the packet
/// is shorter. The only place packet memory is bounds-checked. Read at least
/// two bytes: a one-byte check compiles into a comparison the verifier does
/// not take as a bounds check.
#[inline(always)]
pub fn ptr_at<C: PacketCtx, T>(ctx: &C, off: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + off) as *mut T)
}

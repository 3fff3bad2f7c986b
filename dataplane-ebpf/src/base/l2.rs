//! Ethernet: the one rewrite every path that forwards a frame makes.

use network_types::eth::EthHdr;

use super::ctx::{PacketCtx, ptr_at};

/// Sets the frame's destination and source MACs.
#[inline(always)]
pub fn set_macs<C: PacketCtx>(ctx: &C, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), ()> {
    let eth = ptr_at::<C, EthHdr>(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = *dst;
        (*eth).src_addr = *src;
    }
    Ok(())
}

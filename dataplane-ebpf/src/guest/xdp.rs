//! `vxdp_guest_xdp`, XDP on a tap guest port (`--guest-xdp`): the guest
//! port's code (`ingress`, then `nat4`, `route` or `nat6` by tail call in
//! `VXDP_GUEST_XDP_JUMP`) run in the tap's writer, before a socket buffer
//! exists. What it cannot finish goes on to the port's TC program
//! untouched (see [`super::port::GuestHook`]).
//!
//! Which frames reach native XDP on a tap (`drivers/net/tun.c`): a write
//! from a non-blocking fd (QEMU's tap backend) of a frame whose virtio-net
//! header has no GSO type and that fits a page with its headroom runs the
//! program on the frame as written (`tun_build_skb`); with NEEDS_CSUM its
//! TCP or UDP checksum field holds the folded pseudo-header sum, and no
//! socket buffer says so. A GSO frame, a larger one or a blocking write
//! runs it in generic mode, on a socket buffer built after a copy
//! (`do_xdp_generic`). A frame longer than the port's MTU (a GSO
//! super-frame) goes to TC first thing, and so does one whose checksum is
//! neither finished nor finishable ([`partial_csum::L4Csum::Unknown`]); TC
//! keeps the socket buffer's checksum and GSO state. An unfinished TCP or
//! UDP checksum (NEEDS_CSUM) is finished where the frame is about to be
//! redirected ([`super::port::GuestHook::finish_csum`]), if the frame is
//! one tun runs native XDP on ([`partial_csum::FINISH_MAX`]); frames passed
//! to the kernel keep the pseudo-header sum their socket buffer needs.

use aya_ebpf::{EbpfContext, bindings::xdp_action, helpers::bpf_check_mtu, programs::XdpContext};

use super::ingress;
use crate::{base::stats::Drop, flow::partial_csum};

/// `vxdp_guest_xdp`.
#[inline(always)]
pub fn entry(ctx: &XdpContext) -> Result<u32, Drop> {
    let mut mtu_len: u32 = 0;
    // 0: fits the receiving port's MTU (plus its link-layer header).
    let fits = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu_len, 0, 0) } == 0;
    if !fits || matches!(partial_csum::state(ctx), partial_csum::L4Csum::Unknown) {
        return Ok(xdp_action::XDP_PASS);
    }
    ingress::guest_ingress(ctx)
}

//! Outbound rate limits of guest ports (`<bandwidth><outbound>`): a token
//! bucket per port in `VXDP_RATE_LIMITS`, kept as a GCRA (see
//! `vxdp_common::RateLimit`). It runs first in the guest-port program, so
//! it meets every frame the guest sends, whichever path the frame takes
//! next (the bridge, a sibling's port, the uplink): libvirt's ingress police
//! action on the tap, which vxdp's own TC program would otherwise bypass.

use aya_ebpf::helpers::bpf_ktime_get_ns;

use super::maps::VXDP_RATE_LIMITS;

/// Whether a frame of `len` bytes from port `ifindex` conforms to its
/// bucket; charges it when it does. A port without a bucket conforms.
///
/// The bucket is read and written without a lock: two CPUs sending for the
/// same port at the same instant may each charge against the same state
/// and one charge is lost (at most one frame per such race, never a
/// growing debt); a guest's frames from one queue are handled in order on
/// one CPU.
#[inline(always)]
pub fn conforms(ifindex: u32, len: u32) -> bool {
    let Some(bucket) = VXDP_RATE_LIMITS.get_ptr_mut(&ifindex) else {
        return true;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let (cost, burst, tat) = unsafe {
        (
            (*bucket).cost_ns(len as u64),
            (*bucket).burst_ns,
            (*bucket).tat_ns,
        )
    };
    // Conforms while the bucket is at most a burst ahead of now.
    if tat > now.saturating_add(burst) {
        return false;
    }
    let start = if tat > now { tat } else { now };
    unsafe { (*bucket).tat_ns = start.saturating_add(cost) };
    true
}

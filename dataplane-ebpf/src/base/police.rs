//! Rate limits (`<bandwidth>`): token buckets in `VXDP_RATE_LIMITS`, kept
//! as a GCRA (see `vxdp_common::RateLimit`). A guest port's outbound bucket
//! is charged first in the guest-port program, so it meets every frame the
//! guest sends, whichever path the frame takes next (the bridge, a
//! sibling's port, the uplink): libvirt's ingress police action on the tap,
//! which vxdp's own TC program would otherwise bypass. A network's two
//! buckets (`rate_key`) stand for libvirt's shaping of the bridge device:
//! outbound is charged by the guest-port program for frames to the bridge's
//! MAC, inbound where frames reach guests from the host's side (the
//! uplink's deliveries, the bridge's egress).

use aya_ebpf::helpers::bpf_ktime_get_ns;

use vxdp_common::{NetworkConfig, network_flags, rate_key};

use super::maps::VXDP_RATE_LIMITS;

/// Whether a frame of `len` bytes into network `net_id` (`net`) from the
/// host's side conforms to the network's inbound bucket, if it has one.
#[inline(always)]
pub fn network_inbound(net: &NetworkConfig, net_id: u32, len: u32) -> bool {
    net.flags & network_flags::RATE_LIMITED_IN == 0 || conforms(rate_key::network_in(net_id), len)
}

/// Whether a frame of `len` bytes conforms to bucket `key` (a port's
/// ifindex or a `rate_key`); charges it when it does. No bucket conforms.
///
/// The bucket is read and written without a lock: two CPUs sending for the
/// same port at the same instant may each charge against the same state
/// and one charge is lost (at most one frame per such race, never a
/// growing debt); a guest's frames from one queue are handled in order on
/// one CPU.
#[inline(always)]
pub fn conforms(key: u32, len: u32) -> bool {
    let Some(bucket) = VXDP_RATE_LIMITS.get_ptr_mut(&key) else {
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

//! The clock of flow timestamps and flow-limit stamps.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

/// The dataplane's clock: `CLOCK_MONOTONIC_COARSE` (the clock of the
/// last tick, a few milliseconds behind `CLOCK_MONOTONIC` at most, read
/// without touching the clock source). Timeouts are seconds and the
/// refresh period a second, so a tick's error does not matter, and it
/// saves a TSC read per packet. Never ahead of userspace's
/// `CLOCK_MONOTONIC`, so the daemon never sees a timestamp from its future.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

//! Crash points for the fault tests: with `VXDP_TEST_KILL_AT=<point>` in
//! its environment, `vxdp` sends itself SIGKILL when it reaches `<point>`,
//! exactly as `kill -9` at that moment would. Tests use it to check that a
//! retry or `vxdp serve` brings the host back to a consistent state from
//! every point of `net-start`, `attach-interface` and `net-destroy`.
//!
//! Unset (always, outside tests), a point costs one environment lookup.

/// The environment variable naming the point to die at.
pub const KILL_AT: &str = "VXDP_TEST_KILL_AT";

/// Dies here (SIGKILL, no cleanup, no destructors) when `KILL_AT` names
/// `point`.
pub fn point(point: &str) {
    if std::env::var_os(KILL_AT).is_some_and(|v| v == point) {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

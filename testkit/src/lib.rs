//! What vxdp's tests, benchmarks and demo share: throwaway network
//! namespaces and topologies, the `vxdp` CLI driver, and packet builders.
//! Nothing here knows the dataplane's maps; the `BPF_PROG_TEST_RUN` world
//! that does lives in `vxdp-tests` (`progtest`). See `README.md` for how a
//! new test uses it.
//!
//! - [`netns`]: [`Netns`], a namespace with a unique name deleted in `Drop`
//!   (also when a test panics); commands inside it; entering it from a
//!   thread; reaping what killed processes left.
//! - [`topology`]: [`NatTopology`], wan + hypervisor + guests on veth, vxdp
//!   driven through its CLI with private state and pins.
//! - [`vxdp`]: the binary under test and how to run it; [`serve`]: `vxdp
//!   serve` as a child process.
//! - [`traffic`]: TCP/UDP servers and clients across namespaces.
//! - [`packet`], [`packet6`]: Ethernet/IPv4 and IPv6 frames with correct
//!   checksums, and readers that recompute them.
//! - [`frame_probe`]: counts the frames an interface receives (XDP or
//!   socket-buffer path) without the dataplane.
//! - [`vm`]: a real QEMU guest on a tap.

pub mod frame_probe;
pub mod netns;
pub mod packet;
pub mod packet6;
pub mod serve;
pub mod tap_writer;
pub mod topology;
pub mod traffic;
pub mod vm;
pub mod vxdp;

pub use netns::{Netns, reap_stale, run, unique_name};
pub use serve::Serve;
pub use topology::{
    DEFAULT_XML, Guest, NatTopology, OUTSIDE_HOST, OutsideChecksums, UPLINK_ADDR, WAN_ADDR,
};
pub use traffic::{fetch, pattern, serve_payload, udp_echo};
pub use vxdp::{run_vxdp, stats_counter, succeeded, vxdp_bin};

//! Map value layouts shared by the harness's eBPF programs (`benches/ebpf`,
//! which includes this file) and the userspace side. Only `core`, so it
//! compiles on both sides; every type is `#[repr(C)]`, explicitly padded and
//! size-checked.

/// Length of a generated frame: a 64-byte Ethernet frame without its FCS
/// (14 Ethernet + 20 IPv4 + 8 UDP + 18 payload).
pub const FRAME_LEN: usize = 60;

/// Offsets in the generated frame.
pub const OFF_IP_CSUM: usize = 24;
pub const OFF_IP_DST: usize = 30;
pub const OFF_UDP_SPORT: usize = 34;
pub const OFF_UDP_DPORT: usize = 36;
pub const OFF_UDP_CSUM: usize = 40;

/// `GenConfig::vary`: which port changes from flow to flow.
pub const VARY_SRC_PORT: u32 = 0;
pub const VARY_DST_PORT: u32 = 1;

/// Generator configuration (array map `GEN_CONFIG`, index 0).
///
/// Packet number `n` (a per-CPU sequence) belongs to flow `f = n % flows`;
/// its varying port is `template port + f % ports_per_dst` and its
/// destination address `template destination + f / ports_per_dst`. The
/// template's checksums are those of flow 0; the program updates them
/// incrementally.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GenConfig {
    /// The frame of flow 0 (first [`FRAME_LEN`] bytes), checksums filled in.
    pub frame: [u8; 64],
    pub flows: u32,
    pub ports_per_dst: u32,
    /// [`VARY_SRC_PORT`] or [`VARY_DST_PORT`].
    pub vary: u32,
    /// The XDP verdict to return: `XDP_TX` (3) to send the frame out of the
    /// ingress interface, `XDP_DROP` (1) to time the generator alone.
    pub verdict: u32,
}
const _: () = assert!(core::mem::size_of::<GenConfig>() == 80);

/// Ceiling forwarder configuration (array map `CEILING_CONFIG`, index 0):
/// rewrite the MACs, redirect out of `ifindex`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CeilingConfig {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<CeilingConfig>() == 16);

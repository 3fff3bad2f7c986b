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

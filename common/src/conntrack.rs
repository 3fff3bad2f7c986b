//! The connection-tracking table (`VXDP_CONNTRACK`, an LRU hash) and its
//! timeouts (`VXDP_TIMEOUTS`).
//!
//! A NATed flow has two entries: one keyed by the tuple as the guest sent it
//! (direction [`DIR_ORIGINAL`]), one keyed by the tuple the outside host's
//! replies carry (direction [`DIR_REPLY`]). Each entry says how to rewrite a
//! packet that matches it, so either direction is one lookup.

use bytemuck::{Pod, Zeroable};

use crate::user_pod;

/// IP protocol numbers used in keys.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Key of `VXDP_CONNTRACK`. For ICMP echo the identifier stands in for a
/// port: `src_port` = id in the original direction, `dst_port` = mapped id in
/// the reply direction, the other port 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ConntrackKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<ConntrackKey>() == 16);

pub const DIR_ORIGINAL: u8 = 0;
pub const DIR_REPLY: u8 = 1;

/// `ConntrackEntry::state` values.
pub mod ct_state {
    /// Seen in the original direction only.
    pub const NEW: u8 = 0;
    /// A reply was seen.
    pub const ESTABLISHED: u8 = 1;
    /// TCP: FIN seen in both directions, or an exact RST (see `tcp`):
    /// short timeout.
    pub const CLOSING: u8 = 2;
    /// TCP: the guest sent FIN, the outside has not (half-closed; the
    /// established timeout still applies).
    pub const FIN_ORIGINAL: u8 = 3;
    /// TCP: the outside sent FIN, the guest has not.
    pub const FIN_REPLY: u8 = 4;
}

/// Defines a conntrack table's value type: the same fields, in the same
/// order, for both address families; only the address type and the tail
/// padding differ. (One definition, so the two tables cannot drift apart.)
macro_rules! conntrack_entry {
    ($(#[$doc:meta])* $name:ident, $addr:ty, { $($tail:tt)* }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
        pub struct $name {
            /// `bpf_ktime_get_ns()` of the last packet matching this entry.
            pub last_seen_ns: u64,
            /// Original direction: the NAT address that replaces the source.
            /// Reply direction: the guest address that replaces the destination.
            pub rewrite_addr: $addr,
            /// Same for the port (or ICMP/ICMPv6 echo id), network byte order.
            pub rewrite_port: u16,
            /// [`DIR_ORIGINAL`](crate::DIR_ORIGINAL) or [`DIR_REPLY`](crate::DIR_REPLY).
            pub direction: u8,
            /// One of [`ct_state`](crate::ct_state).
            pub state: u8,
            /// The guest's port (both directions): where replies are delivered.
            pub ifindex: u32,
            pub network_id: u16,
            /// TCP: [`tcp_known`](crate::tcp::tcp_known) bits, which of
            /// `tcp_end` and `tcp_ack` hold a value.
            pub tcp_known: u8,
            pub _pad0: u8,
            /// The guest's MAC (both directions): destination of delivered replies.
            pub mac: [u8; 6],
            pub _pad1: [u8; 2],
            /// TCP, host byte order: the end of the last segment this
            /// entry's direction sent, and the last acknowledgement it sent
            /// (see [`tcp`](crate::tcp); not mirrored onto the other entry).
            pub tcp_end: u32,
            pub tcp_ack: u32,
            $($tail)*
        }
    };
}
pub(crate) use conntrack_entry;

conntrack_entry!(
    /// Value of `VXDP_CONNTRACK`.
    ConntrackEntry,
    u32,
    {}
);
const _: () = assert!(core::mem::size_of::<ConntrackEntry>() == 40);

/// Index into `VXDP_TIMEOUTS` (an array of `u64` nanoseconds).
pub mod timeout_class {
    pub const TCP_NEW: u32 = 0;
    pub const TCP_ESTABLISHED: u32 = 1;
    pub const TCP_CLOSING: u32 = 2;
    pub const UDP_NEW: u32 = 3;
    pub const UDP_ESTABLISHED: u32 = 4;
    pub const ICMP: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Default timeouts in seconds, indexed by [`timeout_class`]. The kernel's
/// conntrack defaults, with "after FIN/RST" shortened to 10 s (FIN in both
/// directions, or an exact RST).
pub const DEFAULT_TIMEOUTS_S: [u64; timeout_class::COUNT as usize] = [
    120,     // TCP before a reply (kernel: SYN_SENT 120 s)
    432_000, // TCP established (kernel: 5 days)
    10,      // TCP after FIN both ways or an exact RST
    30,      // UDP before a reply
    120,     // UDP once replied (kernel: udp_timeout_stream)
    30,      // ICMP
];

/// The timeout class for an entry.
pub const fn timeout_class_of(proto: u8, state: u8) -> u32 {
    match proto {
        PROTO_TCP => match state {
            ct_state::NEW => timeout_class::TCP_NEW,
            // Half-closed: the other side may still send for long.
            ct_state::ESTABLISHED | ct_state::FIN_ORIGINAL | ct_state::FIN_REPLY => {
                timeout_class::TCP_ESTABLISHED
            }
            _ => timeout_class::TCP_CLOSING,
        },
        PROTO_UDP => match state {
            ct_state::NEW => timeout_class::UDP_NEW,
            _ => timeout_class::UDP_ESTABLISHED,
        },
        _ => timeout_class::ICMP,
    }
}

/// Default size of the conntrack table (entries; two per NATed flow).
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;

user_pod!(ConntrackKey, ConntrackEntry);

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
            /// The dataplane clock (`CLOCK_MONOTONIC_COARSE`) of the last packet matching this entry.
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

/// Per-CPU working memory of the IPv4 NAT program (`VXDP_NAT4_SCRATCH`):
/// the flow's key, a new flow's reply-direction key and entry while its NAT
/// port is chosen, the mapping the packet gets, and the route. Kept off the stack: the
/// port search runs in a `bpf_loop` callback, whose frame counts toward
/// the 512-byte limit on top of the NAT program's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Nat4Scratch {
    pub key: ConntrackKey,
    pub reply_key: ConntrackKey,
    pub reply: ConntrackEntry,
    pub mapping: ConntrackEntry,
    /// The route lookup's parameters and answer (the kernel's
    /// `struct bpf_fib_lookup`, 64 bytes).
    pub fib: [u32; 16],
}
const _: () = assert!(core::mem::size_of::<Nat4Scratch>() == 176);
user_pod!(Nat4Scratch);

/// Per-CPU working memory for the host-socket lookups of NAT's port choice
/// (`VXDP_SOCK_SCRATCH`): the kernel's `struct bpf_sock_tuple` (IPv4 uses
/// the first 12 bytes, IPv6 all 36). Kept off the stack: the lookup runs in
/// a `bpf_loop` callback, whose frame counts toward the 512-byte limit on
/// top of the NAT program's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockTupleScratch {
    /// As in packets (network byte order). IPv4: source address (the
    /// remote), destination address (the host), then the two ports in one
    /// word; IPv6: 4 + 4 address words, then the ports.
    pub words: [u32; 9],
}
const _: () = assert!(core::mem::size_of::<SockTupleScratch>() == 36);
user_pod!(SockTupleScratch);

/// Bytes [`CsumScratch`] takes per chunk: `bpf_csum_diff` sums at most 512
/// bytes per call.
pub const CSUM_CHUNK: usize = 512;

/// Per-CPU working memory of the XDP guest port's checksum finishing
/// (`VXDP_CSUM_SCRATCH`): one chunk of the L4 segment, copied out of the
/// frame by `bpf_xdp_load_bytes` and summed by `bpf_csum_diff`. A chunk is
/// at most [`CSUM_CHUNK`] bytes. Holds nothing between packets.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct CsumScratch {
    pub words: [u32; CSUM_CHUNK / 4],
    /// Never written: lets the verifier see that a chunk's length rounded
    /// up to whole words (at most `CSUM_CHUNK` + 3 as far as it can tell,
    /// `CSUM_CHUNK` in fact) stays inside the value.
    pub slack: u32,
}
const _: () = assert!(core::mem::size_of::<CsumScratch>() == CSUM_CHUNK + 4);
user_pod!(CsumScratch);

/// `FragKey::direction`: a guest's datagram leaving, a reply entering.
pub const FRAG_OUTBOUND: u8 = 0;
pub const FRAG_INBOUND: u8 = 1;

/// Key of `VXDP_FRAGS`: one IPv4 datagram whose first fragment NAT
/// translated, as its later fragments arrive (addresses in network byte
/// order, before translation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    /// The IPv4 identification field, as in the packet.
    pub id: u16,
    pub proto: u8,
    /// [`FRAG_OUTBOUND`] or [`FRAG_INBOUND`].
    pub direction: u8,
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 12);

/// Value of `VXDP_FRAGS`: what the datagram's later fragments get.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragEntry {
    /// When the first fragment was translated (the dataplane clock, `CLOCK_MONOTONIC_COARSE`).
    pub created_ns: u64,
    /// The new source (outbound: the NAT address) or destination
    /// (inbound: the guest's address).
    pub addr: u32,
    /// The guest's port: where inbound fragments go, and the only port
    /// whose outbound fragments follow the record.
    pub ifindex: u32,
    pub network_id: u16,
    /// Inbound: the guest's MAC (zero outbound).
    pub mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FragEntry>() == 24);
user_pod!(FragKey, FragEntry);

/// Value of `VXDP_FLOW_QUOTAS` (admission control): how many NAT flows a
/// guest port or a network holds, and how many it may. The programs count
/// a flow when they create it and uncount it when they remove it; flows
/// that time out unseen and LRU evictions are not uncounted, so `vxdp
/// serve` recounts from the tables on each pass and stamps `recounted_ns`.
/// A limit holds only while its count is fresh
/// ([`flow_quota::FRESH_NS`]): without the daemon, stale counts would
/// refuse a guest for flows it no longer has. `count` is read as signed: a
/// count gone below zero between two recounts admits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowQuota {
    pub count: u32,
    /// 0: no limit.
    pub limit: u32,
    /// `CLOCK_MONOTONIC` of the last recount (compared with the dataplane clock, which trails it by at most a tick); 0: never.
    pub recounted_ns: u64,
}
const _: () = assert!(core::mem::size_of::<FlowQuota>() == 16);
user_pod!(FlowQuota);

/// Keys of `VXDP_FLOW_QUOTAS`: a guest port's ifindex (below 2^31), a
/// network's id with the top bit set, and the two defaults the programs
/// give a port or network on its first flow (only `limit` used).
pub mod flow_quota {
    pub const NETWORK: u32 = 1 << 31;
    pub const GUEST_DEFAULT: u32 = u32::MAX;
    pub const NETWORK_DEFAULT: u32 = u32::MAX - 1;
    /// How long a recount keeps a limit in force: 2 minutes (the daemon
    /// recounts every `--reconcile-interval`, 10 s by default).
    pub const FRESH_NS: u64 = 120_000_000_000;
    /// Entries: every port and network, and the two defaults.
    pub const MAX_ENTRIES: u32 = crate::MAX_PORTS + crate::MAX_NETWORKS + 2;

    /// The key of network `id`'s quota.
    pub const fn network(id: u32) -> u32 {
        NETWORK | id
    }

    /// Whether `key` is a guest port's (not a network's or a default).
    pub const fn is_port(key: u32) -> bool {
        key & NETWORK == 0
    }

    /// Default limits for a table of `entries` entries (two per flow): a
    /// guest may hold a quarter of its flows, a network half.
    pub const fn defaults(entries: u32) -> (u32, u32) {
        (entries / 8, entries / 4)
    }

    /// Whether a quota counted `count` against `limit` refuses a new flow
    /// at `now_ns` (the programs' rule, here to be tested).
    pub const fn refuses(count: u32, limit: u32, recounted_ns: u64, now_ns: u64) -> bool {
        limit != 0
            && recounted_ns != 0
            && now_ns.saturating_sub(recounted_ns) <= FRESH_NS
            && count as i32 >= limit as i32
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn limits_hold_only_while_counts_are_fresh() {
            let s = 1_000_000_000u64;
            assert!(refuses(10, 10, 5 * s, 6 * s));
            assert!(!refuses(9, 10, 5 * s, 6 * s), "below the limit");
            assert!(!refuses(10, 0, 5 * s, 6 * s), "0: no limit");
            assert!(!refuses(10, 10, 0, 6 * s), "never recounted");
            assert!(!refuses(10, 10, 5 * s, 5 * s + FRESH_NS + 1), "stale");
            assert!(!refuses(u32::MAX, 10, 5 * s, 6 * s), "below zero admits");
            // A clock behind the stamp (another CPU) is fresh.
            assert!(refuses(10, 10, 6 * s, 5 * s));
        }
    }
}

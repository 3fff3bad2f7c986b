//! NAT66: the IPv6 connection-tracking table (`VXDP_CONNTRACK6`, an LRU
//! hash) and the per-network NAT66 configuration (`VXDP_NAT6`).
//!
//! The same two-entry scheme as IPv4 (`conntrack`): one entry keyed by the
//! tuple as the guest sent it ([`crate::DIR_ORIGINAL`]), one keyed by the tuple the
//! outside host's replies carry ([`crate::DIR_REPLY`]); each says how to rewrite a
//! packet that matches it. A separate table because the key is 40 bytes
//! instead of 16: sharing one would make every IPv4 lookup hash and compare
//! 40 bytes.

use bytemuck::{Pod, Zeroable};

use crate::user_pod;

/// IPv6 next-header number of ICMPv6 (keys use it as `proto`).
pub const PROTO_ICMPV6: u8 = 58;

/// Key of `VXDP_CONNTRACK6`. As in IPv4, the ICMPv6 echo identifier stands
/// in for a port: `src_port` = id in the original direction, `dst_port` =
/// mapped id in the reply direction, the other port 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Conntrack6Key {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<Conntrack6Key>() == 40);

crate::conntrack::conntrack_entry!(
    /// Value of `VXDP_CONNTRACK6`: [`crate::ConntrackEntry`] with an IPv6
    /// address.
    Conntrack6Entry,
    [u8; 16],
    {
        pub _pad2: u32,
    }
);
const _: () = assert!(core::mem::size_of::<Conntrack6Entry>() == 56);

/// `Nat6Config::flags` bits.
pub mod nat6_flags {
    /// The NAT network has an IPv6 `<ip>`: its guests' IPv6 leaves the
    /// network (routed unless [`MASQUERADE`] is set). A zeroed slot has it
    /// clear: the network's IPv6 reaches the host only.
    pub const IPV6: u32 = 1;
    /// `<nat ipv6='yes'>`: guests' IPv6 is masqueraded (NAT66) to
    /// `Nat6Config::addr`, and inbound IPv6 is refused unless it is a reply.
    pub const MASQUERADE: u32 = 2;
}

/// Value of `VXDP_NAT6[network id]`: a NAT network's IPv6 handling. Kept
/// out of `NetworkConfig` so the IPv4 fast path's entry stays small.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Nat6Config {
    /// [`nat6_flags`] bits.
    pub flags: u32,
    pub _pad0: u32,
    /// The address guests' IPv6 is masqueraded to (the uplink's global
    /// address), as it sits in packets.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Nat6Config>() == 24);

/// Value of the per-CPU `VXDP_NAT6_SCRATCH` (one slot, not pinned): the
/// keys and entries of a NAT66 flow being looked up or created. IPv6 keys
/// and entries are too large to all sit in the program's 512-byte stack
/// next to the route lookup's parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Nat6Scratch {
    pub key: Conntrack6Key,
    pub reply_key: Conntrack6Key,
    pub reply: Conntrack6Entry,
    /// The flow's original-direction entry: how to rewrite the packet.
    pub mapping: Conntrack6Entry,
    /// The route lookup's parameters and answer (the kernel's
    /// `struct bpf_fib_lookup`, 64 bytes).
    pub fib: [u32; 16],
}
const _: () = assert!(core::mem::size_of::<Nat6Scratch>() == 256);

user_pod!(Conntrack6Key, Conntrack6Entry, Nat6Config, Nat6Scratch);

//! Port forwards into NAT networks (`VXDP_FORWARDS`, a hash): a public
//! IPv4 address, protocol and port the uplink destination-NATs to a guest
//! (libvirt's domain `<portForward>`). The uplink program opens a
//! conntrack flow for the first packet of a forwarded conversation (a TCP
//! SYN, any UDP datagram); from then on the flow's two entries translate
//! both directions like a guest-opened NAT flow.

use bytemuck::{Pod, Zeroable};

use crate::{ConntrackEntry, ConntrackKey, FlowOwner, user_pod};

/// Entries of `VXDP_FORWARDS`: one per forwarded public port (a range
/// takes one per port).
pub const MAX_FORWARDS: u32 = 16_384;

/// Key of `VXDP_FORWARDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ForwardKey {
    /// The public address (network byte order): the uplink's NAT address
    /// or `<portForward address>`.
    pub addr: u32,
    /// The public port, network byte order.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ForwardKey>() == 8);

/// Value of `VXDP_FORWARDS`: where a forwarded port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Forward {
    /// The guest's address and port (network byte order).
    pub guest_addr: u32,
    pub guest_port: u16,
    pub network_id: u16,
    /// The guest's port (where the flow's packets are delivered).
    pub ifindex: u32,
    /// Only packets arriving on this interface are forwarded (the
    /// network's uplink, or `<portForward dev>`).
    pub in_ifindex: u32,
    /// The guest's MAC.
    pub mac: [u8; 6],
    pub _pad0: [u8; 2],
    /// Flows this forward opened (the programs add atomically).
    pub opened: u64,
}
const _: () = assert!(core::mem::size_of::<Forward>() == 32);

/// Per-CPU working memory of the uplink's flow opening for a forward
/// (`VXDP_FWD_SCRATCH`): the guest's key, both entries and the owner. Kept
/// off the stack: the uplink program's frame leaves room for little more
/// than the admission check's call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ForwardScratch {
    pub guest_key: ConntrackKey,
    pub reply: ConntrackEntry,
    pub original: ConntrackEntry,
    pub owner: FlowOwner,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ForwardScratch>() == 112);

/// Value of `VXDP_HOST_CONFIG` (an array of one): what the cgroup socket
/// programs (`vxdp_host_*`, port forwards used from the host itself) need
/// to know about the dataplane they belong to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostSocketConfig {
    /// The cookie of the network namespace the dataplane serves
    /// (`SO_NETNS_COOKIE` as the control plane saw it at load). The
    /// programs run for every socket of the machine (they are attached to
    /// the root cgroup) and act only on sockets of this namespace; 0 turns
    /// them off.
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<HostSocketConfig>() == 8);

/// Key of `VXDP_HOST_REVERSE`: a host socket (by its socket cookie) whose
/// destination a forward rewrote, and the guest address and port it now
/// talks to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct HostReverseKey {
    pub socket_cookie: u64,
    /// The guest's address and port (network byte order).
    pub guest_addr: u32,
    pub guest_port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<HostReverseKey>() == 16);

/// Value of `VXDP_HOST_REVERSE`: the forward's public address and port the
/// socket asked for, shown again as the source of what it receives
/// (`recvmsg`) and as its peer (`getpeername`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostReverse {
    pub public_addr: u32,
    pub public_port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<HostReverse>() == 8);

/// Entries of `VXDP_HOST_REVERSE` (an LRU: the oldest sockets' records go
/// first when it is full; such a socket then sees the guest's address).
pub const HOST_REVERSE_ENTRIES: u32 = 16_384;

user_pod!(
    ForwardKey,
    Forward,
    ForwardScratch,
    HostSocketConfig,
    HostReverseKey,
    HostReverse
);

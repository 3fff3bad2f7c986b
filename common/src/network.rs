//! Per-network configuration (`VXDP_NETWORKS`), per-port endpoints
//! (`VXDP_ENDPOINTS`) and the subnet trie (`VXDP_SUBNETS`).

use bytemuck::{Pod, Zeroable};

use crate::user_pod;

/// Network ids index `VXDP_NETWORKS` and the counter array. Id 0 is reserved
/// for traffic that belongs to no network (e.g. uplink frames passed on).
pub const MAX_NETWORKS: u32 = 64;

/// How many guest ports (`VXDP_ENDPOINTS`, `VXDP_PORTS`) one host can have.
pub const MAX_PORTS: u32 = 4096;

/// `NetworkConfig::mode` values. Numbers are stable: they are stored in maps.
pub mod mode {
    pub const NAT: u32 = 1;
    pub const ROUTE: u32 = 2;
    pub const OPEN: u32 = 3;
    /// No `<forward>`: guests reach each other and the host's address on
    /// the bridge only. Without an IPv4 `<ip>` (`NetworkConfig::gateway`
    /// 0) the host has no address there and guests reach only each other.
    pub const ISOLATED: u32 = 4;
    /// Host bridge (`<forward mode='bridge'>` with `<bridge name>`): guests
    /// on an existing bridge that also holds the uplink; vxdp adds
    /// anti-spoofing and counters and leaves forwarding to the bridge.
    pub const BRIDGE: u32 = 5;
    /// Direct (macvtap-like) modes: `<forward mode='bridge|vepa|private|
    /// passthrough'>` with `<interface dev>` (or `<forward dev>` and no
    /// `<bridge name>`). Guests sit on a physical NIC, no bridge; see
    /// [`DirectNic`].
    pub const DIRECT_BRIDGE: u32 = 6;
    pub const DIRECT_VEPA: u32 = 7;
    pub const DIRECT_PRIVATE: u32 = 8;
    pub const DIRECT_PASSTHROUGH: u32 = 9;
}

/// Whether `m` is one of the direct (macvtap-like) modes.
#[inline(always)]
pub const fn mode_direct(m: u32) -> bool {
    m >= mode::DIRECT_BRIDGE && m <= mode::DIRECT_PASSTHROUGH
}

/// Whether traffic of a network in `mode` may be routed to and from other
/// networks and the outside without NAT (libvirt's route and open modes).
#[inline(always)]
pub const fn mode_routes(m: u32) -> bool {
    m == mode::ROUTE || m == mode::OPEN
}

/// `NetworkConfig::flags` bits.
pub mod network_flags {
    /// The network is started; a zeroed slot has this bit clear.
    pub const ACTIVE: u32 = 1;
    /// `<forward dev>` was given: forwarded traffic may leave only through
    /// `uplink_ifindex` (route/open; NAT always uses the uplink).
    pub const FORWARD_DEV: u32 = 2;
    /// The host has an address on the bridge (the network has an `<ip>`).
    pub const HOST_ADDRESS: u32 = 4;
    /// The network's bridge filters the frames it forwards itself (a host
    /// bridge with VLAN filtering or netfilter calls): frames between
    /// guests cross it instead of going port to port.
    pub const BRIDGE_FILTERS: u32 = 8;
    /// Network-wide `<bandwidth><outbound>`: what its guests send to the
    /// host's bridge interface (the host, and everything routed or NATed
    /// through it) is charged to `VXDP_RATE_LIMITS[rate_key::network_out]`.
    pub const RATE_LIMITED_OUT: u32 = 16;
    /// Network-wide `<bandwidth><inbound>`: what reaches its guests from the
    /// host's side (the uplink's fast paths, the bridge's egress) is charged
    /// to `VXDP_RATE_LIMITS[rate_key::network_in]`.
    pub const RATE_LIMITED_IN: u32 = 32;
    /// The network has further IPv4 `<ip>` blocks: the host's addresses in
    /// them are `VXDP_ROUTES` entries (/32, gateway 0) that no guest may
    /// send from or announce.
    pub const MORE_HOST_ADDRESSES: u32 = 64;
}

/// Value of `VXDP_NETWORKS[id]`: what the programs need to know about one
/// network.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetworkConfig {
    /// One of [`mode`].
    pub mode: u32,
    /// [`network_flags`] bits.
    pub flags: u32,
    /// Subnet address (network byte order), already masked.
    pub subnet: u32,
    /// Subnet mask (network byte order).
    pub netmask: u32,
    /// The bridge's (gateway's) address (network byte order).
    pub gateway: u32,
    /// First and last SNAT address (network byte order); equal for one address.
    pub nat_addr_first: u32,
    pub nat_addr_last: u32,
    /// SNAT source port range, host byte order, inclusive.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Interface that traffic to the outside must leave by.
    pub uplink_ifindex: u32,
    /// The network's bridge: the L3 interface guests' packets arrive on.
    pub bridge_ifindex: u32,
    /// The bridge's MAC: source MAC of frames vxdp delivers to guests.
    pub bridge_mac: [u8; 6],
    pub _pad0: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<NetworkConfig>() == 48);

/// `Endpoint::flags` bits.
pub mod endpoint_flags {
    /// `Endpoint::mac` is known and enforced as the only source MAC.
    pub const MAC_KNOWN: u32 = 1;
    /// `Endpoint::ipv4` is known (static `<host>` or DHCP lease) and enforced
    /// as the guest's only IPv4 source.
    pub const IPV4_KNOWN: u32 = 2;
    /// `Endpoint::ipv6` is known (`attach-interface --ip` with an IPv6
    /// address) and enforced as the guest's only global IPv6 source;
    /// link-local and unspecified sources (neighbour discovery, duplicate
    /// address detection) stay allowed.
    pub const IPV6_KNOWN: u32 = 4;
    /// The port takes frames redirected by XDP (a tap: `tun_xdp_xmit`).
    /// Without it the uplink's XDP program never redirects to the port and
    /// leaves the frame to its TC program, whose socket-buffer redirect
    /// every device takes (a veth drops XDP frames unless its peer has
    /// NAPI, which vxdp does not control).
    pub const XDP_FRAMES: u32 = 8;
    /// The guest may serve its network: send IPv6 router advertisements and
    /// redirects, DHCPv4 and DHCPv6 server messages (`attach-interface
    /// --allow-services`). Without it they are dropped (`rogue_service`).
    pub const SERVICES_ALLOWED: u32 = 16;
    /// The guest's outbound traffic is policed: `VXDP_RATE_LIMITS[port
    /// ifindex]` holds its token bucket (`<bandwidth><outbound>`). Without
    /// the flag the programs never look the map up.
    pub const RATE_LIMITED: u32 = 32;
}

/// Value of `VXDP_RATE_LIMITS` (`<bandwidth><outbound>` of a guest port): a
/// token bucket kept as a GCRA ("virtual scheduling"): `tat_ns` is when the
/// bucket would be full again; a frame of `len` bytes advances it by `len`
/// times `ns_per_byte_q16 / 2^16` (from now when it lies in the past) and
/// is dropped (`rate_limited`) when that would put it more than `burst_ns`
/// ahead of now. Like libvirt's police action: an average rate and a burst,
/// no queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RateLimit {
    /// Nanoseconds per byte at the average rate, times 2^16.
    pub ns_per_byte_q16: u64,
    /// The burst (bytes) expressed as time at the average rate.
    pub burst_ns: u64,
    /// `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`): the theoretical arrival
    /// time; 0 = idle. Only the programs write it.
    pub tat_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateLimit>() == 24);
user_pod!(RateLimit);

impl RateLimit {
    /// A bucket for `bytes_per_sec` (at least 1) and `burst_bytes`.
    pub const fn new(bytes_per_sec: u64, burst_bytes: u64) -> RateLimit {
        let rate = if bytes_per_sec == 0 { 1 } else { bytes_per_sec };
        // 1e9 * 2^16 / rate fits in 64 bits for any rate >= 1.
        let ns_per_byte_q16 = (1_000_000_000u128 << 16) / rate as u128;
        let burst_ns = (burst_bytes as u128 * 1_000_000_000) / rate as u128;
        RateLimit {
            ns_per_byte_q16: ns_per_byte_q16 as u64,
            burst_ns: if burst_ns > u64::MAX as u128 {
                u64::MAX
            } else {
                burst_ns as u64
            },
            tat_ns: 0,
        }
    }

    /// The cost of `len` bytes in nanoseconds at the average rate.
    #[inline(always)]
    pub const fn cost_ns(&self, len: u64) -> u64 {
        (len * self.ns_per_byte_q16) >> 16
    }
}

/// Keys of `VXDP_RATE_LIMITS`: a guest port's ifindex (below 2^30), and a
/// network's two network-wide buckets.
pub mod rate_key {
    pub const NETWORK_OUT: u32 = 1 << 31;
    pub const NETWORK_IN: u32 = (1 << 31) | (1 << 30);

    /// Network `id`'s outbound bucket.
    pub const fn network_out(id: u32) -> u32 {
        NETWORK_OUT | id
    }

    /// Network `id`'s inbound bucket.
    pub const fn network_in(id: u32) -> u32 {
        NETWORK_IN | id
    }
}

/// Entries of `VXDP_RATE_LIMITS`: one per guest port, two per network.
pub const RATE_LIMIT_ENTRIES: u32 = crate::MAX_PORTS + 2 * crate::MAX_NETWORKS;

/// Value of `VXDP_ENDPOINTS[port ifindex]`: a guest port plugged into a
/// network.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint {
    pub network_id: u32,
    /// [`endpoint_flags`] bits.
    pub flags: u32,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    pub _pad0: [u8; 2],
    /// The guest's IPv4 address once known (network byte order), 0 if not.
    pub ipv4: u32,
    pub _pad1: u32,
    /// The guest's IPv6 address once known (as in packets), zero if not.
    pub ipv6: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 40);

/// Key of the `VXDP_SUBNETS` LPM trie: an IPv4 prefix (network byte order).
/// The trie's own key header (prefix length) is added by the map type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SubnetKey {
    pub addr: u32,
}
const _: () = assert!(core::mem::size_of::<SubnetKey>() == 4);

/// Value of `VXDP_SUBNETS`: which network owns the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SubnetOwner {
    pub network_id: u32,
    pub mode: u32,
}
const _: () = assert!(core::mem::size_of::<SubnetOwner>() == 8);

/// Value of `VXDP_ROUTES` (keyed like `VXDP_SUBNETS` by an IPv4 prefix): a
/// network's static `<route>` and the guest that is its gateway, which
/// alone may send from the prefix (it forwards for the hosts behind it);
/// the prefix is also a `VXDP_SUBNETS` entry of the network. With gateway
/// 0 the entry is a /32: the host's address in a further `<ip>` block,
/// which no guest may claim (the first block's is `NetworkConfig::gateway`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouteOwner {
    pub network_id: u32,
    /// The route's gateway (network byte order): a guest's address.
    pub gateway: u32,
}
const _: () = assert!(core::mem::size_of::<RouteOwner>() == 8);

/// Key of the `VXDP_SUBNETS6` LPM trie: an IPv6 prefix as it sits in
/// packets. Its value is a [`SubnetOwner`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Subnet6Key {
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Subnet6Key>() == 16);

/// Key of `VXDP_MACS`: a guest's MAC within its network (a layer-2 domain:
/// the network's bridge, or the NIC of a direct network).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MacKey {
    pub network_id: u32,
    pub mac: [u8; 6],
    pub _pad0: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<MacKey>() == 12);

/// Value of `VXDP_MACS`: the guest port that owns the MAC. Written with the
/// port's [`Endpoint`] (when its MAC is known) and removed with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MacPort {
    pub ifindex: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<MacPort>() == 8);

/// How many guest ports one NIC of a direct network can hold (the
/// programs clone broadcasts to them in a bounded loop).
pub const DIRECT_MAX_PORTS: usize = 64;

/// Value of `VXDP_DIRECT_NICS[nic ifindex]`: a physical NIC that is the
/// lower device of a direct network, and the guest ports attached to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct DirectNic {
    pub network_id: u32,
    /// One of the direct [`mode`]s.
    pub mode: u32,
    /// The NIC's own MAC: frames to it are the host's.
    pub mac: [u8; 6],
    pub _pad0: [u8; 2],
    /// How many entries of `ports` are used.
    pub port_count: u32,
    /// Guest port ifindexes, `port_count` of them.
    pub ports: [u32; DIRECT_MAX_PORTS],
}
const _: () = assert!(core::mem::size_of::<DirectNic>() == 20 + 4 * DIRECT_MAX_PORTS);

impl Default for DirectNic {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Value of `VXDP_DIRECT_PORTS[port ifindex]`: the NIC a direct network's
/// guest port is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DirectPort {
    pub nic_ifindex: u32,
    pub _pad0: u32,
}
const _: () = assert!(core::mem::size_of::<DirectPort>() == 8);

user_pod!(
    NetworkConfig,
    Endpoint,
    SubnetKey,
    SubnetOwner,
    RouteOwner,
    Subnet6Key,
    MacKey,
    MacPort,
    DirectNic,
    DirectPort
);

//! Map definitions. All maps are pinned by name so that a control-plane
//! restart adopts them (and the conntrack table survives).

use aya_ebpf::{
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray,
    },
};
use vxdp_common::{
    COUNTER_SLOTS, Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, Counter,
    CsumScratch, DEFAULT_CONNTRACK_ENTRIES, DirectNic, DirectPort, Endpoint, FlowQuota, Forward,
    ForwardKey, ForwardScratch, FragEntry, FragKey, HOST_REVERSE_ENTRIES, HostReverse,
    HostReverseKey, HostSocketConfig, MAX_FORWARDS, MAX_NETWORKS, MAX_PORTS, MacKey, MacPort,
    Nat4Scratch, Nat6Config, Nat6Scratch, NetworkConfig, PortCounterKey, RATE_LIMIT_ENTRIES,
    RateLimit, RouteOwner, SockTupleScratch, Subnet6Key, SubnetKey, SubnetOwner, flow_quota, jump,
    timeout_class,
};

#[map]
pub static VXDP_NETWORKS: Array<NetworkConfig> = Array::pinned(MAX_NETWORKS, 0);

#[map]
pub static VXDP_ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_PORTS, 0);

#[map]
pub static VXDP_SUBNETS: LpmTrie<SubnetKey, SubnetOwner> = LpmTrie::pinned(MAX_NETWORKS * 4, 0);

/// IPv6 prefixes of route/open/isolated networks (route-mode source checks,
/// inbound policy at the uplink).
#[map]
pub static VXDP_SUBNETS6: LpmTrie<Subnet6Key, SubnetOwner> = LpmTrie::pinned(MAX_NETWORKS * 4, 0);

/// Static `<route>`s of the networks (IPv4): which guest is the gateway
/// of a prefix, so that it alone may send from it.
#[map]
pub static VXDP_ROUTES: LpmTrie<SubnetKey, RouteOwner> = LpmTrie::pinned(MAX_NETWORKS * 4, 0);

/// Resized by the control plane at load time (`--conntrack-entries`).
#[map]
pub static VXDP_CONNTRACK: LruHashMap<ConntrackKey, ConntrackEntry> =
    LruHashMap::pinned(DEFAULT_CONNTRACK_ENTRIES, 0);

#[map]
pub static VXDP_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::pinned(MAX_NETWORKS * COUNTER_SLOTS, 0);

/// Guest MACs per network → their port: frames between guests of one
/// network go straight from port to port.
#[map]
pub static VXDP_MACS: HashMap<MacKey, MacPort> = HashMap::pinned(MAX_PORTS, 0);

/// Direct (macvtap-like) networks: each NIC that is a direct network's
/// lower device, with the network and the guest ports on it.
#[map]
pub static VXDP_DIRECT_NICS: HashMap<u32, DirectNic> = HashMap::pinned(MAX_NETWORKS * 4, 0);

/// Direct networks: each guest port's NIC.
#[map]
pub static VXDP_DIRECT_PORTS: HashMap<u32, DirectPort> = HashMap::pinned(MAX_PORTS, 0);

/// Guest ports, for XDP redirects from the uplink.
#[map]
pub static VXDP_PORTS: DevMapHash = DevMapHash::pinned(MAX_PORTS, 0);

/// Conntrack timeouts in nanoseconds, indexed by `timeout_class`.
#[map]
pub static VXDP_TIMEOUTS: Array<u64> = Array::pinned(timeout_class::COUNT, 0);

/// The guest-port program's paths (`vxdp_common::jump` slots), filled by
/// the control plane at load time.
#[map]
pub static VXDP_GUEST_JUMP: ProgramArray = ProgramArray::pinned(jump::COUNT, 0);

/// The same slots for the guest port's XDP program (a program array holds
/// programs of one type): NAT, route and NAT66; the others stay empty and
/// their frames go to the TC program.
#[map]
pub static VXDP_GUEST_XDP_JUMP: ProgramArray = ProgramArray::pinned(jump::COUNT, 0);

/// NAT66 flows (IPv6 keys are 40 bytes: their own table, so IPv4 lookups
/// stay on 16-byte keys). Resized with `VXDP_CONNTRACK` at load time.
#[map]
pub static VXDP_CONNTRACK6: LruHashMap<Conntrack6Key, Conntrack6Entry> =
    LruHashMap::pinned(DEFAULT_CONNTRACK_ENTRIES, 0);

/// NAT66 settings by network id (`<nat ipv6='yes'>`); a zeroed slot means
/// the network's IPv6 is routed without NAT.
#[map]
pub static VXDP_NAT6: Array<Nat6Config> = Array::pinned(MAX_NETWORKS, 0);

/// Admission control: NAT flows held and allowed per guest port and per
/// network, and the default limits (see `FlowQuota`, `flow_quota`).
#[map]
pub static VXDP_FLOW_QUOTAS: HashMap<u32, FlowQuota> = HashMap::pinned(flow_quota::MAX_ENTRIES, 0);

/// Bandwidth: guest port ifindex → its outbound token bucket (see
/// `RateLimit`); looked up only for ports with `endpoint_flags::RATE_LIMITED`.
#[map]
pub static VXDP_RATE_LIMITS: HashMap<u32, RateLimit> = HashMap::pinned(RATE_LIMIT_ENTRIES, 0);

/// Port forwards into NAT networks: public address, protocol and port →
/// the guest (see `Forward`); the uplink opens flows for them.
#[map]
pub static VXDP_FORWARDS: HashMap<ForwardKey, Forward> = HashMap::pinned(MAX_FORWARDS, 0);

/// The cgroup socket programs' settings: the namespace whose sockets they
/// serve (see `HostSocketConfig`), written by the control plane at load.
#[map]
pub static VXDP_HOST_CONFIG: Array<HostSocketConfig> = Array::pinned(1, 0);

/// Host sockets a forward rewrote: (socket, guest address and port) → the
/// public address and port the socket asked for. Not pinned: the programs
/// hold it, and a record matters only while its socket lives.
#[map]
pub static VXDP_HOST_REVERSE: LruHashMap<HostReverseKey, HostReverse> =
    LruHashMap::with_max_entries(HOST_REVERSE_ENTRIES, 0);

/// Per-CPU working memory of the uplink's flow opening for a forward
/// (see `ForwardScratch`). Not pinned: it holds nothing between packets.
#[map]
pub static VXDP_FWD_SCRATCH: PerCpuArray<ForwardScratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory of the NAT66 program (see `Nat6Scratch`). Not
/// pinned: it holds nothing between packets.
#[map]
pub static VXDP_NAT6_SCRATCH: PerCpuArray<Nat6Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory of the IPv4 NAT program (see `Nat4Scratch`). Not
/// pinned: it holds nothing between packets.
#[map]
pub static VXDP_NAT4_SCRATCH: PerCpuArray<Nat4Scratch> = PerCpuArray::with_max_entries(1, 0);

/// IPv4 datagrams whose first fragment NAT translated: where their later
/// fragments go (`flow::frag`). Not pinned: a record lives for one
/// datagram (30 s at most).
#[map]
pub static VXDP_FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU working memory of the host-socket lookups (see
/// `SockTupleScratch`). Not pinned: it holds nothing between packets.
#[map]
pub static VXDP_SOCK_SCRATCH: PerCpuArray<SockTupleScratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory of the XDP guest port's checksum finishing (see
/// `CsumScratch`). Not pinned: it holds nothing between packets.
#[map]
pub static VXDP_CSUM_SCRATCH: PerCpuArray<CsumScratch> = PerCpuArray::with_max_entries(1, 0);

/// XDP redirects to guest ports whose fate the kernel has not reported yet:
/// per CPU, by (target port, network, action slot). The uplink's XDP
/// program adds a frame when it redirects it; the tracepoint programs
/// (`refused`) take it out again when the kernel says it sent or dropped
/// it. The kernel flushes redirects on the CPU that made them, before that
/// CPU runs the next driver poll, so an entry never waits long. Preallocated:
/// tracepoint programs use it.
#[map]
pub static VXDP_XDP_INFLIGHT: PerCpuHashMap<PortCounterKey, Counter> =
    PerCpuHashMap::pinned(MAX_PORTS * 4, 0);

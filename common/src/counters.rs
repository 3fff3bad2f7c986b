//! Counters (`VXDP_COUNTERS`, a per-CPU array): for each network, one slot per
//! action and one per drop reason. Slot numbers are stable; the drop reasons'
//! numbers and names are the `reason` label of the metrics.

use bytemuck::{Pod, Zeroable};

use crate::user_pod;

/// Slots per network in `VXDP_COUNTERS`; index = network_id * SLOTS + slot.
pub const COUNTER_SLOTS: u32 = 128;
/// First slot used by drop reasons (slot = DROP_BASE + reason).
pub const DROP_BASE: u32 = 32;

/// Value of one counter slot (per CPU; userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
user_pod!(Counter);

/// What the programs did with a packet (slots 0..DROP_BASE).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Guest → outside, source-NATed and redirected to the uplink.
    SnatForwarded = 0,
    /// Outside → guest, reply destination-NATed and redirected to the guest.
    DnatForwarded = 1,
    /// Guest frame left to the bridge/kernel (ARP, DHCP, host, other guests).
    GuestPassed = 2,
    /// Uplink frame left to the kernel (not ours, or for the host).
    UplinkPassed = 3,
    /// A new NAT flow was created (two conntrack entries).
    ConntrackCreated = 4,
    /// A stale entry was removed to reuse its NAT port.
    ConntrackExpiredReused = 5,
    /// A reply-direction entry lost to LRU eviction was recreated.
    ConntrackRepaired = 6,
    /// Guest packet left to the kernel so it resolves the next hop's MAC.
    NeighbourResolve = 7,
    /// Guest → outside or another routed network without NAT (route/open),
    /// redirected by eBPF.
    RouteForwarded = 8,
    /// Outside → a route/open network: accepted and left to the kernel to
    /// route onto the bridge.
    RouteInbound = 9,
    /// Guest → another guest of the same network, redirected from port to
    /// port by eBPF (the bridge is not involved).
    PortForwarded = 10,
    /// Outside → a guest of a route/open network, redirected by eBPF from the
    /// uplink straight to the guest's port (next hop resolved on the bridge,
    /// guest MAC in `VXDP_MACS`).
    RouteInboundForwarded = 11,
    /// A NAT flow whose tuple a host socket took after the flow was set up
    /// was removed and its reply left to the host (checked once a second
    /// per flow on the uplink).
    FlowYieldedToHost = 12,
    /// A TCP RST of a tracked flow at a sequence number other than the
    /// exact one the receiver expects: forwarded (the endpoint judges it),
    /// the flow's state kept. A conntrack event, as the three above: the
    /// packet itself is counted under the action that forwarded it.
    TcpRstIgnored = 13,
    /// A port forward (`VXDP_FORWARDS`) opened a flow into a NAT network:
    /// a conntrack event, the packet itself is counted as `dnat_forwarded`.
    ForwardOpened = 14,
    /// A host socket of the dataplane's namespace connected (or sent an
    /// unconnected UDP datagram) to a port forward's public address and
    /// port: its destination was rewritten to the guest's (the cgroup
    /// socket programs). An event: no packet was looked at.
    HostForwarded = 15,
    // Direct (macvtap-like) networks; numbered from 20 to leave 11..19 to
    // other paths.
    /// Direct network: guest → another guest of the NIC, redirected to its
    /// port (direct bridge mode).
    DirectToGuest = 20,
    /// Direct network: guest → the wire (out of the NIC).
    DirectToWire = 21,
    /// Direct network: guest → the host (delivered as if received on the NIC).
    DirectToHost = 22,
    /// Direct network: frame from the wire → a guest's port (XDP redirect).
    DirectFromWire = 23,
    /// Direct network: the host → a guest's port (TC egress on the NIC).
    DirectFromHost = 24,
    /// Direct network: one copy of a broadcast/multicast frame cloned to a
    /// guest port.
    DirectFlooded = 25,
    /// Outside → guest: an ICMP error (destination unreachable, time
    /// exceeded, parameter problem) about a NAT flow, translated back (outer
    /// destination and the quoted packet's source) and redirected to the
    /// guest's port.
    IcmpErrorTranslated = 26,
}

impl Action {
    pub const ALL: [Action; 23] = [
        Action::SnatForwarded,
        Action::DnatForwarded,
        Action::GuestPassed,
        Action::UplinkPassed,
        Action::ConntrackCreated,
        Action::ConntrackExpiredReused,
        Action::ConntrackRepaired,
        Action::NeighbourResolve,
        Action::RouteForwarded,
        Action::RouteInbound,
        Action::PortForwarded,
        Action::RouteInboundForwarded,
        Action::FlowYieldedToHost,
        Action::TcpRstIgnored,
        Action::ForwardOpened,
        Action::HostForwarded,
        Action::DirectToGuest,
        Action::DirectToWire,
        Action::DirectToHost,
        Action::DirectFromWire,
        Action::DirectFromHost,
        Action::DirectFlooded,
        Action::IcmpErrorTranslated,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Action::SnatForwarded => "snat_forwarded",
            Action::DnatForwarded => "dnat_forwarded",
            Action::GuestPassed => "guest_passed",
            Action::UplinkPassed => "uplink_passed",
            Action::ConntrackCreated => "conntrack_created",
            Action::ConntrackExpiredReused => "conntrack_expired_reused",
            Action::ConntrackRepaired => "conntrack_repaired",
            Action::NeighbourResolve => "neighbour_resolve",
            Action::RouteForwarded => "route_forwarded",
            Action::RouteInbound => "route_inbound",
            Action::PortForwarded => "port_forwarded",
            Action::RouteInboundForwarded => "route_inbound_forwarded",
            Action::FlowYieldedToHost => "flow_yielded_to_host",
            Action::TcpRstIgnored => "tcp_rst_ignored",
            Action::ForwardOpened => "forward_opened",
            Action::HostForwarded => "host_forwarded",
            Action::DirectToGuest => "direct_to_guest",
            Action::DirectToWire => "direct_to_wire",
            Action::DirectToHost => "direct_to_host",
            Action::DirectFromWire => "direct_from_wire",
            Action::DirectFromHost => "direct_from_host",
            Action::DirectFlooded => "direct_flooded",
            Action::IcmpErrorTranslated => "icmp_error_translated",
        }
    }

    /// Whether this is a conntrack event (counted per network with no
    /// packet behind it, never per port) rather than what a packet got.
    pub const fn is_event(self) -> bool {
        matches!(
            self,
            Action::ConntrackCreated
                | Action::ConntrackExpiredReused
                | Action::ConntrackRepaired
                | Action::FlowYieldedToHost
                | Action::TcpRstIgnored
                | Action::ForwardOpened
                | Action::HostForwarded
        )
    }

    /// The direction label: from the guest or from the uplink.
    pub const fn direction(self) -> &'static str {
        match self {
            Action::DnatForwarded
            | Action::UplinkPassed
            | Action::RouteInbound
            | Action::RouteInboundForwarded
            | Action::FlowYieldedToHost
            | Action::ForwardOpened
            | Action::DirectFromWire
            | Action::IcmpErrorTranslated => "from_uplink",
            Action::DirectFromHost | Action::HostForwarded => "from_host",
            _ => "from_guest",
        }
    }

    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// Why a packet was dropped. The numbers are stable (they are in dashboards):
/// never renumber, only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Truncated frame or invalid IPv4 header (bad version/IHL/length).
    Malformed = 1,
    /// A fragment NAT cannot translate: an IPv4 fragment whose datagram's
    /// first fragment was not translated first, or an IPv6 fragment (NAT66).
    Fragment = 2,
    /// IP protocol vxdp does not translate (not TCP, UDP or ICMP).
    UnsupportedProtocol = 3,
    /// ICMP type vxdp does not translate (only echo is).
    UnsupportedIcmp = 4,
    /// Guest packet to the outside whose source is not in the network's subnet.
    SourceNotInSubnet = 5,
    /// No free NAT port for this destination after the bounded retries.
    NatPortExhausted = 6,
    /// The conntrack table refused the insert.
    ConntrackInsertFailed = 7,
    /// Inbound packet for a NAT network that no flow expects.
    UnsolicitedInbound = 8,
    /// The route to the destination does not leave through the network's uplink.
    RouteNotViaUplink = 9,
    /// IP forwarding is disabled in the kernel.
    ForwardingDisabled = 10,
    /// Packet larger than the egress MTU without the don't-fragment flag:
    /// NAT would need to fragment it (with DF the kernel answers
    /// "fragmentation needed" instead).
    FragmentationNeeded = 11,
    /// The port has a program but no endpoint entry, or the network is not active.
    UnknownPort = 12,
    /// The redirect helper failed.
    RedirectFailed = 13,
    /// Inbound reply whose TTL would expire here.
    TtlExpired = 14,
    /// A checksum helper failed.
    ChecksumUpdateFailed = 15,
    /// A guest sent a frame whose source MAC (Ethernet or ARP sender) is not
    /// its own.
    SpoofedMac = 16,
    /// A guest sent from an IP address (IPv4 or ARP sender) that is not its
    /// own, once its address is known.
    SpoofedSource = 17,
    /// Isolated network (no `<forward>`): the packet would leave the network
    /// or reach the host other than at its address on the bridge.
    IsolatedNetwork = 18,
    /// Very isolated network (no `<forward>`, no `<ip>`): the host has no
    /// address on it; guests reach only each other.
    HostNotReachable = 19,
    /// Addressed to a guest of another vxdp network, and the two do not route
    /// to each other (both must be route or open networks).
    OtherNetwork = 20,
    /// IPv6 that the network's mode does not forward (a NAT network's IPv6
    /// when the network has no IPv6 `<ip>`: nothing to route or NAT it for).
    Ipv6NotForwarded = 21,
    /// A tail call into a guest-port path failed (program array slot empty).
    TailCallFailed = 22,
    /// Direct private network: a frame between two of its guests (sent to
    /// a sibling, or reflected back by the external switch from one).
    DirectPrivate = 23,
    /// Direct network (bridge/passthrough): a guest's own frame came back
    /// from the wire (a hairpinning switch); it was delivered locally
    /// already.
    DirectReflected = 24,
    /// NAT66: a guest's IPv6 packet with extension headers (hop-by-hop,
    /// routing, destination options, ...) before its TCP/UDP/ICMPv6
    /// header; vxdp does not walk them, so it cannot translate the packet.
    Ipv6ExtensionHeaders = 30,
    /// Inbound to a route network with `<forward dev>` that arrived on
    /// another interface (libvirt accepts inbound only from that device).
    InboundNotViaForwardDev = 40,
    /// An XDP redirect to a guest port that the kernel refused after the
    /// program returned: the port could not take the frame (a tap nobody
    /// reads, a device that is down or has no XDP transmit, a full
    /// queue). Counted by the `xdp:xdp_devmap_xmit` and
    /// `xdp:xdp_redirect_err` tracepoint programs, which take the frame
    /// back out of the action it had been counted under.
    XdpRedirectRefused = 50,
    /// A guest frame with an 802.1Q/802.1ad VLAN tag (in the frame, or
    /// already moved into the socket buffer by the kernel): a guest must not
    /// pick the VLAN its frames leave on.
    VlanTagged = 51,
    /// A guest frame whose EtherType vxdp does not check (anything but
    /// IPv4, IPv6 and ARP: RARP, PPPoE, LLC/802.3 lengths, ...).
    UncheckedEtherType = 52,
    /// A guest acting as a network service for others without being allowed
    /// to on its port: IPv6 router advertisement or redirect, DHCPv4 server
    /// message (from port 67), DHCPv6 server message (from port 547).
    RogueService = 53,
    /// A guest's DHCP client message whose BOOTP client hardware address is
    /// not the frame's source MAC (dnsmasq keys leases on it: another
    /// guest's lease could be released or taken over).
    DhcpChaddrSpoofed = 54,
    /// A guest packet matching a NAT flow that another port created (a
    /// spoofed source riding another guest's mapping).
    FlowOfAnotherPort = 55,
    /// A packet whose conntrack entry disagrees with its flow's other
    /// entry (`flow::entries_agree`): a reply entry whose original now maps
    /// the guest's flow to another NAT port, or a guest's original entry
    /// whose NAT port another flow took after the reply entry was evicted.
    /// The stale entry is removed and the packet dropped rather than
    /// delivered to (or answered at) the wrong guest; the guest's next
    /// packet creates its flow anew.
    ConntrackMismatch = 56,
    // Admission control: numbered from 60.
    /// A guest's new NAT flow refused: the guest holds its flow limit
    /// (`--max-flows-per-guest`).
    GuestFlowLimit = 60,
    /// A guest's new NAT flow refused: its network holds its flow limit
    /// (`--max-flows-per-network`).
    NetworkFlowLimit = 61,
    // Bandwidth (`<bandwidth>`): numbered from 70.
    /// A guest's frame over its outbound rate (`<bandwidth><outbound
    /// average burst>` of its interface or portgroup): dropped at its
    /// port, as libvirt's ingress police action drops it.
    RateLimited = 70,
}

impl DropReason {
    pub const ALL: [DropReason; 36] = [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::UnsupportedProtocol,
        DropReason::UnsupportedIcmp,
        DropReason::SourceNotInSubnet,
        DropReason::NatPortExhausted,
        DropReason::ConntrackInsertFailed,
        DropReason::UnsolicitedInbound,
        DropReason::RouteNotViaUplink,
        DropReason::ForwardingDisabled,
        DropReason::FragmentationNeeded,
        DropReason::UnknownPort,
        DropReason::RedirectFailed,
        DropReason::TtlExpired,
        DropReason::ChecksumUpdateFailed,
        DropReason::SpoofedMac,
        DropReason::SpoofedSource,
        DropReason::IsolatedNetwork,
        DropReason::HostNotReachable,
        DropReason::OtherNetwork,
        DropReason::Ipv6NotForwarded,
        DropReason::TailCallFailed,
        DropReason::DirectPrivate,
        DropReason::DirectReflected,
        DropReason::Ipv6ExtensionHeaders,
        DropReason::InboundNotViaForwardDev,
        DropReason::XdpRedirectRefused,
        DropReason::VlanTagged,
        DropReason::UncheckedEtherType,
        DropReason::RogueService,
        DropReason::DhcpChaddrSpoofed,
        DropReason::FlowOfAnotherPort,
        DropReason::GuestFlowLimit,
        DropReason::NetworkFlowLimit,
        DropReason::ConntrackMismatch,
        DropReason::RateLimited,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::UnsupportedProtocol => "unsupported_protocol",
            DropReason::UnsupportedIcmp => "unsupported_icmp",
            DropReason::SourceNotInSubnet => "source_not_in_subnet",
            DropReason::NatPortExhausted => "nat_port_exhausted",
            DropReason::ConntrackInsertFailed => "conntrack_insert_failed",
            DropReason::UnsolicitedInbound => "unsolicited_inbound",
            DropReason::RouteNotViaUplink => "route_not_via_uplink",
            DropReason::ForwardingDisabled => "forwarding_disabled",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::UnknownPort => "unknown_port",
            DropReason::RedirectFailed => "redirect_failed",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::ChecksumUpdateFailed => "checksum_update_failed",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::IsolatedNetwork => "isolated_network",
            DropReason::HostNotReachable => "host_not_reachable",
            DropReason::OtherNetwork => "other_network",
            DropReason::Ipv6NotForwarded => "ipv6_not_forwarded",
            DropReason::TailCallFailed => "tail_call_failed",
            DropReason::DirectPrivate => "direct_private",
            DropReason::DirectReflected => "direct_reflected",
            DropReason::Ipv6ExtensionHeaders => "ipv6_extension_headers",
            DropReason::InboundNotViaForwardDev => "inbound_not_via_forward_dev",
            DropReason::XdpRedirectRefused => "xdp_redirect_refused",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::UncheckedEtherType => "unchecked_ethertype",
            DropReason::RogueService => "rogue_service",
            DropReason::DhcpChaddrSpoofed => "dhcp_chaddr_spoofed",
            DropReason::FlowOfAnotherPort => "flow_of_another_port",
            DropReason::GuestFlowLimit => "guest_flow_limit",
            DropReason::NetworkFlowLimit => "network_flow_limit",
            DropReason::ConntrackMismatch => "conntrack_mismatch",
            DropReason::RateLimited => "rate_limited",
        }
    }

    pub const fn slot(self) -> u32 {
        DROP_BASE + self as u32
    }
}

const _: () = assert!((Action::ALL.len() as u32) <= DROP_BASE);
const _: () = assert!(DROP_BASE + (DropReason::ALL.len() as u32) < COUNTER_SLOTS);
// Reasons are numbered with gaps (ranges reserved per feature): every slot
// must still fit in a network's counters.
const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(DropReason::ALL[i].slot() < COUNTER_SLOTS);
        i += 1;
    }
};

/// Index of a counter in `VXDP_COUNTERS`.
pub const fn counter_index(network_id: u32, slot: u32) -> u32 {
    network_id * COUNTER_SLOTS + slot
}

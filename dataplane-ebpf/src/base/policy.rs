//! Forwarding policy: which guest packets stay inside the network (left to
//! the bridge), and which inbound packets are refused; anti-spoofing; the
//! network settings the modes ask about (subnet owners, NAT66).

use aya_ebpf::maps::lpm_trie::Key;
use vxdp_common::{
    DropReason, Endpoint, Nat6Config, NetworkConfig, Subnet6Key, SubnetKey, SubnetOwner,
    endpoint_flags, mode, nat6_flags, network_flags,
};

use super::{
    ctx::PacketCtx,
    maps::{VXDP_NAT6, VXDP_NETWORKS, VXDP_ROUTES, VXDP_SUBNETS, VXDP_SUBNETS6},
    parse::{self, ArpSender, Ipv4, Ipv6},
};

/// 224.0.0.0/4 in memory order: the first octet is the lowest byte.
#[inline(always)]
pub fn is_multicast(addr: u32) -> bool {
    addr.to_ne_bytes()[0] & 0xf0 == 0xe0
}

/// Where a guest's packet is headed.
pub enum GuestDestination {
    /// Within the network, the host's bridge address, broadcast or
    /// multicast: the kernel bridge handles it (ARP, DHCP, mDNS, ...).
    /// libvirt never NATs 224.0.0.0/24 or 255.255.255.255 either.
    Stays,
    /// Leaves the network's subnet: subject to the mode's forwarding.
    Leaves,
}

#[inline(always)]
pub fn guest_destination(net: &NetworkConfig, ip: &Ipv4) -> GuestDestination {
    if ip.dst & net.netmask == net.subnet || ip.dst == u32::MAX || is_multicast(ip.dst) {
        GuestDestination::Stays
    } else {
        GuestDestination::Leaves
    }
}

/// A guest may only send to the outside from an address of its network's
/// subnets (the first `<ip>`'s, held in `net`, or any other prefix the
/// subnet trie gives network `net_id`); anything else is spoofed and must
/// not be forwarded.
#[inline(always)]
pub fn source_in_subnet(net: &NetworkConfig, net_id: u32, ip: &Ipv4) -> bool {
    own_subnet(net, net_id, ip.src)
}

#[inline(always)]
pub fn active(net: &NetworkConfig) -> bool {
    net.flags & network_flags::ACTIVE != 0
}

/// The network whose IPv4 subnet holds `dst`, if any.
#[inline(always)]
pub fn subnet_owner(dst: u32) -> Option<SubnetOwner> {
    VXDP_SUBNETS
        .get(&Key::new(32, SubnetKey { addr: dst }))
        .copied()
}

/// The network whose IPv6 subnet holds `dst`, if any.
#[inline(always)]
pub fn subnet6_owner(dst: &[u8; 16]) -> Option<SubnetOwner> {
    VXDP_SUBNETS6
        .get(&Key::new(128, Subnet6Key { addr: *dst }))
        .copied()
}

/// Compares MACs byte by byte (an array `==` may become a `bcmp` call,
/// which BPF has no implementation of).
#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

/// Anti-spoofing, MAC: a port with a known guest MAC sends only from it.
#[inline(always)]
pub fn mac_allowed(ep: &Endpoint, src: &[u8; 6]) -> bool {
    ep.flags & endpoint_flags::MAC_KNOWN == 0 || mac_eq(&ep.mac, src)
}

/// Anti-spoofing, IPv4: once the guest's address is known it is the only
/// source allowed. 0.0.0.0 stays allowed for DHCP (UDP) and ARP probes
/// (`udp_or_arp`), so a guest can (re)acquire its lease.
#[inline(always)]
pub fn ipv4_allowed(ep: &Endpoint, src: u32, udp_or_arp: bool) -> bool {
    ep.flags & endpoint_flags::IPV4_KNOWN == 0 || src == ep.ipv4 || (src == 0 && udp_or_arp)
}

/// Whether the port is the gateway of a static `<route>` of its network
/// whose prefix holds `src`: such a guest forwards for the hosts behind it
/// and may send from their addresses (IPv4 packets only; its ARP stays
/// pinned to its own address).
#[inline(always)]
pub fn routes_for(ep: &Endpoint, src: u32) -> bool {
    ep.flags & endpoint_flags::IPV4_KNOWN != 0
        && VXDP_ROUTES
            .get(&Key::new(32, SubnetKey { addr: src }))
            .is_some_and(|r| {
                r.network_id == ep.network_id && r.gateway != 0 && r.gateway == ep.ipv4
            })
}

/// Why an ARP packet's sender (MAC and IPv4) is refused, if it is. No
/// guest may claim its network's gateway address (`net`, for networks
/// with one), known or not.
#[inline(always)]
pub fn arp_refusal(
    ep: &Endpoint,
    net: Option<&NetworkConfig>,
    arp: &ArpSender,
) -> Option<DropReason> {
    if !mac_allowed(ep, &arp.mac) {
        return Some(DropReason::SpoofedMac);
    }
    if !ipv4_allowed(ep, arp.ipv4, true)
        || net.is_some_and(|n| claims_gateway(n, ep.network_id, arp.ipv4))
    {
        return Some(DropReason::SpoofedSource);
    }
    None
}

/// Whether `src` is one of network `net_id`'s own (host) addresses, which
/// no guest may send from: the first block's gateway, or (only asked when
/// the network has further blocks) a further block's host address.
#[inline(always)]
pub fn claims_gateway(net: &NetworkConfig, net_id: u32, src: u32) -> bool {
    (net.gateway != 0 && src == net.gateway)
        || (net.flags & network_flags::MORE_HOST_ADDRESSES != 0
            && VXDP_ROUTES
                .get(&Key::new(32, SubnetKey { addr: src }))
                .is_some_and(|r| r.network_id == net_id && r.gateway == 0))
}

#[inline(always)]
fn services_allowed(ep: &Endpoint) -> bool {
    ep.flags & endpoint_flags::SERVICES_ALLOWED != 0
}

/// IPv4 services a guest may not offer, and DHCP client messages that
/// speak for another MAC: a DHCP server message (from port 67) from a
/// port not allowed to serve; a client message (to port 67) whose BOOTP
/// client address is not the frame's source MAC, or that comes in
/// fragments (its client address could hide in a later one).
#[inline(always)]
pub fn ipv4_service_refusal<C: PacketCtx>(
    ctx: &C,
    ep: &Endpoint,
    ip: &Ipv4,
    eth_src: &[u8; 6],
) -> Option<DropReason> {
    if ip.proto != vxdp_common::PROTO_UDP || !ip.first_fragment {
        return None;
    }
    let Ok((sport, dport)) = parse::udp_ports(ctx, ip.l4_off) else {
        return Some(DropReason::Malformed);
    };
    if sport == parse::DHCP_SERVER_PORT {
        return (!services_allowed(ep)).then_some(DropReason::RogueService);
    }
    if dport == parse::DHCP_SERVER_PORT {
        if ip.fragment {
            return Some(DropReason::DhcpChaddrSpoofed);
        }
        return match parse::dhcp_chaddr(ctx, ip.l4_off) {
            Ok(chaddr) if mac_eq(&chaddr, eth_src) => None,
            Ok(_) => Some(DropReason::DhcpChaddrSpoofed),
            Err(()) => Some(DropReason::Malformed),
        };
    }
    None
}

/// IPv6 services a guest may not offer: router advertisements and
/// redirects, DHCPv6 server messages (from port 547), unless its port is
/// allowed to serve; and neighbour advertisements for a global address
/// that is not its own once its address is known.
#[inline(always)]
pub fn ipv6_service_refusal<C: PacketCtx>(ctx: &C, ep: &Endpoint, ip: &Ipv6) -> Option<DropReason> {
    let Ok((nh, off)) = parse::ipv6_upper(ctx, ip) else {
        return Some(DropReason::Malformed);
    };
    if nh == vxdp_common::PROTO_UDP {
        return match parse::udp_ports(ctx, off) {
            Ok((sport, _)) if sport == parse::DHCP6_SERVER_PORT && !services_allowed(ep) => {
                Some(DropReason::RogueService)
            }
            Ok(_) => None,
            Err(()) => Some(DropReason::Malformed),
        };
    }
    if nh != vxdp_common::PROTO_ICMPV6 {
        return None;
    }
    let Ok(t) = parse::icmpv6_type(ctx, off) else {
        return Some(DropReason::Malformed);
    };
    if (t == parse::ICMPV6_ROUTER_ADVERT || t == parse::ICMPV6_REDIRECT) && !services_allowed(ep) {
        return Some(DropReason::RogueService);
    }
    if t == parse::ICMPV6_NEIGH_ADVERT && ep.flags & endpoint_flags::IPV6_KNOWN != 0 {
        let Ok(target) = parse::neigh_advert_target(ctx, off) else {
            return Some(DropReason::Malformed);
        };
        if !parse::ipv6_link_scoped(&target)
            && u128::from_ne_bytes(target) != u128::from_ne_bytes(ep.ipv6)
        {
            return Some(DropReason::SpoofedSource);
        }
    }
    None
}

/// Isolated networks: whether an IPv4 packet in a frame sent to a group
/// (broadcast or multicast) MAC stays in the network. The host's stack
/// receives every such frame and delivers a unicast packet in it to any of
/// its addresses (the uplink's too), so "to the host" is decided at layer 3
/// as well: only broadcast, multicast, and the network's own subnet when
/// the host has an address on it (any of its `<ip>` blocks).
#[inline(always)]
pub fn isolated_group_frame_allowed(net: &NetworkConfig, net_id: u32, ip: &Ipv4) -> bool {
    ip.dst == u32::MAX
        || is_multicast(ip.dst)
        || (host_on_bridge(net) && own_subnet(net, net_id, ip.dst))
}

/// Whether `addr` is in one of network `net_id`'s IPv4 prefixes (the
/// first `<ip>`'s, held in `net`, or another the subnet trie gives it).
#[inline(always)]
pub fn own_subnet(net: &NetworkConfig, net_id: u32, addr: u32) -> bool {
    addr & net.netmask == net.subnet || subnet_owner(addr).is_some_and(|o| o.network_id == net_id)
}

/// Whether `src` is an IPv6 source the guest may send from: any until its
/// address is known; then that address, a link-local one (neighbour and
/// router discovery) or the unspecified one (duplicate address detection).
#[inline(always)]
pub fn ipv6_allowed(ep: &Endpoint, src: &[u8; 16]) -> bool {
    if ep.flags & endpoint_flags::IPV6_KNOWN == 0 || (src[0] == 0xfe && src[1] & 0xc0 == 0x80) {
        return true;
    }
    let a = u128::from_ne_bytes(*src);
    a == u128::from_ne_bytes(ep.ipv6) || a == 0
}

/// Whether the host has an address on the network's bridge (a network with
/// an `<ip>`); without one the network is "very isolated".
#[inline(always)]
pub fn host_on_bridge(net: &NetworkConfig) -> bool {
    net.flags & network_flags::HOST_ADDRESS != 0
}

/// The NAT66 settings of a network that masquerades its IPv6
/// (`<nat ipv6='yes'>`).
#[inline(always)]
pub fn masquerading6(net_id: u32) -> Option<&'static Nat6Config> {
    VXDP_NAT6
        .get(net_id)
        .filter(|c| c.flags & nat6_flags::MASQUERADE != 0)
}

/// Whether a NAT network has an IPv6 prefix (its IPv6 leaves the network).
#[inline(always)]
pub fn has_ipv6(net_id: u32) -> bool {
    VXDP_NAT6
        .get(net_id)
        .is_some_and(|c| c.flags & nat6_flags::IPV6 != 0)
}

/// Whether libvirt's firewall would refuse a packet entering a network
/// from outside it (received on `in_ifindex`), to an address of the
/// subnet `owner` owns (IPv6 if `ipv6`): NAT networks take no inbound
/// connections (a NAT network's routed IPv6, without NAT66, is treated as
/// route mode, as libvirt does); isolated networks take nothing; route
/// mode with `<forward dev>` takes only what arrives on that device; open
/// mode and route mode without it take everything. The uplink programs and
/// the bridges' egress program ask the same question.
#[inline(always)]
pub fn inbound_refusal(owner: &SubnetOwner, ipv6: bool, in_ifindex: u32) -> Option<DropReason> {
    let id = owner.network_id;
    match owner.mode {
        mode::NAT if !ipv6 || masquerading6(id).is_some() => Some(DropReason::UnsolicitedInbound),
        mode::ISOLATED => Some(DropReason::IsolatedNetwork),
        mode::ROUTE => {
            let net = VXDP_NETWORKS.get(id).filter(|n| active(n))?;
            (net.flags & network_flags::FORWARD_DEV != 0 && in_ifindex != net.uplink_ifindex)
                .then_some(DropReason::InboundNotViaForwardDev)
        }
        _ => None,
    }
}

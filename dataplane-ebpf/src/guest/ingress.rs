//! `vxdp_guest_in`, TC ingress of every guest port: every frame a guest
//! sends passes anti-spoofing first, then the network's mode decides: stay
//! in the network (left to the bridge, or straight to a sibling's port),
//! reach the host, NAT (tail call to `nat4`/`nat6`), route without NAT
//! (`route`), direct (`crate::direct`), or be dropped with a reason
//! (isolated networks, other networks).

use vxdp_common::{
    Action, DropReason, Endpoint, MacKey, NetworkConfig, PROTO_UDP, endpoint_flags, jump, mode,
    mode_routes, network_flags, rate_key,
};

use super::port::{GuestHook, pass, policed_elsewhere, port_network, tail};
use crate::base::{
    maps::{VXDP_MACS, VXDP_NETWORKS},
    parse::{
        self, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Ipv4, Ipv6, ParseError,
    },
    police,
    policy::{self, GuestDestination},
    stats::{Drop, count},
};

/// A unicast frame to another guest of the same network goes straight to
/// that guest's port (`VXDP_MACS`), past the bridge; anything else (the
/// host, broadcast, unknown MACs) returns `None` and takes the usual path.
/// Only called once the frame's sources passed anti-spoofing.
#[inline(always)]
fn to_sibling_port<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
) -> Option<Result<C::Verdict, Drop>> {
    if net.flags & network_flags::BRIDGE_FILTERS != 0 {
        return None;
    }
    let eth = parse::eth(ctx).ok()?;
    let mut key = MacKey {
        network_id: net_id,
        mac: [0; 6],
        _pad0: [0; 2],
    };
    key.mac = unsafe { (*eth).dst_addr };
    if key.mac[0] & 1 != 0 {
        return None;
    }
    let port = unsafe { VXDP_MACS.get(&key) }?.ifindex;
    if port == ctx.ingress_ifindex() {
        return None;
    }
    let verdict = ctx.to_port(port, net_id)?;
    if verdict.is_ok() {
        count(ctx, net_id, Action::PortForwarded);
    }
    Some(verdict)
}

/// `vxdp_guest_in`: anti-spoofing and the mode's policy, then the NAT or
/// routing program when the packet leaves the network.
#[inline(always)]
pub fn guest_ingress<C: GuestHook>(ctx: &C) -> Result<C::Verdict, Drop> {
    let (ifindex, endpoint, net) = port_network(ctx)?;
    let net_id = endpoint.network_id;
    if policed_elsewhere::<C>(endpoint, net) {
        return Ok(ctx.defer());
    }
    // The guest's outbound rate, before anything else: every path counts.
    if endpoint.flags & endpoint_flags::RATE_LIMITED != 0
        && !police::conforms(ifindex, ctx.packet_len())
    {
        return Err(Drop::new(DropReason::RateLimited, net_id));
    }
    let malformed = Drop::new(DropReason::Malformed, net_id);
    ctx.pull_headers();

    // Only frames whose contents the programs check go anywhere, in every
    // mode: a tag (which the kernel has already moved into the socket
    // buffer when it is the outer one) would pick the VLAN the frame
    // leaves on, and other EtherTypes carry addresses nothing vouches for.
    let ether_type = parse::ether_type(ctx).map_err(|_| malformed)?;
    if ctx.vlan_present() || ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(Drop::new(DropReason::VlanTagged, net_id));
    }
    if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 && ether_type != ETH_P_ARP {
        return Err(Drop::new(DropReason::UncheckedEtherType, net_id));
    }
    if vxdp_common::mode_direct(net.mode) {
        return tail(ctx, jump::DIRECT, net_id);
    }
    let eth = parse::eth(ctx).map_err(|_| malformed)?;
    // Compared in place: copies of the MACs would only add verifier state.
    if !policy::mac_allowed(endpoint, unsafe { &(*eth).src_addr }) {
        return Err(Drop::new(DropReason::SpoofedMac, net_id));
    }
    let to_host_l3 = policy::mac_eq(unsafe { &(*eth).dst_addr }, &net.bridge_mac);
    let to_group = unsafe { (*eth).dst_addr[0] } & 1 != 0;
    // The network's outbound limit: what the host's bridge interface
    // receives (frames to its MAC, group frames); frames that leave the
    // network under another MAC are charged where they leave (IPv4 below).
    if (to_host_l3 || to_group) && !network_out_conforms(ctx, net, net_id) {
        return Err(Drop::new(DropReason::RateLimited, net_id));
    }
    match ether_type {
        ETH_P_IP => {
            let ip = match parse::ipv4(ctx) {
                Ok(ip) => ip,
                Err(ParseError::NotIpv4) => return pass(ctx, net_id),
                Err(ParseError::Malformed) => return Err(malformed),
            };
            if let Some(reason) =
                policy::ipv4_service_refusal(ctx, endpoint, &ip, unsafe { &(*eth).src_addr })
            {
                return Err(Drop::new(reason, net_id));
            }
            guest_ipv4(ctx, endpoint, net, net_id, &ip, to_host_l3, to_group)
        }
        ETH_P_IPV6 => {
            let ip = parse::ipv6(ctx).map_err(|_| malformed)?;
            if !policy::ipv6_allowed(endpoint, &ip.src) {
                return Err(Drop::new(DropReason::SpoofedSource, net_id));
            }
            if let Some(reason) = policy::ipv6_service_refusal(ctx, endpoint, &ip) {
                return Err(Drop::new(reason, net_id));
            }
            guest_ipv6(ctx, net, net_id, &ip, to_host_l3, to_group)
        }
        _ => {
            let arp = parse::arp_sender(ctx).map_err(|_| malformed)?;
            if let Some(reason) = policy::arp_refusal(endpoint, Some(net), &arp) {
                return Err(Drop::new(reason, net_id));
            }
            pass(ctx, net_id)
        }
    }
}

#[inline(always)]
fn guest_ipv4<C: GuestHook>(
    ctx: &C,
    endpoint: &Endpoint,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv4,
    to_host_l3: bool,
    to_group: bool,
) -> Result<C::Verdict, Drop> {
    if !(policy::ipv4_allowed(endpoint, ip.src, ip.proto == PROTO_UDP)
        || policy::routes_for(endpoint, ip.src))
        || policy::claims_gateway(net, net_id, ip.src)
    {
        return Err(Drop::new(DropReason::SpoofedSource, net_id));
    }
    if !to_host_l3 && let Some(verdict) = to_sibling_port(ctx, net, net_id) {
        return verdict;
    }
    if net.mode == mode::BRIDGE {
        // The host's bridge and router decide; vxdp only vouches for the
        // source.
        return pass(ctx, net_id);
    }
    if net.mode == mode::ISOLATED {
        // Frames to other guests and broadcasts stay on the bridge; only
        // what is addressed to the host at layer 2 is judged here, and
        // group frames at layer 3 (the host receives those too).
        if !to_host_l3 {
            if to_group && !policy::isolated_group_frame_allowed(net, net_id, ip) {
                let reason = if policy::host_on_bridge(net) {
                    DropReason::IsolatedNetwork
                } else {
                    DropReason::HostNotReachable
                };
                return Err(Drop::new(reason, net_id));
            }
            return pass(ctx, net_id);
        }
        if !policy::host_on_bridge(net) {
            return Err(Drop::new(DropReason::HostNotReachable, net_id));
        }
        let broadcast = net.subnet | !net.netmask;
        if ip.dst == net.gateway
            || ip.dst == broadcast
            || ip.dst == u32::MAX
            || policy::is_multicast(ip.dst)
        {
            return pass(ctx, net_id);
        }
        // A further <ip> block's host address (or broadcast): the host
        // owns nothing else in the network's prefixes, and forwards
        // nothing back out of an isolated network but into its own bridge.
        if policy::subnet_owner(ip.dst).is_some_and(|o| o.network_id == net_id)
            && ip.dst & net.netmask != net.subnet
        {
            return pass(ctx, net_id);
        }
        return Err(Drop::new(DropReason::IsolatedNetwork, net_id));
    }
    if let GuestDestination::Stays = policy::guest_destination(net, ip) {
        return pass(ctx, net_id);
    }
    let dst_owner = policy::subnet_owner(ip.dst);
    // Another of the network's own prefixes (a further <ip> block): the
    // host routes between its addresses on the bridge, as with libvirt.
    if dst_owner.is_some_and(|o| o.network_id == net_id) {
        return pass(ctx, net_id);
    }
    // Open networks filter nothing (anti-spoofing aside).
    if net.mode != mode::OPEN && !policy::source_in_subnet(net, net_id, ip) {
        return Err(Drop::new(DropReason::SourceNotInSubnet, net_id));
    }
    if let Some(owner) = dst_owner
        && owner.network_id != net_id
    {
        let other_gateway = VXDP_NETWORKS
            .get(owner.network_id)
            .map(|n| n.gateway)
            .unwrap_or(0);
        // The host's address on the other bridge is the host, which every
        // mode but isolated reaches (as with libvirt); its guests are only
        // reachable when both networks route.
        if ip.dst != other_gateway && !(mode_routes(net.mode) && mode_routes(owner.mode)) {
            return Err(Drop::new(DropReason::OtherNetwork, net_id));
        }
    }
    // Leaving the network, whatever MAC it was sent to: a guest must not
    // pass the network's outbound limit by not addressing the gateway.
    if !to_host_l3 && !to_group && !network_out_conforms(ctx, net, net_id) {
        return Err(Drop::new(DropReason::RateLimited, net_id));
    }
    let slot = if net.mode == mode::NAT {
        jump::NAT
    } else {
        jump::ROUTE
    };
    tail(ctx, slot, net_id)
}

/// Whether the frame conforms to the network's outbound bucket (charged
/// when it does), if the network has one.
#[inline(always)]
fn network_out_conforms<C: GuestHook>(ctx: &C, net: &NetworkConfig, net_id: u32) -> bool {
    net.flags & network_flags::RATE_LIMITED_OUT == 0
        || police::conforms(rate_key::network_out(net_id), ctx.packet_len())
}

#[inline(always)]
fn guest_ipv6<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv6,
    to_host_l3: bool,
    to_group: bool,
) -> Result<C::Verdict, Drop> {
    // Neighbour discovery, router solicitations, link-local and multicast
    // traffic, and frames to other guests stay on the bridge.
    if !to_host_l3 && let Some(verdict) = to_sibling_port(ctx, net, net_id) {
        return verdict;
    }
    // Isolated networks: a group frame reaches the host's stack, which
    // would deliver a global unicast packet in it to any of its addresses.
    if net.mode == mode::ISOLATED && to_group && !parse::ipv6_link_scoped(&ip.dst) {
        let own = policy::subnet6_owner(&ip.dst).is_some_and(|o| o.network_id == net_id);
        if !(own && policy::host_on_bridge(net)) {
            let reason = if policy::host_on_bridge(net) {
                DropReason::IsolatedNetwork
            } else {
                DropReason::HostNotReachable
            };
            return Err(Drop::new(reason, net_id));
        }
    }
    if !to_host_l3 || parse::ipv6_link_scoped(&ip.dst) || net.mode == mode::BRIDGE {
        return pass(ctx, net_id);
    }
    match net.mode {
        // A NAT network's IPv6 is masqueraded with <nat ipv6='yes'>,
        // otherwise routed without NAT (as libvirt does).
        mode::NAT if policy::masquerading6(net_id).is_some() => tail(ctx, jump::NAT6, net_id),
        mode::ROUTE | mode::OPEN | mode::NAT => tail(ctx, jump::ROUTE, net_id),
        mode::ISOLATED => {
            if let Some(owner) = policy::subnet6_owner(&ip.dst)
                && owner.network_id == net_id
            {
                return pass(ctx, net_id);
            }
            let reason = if policy::host_on_bridge(net) {
                DropReason::IsolatedNetwork
            } else {
                DropReason::HostNotReachable
            };
            Err(Drop::new(reason, net_id))
        }
        _ => Err(Drop::new(DropReason::UnknownPort, net_id)),
    }
}

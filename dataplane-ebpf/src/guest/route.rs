//! `vxdp_guest_route` (tail-called by `vxdp_guest_in`), route and open
//! modes (and the IPv6 of NAT networks without NAT66): guest packets leave
//! the network without NAT, routed by `bpf_fib_lookup` and redirected out
//! of the egress interface. Inbound traffic to these networks is accepted
//! at the uplink (`uplink::route_in`) or routed by the kernel.

use vxdp_common::{Action, DropReason, NetworkConfig, mode, mode_routes, network_flags};

use super::port::{GuestHook, pass, port_network, redirect};
use crate::base::{
    family::Family,
    fib::{self, Route},
    l2::set_macs,
    parse::{self, ETH_P_IP, Ipv4, Ipv6},
    policy,
    stats::Drop,
};

/// `vxdp_guest_route`.
#[inline(always)]
pub fn entry<C: GuestHook>(ctx: &C) -> Result<C::Verdict, Drop> {
    let (_, endpoint, net) = port_network(ctx)?;
    let net_id = endpoint.network_id;
    let malformed = Drop::new(DropReason::Malformed, net_id);
    if parse::ether_type(ctx).map_err(|_| malformed)? == ETH_P_IP {
        let ip = parse::ipv4(ctx).map_err(|_| malformed)?;
        return guest_route_v4(ctx, net, net_id, &ip);
    }
    let ip = parse::ipv6(ctx).map_err(|_| malformed)?;
    if net.mode == mode::NAT && !policy::has_ipv6(net_id) {
        // Without an IPv6 <ip> the network's IPv6 reaches the host only.
        return match lookup_v6(ctx, net, &ip) {
            Route::Local => pass(ctx, net_id),
            _ => Err(Drop::new(DropReason::Ipv6NotForwarded, net_id)),
        };
    }
    guest_route_v6(ctx, net, net_id, &ip)
}

/// What to do with a route lookup's answer.
enum Verdict {
    Redirect,
    /// Left to the kernel: to the host, unroutable (it answers with ICMP),
    /// larger than the egress MTU (it sends "fragmentation needed" / "packet
    /// too big"), or back into this network.
    Kernel,
}

#[inline(always)]
fn judge(net: &NetworkConfig, net_id: u32, route: &Route) -> Result<Verdict, Drop> {
    match route {
        Route::Forward(p) | Route::NoNeighbour(p) => {
            if p.ifindex == net.bridge_ifindex {
                return Ok(Verdict::Kernel);
            }
            if net.flags & network_flags::FORWARD_DEV != 0 && p.ifindex != net.uplink_ifindex {
                return Err(Drop::new(DropReason::RouteNotViaUplink, net_id));
            }
            Ok(Verdict::Redirect)
        }
        Route::ForwardingDisabled => Err(Drop::new(DropReason::ForwardingDisabled, net_id)),
        _ => Ok(Verdict::Kernel),
    }
}

/// IPv4 from a guest of a route/open network to outside its subnet.
#[inline(always)]
fn guest_route_v4<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv4,
) -> Result<C::Verdict, Drop> {
    if ip.fragment || ip.ttl <= 1 {
        // The kernel forwards fragments and answers expiring TTLs; the
        // policy (source, destination) was checked already.
        return pass(ctx, net_id);
    }
    let route = fib::route_v4(ctx, net.bridge_ifindex, ip.src, ip.dst, ip.proto, 0, 0, 0);
    forward(ctx, net, net_id, ip, &route)
}

#[inline(always)]
fn lookup_v6<C: GuestHook>(ctx: &C, net: &NetworkConfig, ip: &Ipv6) -> Route {
    fib::route_v6(ctx, net.bridge_ifindex, &ip.src, &ip.dst, ip.next_header, 0)
}

/// IPv6 from a guest of a route/open network (or a NAT network without
/// NAT66, whose IPv6 libvirt routes), addressed beyond the link.
#[inline(always)]
fn guest_route_v6<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv6,
) -> Result<C::Verdict, Drop> {
    if net.mode != mode::OPEN {
        let own = policy::subnet6_owner(&ip.src).is_some_and(|o| o.network_id == net_id);
        if !own {
            return Err(Drop::new(DropReason::SourceNotInSubnet, net_id));
        }
    }
    if let Some(owner) = policy::subnet6_owner(&ip.dst)
        && owner.network_id != net_id
        && !(mode_routes(net.mode) && mode_routes(owner.mode))
    {
        return Err(Drop::new(DropReason::OtherNetwork, net_id));
    }
    if ip.hop_limit <= 1 {
        return pass(ctx, net_id);
    }
    let route = lookup_v6(ctx, net, ip);
    forward(ctx, net, net_id, ip, &route)
}

/// Forwards one hop along `route` (MACs, TTL or hop limit and IPv4's
/// header checksum), or leaves the packet to the kernel.
#[inline(always)]
fn forward<C: GuestHook, F: Family>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ip: &F,
    route: &Route,
) -> Result<C::Verdict, Drop> {
    if let Verdict::Kernel = judge(net, net_id, route)? {
        return pass(ctx, net_id);
    }
    let (p, resolved) = match route {
        Route::Forward(p) => (p, true),
        Route::NoNeighbour(p) => (p, false),
        _ => return pass(ctx, net_id),
    };
    // XDP: what it cannot send, or whose checksum it cannot finish, goes
    // to the TC program, still untouched.
    if !ctx.can_forward(p, resolved) || !ctx.finish_csum() {
        return Ok(ctx.defer());
    }
    let malformed = Drop::new(DropReason::Malformed, net_id);
    if resolved {
        set_macs(ctx, &p.dmac, &p.smac).map_err(|_| malformed)?;
    }
    let ttl_word = ip.write_ttl(ctx).map_err(|_| malformed)?;
    F::header_csum_ttl(ctx, ttl_word)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    redirect(ctx, net_id, p, resolved, Action::RouteForwarded)
}

//! Route and open modes: guest packets leave the network without NAT,
//! routed by `bpf_fib_lookup` and redirected out of the egress interface
//! (TC ingress of the guest port). Inbound traffic to these networks is
//! accepted at the uplink (`uplink`) and redirected to the guest's port
//! (`route_in`) or routed by the kernel.

use aya_ebpf::programs::TcContext;
use vxdp_common::{Action, DropReason, NetworkConfig, mode, mode_routes, network_flags};

use crate::{
    ctx::{CSUM_FIELD_2, PacketCtx},
    forward::{self, Route},
    nat::set_macs,
    parse::{self, IP_CHECK_OFF, IP_TTL_OFF, IP6_HOP_LIMIT_OFF, Ipv4, Ipv6},
    policy,
    port::pass,
    stats::{Drop, count},
};

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

#[inline(always)]
fn redirect(ctx: &TcContext, net_id: u32, route: &Route) -> Result<i32, Drop> {
    let verdict =
        forward::tc_redirect(route).map_err(|_| Drop::new(DropReason::RedirectFailed, net_id))?;
    // Counted once the redirect is accepted: a failed one is a drop only.
    count(ctx, net_id, Action::RouteForwarded);
    Ok(verdict)
}

/// IPv4 from a guest of a route/open network to outside its subnet.
#[inline(always)]
pub fn guest_route_v4(
    ctx: &TcContext,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv4,
) -> Result<i32, Drop> {
    if ip.fragment || ip.ttl <= 1 {
        // The kernel forwards fragments and answers expiring TTLs; the
        // policy (source, destination) was checked already.
        return pass(ctx, net_id);
    }
    let route = forward::route_v4(ctx, net.bridge_ifindex, ip.src, ip.dst, ip.proto, 0, 0, 0);
    if let Verdict::Kernel = judge(net, net_id, &route)? {
        return pass(ctx, net_id);
    }
    let malformed = Drop::new(DropReason::Malformed, net_id);
    if let Route::Forward(p) = &route {
        set_macs(ctx, &p.dmac, &p.smac).map_err(|_| malformed)?;
    }
    // TTL shares a 16-bit checksum word with the protocol byte.
    let ttl_field = parse::ptr_at::<TcContext, [u8; 2]>(ctx, IP_TTL_OFF).map_err(|_| malformed)?;
    let old = u16::from_ne_bytes(unsafe { *ttl_field });
    let new = u16::from_ne_bytes([ip.ttl - 1, ip.proto]);
    unsafe { *ttl_field = new.to_ne_bytes() };
    PacketCtx::l3_csum_replace(ctx, IP_CHECK_OFF, old as u32, new as u32, CSUM_FIELD_2)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    redirect(ctx, net_id, &route)
}

#[inline(always)]
pub fn lookup_v6(ctx: &TcContext, net: &NetworkConfig, ip: &Ipv6) -> Route {
    forward::route_v6(ctx, net.bridge_ifindex, &ip.src, &ip.dst, ip.next_header, 0)
}

/// IPv6 from a guest of a route/open network (or a NAT network without
/// NAT66, whose IPv6 libvirt routes), addressed beyond the link.
#[inline(always)]
pub fn guest_route_v6(
    ctx: &TcContext,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv6,
) -> Result<i32, Drop> {
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
    if let Verdict::Kernel = judge(net, net_id, &route)? {
        return pass(ctx, net_id);
    }
    let malformed = Drop::new(DropReason::Malformed, net_id);
    if let Route::Forward(p) = &route {
        set_macs(ctx, &p.dmac, &p.smac).map_err(|_| malformed)?;
    }
    // IPv6 has no header checksum.
    let hop = parse::ptr_at::<TcContext, u8>(ctx, IP6_HOP_LIMIT_OFF).map_err(|_| malformed)?;
    unsafe { *hop = ip.hop_limit - 1 };
    redirect(ctx, net_id, &route)
}

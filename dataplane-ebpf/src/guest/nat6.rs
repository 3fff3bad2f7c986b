//! `vxdp_guest_nat6` (tail-called by `vxdp_guest_in`): NAT66, a NAT
//! network's guest IPv6 to the outside with `<nat ipv6='yes'>` (without it
//! a NAT network's IPv6 is routed without translation, as libvirt does:
//! `route`). Routed by `bpf_fib_lookup`, masqueraded by `flow::snat` like
//! IPv4, redirected out of the uplink; replies are `flow::snat::reply`'s at
//! the uplink. IPv6 keys and the route lookup's parameters are too large
//! for the stack next to each other: they live in a per-CPU map slot
//! (`VXDP_NAT6_SCRATCH`).

use vxdp_common::{Action, DropReason, NetworkConfig, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use super::port::{GuestHook, nat_exit, pass, port_network, redirect};
use crate::{
    base::{
        family::Family,
        fib::{self, FibParams},
        l2::set_macs,
        maps::VXDP_NAT6_SCRATCH,
        parse::{self, ICMPV6_ECHO_REQUEST, Ipv6},
        policy,
        stats::Drop,
    },
    flow::snat::{self, FlowSlots, NewFlow, Side},
};

/// `vxdp_guest_nat6`.
#[inline(always)]
pub fn entry<C: GuestHook>(ctx: &C) -> Result<C::Verdict, Drop> {
    let (ifindex, endpoint, net) = port_network(ctx)?;
    let net_id = endpoint.network_id;
    let ip = parse::ipv6(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    guest_nat6(ctx, net, net_id, ifindex, &ip)
}

/// The guest's IPv6 to the outside in a NAT66 network (tail-called from the
/// guest-port program once the frame is IPv6 addressed to the host's MAC
/// and beyond the link): SNAT to the NAT66 address, route, redirect.
#[inline(always)]
fn guest_nat6<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ifindex: u32,
    ip: &Ipv6,
) -> Result<C::Verdict, Drop> {
    let cfg =
        policy::masquerading6(net_id).ok_or(Drop::new(DropReason::Ipv6NotForwarded, net_id))?;
    let src_owner = policy::subnet6_owner(&ip.src);
    if !src_owner.is_some_and(|o| o.network_id == net_id) {
        // libvirt masquerades only its subnet's sources and forwards
        // nothing else.
        return Err(Drop::new(DropReason::SourceNotInSubnet, net_id));
    }
    if let Some(owner) = policy::subnet6_owner(&ip.dst) {
        if owner.network_id == net_id {
            // Back into this network through the host: the kernel routes it.
            return pass(ctx, net_id);
        }
        // A NAT network reaches no other network's guests.
        return Err(Drop::new(DropReason::OtherNetwork, net_id));
    }
    if ip.hop_limit <= 1 {
        // The kernel answers with "time exceeded" and forwards nothing.
        return pass(ctx, net_id);
    }
    match ip.next_header {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => {}
        parse::IPV6_NH_FRAGMENT => return Err(Drop::new(DropReason::Fragment, net_id)),
        nh if parse::ipv6_extension_header(nh) => {
            return Err(Drop::new(DropReason::Ipv6ExtensionHeaders, net_id));
        }
        _ => return Err(Drop::new(DropReason::UnsupportedProtocol, net_id)),
    }
    let l4 = parse::l4_v6(ctx, ip).map_err(|e| snat::l4_error(e, net_id))?;
    if ip.next_header == PROTO_ICMPV6 && l4.icmp_type != ICMPV6_ECHO_REQUEST {
        return Err(Drop::new(DropReason::UnsupportedIcmp, net_id));
    }

    let scratch = VXDP_NAT6_SCRATCH
        .get_ptr_mut(0)
        .ok_or(Drop::new(DropReason::ConntrackInsertFailed, net_id))?;
    let s = unsafe { &mut *scratch };
    s.key = ip.flow_key(&l4);
    // The route's parameters live in the scratch map, not on the stack.
    let params = unsafe { &mut *(s.fib.as_mut_ptr() as *mut FibParams) };
    let rc = fib::fib_lookup_v6(
        ctx,
        params,
        net.bridge_ifindex,
        &s.key.src_addr,
        &s.key.dst_addr,
        ip.next_header,
        0,
    );
    // IPv6 routers never fragment: a too-big packet is the kernel's to
    // answer with "packet too big".
    let Some(resolved) = nat_exit(rc, params, net, net_id, true)? else {
        return pass(ctx, net_id);
    };
    // XDP: a route it cannot send on, or a checksum it cannot finish, is
    // the TC program's (nothing written or recorded yet).
    if !ctx.can_forward(params, resolved) || !ctx.finish_csum() {
        return Ok(ctx.defer());
    }

    // Replies go to the MAC the guest actually sends from.
    let eth = parse::eth(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    let mac = unsafe { (*eth).src_addr };
    let flow = NewFlow::new(&cfg.addr, net, net_id, ifindex, mac, &l4.tcp);
    let slots = FlowSlots {
        key: &s.key,
        reply_key: &mut s.reply_key,
        reply: &mut s.reply,
        mapping: &mut s.mapping,
    };
    snat::flow_mapping(slots, &flow, ctx.as_ptr()).map_err(|reason| Drop::new(reason, net_id))?;
    let (nat_addr, nat_port) = (&s.mapping.rewrite_addr, s.mapping.rewrite_port);
    let params = unsafe { &*(s.fib.as_ptr() as *const FibParams) };
    if resolved {
        set_macs(ctx, &params.dmac, &params.smac)
            .map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    }
    snat::rewrite(ctx, ip, &l4, Side::Source, nat_addr, nat_port)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    redirect(ctx, net_id, params, resolved, Action::SnatForwarded)
}

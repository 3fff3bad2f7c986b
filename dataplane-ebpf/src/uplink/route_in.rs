//! Route and open modes, inbound (the uplink, XDP or TC): outside → a guest of
//! the network goes straight to the guest's port. `bpf_fib_lookup` from the
//! interface the packet arrived on must name the network's bridge and a
//! resolved neighbour there; the neighbour's MAC must be a guest's in
//! `VXDP_MACS`. Then both MACs are rewritten (bridge → guest), the TTL or
//! hop limit decremented (the IPv4 header checksum updated incrementally;
//! the L4 checksum is untouched) and the frame is redirected to the port:
//! from XDP only when the port and the frame allow it (`deliver`), otherwise
//! by the uplink's TC program, whose socket-buffer redirect keeps an
//! unfinished checksum unfinished for the guest's stack to accept.
//!
//! Everything else is the kernel's (`route_inbound`, passed on):
//! no neighbour yet (the kernel resolves it, later packets take the fast
//! path), expiring TTLs (it answers with ICMP), packets larger than the
//! bridge's MTU (it fragments or answers "too big"), the host's own
//! addresses and broadcasts, unknown guest MACs.

use vxdp_common::{Action, DropReason, MacKey, NetworkConfig};

use crate::{
    base::{
        ctx::{PacketCtx, ptr_at},
        family::Family,
        fib::{self, Route},
        l2::set_macs,
        maps::{VXDP_MACS, VXDP_NETWORKS, VXDP_PORTS},
        parse::{self, IP_OFF},
        police, policy,
        stats::{Drop, count},
    },
    flow::deliver::Hook,
};

/// Offset of the IPv4 total length and of the IPv6 payload length.
const IP_TOT_LEN_OFF: usize = IP_OFF + 2;
const IP6_PAYLOAD_LEN_OFF: usize = IP_OFF + 4;
const IPV6_HDR_LEN: u16 = 40;

/// Left to the kernel, which routes it onto the bridge.
#[inline(always)]
fn to_kernel<C: Hook>(ctx: &C, net_id: u32) -> Result<C::Verdict, Drop> {
    count(ctx, net_id, Action::RouteInbound);
    Ok(ctx.pass())
}

/// Outside → the subnet of route/open network `net_id` (IPv6 if `ipv6`).
#[inline(always)]
pub fn inbound<C: Hook>(ctx: &C, net_id: u32, ipv6: bool) -> Result<C::Verdict, Drop> {
    let Some(net) = VXDP_NETWORKS.get(net_id).filter(|n| policy::active(n)) else {
        return to_kernel(ctx, net_id);
    };
    // The mode's refusals (route mode's <forward dev>) are the caller's:
    // `policy::inbound_refusal`.
    let fast = if ipv6 {
        forward_v6(ctx, net, net_id)?
    } else {
        forward_v4(ctx, net, net_id)?
    };
    match fast {
        Some(verdict) => Ok(verdict),
        None => to_kernel(ctx, net_id),
    }
}

/// The guest port behind a route lookup's answer: a resolved neighbour on
/// the network's bridge whose MAC is a guest's of this network, with a
/// redirect slot.
#[inline(always)]
fn guest_port(net: &NetworkConfig, net_id: u32, route: &Route) -> Option<u32> {
    let Route::Forward(p) = route else {
        return None;
    };
    if p.ifindex != net.bridge_ifindex {
        return None;
    }
    let key = MacKey {
        network_id: net_id,
        mac: p.dmac,
        _pad0: [0; 2],
    };
    let port = unsafe { VXDP_MACS.get(&key) }?.ifindex;
    // Written together with the MAC entry; checked so a missing slot
    // leaves the packet to the kernel rather than dropping it.
    VXDP_PORTS.get_ifindex(port)?;
    Some(port)
}

/// A packet length from a 16-bit big-endian header field at `off`.
#[inline(always)]
fn be16_at<C: PacketCtx>(ctx: &C, off: usize) -> Option<u16> {
    let field = ptr_at::<C, [u8; 2]>(ctx, off).ok()?;
    Some(u16::from_be_bytes(unsafe { *field }))
}

/// IPv4: `Some(verdict)` when redirected to the guest's port, `None` when
/// the kernel should route it.
#[inline(always)]
fn forward_v4<C: Hook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
) -> Result<Option<C::Verdict>, Drop> {
    let Ok(ip) = parse::ipv4(ctx) else {
        return Ok(None);
    };
    if ip.ttl <= 1 {
        return Ok(None);
    }
    let Some(tot_len) = be16_at(ctx, IP_TOT_LEN_OFF) else {
        return Ok(None);
    };
    let route = fib::route_v4(
        ctx,
        PacketCtx::ingress_ifindex(ctx),
        ip.src,
        ip.dst,
        ip.proto,
        0,
        0,
        tot_len,
    );
    to_guest(ctx, net, net_id, &ip, &route)
}

/// IPv6: as [`forward_v4`].
#[inline(always)]
fn forward_v6<C: Hook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
) -> Result<Option<C::Verdict>, Drop> {
    let Ok(ip) = parse::ipv6(ctx) else {
        return Ok(None);
    };
    if ip.hop_limit <= 1 {
        return Ok(None);
    }
    let Some(payload_len) = be16_at(ctx, IP6_PAYLOAD_LEN_OFF) else {
        return Ok(None);
    };
    let tot_len = payload_len.saturating_add(IPV6_HDR_LEN);
    let route = fib::route_v6(
        ctx,
        PacketCtx::ingress_ifindex(ctx),
        &ip.src,
        &ip.dst,
        ip.next_header,
        tot_len,
    );
    to_guest(ctx, net, net_id, &ip, &route)
}

/// The redirect to the guest's port behind `route`, if there is one:
/// MACs bridge → guest, TTL (hop limit) − 1 and IPv4's header checksum.
#[inline(always)]
fn to_guest<C: Hook, F: Family>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ip: &F,
    route: &Route,
) -> Result<Option<C::Verdict>, Drop> {
    let Some(port) = guest_port(net, net_id, route) else {
        return Ok(None);
    };
    let Route::Forward(p) = route else {
        return Ok(None);
    };
    if !ctx.deliverable(port) {
        return Ok(Some(ctx.defer()));
    }
    if !police::network_inbound(net, net_id, ctx.packet_len()) {
        return Err(Drop::new(DropReason::RateLimited, net_id));
    }
    let malformed = Drop::new(DropReason::Malformed, net_id);
    // The lookup's source MAC is the bridge's, its destination the guest's.
    set_macs(ctx, &p.dmac, &p.smac).map_err(|_| malformed)?;
    let ttl_word = ip.write_ttl(ctx).map_err(|_| malformed)?;
    F::header_csum_ttl(ctx, ttl_word)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(port, net_id, Action::RouteInboundForwarded)
        .map(Some)
}

//! `vxdp_guest_nat` (tail-called by `vxdp_guest_in`): a NAT network's guest
//! IPv4 to the outside. Routed by `bpf_fib_lookup`, masqueraded by
//! `flow::snat` (the NAT port must not be one a host socket uses for that
//! remote) and redirected out of the uplink.

use aya_ebpf::programs::TcContext;
use vxdp_common::{Action, ConntrackEntry, ConntrackKey, DropReason, NetworkConfig, PROTO_ICMP};

use super::port::{pass, port_network};
use crate::{
    base::{
        fib::{self, Route},
        l2::set_macs,
        parse::{self, ICMP_ECHO_REQUEST, Ipv4},
        stats::{Drop, count},
    },
    flow::{
        snat::{self, FlowSlots, NewFlow, Side},
        sockets,
    },
};

/// `vxdp_guest_nat`.
#[inline(always)]
pub fn entry(ctx: &TcContext) -> Result<i32, Drop> {
    let (ifindex, endpoint, net) = port_network(ctx)?;
    let net_id = endpoint.network_id;
    let ip = parse::ipv4(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    guest_nat(ctx, net, net_id, ifindex, &ip)
}

/// Guest → outside in a NAT network (after anti-spoofing and the mode's
/// policy in `ingress`): SNAT, route, redirect.
#[inline(always)]
fn guest_nat(
    ctx: &TcContext,
    net: &NetworkConfig,
    net_id: u32,
    ifindex: u32,
    ip: &Ipv4,
) -> Result<i32, Drop> {
    let ip = *ip;
    if ip.fragment {
        return Err(Drop::new(DropReason::Fragment, net_id));
    }
    if ip.ttl <= 1 {
        // The kernel answers with ICMP time exceeded and forwards nothing.
        return pass(ctx, net_id);
    }
    let l4 = parse::l4(ctx, &ip).map_err(|e| snat::l4_error(e, net_id))?;
    if ip.proto == PROTO_ICMP && l4.icmp_type != ICMP_ECHO_REQUEST {
        return Err(Drop::new(DropReason::UnsupportedIcmp, net_id));
    }

    let route = fib::route_v4(
        ctx,
        net.bridge_ifindex,
        ip.src,
        ip.dst,
        ip.proto,
        l4.src_port,
        l4.dst_port,
        0,
    );
    match &route {
        Route::Forward(p) | Route::NoNeighbour(p) => {
            if p.ifindex != net.uplink_ifindex {
                return Err(Drop::new(DropReason::RouteNotViaUplink, net_id));
            }
        }
        // To the host itself (not NATed, as with libvirt), or unroutable
        // (the kernel answers and forwards nothing).
        Route::Local | Route::Unreachable => return pass(ctx, net_id),
        Route::ForwardingDisabled => {
            return Err(Drop::new(DropReason::ForwardingDisabled, net_id));
        }
        Route::FragNeeded => return Err(Drop::new(DropReason::FragmentationNeeded, net_id)),
        Route::Unsupported => return Err(Drop::new(DropReason::RouteNotViaUplink, net_id)),
    }

    let key = ConntrackKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // Replies go to the MAC the guest actually sends from.
    let eth = parse::eth(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    let nat_addr = nat_address(net, ip.src);
    let mac = unsafe { (*eth).src_addr };
    let flow = NewFlow::new(&nat_addr, net, net_id, ifindex, mac, &l4.tcp);
    let (mut reply_key, mut reply, mut mapping) = (
        ConntrackKey::default(),
        ConntrackEntry::default(),
        ConntrackEntry::default(),
    );
    let slots = FlowSlots {
        key: &key,
        reply_key: &mut reply_key,
        reply: &mut reply,
        mapping: &mut mapping,
    };
    // The guest's own port is kept only when no host socket uses it for
    // this remote: a guest must not take over the host's connections (or
    // its listeners' inbound connections from that remote port).
    let own_port_free = |rk: &ConntrackKey| {
        let ports = u32::from(key.dst_port) | u32::from(key.src_port) << 16;
        !sockets::host_owns_v4(ctx, key.proto, key.dst_addr, rk.dst_addr, ports)
    };
    snat::flow_mapping(slots, &flow, own_port_free).map_err(|r| Drop::new(r, net_id))?;

    if let Route::Forward(p) = &route {
        set_macs(ctx, &p.dmac, &p.smac).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    }
    snat::rewrite(
        ctx,
        &ip,
        &l4,
        Side::Source,
        &mapping.rewrite_addr,
        mapping.rewrite_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    let verdict =
        fib::tc_redirect(&route).map_err(|_| Drop::new(DropReason::RedirectFailed, net_id))?;
    // Counted once the redirect is accepted: a failed one is a drop only.
    count(ctx, net_id, Action::SnatForwarded);
    Ok(verdict)
}

/// Picks the NAT address for a guest: one of the configured range, stable
/// per guest address.
#[inline(always)]
fn nat_address(net: &NetworkConfig, guest: u32) -> u32 {
    let first = u32::from_be(net.nat_addr_first);
    let last = u32::from_be(net.nat_addr_last);
    if last <= first {
        return net.nat_addr_first;
    }
    let count = last - first + 1;
    (first + u32::from_be(guest).checked_rem(count).unwrap_or(0)).to_be()
}

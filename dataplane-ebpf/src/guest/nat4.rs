//! `vxdp_guest_nat` (tail-called by `vxdp_guest_in`): a NAT network's guest
//! IPv4 to the outside. Routed by `bpf_fib_lookup`, masqueraded by
//! `flow::snat` (the NAT port must not be one a host socket uses for that
//! remote) and redirected out of the uplink.

use aya_ebpf::EbpfContext;
use vxdp_common::{
    Action, ConntrackKey, DIR_ORIGINAL, DropReason, ForwardKey, Nat4Scratch, NetworkConfig,
    PROTO_ICMP, jump,
};

use super::port::{GuestHook, nat_exit, pass, port_network, redirect, tail};
use crate::{
    base::{
        fib::{self, FibParams},
        l2::set_macs,
        maps::{VXDP_CONNTRACK, VXDP_FORWARDS, VXDP_NAT4_SCRATCH},
        parse::{self, ICMP_ECHO_REQUEST, Ipv4},
        stats::Drop,
    },
    flow::{
        frag::{self, Fragments},
        snat::{self, FlowSlots, NewFlow, Side},
    },
};

/// `vxdp_guest_nat`.
#[inline(always)]
pub fn entry<C: GuestHook>(ctx: &C) -> Result<C::Verdict, Drop> {
    let (ifindex, endpoint, net) = port_network(ctx)?;
    let net_id = endpoint.network_id;
    let ip = parse::ipv4(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    guest_nat(ctx, net, net_id, ifindex, &ip)
}

/// Guest → outside in a NAT network (after anti-spoofing and the mode's
/// policy in `ingress`): SNAT, route, redirect.
#[inline(always)]
fn guest_nat<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ifindex: u32,
    ip: &Ipv4,
) -> Result<C::Verdict, Drop> {
    // The flow's key, entries, mapping and route live in a per-CPU slot
    // (see `Nat4Scratch`): the stack is shared with the port search.
    let scratch = VXDP_NAT4_SCRATCH
        .get_ptr_mut(0)
        .ok_or(Drop::new(DropReason::ConntrackInsertFailed, net_id))?;
    let scratch = unsafe { &mut *scratch };
    if !ip.first_fragment {
        // A later fragment: it follows its datagram's first one.
        return guest_nat_rest(ctx, net, net_id, ifindex, ip, scratch);
    }
    if ip.ttl <= 1 {
        // The kernel answers with ICMP time exceeded and forwards nothing.
        return pass(ctx, net_id);
    }
    let l4 = parse::l4(ctx, ip).map_err(|e| snat::l4_error(e, net_id))?;
    if ip.proto == PROTO_ICMP && l4.icmp_type != ICMP_ECHO_REQUEST {
        return Err(Drop::new(DropReason::UnsupportedIcmp, net_id));
    }
    // Replies go to the MAC the guest actually sends from (read before
    // the route rewrites the Ethernet header).
    let eth = parse::eth(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    let mac = unsafe { (*eth).src_addr };
    let ports = (l4.src_port, l4.dst_port);
    let routed = route_out(ctx, net, net_id, ip, ports, scratch)?;
    scratch.key = ConntrackKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // Not out of the uplink: the host's, unless it is a port forward's
    // public address and port (hairpin), or the target guest's answer in
    // such a flow.
    if routed.is_none() && !hairpin(&scratch.key) {
        return pass(ctx, net_id);
    }
    // XDP: the hairpin path, routes it cannot send on and checksums it
    // cannot finish are the TC program's, decided before anything is
    // written or recorded.
    let sendable = match routed {
        Some(resolved) => ctx.can_forward(params(scratch), resolved),
        None => !C::DEFERS,
    };
    if !sendable || !ctx.finish_csum() {
        return Ok(ctx.defer());
    }
    let nat_addr = nat_address(net, ip.src);
    let flow = NewFlow::new(&nat_addr, net, net_id, ifindex, mac, &l4.tcp);
    let slots = FlowSlots {
        key: &scratch.key,
        reply_key: &mut scratch.reply_key,
        reply: &mut scratch.reply,
        mapping: &mut scratch.mapping,
    };
    snat::flow_mapping(slots, &flow, ctx.as_ptr()).map_err(|r| Drop::new(r, net_id))?;
    set_route_macs(ctx, net_id, scratch, routed == Some(true))?;
    let mapping = &scratch.mapping;
    snat::rewrite(
        ctx,
        ip,
        &l4,
        Side::Source,
        &mapping.rewrite_addr,
        mapping.rewrite_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    // A first fragment: the rest of its datagram follows.
    ip.remember(false, &mapping.rewrite_addr, ifindex, net_id, &[0; 6]);
    match routed {
        Some(resolved) => redirect(
            ctx,
            net_id,
            params(scratch),
            resolved,
            Action::SnatForwarded,
        ),
        // Now it looks as it would from the outside: the uplink's path
        // opens or finds the forward's flow and delivers it.
        None => tail(ctx, jump::HAIRPIN, net_id),
    }
}

/// Whether a guest packet to a local address goes through a port forward
/// (hairpin): to a forward's public address and port, or the answer of a
/// forwarded flow's guest (its original entry rewrites the source to a
/// forward's public address and port). A subprogram: its keys stay off the
/// NAT program's frame.
#[inline(never)]
fn hairpin(key: &ConntrackKey) -> bool {
    let mut fk = ForwardKey {
        addr: key.dst_addr,
        port: key.dst_port,
        proto: key.proto,
        _pad: 0,
    };
    if unsafe { VXDP_FORWARDS.get(&fk) }.is_some() {
        return true;
    }
    let Some(e) = (unsafe { VXDP_CONNTRACK.get(key) }) else {
        return false;
    };
    if e.direction != DIR_ORIGINAL {
        return false;
    }
    fk.addr = e.rewrite_addr;
    fk.port = e.rewrite_port;
    unsafe { VXDP_FORWARDS.get(&fk) }.is_some()
}

/// The route lookup's parameters in the scratch slot.
#[inline(always)]
fn params(scratch: &mut Nat4Scratch) -> &mut FibParams {
    unsafe { &mut *(scratch.fib.as_mut_ptr() as *mut FibParams) }
}

/// Routes a guest packet from the bridge into the scratch slot:
/// `port::nat_exit`'s answer, a packet with DF being the kernel's to answer
/// when too big.
#[inline(always)]
fn route_out<C: EbpfContext>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ip: &Ipv4,
    ports: (u16, u16),
    scratch: &mut Nat4Scratch,
) -> Result<Option<bool>, Drop> {
    let p = params(scratch);
    let rc = fib::fib_lookup_v4(
        ctx,
        p,
        net.bridge_ifindex,
        ip.src,
        ip.dst,
        ip.proto,
        ports,
        0,
    );
    nat_exit(rc, p, net, net_id, ip.dont_fragment)
}

/// The next hop's MACs, when the route resolved them.
#[inline(always)]
fn set_route_macs<C: GuestHook>(
    ctx: &C,
    net_id: u32,
    scratch: &mut Nat4Scratch,
    resolved: bool,
) -> Result<(), Drop> {
    if !resolved {
        return Ok(());
    }
    let p = params(scratch);
    set_macs(ctx, &p.dmac, &p.smac).map_err(|_| Drop::new(DropReason::Malformed, net_id))
}

/// A later fragment of a guest's datagram (non-zero offset): it gets the
/// source its first fragment got, if that one was translated from this
/// port; otherwise it is dropped (`fragment`).
#[inline(always)]
fn guest_nat_rest<C: GuestHook>(
    ctx: &C,
    net: &NetworkConfig,
    net_id: u32,
    ifindex: u32,
    ip: &Ipv4,
    scratch: &mut Nat4Scratch,
) -> Result<C::Verdict, Drop> {
    let Some(e) = frag::follow(ip, false) else {
        return Err(Drop::new(DropReason::Fragment, net_id));
    };
    if e.ifindex != ifindex {
        return Err(Drop::new(DropReason::FlowOfAnotherPort, net_id));
    }
    if ip.ttl <= 1 {
        return pass(ctx, net_id);
    }
    let Some(resolved) = route_out(ctx, net, net_id, ip, (0, 0), scratch)? else {
        return pass(ctx, net_id);
    };
    if !ctx.can_forward(params(scratch), resolved) {
        return Ok(ctx.defer());
    }
    set_route_macs(ctx, net_id, scratch, resolved)?;
    frag::rewrite(ctx, ip, false, e.addr)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    redirect(
        ctx,
        net_id,
        params(scratch),
        resolved,
        Action::SnatForwarded,
    )
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

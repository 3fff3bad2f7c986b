//! Masquerade NAT: guest → outside at the guest port (TC ingress: SNAT,
//! route, redirect to the uplink) and outside → guest at the uplink (XDP:
//! reverse NAT of replies, redirect to the guest's port). Port choice and the
//! header rewrite with its checksum updates live here.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_get_prandom_u32, programs::TcContext};
use vxdp_common::{
    Action, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, DIR_REPLY, DropReason, NetworkConfig,
    PROTO_ICMP, PROTO_TCP, PROTO_UDP, ct_state,
};

use crate::{
    conntrack::{self, Reserve},
    ctx::{CSUM_FIELD_2, CSUM_FIELD_4, CSUM_PSEUDO, CSUM_UDP, PacketCtx},
    forward::{self, Route},
    hook::Hook,
    maps::VXDP_NETWORKS,
    parse::{
        self, ICMP_ECHO_REQUEST, IP_CHECK_OFF, IP_DST_OFF, IP_SRC_OFF, IP_TTL_OFF, Ipv4, L4,
        L4Error,
    },
    policy,
    stats::{Drop, count},
};

/// Candidate NAT ports tried before a new flow is refused as exhausted.
const NAT_PORT_TRIES: u32 = 32;

/// Bytes of headers the parser needs in the linear part of a socket buffer:
/// Ethernet, IPv4 with options, TCP without options.
pub const HEADERS_MAX: u32 = 14 + 60 + 20;

#[inline(always)]
fn l4_error(e: L4Error, network_id: u32) -> Drop {
    let reason = match e {
        L4Error::Truncated => DropReason::Malformed,
        L4Error::UnsupportedProtocol => DropReason::UnsupportedProtocol,
        L4Error::UnsupportedIcmp => DropReason::UnsupportedIcmp,
    };
    Drop::new(reason, network_id)
}

/// Guest → outside in a NAT network (TC ingress of the guest port, after
/// anti-spoofing and the mode's policy in `port`): SNAT, route, redirect.
#[inline(always)]
pub fn guest_nat(
    ctx: &TcContext,
    net: &NetworkConfig,
    net_id: u32,
    ifindex: u32,
    ip: &Ipv4,
) -> Result<i32, Drop> {
    let ip = *ip;
    let pass = |ctx: &TcContext| {
        count(ctx, net_id, Action::GuestPassed);
        Ok(TC_ACT_OK)
    };
    if ip.fragment {
        return Err(Drop::new(DropReason::Fragment, net_id));
    }
    if ip.ttl <= 1 {
        // The kernel answers with ICMP time exceeded and forwards nothing.
        return pass(ctx);
    }
    let l4 = parse::l4(ctx, &ip).map_err(|e| l4_error(e, net_id))?;
    if ip.proto == PROTO_ICMP && l4.icmp_type != ICMP_ECHO_REQUEST {
        return Err(Drop::new(DropReason::UnsupportedIcmp, net_id));
    }

    let route = forward::route_v4(
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
        Route::Local | Route::Unreachable => return pass(ctx),
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
    let now = conntrack::now();
    let mapping = match conntrack::lookup(&key, now) {
        Some(entry) => {
            // A flow belongs to the port that created it: another port
            // sending its 5-tuple spoofs that guest's source.
            if unsafe { (*entry).ifindex } != ifindex {
                return Err(Drop::new(DropReason::FlowOfAnotherPort, net_id));
            }
            conntrack::touch(&key, entry, l4.tcp_flags, now);
            unsafe { *entry }
        }
        None => {
            // Replies go to the MAC the guest actually sends from.
            let eth = parse::eth(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
            let guest_mac = unsafe { (*eth).src_addr };
            create_flow(
                ctx,
                &key,
                net,
                net_id,
                &guest_mac,
                ifindex,
                l4.tcp_flags,
                now,
            )?
        }
    };

    if let Route::Forward(p) = &route {
        set_macs(ctx, &p.dmac, &p.smac).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    }
    rewrite(
        ctx,
        &ip,
        &l4,
        Side::Source,
        mapping.rewrite_addr,
        mapping.rewrite_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    let verdict =
        forward::tc_redirect(&route).map_err(|_| Drop::new(DropReason::RedirectFailed, net_id))?;
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

/// Creates both conntrack entries of a new flow, choosing the NAT port: the
/// guest's own port when it is free and in range (as Linux masquerade does),
/// otherwise a bounded number of pseudo-random candidates. A port is free
/// when neither vxdp's table nor a host socket uses it for that remote.
#[inline(always)]
fn create_flow(
    ctx: &TcContext,
    key: &ConntrackKey,
    net: &NetworkConfig,
    net_id: u32,
    mac: &[u8; 6],
    port_ifindex: u32,
    tcp_flags: u8,
    now: u64,
) -> Result<ConntrackEntry, Drop> {
    if key.proto == PROTO_TCP && tcp_flags & parse::TCP_RST != 0 {
        // A reset for a flow we do not know: nothing to set up a mapping for.
        return Err(Drop::new(DropReason::UnsolicitedInbound, net_id));
    }
    let nat_addr = nat_address(net, key.src_addr);
    let (min, max) = if key.proto == PROTO_ICMP {
        (0u32, 65535u32)
    } else {
        (net.nat_port_min as u32, net.nat_port_max as u32)
    };
    let span = if max >= min { max - min + 1 } else { 1 };
    let own = u16::from_be(key.src_port) as u32;
    // checked_rem: a `%` would leave a divide-by-zero panic path the
    // verifier refuses.
    let start = unsafe { bpf_get_prandom_u32() }
        .checked_rem(span)
        .unwrap_or(0);

    let reply = ConntrackEntry {
        last_seen_ns: now,
        rewrite_addr: key.src_addr,
        rewrite_port: key.src_port,
        direction: DIR_REPLY,
        state: ct_state::NEW,
        ifindex: port_ifindex,
        network_id: net_id as u16,
        _pad0: 0,
        mac: *mac,
        _pad1: [0; 2],
    };
    let mut reply_key = ConntrackKey {
        src_addr: key.dst_addr,
        dst_addr: nat_addr,
        src_port: key.dst_port,
        dst_port: 0,
        proto: key.proto,
        _pad: [0; 3],
    };
    // The guest's own port is kept only when no host socket uses it for
    // this remote: a guest must not take over the host's connections (or
    // its listeners' inbound connections from that remote port). Chosen
    // before the loop, so the loop's body does not fork on it.
    let ports = u32::from(key.dst_port) | u32::from(key.src_port) << 16;
    let first = if own >= min
        && own <= max
        && !crate::sockets::host_owns_v4(ctx, key.proto, key.dst_addr, nat_addr, ports)
    {
        own
    } else {
        min + start
    };
    let mut reserved = false;
    for i in 0..NAT_PORT_TRIES {
        let port = if i == 0 {
            first
        } else {
            min + (start + i).checked_rem(span).unwrap_or(0)
        };
        reply_key.dst_port = (port as u16).to_be();
        match conntrack::reserve_reply(&reply_key, &reply, now) {
            Reserve::Reserved => {
                reserved = true;
                break;
            }
            Reserve::Taken => {}
            Reserve::Failed => {
                return Err(Drop::new(DropReason::ConntrackInsertFailed, net_id));
            }
        }
    }
    if !reserved {
        return Err(Drop::new(DropReason::NatPortExhausted, net_id));
    }
    let original = ConntrackEntry {
        rewrite_addr: nat_addr,
        rewrite_port: reply_key.dst_port,
        direction: DIR_ORIGINAL,
        ..reply
    };
    match conntrack::commit_original(key, &original, &reply_key) {
        Ok(()) => {
            crate::stats::count_event(net_id, Action::ConntrackCreated);
            Ok(original)
        }
        // Another CPU set the flow up first: use its mapping.
        Err(true) => conntrack::lookup(key, now)
            .map(|e| unsafe { *e })
            .ok_or(Drop::new(DropReason::ConntrackInsertFailed, net_id)),
        Err(false) => Err(Drop::new(DropReason::ConntrackInsertFailed, net_id)),
    }
}

/// The uplink: a reply of a tracked NAT flow is reverse-NATed and
/// redirected to its guest (`Some(verdict)`); anything else is `None`.
#[inline(always)]
pub fn uplink_reply<C: Hook>(ctx: &C, ip: &Ipv4) -> Result<Option<C::Verdict>, Drop> {
    if ip.fragment {
        return Ok(None);
    }
    let Ok(l4) = parse::l4(ctx, ip) else {
        // Not TCP, UDP or ICMP echo: maybe an ICMP error about a flow.
        return crate::icmp_error::uplink_icmp_error(ctx, ip);
    };
    let key = ConntrackKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let now = conntrack::now();
    if let Some(entry) = conntrack::lookup(&key, now)
        && unsafe { (*entry).direction } == DIR_REPLY
    {
        let e = unsafe { *entry };
        if !ctx.deliverable(e.ifindex) {
            return Ok(Some(ctx.defer()));
        }
        conntrack::touch(&key, entry, l4.tcp_flags, now);
        return reply_to_guest(ctx, ip, &l4, &e).map(Some);
    }
    Ok(None)
}

/// Reverse NAT of a tracked reply and delivery to the guest's port.
#[inline(always)]
fn reply_to_guest<C: Hook>(
    ctx: &C,
    ip: &Ipv4,
    l4: &L4,
    e: &ConntrackEntry,
) -> Result<C::Verdict, Drop> {
    let net_id = e.network_id as u32;
    prepare_for_guest(ctx, net_id, ip.ttl, &e.mac)?;
    rewrite(
        ctx,
        ip,
        l4,
        Side::Destination,
        e.rewrite_addr,
        e.rewrite_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(e.ifindex, net_id, Action::DnatForwarded)
}

/// Before a translated packet from the uplink goes to its guest: the
/// guest's network must be active and the packet must survive this hop
/// (`ttl`: TTL or hop limit); its MACs become bridge → guest.
#[inline(always)]
pub fn prepare_for_guest<C: PacketCtx>(
    ctx: &C,
    net_id: u32,
    ttl: u8,
    guest_mac: &[u8; 6],
) -> Result<(), Drop> {
    let net = VXDP_NETWORKS
        .get(net_id)
        .filter(|n| policy::active(n))
        .ok_or(Drop::new(DropReason::UnknownPort, net_id))?;
    if ttl <= 1 {
        return Err(Drop::new(DropReason::TtlExpired, net_id));
    }
    set_macs(ctx, guest_mac, &net.bridge_mac).map_err(|_| Drop::new(DropReason::Malformed, net_id))
}

#[inline(always)]
pub fn set_macs<C: PacketCtx>(ctx: &C, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), ()> {
    let eth = parse::ptr_at::<C, network_types::eth::EthHdr>(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = *dst;
        (*eth).src_addr = *src;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// Rewrites one side's address and port (ICMP: echo id), decrements the TTL
/// and fixes the IPv4 and L4 checksums. All direct writes happen before the
/// checksum updates (TC's helpers invalidate packet pointers).
#[inline(always)]
fn rewrite<C: PacketCtx>(
    ctx: &C,
    ip: &Ipv4,
    l4: &L4,
    side: Side,
    new_addr: u32,
    new_port: u16,
) -> Result<(), ()> {
    let (addr_off, old_addr, port_off) = match side {
        Side::Source => (IP_SRC_OFF, ip.src, l4.src_port_off),
        Side::Destination => (IP_DST_OFF, ip.dst, l4.dst_port_off),
    };
    let port_field = parse::ptr_at::<C, [u8; 2]>(ctx, port_off)?;
    let old_port = u16::from_ne_bytes(unsafe { *port_field });
    unsafe { *port_field = new_port.to_ne_bytes() };
    let addr_field = parse::ptr_at::<C, [u8; 4]>(ctx, addr_off)?;
    unsafe { *addr_field = new_addr.to_ne_bytes() };
    // TTL shares a 16-bit checksum word with the protocol byte.
    let ttl_field = parse::ptr_at::<C, [u8; 2]>(ctx, IP_TTL_OFF)?;
    let old_ttl_word = u16::from_ne_bytes(unsafe { *ttl_field });
    let new_ttl_word = u16::from_ne_bytes([ip.ttl - 1, ip.proto]);
    unsafe { *ttl_field = new_ttl_word.to_ne_bytes() };

    ctx.l3_csum_replace(IP_CHECK_OFF, old_addr, new_addr, CSUM_FIELD_4)?;
    ctx.l3_csum_replace(
        IP_CHECK_OFF,
        old_ttl_word as u32,
        new_ttl_word as u32,
        CSUM_FIELD_2,
    )?;
    match ip.proto {
        PROTO_TCP | PROTO_UDP => {
            let udp = if ip.proto == PROTO_UDP { CSUM_UDP } else { 0 };
            ctx.l4_csum_replace(
                l4.csum_off,
                old_addr,
                new_addr,
                CSUM_PSEUDO | udp | CSUM_FIELD_4,
            )?;
            ctx.l4_csum_replace(
                l4.csum_off,
                old_port as u32,
                new_port as u32,
                udp | CSUM_FIELD_2,
            )?;
        }
        // ICMP's checksum covers no pseudo-header: only the id changes it.
        _ => ctx.l4_csum_replace(l4.csum_off, old_port as u32, new_port as u32, CSUM_FIELD_2)?,
    }
    Ok(())
}

//! IPv6 in NAT networks. Without `<nat ipv6='yes'>` a NAT network's IPv6 is
//! routed without translation, as libvirt does (the route program, `route`);
//! with it, guests' IPv6 is masqueraded (NAT66) here: SNAT at the guest port
//! (TC, its own tail-called program `vxdp_guest_nat6`), reverse NAT of
//! replies at the uplink (XDP). Same conntrack scheme, port choice and drop
//! rules as IPv4 NAT (`nat`); IPv6 has no header checksum, and the ICMPv6
//! checksum covers the pseudo-header like TCP's and UDP's.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_get_prandom_u32, programs::TcContext};
use vxdp_common::{
    Action, Conntrack6Entry, Conntrack6Key, DIR_ORIGINAL, DIR_REPLY, DropReason, Nat6Config,
    Nat6Scratch, NetworkConfig, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ct_state, nat6_flags,
};

use crate::{
    conntrack::{self, Reserve},
    ctx::{CSUM_FIELD_2, CSUM_FIELD_4, CSUM_PSEUDO, CSUM_UDP, PacketCtx},
    forward::{self, FibParams},
    hook::Hook,
    maps::{VXDP_NAT6, VXDP_NAT6_SCRATCH},
    nat::{prepare_for_guest, set_macs},
    parse::{
        self, ICMPV6_ECHO_REQUEST, IP6_DST_OFF, IP6_HOP_LIMIT_OFF, IP6_SRC_OFF, Ipv6, L4, L4Error,
    },
    policy,
    stats::{Drop, count},
};

/// Candidate NAT ports tried before a new flow is refused as exhausted
/// (as for IPv4).
const NAT_PORT_TRIES: u32 = 32;

/// The NAT66 settings of a network that masquerades its IPv6.
#[inline(always)]
pub fn masquerading(net_id: u32) -> Option<&'static Nat6Config> {
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

#[inline(always)]
fn l4_error(e: L4Error, network_id: u32) -> Drop {
    let reason = match e {
        L4Error::Truncated => DropReason::Malformed,
        L4Error::UnsupportedProtocol => DropReason::UnsupportedProtocol,
        L4Error::UnsupportedIcmp => DropReason::UnsupportedIcmp,
    };
    Drop::new(reason, network_id)
}

/// The guest's IPv6 to the outside in a NAT66 network (tail-called from the
/// guest-port program once the frame is IPv6 addressed to the host's MAC
/// and beyond the link): SNAT to the NAT66 address, route, redirect.
#[inline(always)]
pub fn guest_nat6(
    ctx: &TcContext,
    net: &NetworkConfig,
    net_id: u32,
    ifindex: u32,
    ip: &Ipv6,
) -> Result<i32, Drop> {
    let pass = |ctx: &TcContext| {
        count(ctx, net_id, Action::GuestPassed);
        Ok(TC_ACT_OK)
    };
    let cfg = masquerading(net_id).ok_or(Drop::new(DropReason::Ipv6NotForwarded, net_id))?;
    let src_owner = policy::subnet6_owner(&ip.src);
    if !src_owner.is_some_and(|o| o.network_id == net_id) {
        // libvirt masquerades only its subnet's sources and forwards
        // nothing else.
        return Err(Drop::new(DropReason::SourceNotInSubnet, net_id));
    }
    if let Some(owner) = policy::subnet6_owner(&ip.dst) {
        if owner.network_id == net_id {
            // Back into this network through the host: the kernel routes it.
            return pass(ctx);
        }
        // A NAT network reaches no other network's guests.
        return Err(Drop::new(DropReason::OtherNetwork, net_id));
    }
    if ip.hop_limit <= 1 {
        // The kernel answers with "time exceeded" and forwards nothing.
        return pass(ctx);
    }
    match ip.next_header {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => {}
        parse::IPV6_NH_FRAGMENT => return Err(Drop::new(DropReason::Fragment, net_id)),
        nh if parse::ipv6_extension_header(nh) => {
            return Err(Drop::new(DropReason::Ipv6ExtensionHeaders, net_id));
        }
        _ => return Err(Drop::new(DropReason::UnsupportedProtocol, net_id)),
    }
    let l4 = parse::l4_v6(ctx, ip).map_err(|e| l4_error(e, net_id))?;
    if ip.next_header == PROTO_ICMPV6 && l4.icmp_type != ICMPV6_ECHO_REQUEST {
        return Err(Drop::new(DropReason::UnsupportedIcmp, net_id));
    }

    let scratch = VXDP_NAT6_SCRATCH
        .get_ptr_mut(0)
        .ok_or(Drop::new(DropReason::ConntrackInsertFailed, net_id))?;
    let s = unsafe { &mut *scratch };
    s.key = Conntrack6Key {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: ip.next_header,
        _pad: [0; 3],
    };
    // The route's parameters live in the scratch map, not on the stack.
    let fib = unsafe { &mut *(s.fib.as_mut_ptr() as *mut FibParams) };
    let rc = forward::fib_lookup_v6(
        ctx,
        fib,
        net.bridge_ifindex,
        &s.key.src_addr,
        &s.key.dst_addr,
        ip.next_header,
    );
    match rc {
        forward::FIB_SUCCESS | forward::FIB_NO_NEIGH => {
            if fib.ifindex != net.uplink_ifindex {
                return Err(Drop::new(DropReason::RouteNotViaUplink, net_id));
            }
        }
        // To the host itself (not NATed, as with libvirt), or unroutable
        // (the kernel answers and forwards nothing).
        forward::FIB_NOT_FWDED | forward::FIB_BLACKHOLE..=forward::FIB_PROHIBIT => {
            return pass(ctx);
        }
        forward::FIB_FWD_DISABLED => return Err(Drop::new(DropReason::ForwardingDisabled, net_id)),
        forward::FIB_FRAG_NEEDED => return Err(Drop::new(DropReason::FragmentationNeeded, net_id)),
        _ => return Err(Drop::new(DropReason::RouteNotViaUplink, net_id)),
    }

    // Replies go to the MAC the guest actually sends from.
    let eth = parse::eth(ctx).map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    let flow = NewFlow {
        nat_addr: &cfg.addr,
        mac: unsafe { (*eth).src_addr },
        tcp_flags: l4.tcp_flags,
        port_min: net.nat_port_min,
        port_max: net.nat_port_max,
        net_id,
        ifindex,
        now: conntrack::now(),
    };
    flow_mapping(s, &flow).map_err(|reason| Drop::new(reason, net_id))?;
    let (nat_addr, nat_port) = (&s.mapping.rewrite_addr, s.mapping.rewrite_port);
    let fib = unsafe { &*(s.fib.as_ptr() as *const FibParams) };
    if rc == forward::FIB_SUCCESS {
        set_macs(ctx, &fib.dmac, &fib.smac)
            .map_err(|_| Drop::new(DropReason::Malformed, net_id))?;
    }
    rewrite(ctx, ip, &l4, Side::Source, nat_addr, nat_port)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    let verdict = forward::tc_redirect_fib(fib, rc == forward::FIB_SUCCESS)
        .map_err(|_| Drop::new(DropReason::RedirectFailed, net_id))?;
    count(ctx, net_id, Action::SnatForwarded);
    Ok(verdict)
}

/// What a new flow needs besides its key.
struct NewFlow<'a> {
    nat_addr: &'a [u8; 16],
    mac: [u8; 6],
    tcp_flags: u8,
    port_min: u16,
    port_max: u16,
    net_id: u32,
    ifindex: u32,
    now: u64,
}

/// The mapping of the flow `s.key` belongs to, into `s.mapping`: its
/// conntrack entry, refreshed, or a new flow's.
#[inline(always)]
fn flow_mapping(s: &mut Nat6Scratch, f: &NewFlow) -> Result<(), DropReason> {
    match conntrack::lookup(&s.key, f.now) {
        Some(entry) => {
            // A flow belongs to the port that created it (see IPv4's).
            if unsafe { (*entry).ifindex } != f.ifindex {
                return Err(DropReason::FlowOfAnotherPort);
            }
            conntrack::touch(&s.key, entry, f.tcp_flags, f.now);
            s.mapping = unsafe { *entry };
            Ok(())
        }
        None => create_flow(s, f),
    }
}

/// Creates both conntrack entries of a new NAT66 flow, the original one
/// into `s.mapping`. The port choice is IPv4's: the guest's own port when
/// free and in range, else a bounded number of pseudo-random candidates.
#[inline(always)]
fn create_flow(s: &mut Nat6Scratch, f: &NewFlow) -> Result<(), DropReason> {
    let proto = s.key.proto;
    if proto == PROTO_TCP && f.tcp_flags & parse::TCP_RST != 0 {
        // A reset for a flow we do not know: nothing to set up a mapping for.
        return Err(DropReason::UnsolicitedInbound);
    }
    let (min, max) = if proto == PROTO_ICMPV6 {
        (0u32, 65535u32)
    } else {
        (f.port_min as u32, f.port_max as u32)
    };
    let span = if max >= min { max - min + 1 } else { 1 };
    let own = u16::from_be(s.key.src_port) as u32;
    // checked_rem: a `%` would leave a divide-by-zero panic path the
    // verifier refuses.
    let start = unsafe { bpf_get_prandom_u32() }
        .checked_rem(span)
        .unwrap_or(0);

    s.reply = Conntrack6Entry {
        last_seen_ns: f.now,
        rewrite_addr: s.key.src_addr,
        rewrite_port: s.key.src_port,
        direction: DIR_REPLY,
        state: ct_state::NEW,
        ifindex: f.ifindex,
        network_id: f.net_id as u16,
        _pad0: 0,
        mac: f.mac,
        _pad1: [0; 2],
        _pad2: 0,
    };
    s.reply_key = Conntrack6Key {
        src_addr: s.key.dst_addr,
        dst_addr: *f.nat_addr,
        src_port: s.key.dst_port,
        dst_port: 0,
        proto,
        _pad: [0; 3],
    };
    let mut reserved = false;
    for i in 0..NAT_PORT_TRIES {
        let port = if i == 0 && own >= min && own <= max {
            own
        } else {
            min + (start + i).checked_rem(span).unwrap_or(0)
        };
        s.reply_key.dst_port = (port as u16).to_be();
        match conntrack::reserve_reply(&s.reply_key, &s.reply, f.now) {
            Reserve::Reserved => {
                reserved = true;
                break;
            }
            Reserve::Taken => {}
            Reserve::Failed => return Err(DropReason::ConntrackInsertFailed),
        }
    }
    if !reserved {
        return Err(DropReason::NatPortExhausted);
    }
    s.mapping = Conntrack6Entry {
        rewrite_addr: *f.nat_addr,
        rewrite_port: s.reply_key.dst_port,
        direction: DIR_ORIGINAL,
        ..s.reply
    };
    match conntrack::commit_original(&s.key, &s.mapping, &s.reply_key) {
        Ok(()) => {
            crate::stats::count_event(f.net_id, Action::ConntrackCreated);
            Ok(())
        }
        // Another CPU set the flow up first: use its mapping.
        Err(true) => match conntrack::lookup(&s.key, f.now) {
            Some(e) => {
                s.mapping = unsafe { *e };
                Ok(())
            }
            None => Err(DropReason::ConntrackInsertFailed),
        },
        Err(false) => Err(DropReason::ConntrackInsertFailed),
    }
}

/// The uplink: a reply of a tracked NAT66 flow is reverse-NATed and
/// redirected to its guest (`Some(verdict)`); anything else is `None`.
#[inline(always)]
pub fn uplink_reply<C: Hook>(ctx: &C, ip: &Ipv6) -> Result<Option<C::Verdict>, Drop> {
    if !matches!(ip.next_header, PROTO_TCP | PROTO_UDP | PROTO_ICMPV6) {
        return Ok(None);
    }
    let Ok(l4) = parse::l4_v6(ctx, ip) else {
        // Not TCP, UDP or ICMPv6 echo: maybe an ICMPv6 error about a flow.
        return crate::icmp_error::uplink_icmp6_error(ctx, ip);
    };
    let key = Conntrack6Key {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: l4.src_port,
        dst_port: l4.dst_port,
        proto: ip.next_header,
        _pad: [0; 3],
    };
    let now = conntrack::now();
    if let Some(entry) = conntrack::lookup(&key, now)
        && unsafe { (*entry).direction } == DIR_REPLY
    {
        if !ctx.deliverable(unsafe { (*entry).ifindex }) {
            return Ok(Some(ctx.defer()));
        }
        conntrack::touch(&key, entry, l4.tcp_flags, now);
        let e = unsafe { *entry };
        return reply_to_guest(ctx, ip, &l4, &e).map(Some);
    }
    Ok(None)
}

#[inline(always)]
fn reply_to_guest<C: Hook>(
    ctx: &C,
    ip: &Ipv6,
    l4: &L4,
    e: &Conntrack6Entry,
) -> Result<C::Verdict, Drop> {
    let net_id = e.network_id as u32;
    prepare_for_guest(ctx, net_id, ip.hop_limit, &e.mac)?;
    rewrite(
        ctx,
        ip,
        l4,
        Side::Destination,
        &e.rewrite_addr,
        e.rewrite_port,
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(e.ifindex, net_id, Action::DnatForwarded)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// Four 32-bit words of an address as they sit in memory.
#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

/// Rewrites one side's address and port (ICMPv6: echo id), decrements the
/// hop limit and fixes the L4 checksum: every protocol's (ICMPv6 included)
/// covers the pseudo-header, so each address word is a pseudo-header change.
/// All direct writes happen before the checksum updates (TC's helpers
/// invalidate packet pointers).
#[inline(always)]
fn rewrite<C: PacketCtx>(
    ctx: &C,
    ip: &Ipv6,
    l4: &L4,
    side: Side,
    new_addr: &[u8; 16],
    new_port: u16,
) -> Result<(), ()> {
    let (addr_off, old_addr, port_off) = match side {
        Side::Source => (IP6_SRC_OFF, &ip.src, l4.src_port_off),
        Side::Destination => (IP6_DST_OFF, &ip.dst, l4.dst_port_off),
    };
    let port_field = parse::ptr_at::<C, [u8; 2]>(ctx, port_off)?;
    let old_port = u16::from_ne_bytes(unsafe { *port_field });
    unsafe { *port_field = new_port.to_ne_bytes() };
    let addr_field = parse::ptr_at::<C, [u8; 16]>(ctx, addr_off)?;
    unsafe { *addr_field = *new_addr };
    // No header checksum in IPv6: the hop limit costs nothing to change.
    let hop = parse::ptr_at::<C, u8>(ctx, IP6_HOP_LIMIT_OFF)?;
    unsafe { *hop = ip.hop_limit - 1 };

    // UDP over IPv6 must carry a checksum; a computed 0 is sent as 0xffff.
    let udp = if ip.next_header == PROTO_UDP {
        CSUM_UDP
    } else {
        0
    };
    for i in 0..4 {
        let (from, to) = (word(old_addr, i), word(new_addr, i));
        if from != to {
            ctx.l4_csum_replace(l4.csum_off, from, to, CSUM_PSEUDO | udp | CSUM_FIELD_4)?;
        }
    }
    ctx.l4_csum_replace(
        l4.csum_off,
        old_port as u32,
        new_port as u32,
        udp | CSUM_FIELD_2,
    )
}

//! Direct (macvtap-like) networks: guests sit on a physical NIC with no
//! bridge, and frames are steered by destination MAC. The whole mode in one
//! module, since its guest port and its NIC steer the same frames: the
//! uplink programs call [`nic_unicast`] first.
//!
//! * Guest port (TC ingress, tail-called from `vxdp_guest_in`):
//!   anti-spoofing, then by destination MAC: the NIC's own MAC → the host
//!   (as if received on the NIC); another guest → its port (bridge), the
//!   wire (vepa: the switch reflects it back), dropped (private);
//!   broadcast/multicast → the wire, plus the host and (bridge) the other
//!   guests on the NIC; anything else → the wire.
//! * NIC ingress, XDP or TC (called first by `vxdp_uplink_in` and
//!   `vxdp_uplink_tc`): unicast to a
//!   guest → its port; passthrough: every unicast not for the host → the
//!   guest; a guest's own frame coming back from the wire (hairpin switch)
//!   is dropped unless the network is vepa.
//! * NIC ingress, TC (`vxdp_nic_in`): broadcast/multicast from the wire is
//!   cloned to the guest ports (XDP cannot clone); the original goes on to
//!   the next TC program (the uplink's) and the host.
//! * NIC egress, TC (`vxdp_nic_out`): the host's frames to a guest's MAC go
//!   to the guest's port, its broadcasts are cloned to every guest port.
//!   The NIC is thus the host-side port: the host reaches its guests with
//!   the address it already has on the NIC's LAN.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_UNSPEC},
    helpers::bpf_redirect,
    programs::TcContext,
};
use vxdp_common::{Action, DIRECT_MAX_PORTS, DirectNic, DropReason, MacKey, PROTO_UDP, mode};

use crate::{
    base::{
        ctx::{PacketCtx, tc_ifindex},
        maps::{VXDP_DIRECT_NICS, VXDP_DIRECT_PORTS, VXDP_ENDPOINTS, VXDP_MACS},
        parse::{self, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ParseError},
        policy,
        stats::{Drop, count},
    },
    flow::deliver::Hook,
};

/// The port that owns `mac` in network `network_id` (0: none).
#[inline(always)]
fn mac_port(network_id: u32, mac: &[u8; 6]) -> u32 {
    let key = MacKey {
        network_id,
        mac: *mac,
        _pad0: [0; 2],
    };
    unsafe { VXDP_MACS.get(&key) }.map_or(0, |p| p.ifindex)
}

#[inline(always)]
fn nic_of(ifindex: u32) -> Option<&'static DirectNic> {
    unsafe { VXDP_DIRECT_NICS.get(&ifindex) }
}

/// Source and destination MACs, copied (clones invalidate packet pointers).
#[inline(always)]
fn macs<C: PacketCtx>(ctx: &C) -> Result<([u8; 6], [u8; 6]), ParseError> {
    let eth = parse::eth(ctx)?;
    Ok(unsafe { ((*eth).src_addr, (*eth).dst_addr) })
}

/// Clones the frame to every guest port of `nic` but `skip`. Counted once
/// per frame. The loop body keeps no state between iterations, so the
/// verifier walks it once per port slot.
#[inline(always)]
fn flood(ctx: &TcContext, nic: &DirectNic, skip: u32) {
    let n = nic.port_count;
    if n == 0 {
        return;
    }
    count(ctx, nic.network_id, Action::DirectFlooded);
    for i in 0..DIRECT_MAX_PORTS {
        if i as u32 >= n {
            break;
        }
        let port = nic.ports[i];
        if port != 0 && port != skip {
            // A failed clone loses one copy of a broadcast; the original
            // still goes its way.
            let _ = ctx.clone_redirect(port, 0);
        }
    }
}

#[inline(always)]
fn redirect(
    ctx: &TcContext,
    ifindex: u32,
    flags: u64,
    net_id: u32,
    action: Action,
) -> Result<i32, Drop> {
    if unsafe { bpf_redirect(ifindex, flags) } as i32 != TC_ACT_REDIRECT {
        return Err(Drop::new(DropReason::RedirectFailed, net_id));
    }
    count(ctx, net_id, action);
    Ok(TC_ACT_REDIRECT)
}

/// `vxdp_guest_direct` (tail-called by `vxdp_guest_in`): a direct
/// network's guest port.
#[inline(always)]
pub fn guest_entry(ctx: &TcContext) -> Result<i32, Drop> {
    let ifindex = tc_ifindex(ctx);
    let endpoint =
        unsafe { VXDP_ENDPOINTS.get(&ifindex) }.ok_or(Drop::new(DropReason::UnknownPort, 0))?;
    let net_id = endpoint.network_id;
    let unknown = Drop::new(DropReason::UnknownPort, net_id);
    let nic_ifindex = unsafe { VXDP_DIRECT_PORTS.get(&ifindex) }
        .ok_or(unknown)?
        .nic_ifindex;
    let nic = nic_of(nic_ifindex)
        .filter(|n| n.network_id == net_id)
        .ok_or(unknown)?;
    let malformed = Drop::new(DropReason::Malformed, net_id);

    // Anti-spoofing: the guest's MAC (Ethernet and ARP sender) and, once
    // known, its IPv4 address.
    let (src, dst) = macs(ctx).map_err(|_| malformed)?;
    if !policy::mac_allowed(endpoint, &src) {
        return Err(Drop::new(DropReason::SpoofedMac, net_id));
    }
    // (VLAN tags and unchecked EtherTypes were refused before the tail
    // call.) Rogue services would reach the whole LAN from here.
    match parse::ether_type(ctx).map_err(|_| malformed)? {
        ETH_P_IP => {
            let ip = parse::ipv4(ctx).map_err(|_| malformed)?;
            if !policy::ipv4_allowed(endpoint, ip.src, ip.proto == PROTO_UDP) {
                return Err(Drop::new(DropReason::SpoofedSource, net_id));
            }
            if let Some(reason) = policy::ipv4_service_refusal(ctx, endpoint, &ip, &src) {
                return Err(Drop::new(reason, net_id));
            }
        }
        ETH_P_IPV6 => {
            let ip = parse::ipv6(ctx).map_err(|_| malformed)?;
            if !policy::ipv6_allowed(endpoint, &ip.src) {
                return Err(Drop::new(DropReason::SpoofedSource, net_id));
            }
            if let Some(reason) = policy::ipv6_service_refusal(ctx, endpoint, &ip) {
                return Err(Drop::new(reason, net_id));
            }
        }
        ETH_P_ARP => {
            let arp = parse::arp_sender(ctx).map_err(|_| malformed)?;
            if let Some(reason) = policy::arp_refusal(endpoint, None, &arp) {
                return Err(Drop::new(reason, net_id));
            }
        }
        _ => return Err(Drop::new(DropReason::UncheckedEtherType, net_id)),
    }

    let m = nic.mode;
    if dst[0] & 1 != 0 {
        // Broadcast/multicast (ARP, DHCP, ND, mDNS): to the wire. In vepa
        // the external switch reflects it to the host and the other guests
        // (`nic_ingress`); otherwise the host gets its copy here, and in
        // bridge mode so do the other guests on the NIC.
        if m != mode::DIRECT_VEPA {
            let _ = ctx.clone_redirect(nic_ifindex, BPF_F_INGRESS as u64);
            if m == mode::DIRECT_BRIDGE {
                flood(ctx, nic, ifindex);
            }
        }
        return redirect(ctx, nic_ifindex, 0, net_id, Action::DirectToWire);
    }
    if policy::mac_eq(&dst, &nic.mac) {
        // The host-side port: delivered as if received on the NIC.
        return redirect(
            ctx,
            nic_ifindex,
            BPF_F_INGRESS as u64,
            net_id,
            Action::DirectToHost,
        );
    }
    let port = mac_port(net_id, &dst);
    if port != 0 && port != ifindex {
        if m == mode::DIRECT_PRIVATE {
            return Err(Drop::new(DropReason::DirectPrivate, net_id));
        }
        let same_nic =
            unsafe { VXDP_DIRECT_PORTS.get(&port) }.is_some_and(|p| p.nic_ifindex == nic_ifindex);
        if m == mode::DIRECT_BRIDGE && same_nic {
            return redirect(ctx, port, 0, net_id, Action::DirectToGuest);
        }
    }
    redirect(ctx, nic_ifindex, 0, net_id, Action::DirectToWire)
}

/// A NIC's ingress (the uplink's XDP or TC program): unicast frames from
/// the wire for a direct network's guest. `None`: not a direct network's
/// frame to steer; the uplink's other logic decides.
#[inline(always)]
pub fn nic_unicast<C: Hook>(ctx: &C) -> Result<Option<C::Verdict>, Drop> {
    let Some(nic) = nic_of(PacketCtx::ingress_ifindex(ctx)) else {
        return Ok(None);
    };
    let net_id = nic.network_id;
    let Ok((src, dst)) = macs(ctx) else {
        return Ok(None);
    };
    if mac_port(net_id, &src) != 0 && !C::FROM_WIRE_ONLY && nic.mode != mode::DIRECT_VEPA {
        // TC: a guest's frame its port sent to the host (counted there);
        // from the wire, XDP has judged it already.
        return Ok(Some(ctx.pass()));
    }
    if mac_port(net_id, &src) != 0 {
        // One of our guests' frames came back from the wire: a hairpinning
        // ("reflective relay") switch. That is how vepa guests reach each
        // other; private guests must not, and in the other modes the frame
        // was delivered locally already.
        match nic.mode {
            mode::DIRECT_VEPA => {}
            mode::DIRECT_PRIVATE => return Err(Drop::new(DropReason::DirectPrivate, net_id)),
            _ => return Err(Drop::new(DropReason::DirectReflected, net_id)),
        }
    }
    if dst[0] & 1 != 0 || policy::mac_eq(&dst, &nic.mac) {
        // Broadcast/multicast: cloned to the guests by `vxdp_nic_in`; the
        // host's own frames: the kernel's.
        return Ok(None);
    }
    let mut port = mac_port(net_id, &dst);
    if port == 0 && nic.mode == mode::DIRECT_PASSTHROUGH && nic.port_count > 0 {
        // The guest owns the NIC: every unicast frame not for the host.
        port = nic.ports[0];
    }
    if port == 0 {
        return Ok(None);
    }
    if !ctx.deliverable(port) {
        return Ok(Some(ctx.defer()));
    }
    ctx.to_port(port, net_id, Action::DirectFromWire).map(Some)
}

/// `vxdp_nic_in` (TC ingress on a direct network's NIC): broadcast and
/// multicast from the wire reach the guest ports too.
#[inline(always)]
pub fn nic_ingress(ctx: &TcContext) -> Result<i32, Drop> {
    let Some(nic) = nic_of(tc_ifindex(ctx)) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let Ok((src, dst)) = macs(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if dst[0] & 1 == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    let from_guest = mac_port(nic.network_id, &src);
    if from_guest != 0 && nic.mode != mode::DIRECT_VEPA {
        // The host's copy of a guest's broadcast (the guest program already
        // gave the other guests theirs); from the wire, XDP has dropped it.
        return Ok(TC_ACT_UNSPEC);
    }
    // vepa: the switch reflected a guest's broadcast; its sender does not
    // get it back.
    flood(ctx, nic, from_guest);
    Ok(TC_ACT_UNSPEC)
}

/// `vxdp_nic_out` (TC egress on a direct network's NIC): the host's frames
/// to its guests go to their ports instead of the wire.
#[inline(always)]
pub fn nic_egress(ctx: &TcContext) -> Result<i32, Drop> {
    let Some(nic) = nic_of(tc_ifindex(ctx)) else {
        return Ok(TC_ACT_OK);
    };
    let Ok((src, dst)) = macs(ctx) else {
        return Ok(TC_ACT_OK);
    };
    if !policy::mac_eq(&src, &nic.mac) {
        // A guest's frame on its way out (redirected by its port).
        return Ok(TC_ACT_OK);
    }
    if dst[0] & 1 != 0 {
        flood(ctx, nic, 0);
        return Ok(TC_ACT_OK);
    }
    let port = mac_port(nic.network_id, &dst);
    if port == 0 {
        return Ok(TC_ACT_OK);
    }
    redirect(ctx, port, 0, nic.network_id, Action::DirectFromHost)
}

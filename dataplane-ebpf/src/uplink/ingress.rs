//! `vxdp_uplink_in` (XDP) and `vxdp_uplink_tc` (TC ingress) on the uplink:
//! a direct network's NIC steers its guests' frames first
//! (`crate::direct`); replies of NAT flows go back to their guests
//! (`flow::snat::reply`), and ICMP errors about them (`icmp_error`);
//! other traffic into a vxdp network is judged by the owning network's mode:
//! route/open accept it (`route_in`: redirected to the guest's port, or
//! routed onto the bridge by the kernel), NAT refuses what no flow expects,
//! isolated networks refuse everything.
//!
//! Written once over [`Hook`] and run twice: by the XDP program on every
//! frame, and by the TC program on the frames XDP left to it (see `deliver`:
//! frames for ports that cannot take XDP frames, unfinished checksums,
//! super-frames). A frame XDP judged and passed carries a mark the TC
//! program sees, so it is judged and counted once.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use vxdp_common::{Action, SubnetOwner, mode};

use super::{icmp_error, route_in};
use crate::{
    base::{
        parse::{self, ETH_P_IP, ETH_P_IPV6, HEADERS_MAX},
        policy,
        stats::{Drop, count},
    },
    direct,
    flow::{
        deliver::{Hook, judged_by_xdp},
        forward::Forwarded,
        frag::{self, Fragments},
        snat::{self, Reply},
    },
};

/// `vxdp_uplink_tc`: the uplink logic for the frames XDP left to the
/// socket-buffer path.
#[inline(always)]
pub fn tc(ctx: &TcContext) -> Result<i32, Drop> {
    if judged_by_xdp(ctx) {
        return Ok(TC_ACT_UNSPEC);
    }
    // A GRO'd or paged socket buffer may keep headers out of the linear
    // area that direct packet access sees.
    let len = ctx.len();
    let want = if len < HEADERS_MAX { len } else { HEADERS_MAX };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    uplink_ingress(ctx)
}

#[inline(always)]
fn pass<C: Hook>(ctx: &C) -> Result<C::Verdict, Drop> {
    count(ctx, 0, Action::UplinkPassed);
    Ok(ctx.pass())
}

#[inline(always)]
pub fn uplink_ingress<C: Hook>(ctx: &C) -> Result<C::Verdict, Drop> {
    // The NIC of a direct network: its guests' frames first.
    if let Some(verdict) = direct::nic_unicast(ctx)? {
        return Ok(verdict);
    }
    match parse::ether_type(ctx) {
        Ok(ETH_P_IP) => {}
        Ok(ETH_P_IPV6) => {
            // Malformed: not ours; the kernel decides.
            let Ok(ip) = parse::ipv6(ctx) else {
                return pass(ctx);
            };
            if let Some(verdict) = tracked(ctx, &ip)? {
                return Ok(verdict);
            }
            return inbound(ctx, policy::subnet6_owner(&ip.dst), true);
        }
        _ => return pass(ctx),
    }
    let Ok(ip) = parse::ipv4(ctx) else {
        return pass(ctx);
    };
    if ip.first_fragment {
        if let Some(verdict) = tracked(ctx, &ip)? {
            return Ok(verdict);
        }
    } else if let Some(verdict) = frag::inbound_rest(ctx, &ip)? {
        // A later fragment of a reply whose first fragment was translated.
        return Ok(verdict);
    } else if C::FROM_WIRE_ONLY {
        // XDP sees a batch of frames before TC sees the first: the first
        // fragment may be on its way to TC, which records it before it
        // judges this one.
        return Ok(ctx.defer());
    }
    inbound(ctx, policy::subnet_owner(ip.dst), false)
}

/// A NAT flow's reply, or an ICMP error about a NAT flow: translated and
/// delivered to its guest (`Some`).
#[inline(always)]
fn tracked<C: Hook, F: icmp_error::Quoting + Fragments>(
    ctx: &C,
    ip: &F,
) -> Result<Option<C::Verdict>, Drop>
where
    F::Key: Forwarded,
{
    match snat::reply(ctx, ip)? {
        Reply::Delivered(verdict) => Ok(Some(verdict)),
        // Not TCP, UDP or ICMP echo: maybe an ICMP error about a flow.
        Reply::NoPorts => icmp_error::uplink_icmp_error(ctx, ip),
        Reply::Untracked => Ok(None),
    }
}

/// Untracked traffic to a vxdp network's subnet. Refusals happen here: with
/// forwarding on and no firewall, the kernel would otherwise route it in.
#[inline(always)]
fn inbound<C: Hook>(ctx: &C, owner: Option<SubnetOwner>, ipv6: bool) -> Result<C::Verdict, Drop> {
    let Some(owner) = owner else { return pass(ctx) };
    let id = owner.network_id;
    if let Some(reason) = policy::inbound_refusal(&owner, ipv6, ctx.ingress_ifindex()) {
        return Err(Drop::new(reason, id));
    }
    match owner.mode {
        // A NAT network's IPv6 is routed both ways unless it is
        // masqueraded (NAT66), as libvirt does (refused above if it is).
        mode::ROUTE | mode::OPEN | mode::NAT => route_in::inbound(ctx, id, ipv6),
        // Host bridge networks own no subnet entries; anything else: the
        // kernel decides.
        _ => pass(ctx),
    }
}

//! The uplink: replies of NAT flows go back to their guests (`nat`);
//! other traffic into a vxdp network is judged by the owning network's mode:
//! route/open accept it (`route_in`: redirected to the guest's port, or
//! routed onto the bridge by the kernel), NAT refuses what no flow expects,
//! isolated networks refuse everything.
//!
//! Written once over [`Hook`] and run twice: by the XDP program on every
//! frame, and by the TC program on the frames XDP left to it (see `hook`:
//! frames for ports that cannot take XDP frames, unfinished checksums,
//! super-frames). A frame XDP judged and passed carries a mark the TC
//! program sees, so it is judged and counted once.

use vxdp_common::{Action, DropReason, SubnetOwner, mode};

use crate::{
    hook::Hook,
    nat, nat6,
    parse::{self, ETH_P_IP, ETH_P_IPV6},
    policy, route_in,
    stats::{Drop, count},
};

#[inline(always)]
fn pass<C: Hook>(ctx: &C) -> Result<C::Verdict, Drop> {
    count(ctx, 0, Action::UplinkPassed);
    Ok(ctx.pass())
}

#[inline(always)]
pub fn uplink_ingress<C: Hook>(ctx: &C) -> Result<C::Verdict, Drop> {
    // The NIC of a direct network: its guests' frames first.
    if let Some(verdict) = crate::direct::nic_unicast(ctx)? {
        return Ok(verdict);
    }
    match parse::ether_type(ctx) {
        Ok(ETH_P_IP) => {}
        Ok(ETH_P_IPV6) => {
            // Malformed: not ours; the kernel decides.
            let Ok(ip) = parse::ipv6(ctx) else {
                return pass(ctx);
            };
            if let Some(verdict) = nat6::uplink_reply(ctx, &ip)? {
                return Ok(verdict);
            }
            return inbound(ctx, policy::subnet6_owner(&ip.dst), true);
        }
        _ => return pass(ctx),
    }
    let Ok(ip) = parse::ipv4(ctx) else {
        return pass(ctx);
    };
    if let Some(verdict) = nat::uplink_reply(ctx, &ip)? {
        return Ok(verdict);
    }
    inbound(ctx, policy::subnet_owner(ip.dst), false)
}

/// Untracked traffic to a vxdp network's subnet. Refusals happen here: with
/// forwarding on and no firewall, the kernel would otherwise route it in.
#[inline(always)]
fn inbound<C: Hook>(ctx: &C, owner: Option<SubnetOwner>, ipv6: bool) -> Result<C::Verdict, Drop> {
    let Some(owner) = owner else { return pass(ctx) };
    let id = owner.network_id;
    match owner.mode {
        mode::ROUTE | mode::OPEN => route_in::inbound(ctx, id, ipv6),
        // A NAT network's IPv6 is routed both ways unless it is
        // masqueraded (NAT66), as libvirt does.
        mode::NAT if ipv6 && nat6::masquerading(id).is_none() => route_in::inbound(ctx, id, ipv6),
        mode::NAT => Err(Drop::new(DropReason::UnsolicitedInbound, id)),
        mode::ISOLATED => Err(Drop::new(DropReason::IsolatedNetwork, id)),
        // Host bridge networks own no subnet entries; anything else: the
        // kernel decides.
        _ => pass(ctx),
    }
}

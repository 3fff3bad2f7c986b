//! Following the host's uplink: which interface carries the default route
//! and which address NAT masquerades to can change under a started network
//! (a DHCP renew, a new default route, an operator's `ip addr` change).
//! Every reconcile pass (the daemon's, `vxdp load`'s) compares them with
//! what the network was started with and moves the network along, as the
//! kernel's masquerade does: flows translated to an address the host no
//! longer has are flushed (their replies can never come back), new flows use
//! the new address.
//!
//! What follows what:
//! - the uplink interface follows the IPv4 default route unless the
//!   definition names one (`<forward dev>`), in NAT, route and open mode;
//! - the NAT address follows the uplink's first IPv4 address unless the
//!   definition gives a range (`<nat><address start end/>`); while the
//!   uplink has the address the network uses, it is kept (a second address
//!   added to the uplink changes nothing);
//! - the NAT66 address likewise with the uplink's global IPv6 addresses.
//!
//! When the default route or the address disappears, the network keeps what
//! it has and reconcile reports the problem each pass until it is back.

use std::net::IpAddr;

use vxdp_common::mode;

use crate::{
    dataplane::{self, Maps},
    host::{Context, netlink::Netlink, state::NetworkRecord},
    modes::{
        nat6,
        plan::NetworkPlan,
        shared::{ModeError, Repairs, device_used},
    },
};

/// Moves `rec` to the uplink and NAT addresses the host has now. Changes
/// only `rec` and the pinned dataplane; the caller saves the record and
/// writes the network's map entry from it.
pub async fn uplink(
    ctx: &Context,
    nl: &Netlink,
    maps: &Maps,
    rec: &mut NetworkRecord,
    plan: &NetworkPlan,
    others: &[NetworkRecord],
    repairs: &mut Repairs,
) -> Result<(), ModeError> {
    if plan.mode == mode::BRIDGE {
        return Ok(()); // a host bridge holds its uplink itself
    }
    let name = rec.name.clone();
    let named = plan.def.forward.as_ref().is_some_and(|f| f.dev.is_some());
    if !named {
        match nl.default_route_link_v4().await? {
            Some(link) if link.name != rec.uplink => {
                let old = std::mem::replace(&mut rec.uplink, link.name.clone());
                let old_index = std::mem::replace(&mut rec.uplink_ifindex, link.index);
                // The old uplink's program goes unless another network uses
                // that interface; the new one is attached by the caller's
                // "uplink program" step.
                if old_index != 0 && !device_used(others, old_index) {
                    dataplane::detach_uplink(&ctx.pins, old_index)?;
                }
                repairs.note(format!(
                    "{name}: the default route now leaves through {}: uplink moved from {}",
                    link.name,
                    if old.is_empty() { "none" } else { &old }
                ));
            }
            None if !rec.uplink.is_empty() => repairs.problem(format!(
                "{name}: the host has no IPv4 default route: keeping uplink {}",
                rec.uplink
            )),
            _ => {}
        }
    }
    if rec.uplink.is_empty() {
        return Ok(());
    }
    let Some(link) = nl.link_by_name(&rec.uplink).await? else {
        return Ok(()); // reported by the caller's uplink step
    };

    if plan.mode == mode::NAT && plan.nat_addresses.is_none() {
        let addrs = nl.ipv4_addresses(link.index).await?;
        let v4 = Family {
            address: "address",
            none: "IPv4 address",
            nat: "NAT",
        };
        if let Some(new) = follow_address(maps, rec, &addrs, rec.nat_first, &v4, repairs)? {
            rec.nat_first = new;
            rec.nat_last = new;
        }
    }
    if let Some(old) = rec.nat6
        && nat6::masquerades(plan)
    {
        let addrs = nl.ipv6_global_addresses(link.index).await?;
        let v6 = Family {
            address: "IPv6 address",
            none: "global IPv6 address",
            nat: "NAT66",
        };
        if let Some(new) = follow_address(maps, rec, &addrs, old, &v6, repairs)? {
            rec.nat6 = Some(new);
        }
    }
    Ok(())
}

/// How one address family is named in what reconcile reports.
struct Family {
    address: &'static str,
    none: &'static str,
    nat: &'static str,
}

/// The address `rec`'s NAT moves to when `current` is no longer among the
/// uplink's `addrs` (netlink's address, prefix pairs) and it has another:
/// the flows translated to `current` are flushed then. `None`: NAT keeps
/// `current` (still there, or nothing to move to, which is reported).
fn follow_address<A>(
    maps: &Maps,
    rec: &NetworkRecord,
    addrs: &[(A, u8)],
    current: A,
    family: &Family,
    repairs: &mut Repairs,
) -> Result<Option<A>, ModeError>
where
    A: Copy + PartialEq + std::fmt::Display + Into<IpAddr>,
{
    let (name, uplink) = (&rec.name, &rec.uplink);
    if addrs.iter().any(|(a, _)| *a == current) {
        return Ok(None);
    }
    let Some(&(new, _)) = addrs.first() else {
        repairs.problem(format!(
            "{name}: uplink {uplink} has no {}: {} keeps {current} until it has one",
            family.none, family.nat
        ));
        return Ok(None);
    };
    let flushed = maps.flush_nat_address(rec.id, current.into())?;
    repairs.note(format!(
        "{name}: uplink {uplink} now has {} {new} (was {current}): {} masquerades to it; \
         {flushed} conntrack entries of the old address flushed",
        family.address, family.nat
    ));
    Ok(Some(new))
}

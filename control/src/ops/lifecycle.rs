//! Starting and stopping networks: the plan decides which mode realizes a
//! definition ([`crate::modes`]); stopping undoes what any mode did, from
//! the network's record.

use std::net::Ipv6Addr;

use vxdp_common::{NetworkConfig, mode};

use crate::{
    dataplane::{self, Maps},
    host::{
        Context, dnsmasq, fault,
        state::NetworkRecord,
        sysctl::{self, IP_FORWARD, IPV6_FORWARD},
    },
    model::{addr::prefix_mask6, mode as modes},
    modes::{Realization, direct, plan, shared::device_used},
    ops::{error::OpsError, ports},
};

/// Starts a network from its definition (`vxdp net-create`), in the mode
/// its plan says.
pub async fn start(ctx: &Context, xml_text: &str, file: &str) -> Result<NetworkRecord, OpsError> {
    let plan = plan::plan(xml_text, file)?;
    Ok(Realization::of(plan.mode).start(ctx, &plan, file).await?)
}

/// Stops a network (`vxdp net-destroy`): detaches its ports, removes its
/// map entries, conntrack flows and bridge; the last network to go takes the
/// programs, maps and the forwarding settings with it.
pub async fn stop(ctx: &Context, name: &str) -> Result<(), OpsError> {
    let (state, nl, _) = crate::modes::shared::lock_for_change(ctx).await?;
    let rec = state
        .network(name)?
        .ok_or_else(|| OpsError::NotStarted(name.into()))?;
    // Every step below tolerates its object being gone already, and the
    // network's record goes last: a `net-destroy` that died half-way is
    // finished by running it again (or repaired back to a running network
    // by `vxdp serve`).
    dnsmasq::stop(&ctx.state_dir, name)?;
    fault::point("net-destroy:dnsmasq");
    for port in &rec.ports {
        ports::unplug(ctx, &nl, port).await?;
    }
    fault::point("net-destroy:ports");
    if let Ok(maps) = Maps::open(&ctx.pins) {
        maps.set_network(rec.id, &NetworkConfig::default())?;
        if !rec.gateway.is_unspecified() {
            maps.remove_subnet(u32::from_ne_bytes(rec.subnet.octets()), rec.prefix as u32)?;
        }
        if let Some((a, p)) = rec.ipv6 {
            maps.remove_subnet6(
                Ipv6Addr::from(u128::from(a) & prefix_mask6(p)).octets(),
                p as u32,
            )?;
            maps.set_nat6(rec.id, &vxdp_common::Nat6Config::default())?;
        }
        // The other prefixes (further <ip>s, <route>s) come from the definition the
        // network runs; the record holds the first of each family.
        if let Ok(p) = plan::plan(&rec.xml, &rec.name) {
            for (a, len) in plan::subnet4_keys(&p) {
                maps.remove_subnet(a, len)?;
            }
            for (a, len) in plan::subnet6_keys(&p) {
                maps.remove_subnet6(a, len)?;
            }
            for (a, len, _) in plan::route4_entries(&p, rec.id) {
                maps.remove_route(a, len)?;
            }
        }
        maps.flush_conntrack(rec.id)?;
        maps.remove_flow_quota(vxdp_common::flow_quota::network(rec.id))?;
        crate::modes::shaping::clear_network(&maps, rec.id)?;
    }
    fault::point("net-destroy:maps");
    let others: Vec<_> = state
        .networks()?
        .into_iter()
        .filter(|r| r.name != rec.name)
        .collect();
    if rec.uplink_ifindex != 0 && !device_used(&others, rec.uplink_ifindex) {
        dataplane::detach_uplink(&ctx.pins, rec.uplink_ifindex)?;
    }
    direct::stop_nics(&ctx.pins, &rec, &others)?;
    if modes::from_name(&rec.mode) != Some(mode::BRIDGE) && rec.bridge_ifindex != 0 {
        dataplane::detach_bridge(&ctx.pins, rec.bridge_ifindex)?;
        if nl.link_by_index(rec.bridge_ifindex).await?.is_some() {
            nl.delete_link(rec.bridge_ifindex).await?;
        }
    }
    fault::point("net-destroy:bridge");
    if others.is_empty() {
        dataplane::unload(&ctx.pins)?;
        let host = state.host()?;
        if let Some(before) = host.ip_forward_before {
            sysctl::write(IP_FORWARD, &before)?;
        }
        if let Some(before) = host.ipv6_forward_before {
            sysctl::write(IPV6_FORWARD, &before)?;
        }
        fault::point("net-destroy:unloaded");
        state.remove_host()?;
    }
    state.remove_network(&rec.name)?;
    log::info!("{name}: stopped");
    Ok(())
}

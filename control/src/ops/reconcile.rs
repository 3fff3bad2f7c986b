//! Bringing the host back in line with the started networks' records: the
//! dataplane loaded (or the pinned one adopted), every network's bridge and
//! map entries present, every guest port plugged into its bridge with the
//! guest-port program attached, every uplink with its XDP program. Used by
//! `vxdp load` (once) and `vxdp serve` (every reconcile period).
//!
//! Reconcile only repairs what is missing or broken; what is in place is
//! left alone (an attached program keeps its link, a map entry is not
//! rewritten), so running it costs a few syscalls and never disturbs flows.
//!
//! Guest ports (taps, veths) are created by the hypervisor, not by vxdp:
//! when one is gone, reconcile reports it and plugs it in again once an
//! interface of that name reappears. Bridges are vxdp's own (a deleted one
//! is recreated as `net-start` creates it) except in host bridge mode: the
//! operator's bridge is never created, set up or changed, only reported
//! missing. Every mode is repaired with the same builders `net-start` uses
//! (`plan::network_config`, `write_subnets`, `configure_bridge`,
//! `port_endpoint`), so a repair writes exactly what a start would.

use std::{collections::HashSet, path::Path};

use vxdp_common::mode;

use crate::{
    dataplane::pinned,
    dataplane::{self, DataplaneError, Maps},
    host::Context,
    host::netlink::Netlink,
    host::state::{NetworkRecord, StateDir},
    modes::{
        direct, nat6,
        plan::{self, bridge_mac, network_config, subnet_owner, subnet4_key, subnet6_key},
        shared::{
            Repairs, configure_bridge, host_bridge_flags, port_endpoint, takes_xdp_frames,
            write_subnets,
        },
    },
    ops::error::OpsError,
};

/// File in the state directory that says "the dataplane was unloaded on
/// purpose (`vxdp unload`)": reconcile then does not load it again until
/// `vxdp load` (or starting a network) brings it back.
pub const UNLOADED_MARKER: &str = "dataplane-unloaded";

/// Whether `vxdp unload` left the dataplane out on purpose.
pub fn unloaded_on_purpose(state_dir: &Path) -> bool {
    state_dir.join(UNLOADED_MARKER).exists()
}

/// Loads the dataplane unless its pins exist (then they are adopted: same
/// programs, same maps, conntrack kept). Returns whether it loaded.
pub fn load_or_adopt(ctx: &Context) -> Result<bool, DataplaneError> {
    let loaded = dataplane::ensure_loaded(&ctx.pins, &ctx.load)?;
    let marker = ctx.state_dir.join(UNLOADED_MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|source| DataplaneError::Io {
            path: marker,
            source,
        })?;
    }
    Ok(loaded)
}

/// One pass over every started network. With `load`, a missing dataplane is
/// loaded first (unless `vxdp unload` removed it on purpose).
pub async fn reconcile(ctx: &Context, load: bool) -> Result<Repairs, OpsError> {
    let mut repairs = Repairs::default();
    let state = StateDir::open(&ctx.state_dir)?;
    let records = state.networks()?;
    if !ctx.pins.is_loaded() {
        if !load || records.is_empty() || unloaded_on_purpose(&ctx.state_dir) {
            return Ok(repairs);
        }
        load_or_adopt(ctx)?;
        repairs.note(format!(
            "loaded the dataplane under {}",
            ctx.pins.root.display()
        ));
    }
    let nl = Netlink::connect()?;
    let maps = Maps::open(&ctx.pins)?;
    let mut in_use = HashSet::new();
    for mut rec in records {
        let before = rec.clone();
        if let Err(e) = reconcile_network(ctx, &nl, &maps, &mut rec, &mut repairs).await {
            // One broken network does not stop the others' repairs.
            repairs.note(format!("{}: {e}", rec.name));
        }
        in_use.insert(rec.uplink_ifindex);
        in_use.extend(rec.direct_nics.iter().map(|(_, i)| *i));
        in_use.extend(rec.ports.iter().map(|p| p.ifindex));
        if rec != before {
            state.save_network(&rec)?;
        }
    }
    prune_port_counters(&maps, &in_use);
    Ok(repairs)
}

async fn reconcile_network(
    ctx: &Context,
    nl: &Netlink,
    maps: &Maps,
    rec: &mut NetworkRecord,
    repairs: &mut Repairs,
) -> Result<(), OpsError> {
    let name = rec.name.clone();
    let plan = plan::plan(
        &rec.xml,
        &format!("{}/run/{name}.json", ctx.state_dir.display()),
    )?;
    if vxdp_common::mode_direct(plan.mode) {
        return Ok(direct::reconcile(ctx, nl, maps, rec, &plan, repairs).await?);
    }
    let host_bridge = plan.mode == mode::BRIDGE;

    // The bridge: vxdp's own is recreated with its host side (addresses or
    // disable_ipv6) when deleted; a host bridge is the operator's and is
    // never created, set up or changed here.
    let mut bridge_flags = 0;
    let mac = match nl.link_by_name(&rec.bridge).await? {
        Some(link) => {
            rec.bridge_ifindex = link.index;
            if host_bridge {
                bridge_flags = host_bridge_flags(nl, &link).await?;
            }
            if !link.up {
                if host_bridge {
                    repairs.problem(format!(
                        "{name}: host bridge {} is down (the operator's: left as it is)",
                        rec.bridge
                    ));
                } else {
                    nl.set_up(link.index).await?;
                    repairs.note(format!("{name}: bridge {} was down, set it up", rec.bridge));
                }
            }
            if host_bridge {
                link.mac.unwrap_or_default()
            } else {
                plan.def.mac.unwrap_or_else(|| bridge_mac(&name))
            }
        }
        None if host_bridge => {
            repairs.problem(format!(
                "{name}: host bridge {} is missing; vxdp never creates the operator's bridge: waiting for it",
                rec.bridge
            ));
            return Ok(());
        }
        None => {
            let mac = plan.def.mac.unwrap_or_else(|| bridge_mac(&name));
            let index = nl
                .create_bridge(
                    &rec.bridge,
                    Some(mac),
                    plan.def.bridge.stp,
                    plan.def.bridge.delay * 100,
                )
                .await?;
            if let Err(e) = configure_bridge(nl, &plan, &rec.bridge, index).await {
                // Half a bridge would look repaired to the next pass.
                let _ = nl.delete_link(index).await;
                return Err(e.into());
            }
            rec.bridge_ifindex = index;
            let addrs: Vec<String> = plan
                .ipv4
                .map(|v4| format!("{}/{}", v4.gateway, v4.prefix))
                .into_iter()
                .chain(plan.ipv6.map(|(a, p)| format!("{a}/{p}")))
                .collect();
            let host_side = if addrs.is_empty() {
                "no address, IPv6 disabled".to_string()
            } else {
                addrs.join(" ")
            };
            repairs.note(format!(
                "{name}: recreated bridge {} ({host_side})",
                rec.bridge
            ));
            mac
        }
    };

    // The uplink (none in host bridge mode, or without a default route at
    // start): found again by name if its ifindex changed.
    let has_uplink = !rec.uplink.is_empty();
    if has_uplink {
        if let Some(link) = nl.link_by_name(&rec.uplink).await? {
            if link.index != rec.uplink_ifindex {
                dataplane::detach_uplink(&ctx.pins, rec.uplink_ifindex)?;
                rec.uplink_ifindex = link.index;
            }
        } else {
            repairs.problem(format!(
                "{name}: uplink {} is missing; waiting for it",
                rec.uplink
            ));
        }
    }

    // Map entries: written when missing (after a reload), or when they
    // differ from what start would write now (an interface changed); an
    // entry that is right is left as it is.
    let mut want = network_config(
        &plan,
        rec.bridge_ifindex,
        mac,
        if has_uplink { rec.uplink_ifindex } else { 0 },
        (rec.nat_first, rec.nat_last),
    );
    want.flags |= bridge_flags;
    if maps.networks()?.get(&rec.id, 0).ok() != Some(want) {
        maps.set_network(rec.id, &want)?;
        repairs.note(format!(
            "{name}: wrote its network map entry (id {})",
            rec.id
        ));
    }
    let owner = subnet_owner(rec.id, &plan);
    let v4_ok = match subnet4_key(&plan) {
        Some((a, p)) => maps.subnet_owner(a, p)? == Some(owner),
        None => true,
    };
    let v6_ok = match subnet6_key(&plan) {
        Some((a, p)) => maps.subnet6_owner(a, p)? == Some(owner),
        None => true,
    };
    if !(v4_ok && v6_ok) {
        write_subnets(maps, rec.id, &plan)?;
        repairs.note(format!("{name}: wrote its subnet map entries"));
    }
    if let Some(want6) = nat6::config(&plan, rec.nat6)
        && maps.layout().has(crate::dataplane::layout::Feature::Nat66)
        && maps.nat6()?.get(&rec.id, 0).ok() != Some(want6)
    {
        maps.set_nat6(rec.id, &want6)?;
        repairs.note(format!("{name}: wrote its IPv6 (NAT66) map entry"));
    }

    // The uplink's XDP program.
    if has_uplink && nl.link_by_index(rec.uplink_ifindex).await?.is_some() {
        let path = ctx.pins.xdp_link(rec.uplink_ifindex);
        if !pinned::link_attached(&path, rec.uplink_ifindex) {
            let what = if path.exists() {
                "was detached"
            } else {
                "had no link"
            };
            dataplane::detach_uplink(&ctx.pins, rec.uplink_ifindex)?;
            dataplane::attach_uplink(&ctx.pins, rec.uplink_ifindex, &rec.uplink)?;
            repairs.note(format!(
                "{name}: uplink {} {what}: attached XDP again",
                rec.uplink
            ));
        }
    }

    // Guest ports.
    let endpoints = maps.endpoints()?;
    // The record as the lease lookup reads it (name, definition).
    let snapshot = rec.clone();
    for port in rec.ports.iter_mut() {
        let Some(link) = nl.link_by_name(&port.dev).await? else {
            repairs.problem(format!(
                "{name}: guest port {} is missing; plugging it in when it reappears",
                port.dev
            ));
            continue;
        };
        if link.index != port.ifindex {
            dataplane::detach(&ctx.pins.tc_link(port.ifindex))?;
            maps.remove_endpoint(port.ifindex)?;
            repairs.note(format!(
                "{name}: guest port {} came back as ifindex {} (was {})",
                port.dev, link.index, port.ifindex
            ));
            port.ifindex = link.index;
        }
        match endpoints.get(&port.ifindex, 0) {
            Ok(ep) if ep.network_id == rec.id && maps.mac_entry_current(port.ifindex, &ep)? => {}
            _ => {
                let ep = port_endpoint(&ctx.state_dir, &snapshot, port, takes_xdp_frames(&link))?;
                maps.set_endpoint(port.ifindex, &ep)?;
                repairs.note(format!("{name}: wrote the endpoint of {}", port.dev));
            }
        }
        if link.master != Some(rec.bridge_ifindex) {
            nl.set_master(port.ifindex, rec.bridge_ifindex).await?;
            repairs.note(format!("{name}: plugged {} into {}", port.dev, rec.bridge));
        }
        if !link.up {
            nl.set_up(port.ifindex).await?;
        }
        let path = ctx.pins.tc_link(port.ifindex);
        if !pinned::link_attached(&path, port.ifindex) {
            let what = if path.exists() {
                "was detached"
            } else {
                "had no link"
            };
            dataplane::detach(&path)?;
            dataplane::attach_guest_port(&ctx.pins, port.ifindex, &port.dev)?;
            repairs.note(format!(
                "{name}: guest port {} {what}: attached the TC program again",
                port.dev
            ));
        }
    }

    // Guest services: the dnsmasq supervisor restarts dnsmasq itself; a
    // supervisor that was killed is started again here.
    if crate::host::dnsmasq::wanted(&plan.def, &name)? {
        let inv = crate::host::dnsmasq::Invocation::current(&ctx.state_dir, &ctx.pins.root)?;
        if crate::host::dnsmasq::ensure_running(&inv, &plan.def, &rec.bridge, &name)? {
            repairs.note(format!(
                "{name}: its dnsmasq supervisor was gone: started it again"
            ));
        }
    }
    Ok(())
}

/// Drops per-port counters of interfaces no network uses any more (so a
/// reused ifindex starts from zero).
fn prune_port_counters(maps: &Maps, in_use: &HashSet<u32>) {
    let Ok(mut counters) = maps.port_counters() else {
        return;
    };
    let stale: Vec<_> = counters
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !in_use.contains(&k.ifindex))
        .collect();
    for key in stale {
        let _ = counters.remove(&key);
    }
}

/// `vxdp unload`: detaches every pinned link, removes every pin (programs
/// and maps go with their last reference) and marks the dataplane as
/// unloaded on purpose so `vxdp serve` does not load it again. Bridges, ports
/// and the started networks' records stay: the kernel bridge path keeps
/// switching, and `vxdp load` brings the fast path back.
pub fn unload(ctx: &Context) -> Result<pinned::PinnedIds, DataplaneError> {
    let _state = StateDir::open(&ctx.state_dir).map_err(|e| DataplaneError::Io {
        path: ctx.state_dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let ids = if ctx.pins.root.exists() {
        pinned::pinned_ids(&ctx.pins).unwrap_or_default()
    } else {
        pinned::PinnedIds::default()
    };
    let links_dir = ctx.pins.root.join("links");
    if let Ok(rd) = std::fs::read_dir(&links_dir) {
        for entry in rd.flatten() {
            dataplane::detach(&entry.path())?;
        }
    }
    dataplane::unload(&ctx.pins)?;
    let marker = ctx.state_dir.join(UNLOADED_MARKER);
    std::fs::write(
        &marker,
        "removed by `vxdp unload`; `vxdp load` brings the dataplane back\n",
    )
    .map_err(|source| DataplaneError::Io {
        path: marker,
        source,
    })?;
    Ok(ids)
}

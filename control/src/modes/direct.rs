//! Direct (macvtap-like) networks: `<forward mode='bridge|vepa|private|
//! passthrough'>` with `<interface dev>` (or `<forward dev>`, and for
//! bridge mode no `<bridge name>`). There is no bridge: the network's
//! layer-2 domain is the physical NIC (the pool's devices), its ports are
//! the guests' taps, and the eBPF programs steer frames by MAC between the
//! NIC and the ports (see `dataplane-ebpf/src/direct.rs`).
//!
//! On the host this module owns: the `VXDP_DIRECT_NICS` entry of each
//! device (network, mode, the device's MAC, its guest ports), each guest
//! port's `VXDP_DIRECT_PORTS` entry, and the three programs on each device
//! (XDP shared with the uplink logic, TC ingress and TC egress; pinned as
//! `links/xdp_<i>`, `links/tc_nic_in_<i>`, `links/tc_nic_out_<i>`).
//! A device serves one direct network; a passthrough device one guest.

use std::net::Ipv4Addr;

use vxdp_common::{DIRECT_MAX_PORTS, DirectNic, mode};

use crate::{
    dataplane::{self, DataplaneError, Maps, Pins},
    host::{
        Context,
        netlink::Netlink,
        state::{NetworkRecord, StateDir},
        undo::{Step, Undo},
    },
    modes::{
        plan::{NetworkPlan, devices, invalid, network_config},
        shared::{
            ModeError, Repairs, device_used, load_dataplane, port_endpoint, takes_xdp_frames,
        },
    },
};

/// Starts a direct network (`net-start`/`net-create`): checks its devices,
/// writes the network and device entries, attaches the device programs.
/// Undone completely on failure.
pub async fn start(
    ctx: &Context,
    plan: &NetworkPlan,
    file: &str,
) -> Result<NetworkRecord, ModeError> {
    let (state, nl, _) = crate::modes::shared::lock_for_change(ctx).await?;
    let running = state.networks()?;
    let name = plan.def.name.clone();
    if running.iter().any(|r| r.name == name) {
        return Err(ModeError::AlreadyStarted(name));
    }
    let mut nics = Vec::new();
    for (dev, element) in devices(&plan.def, file)? {
        let link = nl
            .link_by_name(&dev)
            .await?
            .ok_or_else(|| invalid(file, &element, format!("interface {dev} does not exist")))?;
        if let Some(other) = running
            .iter()
            .find(|r| r.direct_nics.iter().any(|(_, i)| *i == link.index))
        {
            return Err(invalid(
                file,
                &element,
                format!(
                    "interface {dev} is already the device of direct network '{}' (one direct network per device)",
                    other.name
                ),
            ).into());
        }
        if let Some(other) = running.iter().find(|r| {
            r.bridge_ifindex == link.index || r.ports.iter().any(|p| p.ifindex == link.index)
        }) {
            return Err(invalid(
                file,
                &element,
                format!(
                    "interface {dev} is a bridge or guest port of network '{}'",
                    other.name
                ),
            )
            .into());
        }
        let mac = link.mac.ok_or_else(|| {
            invalid(
                file,
                &element,
                format!("interface {dev} has no Ethernet address"),
            )
        })?;
        nics.push((link.name, link.index, mac));
    }
    let id = (1..vxdp_common::MAX_NETWORKS)
        .find(|id| running.iter().all(|r| r.id != *id))
        .ok_or(ModeError::TooManyNetworks)?;
    let mut undo = Undo::journaled(&ctx.state_dir, &ctx.pins, &format!("net-start {name}"))?;
    let res = apply_start(ctx, &state, plan, &nics, id, running.is_empty(), &mut undo).await;
    match &res {
        Ok(_) => undo.commit(),
        Err(_) => undo.run(&nl).await,
    }
    res
}

async fn apply_start(
    ctx: &Context,
    state: &StateDir,
    plan: &NetworkPlan,
    nics: &[(String, u32, [u8; 6])],
    id: u32,
    first_network: bool,
    undo: &mut Undo,
) -> Result<NetworkRecord, ModeError> {
    let name = plan.def.name.clone();
    let mode_name = plan.mode_name();
    load_dataplane(ctx, state, &name, first_network, undo)?;
    let (first_name, first_index, first_mac) = nics[0].clone();
    let maps = Maps::open(&ctx.pins)?;
    // An adopted dataplane older than direct networks has no maps for them.
    maps.layout()
        .require(&ctx.pins, crate::dataplane::layout::Feature::Direct)
        .map_err(DataplaneError::from)?;
    let none = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
    let cfg = network_config(plan, 0, first_mac, first_index, none);
    maps.reset_counters(id)?;
    undo.push(Step::ClearNetwork { id });
    maps.set_network(id, &cfg)?;
    for (dev, index, mac) in nics.iter().cloned() {
        log::info!(
            "{name}: {mode_name} on {dev} (ifindex {index}): attaching XDP and TC ingress/egress"
        );
        undo.push(Step::RemoveDirectNic { ifindex: index });
        maps.set_direct_nic(
            index,
            &DirectNic {
                network_id: id,
                mode: plan.mode,
                mac,
                ..DirectNic::default()
            },
        )?;
        let xdp = ctx.pins.xdp_link(index);
        if !xdp.exists() {
            undo.push(Step::DetachUplink { ifindex: index });
        }
        dataplane::attach_uplink(&ctx.pins, index, &dev)?;
        undo.push(Step::DetachLinks {
            paths: ctx.pins.nic_links(index).to_vec(),
        });
        dataplane::attach_nic(&ctx.pins, index, &dev)?;
    }
    let rec = NetworkRecord {
        name: name.clone(),
        id,
        mode: mode_name.into(),
        bridge: String::new(),
        bridge_ifindex: 0,
        uplink: first_name,
        uplink_ifindex: first_index,
        subnet: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        gateway: Ipv4Addr::UNSPECIFIED,
        nat_first: Ipv4Addr::UNSPECIFIED,
        nat_last: Ipv4Addr::UNSPECIFIED,
        nat_ports: plan.nat_ports,
        ports: Vec::new(),
        xml: crate::xml::to_xml(&plan.def),
        ipv6: None,
        direct_nics: nics.iter().map(|(n, i, _)| (n.clone(), *i)).collect(),
        nat6: None,
    };
    state.save_network(&rec)?;
    let devs: Vec<_> = nics.iter().map(|(n, _, _)| n.as_str()).collect();
    log::info!(
        "{name}: started (network id {id}, {mode_name} on {})",
        devs.join(", ")
    );
    Ok(rec)
}

/// `net-destroy` of a direct network, after its ports are unplugged: the
/// device entries and programs go (XDP stays while another network uses
/// the device as its uplink).
pub fn stop_nics(
    pins: &Pins,
    rec: &NetworkRecord,
    others: &[NetworkRecord],
) -> Result<(), ModeError> {
    for (_, index) in &rec.direct_nics {
        if let Ok(maps) = Maps::open(pins) {
            maps.remove_direct_nic(*index)?;
        }
        for link in pins.nic_links(*index) {
            dataplane::detach(&link)?;
        }
        if !device_used(others, *index) {
            dataplane::detach_uplink(pins, *index)?;
        }
    }
    Ok(())
}

/// Plugs guest port `port` into direct network `rec`: picks its device
/// like libvirt (the pool's least used one; passthrough: a device with no
/// guest yet) and adds the port to it. Pushes its undo first.
pub fn plug(
    pins: &Pins,
    maps: &Maps,
    rec: &NetworkRecord,
    port: u32,
    dev: &str,
    undo: &mut Undo,
) -> Result<String, ModeError> {
    let mut best: Option<(String, u32, DirectNic)> = None;
    for (name, index) in &rec.direct_nics {
        let nic = maps
            .direct_nic(*index)?
            .ok_or_else(|| ModeError::Dataplane(DataplaneError::NotLoaded(pins.root.clone())))?;
        if best
            .as_ref()
            .is_none_or(|(_, _, b)| nic.port_count < b.port_count)
        {
            best = Some((name.clone(), *index, nic));
        }
    }
    let (nic_name, nic_index, mut nic) = best.ok_or_else(|| {
        invalid(
            &rec.name,
            "/network/forward",
            "the direct network has no device",
        )
    })?;
    if nic.mode == mode::DIRECT_PASSTHROUGH && nic.port_count > 0 {
        let devs: Vec<_> = rec.direct_nics.iter().map(|(n, _)| n.as_str()).collect();
        return Err(invalid(
            &rec.name,
            "/network/forward@mode",
            format!(
                "cannot plug {dev}: passthrough network '{}' gives each guest a whole device, and every device ({}) has its guest",
                rec.name,
                devs.join(", ")
            ),
        )
        .into());
    }
    if nic.port_count as usize >= DIRECT_MAX_PORTS {
        return Err(invalid(
            &rec.name,
            "/network/forward",
            format!(
                "cannot plug {dev}: device {nic_name} already has {DIRECT_MAX_PORTS} guests, the most vxdp supports per device"
            ),
        )
        .into());
    }
    undo.push(Step::RemoveDirectPort { port });
    maps.set_direct_port(port, nic_index)?;
    nic.ports[nic.port_count as usize] = port;
    nic.port_count += 1;
    maps.set_direct_nic(nic_index, &nic)?;
    Ok(nic_name)
}

/// Removes guest port `port` from its device (no-op when it has none).
pub fn unplug(maps: &Maps, port: u32) -> Result<(), DataplaneError> {
    maps.unplug_direct_port(port)
}

/// Reconcile for a direct network: the network and device entries, the
/// device programs, and each guest port's endpoint, device entry and TC
/// program, as `net-start` and `attach-interface` write them.
pub async fn reconcile(
    ctx: &Context,
    nl: &Netlink,
    maps: &Maps,
    rec: &mut NetworkRecord,
    plan: &NetworkPlan,
    repairs: &mut Repairs,
) -> Result<(), ModeError> {
    let name = rec.name.clone();
    let mut first_mac = None;
    for (dev, index) in rec.direct_nics.clone() {
        let Some(link) = nl.link_by_index(index).await?.filter(|l| l.name == dev) else {
            repairs.problem(format!(
                "{name}: device {dev} (ifindex {index}) is missing; waiting for it"
            ));
            continue;
        };
        let mac = link.mac.unwrap_or_default();
        first_mac.get_or_insert(mac);
        let ports: Vec<u32> = rec.ports.iter().map(|p| p.ifindex).collect();
        let current = maps.direct_nic(index)?;
        let ok =
            current.is_some_and(|n| n.network_id == rec.id && n.mode == plan.mode && n.mac == mac);
        if !ok {
            let mut nic = DirectNic {
                network_id: rec.id,
                mode: plan.mode,
                mac,
                ..DirectNic::default()
            };
            for p in ports
                .iter()
                .filter(|p| maps.direct_port(**p).ok().flatten() == Some(index))
            {
                if (nic.port_count as usize) < DIRECT_MAX_PORTS {
                    nic.ports[nic.port_count as usize] = *p;
                    nic.port_count += 1;
                }
            }
            maps.set_direct_nic(index, &nic)?;
            repairs.note(format!("{name}: wrote the device entry of {dev}"));
        }
        let xdp = ctx.pins.xdp_link(index);
        if !crate::dataplane::pinned::link_attached(&xdp, index) {
            dataplane::detach_uplink(&ctx.pins, index)?;
            dataplane::attach_uplink(&ctx.pins, index, &dev)?;
            repairs.note(format!("{name}: device {dev}: attached XDP again"));
        }
        for link_path in ctx.pins.nic_links(index) {
            if !crate::dataplane::pinned::link_attached(&link_path, index) {
                dataplane::detach(&link_path)?;
                dataplane::attach_nic(&ctx.pins, index, &dev)?;
                repairs.note(format!(
                    "{name}: device {dev}: attached its TC programs again"
                ));
            }
        }
    }
    let want = network_config(
        plan,
        0,
        first_mac.unwrap_or_default(),
        rec.uplink_ifindex,
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
    );
    if first_mac.is_some() && maps.networks()?.get(&rec.id, 0).ok() != Some(want) {
        maps.set_network(rec.id, &want)?;
        repairs.note(format!(
            "{name}: wrote its network map entry (id {})",
            rec.id
        ));
    }
    let snapshot = rec.clone();
    for port in &rec.ports {
        let Some(link) = nl
            .link_by_name(&port.dev)
            .await?
            .filter(|l| l.index == port.ifindex)
        else {
            repairs.problem(format!("{name}: guest port {} is missing or was recreated; plug it in again with attach-interface", port.dev));
            continue;
        };
        if crate::modes::shaping::repair(nl, maps, port, false).await? {
            repairs.note(format!("{name}: shaped {} again", port.dev));
        }
        match maps.endpoint(port.ifindex)? {
            Some(ep) if ep.network_id == rec.id && maps.mac_entry_current(port.ifindex, &ep)? => {}
            _ => {
                let ep = port_endpoint(&ctx.state_dir, &snapshot, port, takes_xdp_frames(&link))?;
                maps.set_endpoint(port.ifindex, &ep)?;
                repairs.note(format!("{name}: wrote the endpoint of {}", port.dev));
            }
        }
        if maps.direct_port(port.ifindex)?.is_none() {
            // Out of every device's list first, so it is listed once.
            for (_, index) in &snapshot.direct_nics {
                if let Some(mut nic) = maps.direct_nic(*index)? {
                    let used = (nic.port_count as usize).min(DIRECT_MAX_PORTS);
                    if nic.ports[..used].contains(&port.ifindex) {
                        let kept: Vec<u32> = nic.ports[..used]
                            .iter()
                            .copied()
                            .filter(|p| *p != port.ifindex)
                            .collect();
                        nic.ports = [0; DIRECT_MAX_PORTS];
                        nic.ports[..kept.len()].copy_from_slice(&kept);
                        nic.port_count = kept.len() as u32;
                        maps.set_direct_nic(*index, &nic)?;
                    }
                }
            }
            // A repair, not a change to revert: nothing is journaled.
            let mut undo = Undo::in_memory(&ctx.pins);
            plug(
                &ctx.pins,
                maps,
                &snapshot,
                port.ifindex,
                &port.dev,
                &mut undo,
            )?;
            repairs.note(format!(
                "{name}: put guest port {} on its device again",
                port.dev
            ));
        }
        if !link.up {
            nl.set_up(port.ifindex).await?;
        }
        let path = ctx.pins.tc_link(port.ifindex);
        if !crate::dataplane::pinned::link_attached(&path, port.ifindex) {
            dataplane::detach(&path)?;
            dataplane::attach_guest_port(&ctx.pins, port.ifindex, &port.dev)?;
            repairs.note(format!(
                "{name}: guest port {}: attached the TC program again",
                port.dev
            ));
        }
    }
    Ok(())
}

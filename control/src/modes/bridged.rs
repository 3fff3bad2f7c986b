//! Starting a bridged network (NAT, route, open, isolated, very isolated,
//! host bridge): a plan is turned into a bridge, map entries, the uplink's
//! programs and dnsmasq. Every step that changes the host pushes its undo;
//! if a later step fails, the undo stack runs, so a failed start leaves
//! nothing behind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vxdp_common::{MAX_NETWORKS, mode, mode_routes, names, network_flags};

use crate::{
    dataplane::{self, Maps, pinned},
    host::{
        Context, dnsmasq, fault,
        netlink::{LinkInfo, Netlink},
        state::{NetworkRecord, PortRecord, StateDir},
        sysctl::{self, IP_FORWARD, IPV6_FORWARD},
        undo::{Step, Undo},
    },
    model::{addr::overlaps, mac::Mac},
    modes::{
        follow, nat6,
        plan::{
            self, Ipv4Plan, NetworkPlan, bridge_mac, invalid, network_config, route4_entries,
            subnet_owner, subnet4_keys, subnet6_keys,
        },
        shared,
        shared::{
            ModeError, Repairs, configure_bridge, device_used, forwarding, guest_xdp_wanted,
            host_bridge_flags, load_dataplane, offer_uplink_to_guest_xdp, port_endpoint,
            port_forward_entries, remember_sysctl, takes_xdp_frames, write_subnets,
        },
    },
    xml,
};

/// Starts a bridged network from its plan; `file` names the definition in
/// errors.
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
    if let Some(v4) = plan.ipv4
        && let Some(other) = running.iter().find(|r| {
            !r.gateway.is_unspecified()
                && overlaps((r.subnet.into(), r.prefix), (v4.subnet.into(), v4.prefix))
        })
    {
        return Err(invalid(
            file,
            "/network/ip@address",
            format!(
                "subnet {}/{} overlaps network '{}' ({}/{})",
                v4.subnet, v4.prefix, other.name, other.subnet, other.prefix
            ),
        )
        .into());
    }
    if let Some((a, p)) = plan.ipv6
        && let Some(other) = running.iter().find(|r| {
            r.ipv6
                .is_some_and(|(b, q)| overlaps((a.into(), p), (b.into(), q)))
        })
    {
        return Err(invalid(
            file,
            "/network/ip@address",
            format!("subnet {a}/{p} overlaps network '{}'", other.name),
        )
        .into());
    }
    // Every prefix the network would own in the subnet tries (further
    // <ip> blocks, <route>s) against every running network's: an entry
    // for the same prefix would be overwritten, an overlapping one would
    // take addresses from the other network.
    for (element, prefix) in owned_prefixes(plan) {
        for other in &running {
            let Ok(theirs) = plan::plan(&other.xml, &other.name) else {
                continue;
            };
            if let Some((_, q)) = owned_prefixes(&theirs)
                .into_iter()
                .find(|(_, q)| overlaps(prefix, *q))
            {
                return Err(invalid(
                    file,
                    &element,
                    format!(
                        "{}/{} overlaps network '{}' ({}/{})",
                        prefix.0, prefix.1, other.name, q.0, q.1
                    ),
                )
                .into());
            }
        }
    }
    let bridge = match &plan.def.bridge.name {
        Some(b) if plan.mode == mode::BRIDGE => {
            let link = nl.link_by_name(b).await?.ok_or_else(|| {
                invalid(
                    file,
                    "/network/bridge@name",
                    format!("bridge {b} does not exist (host bridge mode uses an existing bridge)"),
                )
            })?;
            if link.kind.as_deref() != Some("bridge") {
                return Err(
                    invalid(file, "/network/bridge@name", format!("{b} is not a bridge")).into(),
                );
            }
            if let Some(other) = running.iter().find(|r| r.bridge == *b) {
                return Err(invalid(
                    file,
                    "/network/bridge@name",
                    format!("bridge {b} is already used by network '{}'", other.name),
                )
                .into());
            }
            b.clone()
        }
        Some(b) => {
            if nl.link_by_name(b).await?.is_some() {
                return Err(invalid(
                    file,
                    "/network/bridge@name",
                    format!("interface {b} already exists"),
                )
                .into());
            }
            b.clone()
        }
        None => {
            let mut n = 0;
            loop {
                let candidate = format!("virbr{n}");
                if nl.link_by_name(&candidate).await?.is_none()
                    && running.iter().all(|r| r.bridge != candidate)
                {
                    break candidate;
                }
                n += 1;
            }
        }
    };
    // NAT needs an uplink; route/open use <forward dev> or the default
    // route's interface when there is one; isolated networks take the
    // default route's interface only to refuse inbound traffic there; a host
    // bridge holds its uplink itself.
    let uplink = if plan.mode == mode::BRIDGE {
        None
    } else {
        match plan.def.forward.as_ref().and_then(|f| f.dev.clone()) {
            Some(dev) => Some(nl.link_by_name(&dev).await?.ok_or_else(|| {
                invalid(
                    file,
                    "/network/forward@dev",
                    format!("interface {dev} does not exist"),
                )
            })?),
            None => nl.default_route_link_v4().await?,
        }
    };
    if plan.mode == mode::NAT && uplink.is_none() {
        return Err(ModeError::NoUplink);
    }
    let (nat_first, nat_last) = match (plan.mode, plan.nat_addresses, &uplink) {
        (mode::NAT, Some(range), _) => range,
        (mode::NAT, None, Some(up)) => {
            let addrs = nl.ipv4_addresses(up.index).await?;
            let (a, _) = *addrs
                .first()
                .ok_or_else(|| ModeError::UplinkWithoutAddress(up.name.clone()))?;
            (a, a)
        }
        _ => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
    };
    if (mode_routes(plan.mode) || plan.mode == mode::NAT) && plan.ipv6.is_some() {
        nat6::check_ipv6_forwarding(&nl).await?;
    }
    let nat6_addr = match &uplink {
        Some(up) if nat6::masquerades(plan) => {
            Some(nat6::uplink_address(&nl, up.index, &up.name).await?)
        }
        _ => None,
    };
    let id = (1..MAX_NETWORKS)
        .find(|id| running.iter().all(|r| r.id != *id))
        .ok_or(ModeError::TooManyNetworks)?;

    let mut undo = Undo::journaled(&ctx.state_dir, &ctx.pins, &format!("net-start {name}"))?;
    let result = apply_start(
        ctx,
        &state,
        &nl,
        plan,
        &bridge,
        uplink.as_ref(),
        id,
        (nat_first, nat_last),
        nat6_addr,
        running.is_empty(),
        &mut undo,
    )
    .await;
    match result {
        Ok(rec) => {
            undo.commit();
            Ok(rec)
        }
        Err(e) => {
            undo.run(&nl).await;
            Err(e)
        }
    }
}

/// The prefixes a network owns (its `<ip>` blocks and `<route>`s), each
/// with the element that gives it.
fn owned_prefixes(plan: &NetworkPlan) -> Vec<(String, (IpAddr, u8))> {
    let ips = plan.def.ips.iter().enumerate().map(|(i, ip)| {
        (
            format!("/network/ip[{}]@address", i + 1),
            (ip.network(), ip.prefix),
        )
    });
    let routes = plan.routes.iter().enumerate().map(|(i, r)| {
        (
            format!("/network/route[{}]@address", i + 1),
            (r.address, r.prefix),
        )
    });
    ips.chain(routes).collect()
}

#[allow(clippy::too_many_arguments)]
async fn apply_start(
    ctx: &Context,
    state: &StateDir,
    nl: &Netlink,
    plan: &NetworkPlan,
    bridge: &str,
    uplink: Option<&LinkInfo>,
    id: u32,
    (nat_first, nat_last): (Ipv4Addr, Ipv4Addr),
    nat6_addr: Option<Ipv6Addr>,
    first_network: bool,
    undo: &mut Undo,
) -> Result<NetworkRecord, ModeError> {
    let name = plan.def.name.clone();
    let mode_name = plan.mode_name();
    load_dataplane(ctx, state, &name, first_network, undo)?;
    // bpf_fib_lookup only forwards with forwarding on; the programs, not a
    // firewall, decide what may cross.
    let (forward_v4, forward_v6) = forwarding(plan);
    if forward_v4 {
        remember_sysctl(state, IP_FORWARD, |h| &mut h.ip_forward_before)?;
    }
    if forward_v6 {
        remember_sysctl(state, IPV6_FORWARD, |h| &mut h.ipv6_forward_before)?;
    }
    if first_network {
        // The values to restore are captured now: the undo runs while this
        // process still holds the state directory's lock, so it must not
        // open the state directory again (flock would wait for ourselves).
        let host = state.host()?;
        undo.push(Step::RestoreHost {
            ip_forward: host.ip_forward_before,
            ipv6_forward: host.ipv6_forward_before,
            host_file: ctx.state_dir.join("host.json"),
        });
    }
    if forward_v4 {
        sysctl::write(IP_FORWARD, "1")?;
    }
    if forward_v6 {
        sysctl::write(IPV6_FORWARD, "1")?;
    }

    let mut bridge_flags = 0;
    let (bridge_ifindex, mac) = if plan.mode == mode::BRIDGE {
        // The operator's bridge: used as it is, never changed or removed.
        let link = nl
            .link_by_name(bridge)
            .await?
            .ok_or_else(|| ModeError::NoSuchInterface(bridge.into()))?;
        log::info!(
            "{name}: using host bridge {bridge} (ifindex {})",
            link.index
        );
        bridge_flags = host_bridge_flags(nl, &link).await?;
        if bridge_flags & network_flags::BRIDGE_FILTERS != 0 {
            log::info!(
                "{name}: {bridge} filters VLANs, calls netfilter or has isolated ports: frames between guests stay on it"
            );
        }
        (link.index, link.mac.unwrap_or_default())
    } else {
        log::info!("{name}: creating {mode_name} bridge {bridge}");
        let mac = plan.def.mac.unwrap_or_else(|| bridge_mac(&name));
        // The name was checked free above: whatever has it after a crash
        // is the bridge this start created.
        undo.push(Step::DeleteBridge {
            name: bridge.into(),
        });
        let bridge_ifindex = nl
            .create_bridge(
                bridge,
                Some(mac),
                plan.def.bridge.stp,
                plan.def.bridge.delay * 100,
            )
            .await?;
        configure_bridge(nl, plan, bridge, bridge_ifindex).await?;
        fault::point("net-start:bridge");
        // What the host forwards into the network from any interface meets
        // the uplink's refusals (see `vxdp_bridge_out`).
        undo.push(Step::DetachLinks {
            paths: vec![ctx.pins.bridge_link(bridge_ifindex)],
        });
        dataplane::attach_bridge(&ctx.pins, bridge_ifindex, bridge)?;
        (bridge_ifindex, mac)
    };

    let maps = Maps::open(&ctx.pins)?;
    let mut cfg = network_config(
        plan,
        bridge_ifindex,
        mac,
        uplink.map_or(0, |u| u.index),
        (nat_first, nat_last),
    );
    cfg.flags |= bridge_flags;
    undo.push(Step::ClearNetwork { id });
    maps.reset_counters(id)?;
    crate::modes::shaping::apply_network(&maps, id, &plan.def)?;
    maps.set_network(id, &cfg)?;
    // The undo comes first: removing an entry that was never written is
    // harmless, and a failure between the two writes still removes the first.
    for v4 in subnet4_keys(plan) {
        undo.push(Step::RemoveSubnets {
            v4: Some(v4),
            v6: None,
        });
    }
    for v6 in subnet6_keys(plan) {
        undo.push(Step::RemoveSubnets {
            v4: None,
            v6: Some(v6),
        });
    }
    for (a, p, _) in route4_entries(plan, id) {
        undo.push(Step::RemoveRoute { v4: (a, p) });
    }
    write_subnets(&maps, id, plan)?;
    fault::point("net-start:maps");
    // ClearNetwork above also clears the NAT66 entry.
    if let Some(cfg) = nat6::config(plan, nat6_addr) {
        maps.set_nat6(id, &cfg)?;
    }
    let v4 = plan.ipv4.unwrap_or(Ipv4Plan {
        gateway: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        subnet: Ipv4Addr::UNSPECIFIED,
    });

    if let Some(uplink) = uplink {
        log::info!(
            "{name}: attaching XDP to uplink {} (ifindex {})",
            uplink.name,
            uplink.index
        );
        if !device_used(&state.networks()?, uplink.index) {
            undo.push(Step::DetachUplink {
                ifindex: uplink.index,
            });
        }
        dataplane::attach_uplink(&ctx.pins, uplink.index, &uplink.name)?;
        offer_uplink_to_guest_xdp(&ctx.pins, uplink.index, &uplink.name)?;
        fault::point("net-start:uplink");
    }

    if dnsmasq::wanted(&plan.def, &name)? {
        log::info!("{name}: starting dnsmasq (DHCP/DNS/TFTP) on {bridge}");
        let inv = dnsmasq::Invocation::current(&ctx.state_dir, &ctx.pins.root)?;
        undo.push(Step::StopDnsmasq {
            network: name.clone(),
        });
        dnsmasq::start(&inv, &plan.def, bridge, &name)?;
        fault::point("net-start:dnsmasq");
    }

    let rec = NetworkRecord {
        name: name.clone(),
        id,
        mode: mode_name.into(),
        bridge: bridge.into(),
        bridge_ifindex,
        uplink: uplink.map_or_else(String::new, |u| u.name.clone()),
        uplink_ifindex: uplink.map_or(0, |u| u.index),
        subnet: v4.subnet,
        prefix: v4.prefix,
        gateway: v4.gateway,
        nat_first,
        nat_last,
        nat_ports: plan.nat_ports,
        ports: Vec::new(),
        xml: xml::to_xml(&plan.def),
        ipv6: plan.ipv6,
        direct_nics: Vec::new(),
        nat6: nat6_addr,
    };
    state.save_network(&rec)?;
    if plan.mode == mode::NAT {
        log::info!(
            "{name}: started (network id {id}, NAT to {nat_first}, ports {}-{})",
            plan.nat_ports.0,
            plan.nat_ports.1
        );
        match (nat6_addr, plan.ipv6) {
            (Some(a), _) => log::info!("{name}: IPv6 masqueraded (NAT66) to {a}"),
            (None, Some(_)) => {
                log::info!("{name}: IPv6 routed without NAT (no <nat ipv6='yes'>)")
            }
            _ => {}
        }
    } else {
        log::info!("{name}: started (network id {id}, {mode_name})");
    }
    Ok(rec)
}

/// Repairs a bridged network (see [`crate::ops::reconcile`]): the bridge
/// (vxdp's own recreated with its host side; a host bridge only reported),
/// the network's map entries, the uplink's programs, dnsmasq, and every
/// guest port (plugged in again, endpoint and program restored); the
/// uplink follows the default route ([`super::follow`]).
pub async fn reconcile(
    ctx: &Context,
    nl: &Netlink,
    maps: &Maps,
    rec: &mut NetworkRecord,
    plan: &NetworkPlan,
    others: &[NetworkRecord],
    repairs: &mut Repairs,
) -> Result<(), ModeError> {
    let name = rec.name.clone();
    let host_bridge = plan.mode == mode::BRIDGE;

    // The bridge: vxdp's own is recreated with its host side (addresses or
    // disable_ipv6) when deleted; a host bridge is the operator's and is
    // never created, set up or changed here.
    let mut bridge_flags = 0;
    let bridge_before = rec.bridge_ifindex;
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
            if let Err(e) = configure_bridge(nl, plan, &rec.bridge, index).await {
                // Half a bridge would look repaired to the next pass.
                let _ = nl.delete_link(index).await;
                return Err(e);
            }
            rec.bridge_ifindex = index;
            let addrs: Vec<String> = plan
                .ipv4_all
                .iter()
                .map(|v4| format!("{}/{}", v4.gateway, v4.prefix))
                .chain(plan.ipv6_all.iter().map(|(a, p)| format!("{a}/{p}")))
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

    // Static routes via the bridge: put back when something removed them
    // (a recreated bridge got them with its host side above).
    if !host_bridge {
        for route in shared::add_routes(nl, plan, rec.bridge_ifindex).await? {
            repairs.note(format!("{name}: added the missing route {route}"));
        }
    }

    // The bridge's egress program (see `vxdp_bridge_out`): on the bridge
    // as it is now; a recreated bridge's old link goes.
    if !host_bridge {
        if bridge_before != rec.bridge_ifindex {
            dataplane::detach_bridge(&ctx.pins, bridge_before)?;
        }
        let path = ctx.pins.bridge_link(rec.bridge_ifindex);
        if ctx.pins.prog(names::PROG_BRIDGE_EGRESS).exists()
            && !pinned::link_attached(&path, rec.bridge_ifindex)
        {
            dataplane::detach_bridge(&ctx.pins, rec.bridge_ifindex)?;
            dataplane::attach_bridge(&ctx.pins, rec.bridge_ifindex, &rec.bridge)?;
            repairs.note(format!(
                "{name}: bridge {} had no egress program: attached it",
                rec.bridge
            ));
        }
    }

    // The uplink and the NAT addresses follow the host's default route and
    // the uplink's addresses (see `follow`).
    follow::uplink(ctx, nl, maps, rec, plan, others, repairs).await?;

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
        plan,
        rec.bridge_ifindex,
        mac,
        if has_uplink { rec.uplink_ifindex } else { 0 },
        (rec.nat_first, rec.nat_last),
    );
    want.flags |= bridge_flags;
    if crate::modes::shaping::repair_network(maps, rec.id, &plan.def)? {
        repairs.note(format!("{name}: wrote its rate limits again"));
    }
    if maps.networks()?.get(&rec.id, 0).ok() != Some(want) {
        maps.set_network(rec.id, &want)?;
        repairs.note(format!(
            "{name}: wrote its network map entry (id {})",
            rec.id
        ));
    }
    let owner = subnet_owner(rec.id, plan);
    let mut v4_ok = true;
    for (a, p) in subnet4_keys(plan) {
        v4_ok &= maps.subnet_owner(a, p)? == Some(owner);
    }
    let mut v6_ok = true;
    for (a, p) in subnet6_keys(plan) {
        v6_ok &= maps.subnet6_owner(a, p)? == Some(owner);
    }
    for (a, p, want) in route4_entries(plan, rec.id) {
        v4_ok &= maps.route(a, p)? == Some(want);
    }
    if !(v4_ok && v6_ok) {
        write_subnets(maps, rec.id, plan)?;
        repairs.note(format!("{name}: wrote its subnet map entries"));
    }
    if let Some(want6) = nat6::config(plan, rec.nat6)
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
        offer_uplink_to_guest_xdp(&ctx.pins, rec.uplink_ifindex, &rec.uplink)?;
    }

    // Ports the hypervisor put on (or took off) vxdp's bridge.
    if !host_bridge {
        follow_bridge_ports(ctx, nl, maps, rec, others, repairs).await?;
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
        let moved = link.index != port.ifindex;
        if moved {
            dataplane::detach_guest_port(&ctx.pins, port.ifindex)?;
            maps.remove_endpoint(port.ifindex)?;
            repairs.note(format!(
                "{name}: guest port {} came back as ifindex {} (was {})",
                port.dev, link.index, port.ifindex
            ));
            port.ifindex = link.index;
        }
        if crate::modes::shaping::repair(nl, maps, port, moved).await? {
            repairs.note(format!("{name}: shaped {} again", port.dev));
        }
        match endpoints.get(&port.ifindex, 0) {
            Ok(ep) if ep.network_id == rec.id && maps.mac_entry_current(port.ifindex, &ep)? => {}
            _ => {
                let ep = port_endpoint(&ctx.state_dir, &snapshot, port, takes_xdp_frames(&link))?;
                maps.set_endpoint(port.ifindex, &ep)?;
                repairs.note(format!("{name}: wrote the endpoint of {}", port.dev));
            }
        }
        // Port forwards follow the guest's address and the NAT address.
        if rec.mode == "nat" {
            match port_forward_entries(&snapshot, port, maps.endpoint(port.ifindex)?.as_ref()) {
                Ok(want) => maps.set_port_forwards(port.ifindex, &want)?,
                Err(why) => repairs.problem(format!("{name}: forwards of {}: {why}", port.dev)),
            }
        }
        if link.master != Some(rec.bridge_ifindex) {
            nl.set_master(port.ifindex, rec.bridge_ifindex).await?;
            repairs.note(format!("{name}: plugged {} into {}", port.dev, rec.bridge));
        }
        if plan.def.port_isolated
            && (link.master != Some(rec.bridge_ifindex) || !link.bridge_port_isolated)
        {
            nl.set_bridge_port_isolated(port.ifindex, true).await?;
            if link.master == Some(rec.bridge_ifindex) {
                repairs.note(format!(
                    "{name}: isolated {} again (<port isolated='yes'/>)",
                    port.dev
                ));
            }
        }
        if let Some(mtu) = plan.def.mtu.filter(|_| !host_bridge)
            && link.mtu != Some(mtu)
        {
            nl.set_mtu(port.ifindex, mtu).await?;
            repairs.note(format!(
                "{name}: set the MTU of {} to the network's {mtu}",
                port.dev
            ));
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
        // The guest XDP program as the port and `--guest-xdp` say now.
        let xdp = guest_xdp_wanted(ctx, &snapshot, port, takes_xdp_frames(&link));
        dataplane::set_guest_xdp(&ctx.pins, port.ifindex, &port.dev, xdp)?;
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

/// Plugs guest port `ifindex` into a bridged network: given the
/// network's `<mtu>` (as libvirt gives its taps; a host bridge's network
/// has none) and enslaved to the network's bridge (undone on failure).
pub async fn plug(
    nl: &Netlink,
    rec: &NetworkRecord,
    ifindex: u32,
    undo: &mut Undo,
) -> Result<(), ModeError> {
    let def = xml::parse_network(&rec.xml, &rec.name)?;
    if let Some(mtu) = def.mtu {
        nl.set_mtu(ifindex, mtu).await?;
    }
    undo.push(Step::NoMaster { ifindex });
    nl.set_master(ifindex, rec.bridge_ifindex).await?;
    // libvirt's <port isolated='yes'/>: the bridge keeps the guests apart
    // (the programs then leave guest-to-guest frames to it, BRIDGE_FILTERS).
    if def.port_isolated {
        nl.set_bridge_port_isolated(ifindex, true).await?;
    }
    Ok(())
}

/// Follows the ports of vxdp's own bridge the way libvirt uses it with a
/// `<forward mode='bridge'/>` network on that bridge (see `vxdp
/// libvirt-adopt`): libvirt creates the guest's tap and enslaves it; vxdp
/// plugs it (recorded with `from_bridge`, guest MAC from the tap's MAC:
/// [`Mac::guest_of_libvirt_tap`]); the repair of the guest ports below then
/// writes its endpoint and attaches the program, as for any port. A
/// `from_bridge` port that left the bridge or went away (the guest
/// stopped, the interface was detached) is unplugged and forgotten: its
/// endpoint, MAC entries and flows go. Ports plugged by `attach-interface`
/// and ports of other networks are left alone. A host bridge (the
/// operator's, with the NIC on it) is not followed.
async fn follow_bridge_ports(
    ctx: &Context,
    nl: &Netlink,
    maps: &Maps,
    rec: &mut NetworkRecord,
    others: &[NetworkRecord],
    repairs: &mut Repairs,
) -> Result<(), ModeError> {
    let name = rec.name.clone();
    let links = nl.links().await?;
    let mut kept = Vec::with_capacity(rec.ports.len());
    for port in std::mem::take(&mut rec.ports) {
        let on_bridge = links.iter().any(|l| {
            l.index == port.ifindex && l.name == port.dev && l.master == Some(rec.bridge_ifindex)
        });
        if !port.from_bridge || on_bridge {
            kept.push(port);
            continue;
        }
        dataplane::detach_guest_port(&ctx.pins, port.ifindex)?;
        maps.remove_endpoint(port.ifindex)?;
        // Still there (taken off the bridge, or moved elsewhere): vxdp's
        // program and entries are gone; where it is now is not vxdp's.
        repairs.note(format!(
            "{name}: unplugged {} (ifindex {}): it left {}",
            port.dev, port.ifindex, rec.bridge
        ));
        log::info!(
            "{name}: unplugged {} (ifindex {}): it left {}",
            port.dev,
            port.ifindex,
            rec.bridge
        );
    }
    rec.ports = kept;
    let claimed = |l: &LinkInfo| {
        rec.ports
            .iter()
            .chain(others.iter().flat_map(|o| o.ports.iter()))
            .any(|p| p.ifindex == l.index || p.dev == l.name)
            || others
                .iter()
                .any(|o| o.bridge_ifindex == l.index || o.uplink_ifindex == l.index)
            || l.index == rec.uplink_ifindex
    };
    let mut new_ports = Vec::new();
    for link in links
        .iter()
        .filter(|l| l.master == Some(rec.bridge_ifindex) && l.index != rec.bridge_ifindex)
    {
        if claimed(link) {
            continue;
        }
        let Some(tap_mac) = link.mac else {
            repairs.problem(format!(
                "{name}: {} on {} has no MAC address: not plugged",
                link.name, rec.bridge
            ));
            continue;
        };
        let guest = Mac::guest_of_libvirt_tap(tap_mac);
        repairs.note(format!(
            "{name}: plugged {} (ifindex {}), which appeared on {}, guest MAC {guest}",
            link.name, link.index, rec.bridge
        ));
        log::info!(
            "{name}: plugging {} (ifindex {}), which appeared on {}, guest MAC {guest}",
            link.name,
            link.index,
            rec.bridge
        );
        new_ports.push(PortRecord {
            dev: link.name.clone(),
            ifindex: link.index,
            mac: Some(guest.to_string()),
            created_tap: false,
            ipv4: None,
            ipv6: None,
            services_allowed: false,
            from_bridge: true,
            bandwidth: None,
            portgroup: None,
            guest_xdp: None,
            forwards: Vec::new(),
        });
    }
    rec.ports.extend(new_ports);
    Ok(())
}

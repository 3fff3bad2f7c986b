//! Starting a bridged network (NAT, route, open, isolated, very isolated,
//! host bridge): a plan is turned into a bridge, map entries, the uplink's
//! programs and dnsmasq. Every step that changes the host pushes its undo;
//! if a later step fails, the undo stack runs, so a failed start leaves
//! nothing behind.

use std::net::{Ipv4Addr, Ipv6Addr};

use vxdp_common::{MAX_NETWORKS, NetworkConfig, mode, mode_routes, network_flags};

use crate::{
    dataplane::{self, Maps},
    host::{
        Context, dnsmasq,
        netlink::{LinkInfo, Netlink},
        state::{NetworkRecord, StateDir},
        sysctl::{self, IP_FORWARD, IPV6_FORWARD},
        undo::Undo,
    },
    model::addr::overlaps,
    modes::{
        nat6,
        plan::{
            Ipv4Plan, NetworkPlan, bridge_mac, invalid, network_config, subnet4_key, subnet6_key,
        },
        shared::{
            ModeError, configure_bridge, device_used, host_bridge_flags, load_dataplane,
            remember_sysctl, write_subnets,
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
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
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
            None => match nl.default_route_v4().await? {
                Some(route) => nl.link_by_index(route.oif).await?,
                None => None,
            },
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

    let mut undo = Undo::default();
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
        Ok(rec) => Ok(rec),
        Err(e) => {
            undo.run(&nl).await;
            Err(e)
        }
    }
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
    // firewall, decide what may cross. Isolated networks forward nothing
    // and leave the setting alone, as libvirt does.
    let forward_v4 = mode_routes(plan.mode) || plan.mode == mode::NAT;
    // A NAT network's IPv6 is routed or NATed by the programs: forwarded too.
    let forward_v6 = (mode_routes(plan.mode) || plan.mode == mode::NAT) && plan.ipv6.is_some();
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
        let host_file = ctx.state_dir.join("host.json");
        undo.push(move |_| {
            Box::pin(async move {
                if let Some(v) = host.ip_forward_before {
                    let _ = sysctl::write(IP_FORWARD, &v);
                }
                if let Some(v) = host.ipv6_forward_before {
                    let _ = sysctl::write(IPV6_FORWARD, &v);
                }
                let _ = std::fs::remove_file(&host_file);
            })
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
        let bridge_ifindex = nl
            .create_bridge(
                bridge,
                Some(mac),
                plan.def.bridge.stp,
                plan.def.bridge.delay * 100,
            )
            .await?;
        undo.push(move |nl| {
            Box::pin(async move {
                let _ = nl.delete_link(bridge_ifindex).await;
            })
        });
        configure_bridge(nl, plan, bridge, bridge_ifindex).await?;
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
    maps.reset_counters(id)?;
    maps.set_network(id, &cfg)?;
    {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) {
                    let _ = m.set_network(id, &NetworkConfig::default());
                }
            })
        });
    }
    // The undo comes first: removing an entry that was never written is
    // harmless, and a failure between the two writes still removes the first.
    let (v4_key, v6_key) = (subnet4_key(plan), subnet6_key(plan));
    {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) {
                    if let Some((a, p)) = v4_key {
                        let _ = m.remove_subnet(a, p);
                    }
                    if let Some((a, p)) = v6_key {
                        let _ = m.remove_subnet6(a, p);
                    }
                }
            })
        });
    }
    write_subnets(&maps, id, plan)?;
    if let Some(cfg) = nat6::config(plan, nat6_addr) {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) {
                    let _ = m.set_nat6(id, &vxdp_common::Nat6Config::default());
                }
            })
        });
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
        let uplink_shared = device_used(&state.networks()?, uplink.index);
        dataplane::attach_uplink(&ctx.pins, uplink.index, &uplink.name)?;
        if !uplink_shared {
            let (pins, index) = (ctx.pins.clone(), uplink.index);
            undo.push(move |_| {
                Box::pin(async move {
                    let _ = dataplane::detach_uplink(&pins, index);
                })
            });
        }
    }

    if dnsmasq::wanted(&plan.def, &name)? {
        log::info!("{name}: starting dnsmasq (DHCP/DNS/TFTP) on {bridge}");
        let inv = dnsmasq::Invocation::current(&ctx.state_dir, &ctx.pins.root)?;
        dnsmasq::start(&inv, &plan.def, bridge, &name)?;
        let state_dir = ctx.state_dir.clone();
        let net = name.clone();
        undo.push(move |_| {
            Box::pin(async move {
                let _ = dnsmasq::stop(&state_dir, &net);
            })
        });
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

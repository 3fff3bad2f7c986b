//! Guest ports: plugging an interface into a started network (its
//! endpoint, bridge or direct device, program) and unplugging it; and from
//! a domain `<interface>` (`vxdp attach-interface --xml`,
//! `detach-interface --xml`): which network, which MAC, which device. A port
//! without an existing `<target dev>` gets a persistent tap created by vxdp
//! (named by `<target dev>` or the first free `vnetN`), removed again when the
//! port is unplugged or when plugging fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    dataplane::{self, Maps},
    host::{
        Context, fault,
        netlink::Netlink,
        random,
        state::{NetworkRecord, PortRecord},
        tap,
        undo::{Step, Undo},
    },
    model::forward::PortForward,
    model::{
        addr::{prefix_mask, prefix_mask6},
        bandwidth::Bandwidth,
        mac::Mac,
    },
    modes::{
        Realization, direct,
        plan::PlanError,
        shaping,
        shared::{ModeError, guest_xdp_wanted, port_endpoint, takes_xdp_frames},
    },
    ops::{
        error::OpsError,
        forwards,
        networks::{find, list},
    },
    xml::{self, InterfaceDef, InterfaceSource},
};

/// The running network an `<interface>` names.
fn network_of(ctx: &Context, def: &InterfaceDef, file: &str) -> Result<String, OpsError> {
    match &def.source {
        InterfaceSource::Network { name, .. } => Ok(find(ctx, name)?.name),
        InterfaceSource::Bridge(bridge) => list(ctx)?
            .into_iter()
            .find(|r| &r.bridge == bridge)
            .map(|r| r.name)
            .ok_or_else(|| {
                OpsError::from(PlanError::Invalid {
                    file: file.into(),
                    element: "/interface/source@bridge".into(),
                    reason: format!(
                        "no running vxdp network has bridge {bridge} (see `vxdp net-list`)"
                    ),
                })
            }),
        // libvirt would create a macvtap on `dev`; vxdp plugs a tap into the
        // running direct network whose device `dev` is, in the same mode.
        InterfaceSource::Direct { dev, mode } => {
            let rec = list(ctx)?
                .into_iter()
                .find(|r| r.direct_nics.iter().any(|(n, _)| n == dev))
                .ok_or_else(|| {
                    OpsError::from(PlanError::Invalid {
                        file: file.into(),
                        element: "/interface/source@dev".into(),
                        reason: format!(
                            "no running vxdp direct network has device {dev} (see `vxdp net-list`)"
                        ),
                    })
                })?;
            if rec.mode != format!("direct-{mode}") {
                return Err(OpsError::from(PlanError::Invalid {
                    file: file.into(),
                    element: "/interface/source@mode".into(),
                    reason: format!(
                        "network '{}' on {dev} is {}, not direct-{mode}",
                        rec.name, rec.mode
                    ),
                }));
            }
            Ok(rec.name)
        }
    }
}

/// The portgroup a port joins and the `<bandwidth>` it is shaped to, like
/// libvirt: the portgroup `named` (an error naming `at` when the network
/// has none of that name), else the network's default portgroup; the
/// interface's own `<bandwidth>` (`own`) when it has one, else the
/// portgroup's.
pub fn port_shaping(
    rec: &NetworkRecord,
    named: Option<&str>,
    own: Option<Bandwidth>,
    file: &str,
    at: &str,
) -> Result<(Option<String>, Option<Bandwidth>), OpsError> {
    let def = xml::parse_network(&rec.xml, &rec.name)?;
    let groups = xml::portgroups(&def);
    let group = match named {
        Some(n) => Some(groups.iter().find(|g| g.name == n).ok_or_else(|| {
            let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            OpsError::from(PlanError::Invalid {
                file: file.into(),
                element: at.into(),
                reason: format!(
                    "network '{}' has no portgroup '{n}' (its portgroups: {})",
                    rec.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            })
        })?),
        None => groups.iter().find(|g| g.default),
    };
    let bandwidth = own.or_else(|| group.and_then(|g| g.bandwidth));
    if let Some(v) = bandwidth.and_then(|b| b.inbound).and_then(|r| r.floor) {
        return Err(OpsError::from(PlanError::NotSupported {
            file: file.into(),
            element: "/interface/bandwidth/inbound@floor".into(),
            what: format!("<inbound floor='{v}'> (a guaranteed minimum)"),
        }));
    }
    Ok((group.map(|g| g.name.clone()), bandwidth))
}

/// The first `vnetN` no link uses.
async fn free_tap_name(nl: &Netlink) -> Result<String, OpsError> {
    for n in 0..65536 {
        let name = format!("vnet{n}");
        if nl.link_by_name(&name).await?.is_none() {
            return Ok(name);
        }
    }
    Err(OpsError::no_such_interface(
        "a free vnetN name (vnet0..vnet65535 are all taken)",
    ))
}

/// Plugs the port an `<interface>` describes; returns it (with the device
/// name and guest MAC it got).
/// A tap vxdp creates gets `tap_owner` as its owner.
pub async fn attach_xml(
    ctx: &Context,
    xml_text: &str,
    file: &str,
    tap_owner: tap::TapOwner,
    guest_xdp: Option<bool>,
) -> Result<PortRecord, OpsError> {
    let def = xml::parse_interface(xml_text, file)?;
    let network = network_of(ctx, &def, file)?;
    let named = match &def.source {
        InterfaceSource::Network { portgroup, .. } => portgroup.as_deref(),
        _ => None,
    };
    let shaping = port_shaping(
        &find(ctx, &network)?,
        named,
        def.bandwidth,
        file,
        "/interface/source@portgroup",
    )?;
    // Like libvirt: a guest without <mac> gets one in 52:54:00.
    let mac = match def.mac {
        Some(m) => m,
        None => random::libvirt_mac()?.octets(),
    };
    let ips: Vec<String> = def.ipv4.iter().map(|a| a.to_string()).collect();
    plug_port(
        ctx,
        &network,
        PortDevice::Tap {
            target: def.target.as_deref(),
            owner: tap_owner,
        },
        Some(Mac(mac)),
        &ips,
        false,
        false,
        Some(shaping),
        &def.forwards,
        guest_xdp,
    )
    .await
}

/// Unplugs the port an `<interface>` describes, found by `<target dev>` or
/// else by `<mac>`; a tap vxdp created goes with it.
pub async fn detach_xml(ctx: &Context, xml_text: &str, file: &str) -> Result<String, OpsError> {
    let def = xml::parse_interface(xml_text, file)?;
    let network = network_of(ctx, &def, file)?;
    let rec = find(ctx, &network)?;
    let port = match (&def.target, def.mac) {
        (Some(dev), _) => rec.ports.iter().find(|p| &p.dev == dev),
        (None, Some(mac)) => rec
            .ports
            .iter()
            .find(|p| p.mac.as_deref() == Some(Mac(mac).to_string().as_str())),
        (None, None) => {
            return Err(OpsError::from(PlanError::Invalid {
                file: file.into(),
                element: "/interface".into(),
                reason: "give <target dev> or <mac address> to say which port to unplug".into(),
            }));
        }
    };
    let dev = port.map(|p| p.dev.clone()).ok_or_else(|| {
        OpsError::from(PlanError::Invalid {
            file: file.into(),
            element: if def.target.is_some() {
                "/interface/target@dev".into()
            } else {
                "/interface/mac@address".into()
            },
            reason: format!("no such port in network '{network}'"),
        })
    })?;
    detach_interface(ctx, &network, &dev).await?;
    Ok(dev)
}

/// Plugs an existing interface (tap or veth end) into a started network:
/// enslaves it to the bridge and attaches the guest-port program.
pub async fn attach_interface(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Option<Mac>,
) -> Result<PortRecord, OpsError> {
    attach_port(ctx, network, dev, mac, &[], false, None).await
}

/// [`attach_interface`] with the guest's static addresses (`--ip`, at most
/// one IPv4 and one IPv6), which then are the only source addresses the
/// guest may send from (IPv6 link-local aside).
pub async fn attach_interface_with(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Option<Mac>,
    ips: &[String],
    services_allowed: bool,
    guest_xdp: Option<bool>,
) -> Result<PortRecord, OpsError> {
    attach_port(ctx, network, dev, mac, ips, services_allowed, guest_xdp).await
}

/// The guest's static addresses from `--ip` values: at most one IPv4 in
/// the network's IPv4 subnet and one IPv6 in its IPv6 prefix (when the
/// network has them), never the host's own.
fn static_addresses(
    rec: &NetworkRecord,
    ips: &[String],
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), OpsError> {
    let (mut v4, mut v6) = (None, None);
    for text in ips {
        let bad = |reason: String| OpsError::GuestAddress {
            ip: text.clone(),
            reason,
        };
        match text
            .parse::<IpAddr>()
            .map_err(|_| bad("not an IPv4 or IPv6 address".into()))?
        {
            IpAddr::V4(a) => {
                if v4.replace(a).is_some() {
                    return Err(bad(
                        "a second IPv4 address (give one IPv4 and one IPv6 at most)".into(),
                    ));
                }
                if !rec.gateway.is_unspecified() {
                    let m = prefix_mask(rec.prefix);
                    if u32::from(a) & m != u32::from(rec.subnet) || a == rec.gateway {
                        return Err(bad(format!(
                            "not a guest address of network '{}' ({}/{}, host {})",
                            rec.name, rec.subnet, rec.prefix, rec.gateway
                        )));
                    }
                }
            }
            IpAddr::V6(a) => {
                if v6.replace(a).is_some() {
                    return Err(bad(
                        "a second IPv6 address (give one IPv4 and one IPv6 at most)".into(),
                    ));
                }
                if a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local() {
                    return Err(bad("not a global unicast IPv6 address".into()));
                }
                if let Some((host, p)) = rec.ipv6
                    && (u128::from(a) & prefix_mask6(p) != u128::from(host) & prefix_mask6(p)
                        || a == host)
                {
                    return Err(bad(format!(
                        "not a guest address of network '{}' ({host}/{p} is the host's)",
                        rec.name
                    )));
                }
            }
        }
    }
    Ok((v4, v6))
}

/// The device a port plugs.
enum PortDevice<'a> {
    /// An interface that exists (`--dev`); vxdp never removes it.
    Existing(&'a str),
    /// A domain `<interface>`'s tap: `<target dev>` when given (created
    /// unless it exists), else the first free `vnetN`. A tap vxdp creates
    /// gets `owner`, the guest MAC with a first byte of 0xfe (libvirt's
    /// rule: the host side must not claim the guest's MAC), and is removed
    /// when the port is unplugged.
    Tap {
        target: Option<&'a str>,
        owner: tap::TapOwner,
    },
}

/// [`attach_interface_with`]; `services_allowed` lets the guest serve its
/// network (RA, DHCP server); `guest_xdp` is the port's choice of the
/// guest XDP program (`None`: the global `--guest-xdp`).
pub async fn attach_port(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Option<Mac>,
    ips: &[String],
    services_allowed: bool,
    guest_xdp: Option<bool>,
) -> Result<PortRecord, OpsError> {
    plug_port(
        ctx,
        network,
        PortDevice::Existing(dev),
        mac,
        ips,
        services_allowed,
        false,
        None,
        &[],
        guest_xdp,
    )
    .await
}

/// Plugs a running domain's tap that libvirt created (`vxdp
/// libvirt-adopt`) with the guest's MAC, as a `from_bridge` port: it is
/// unplugged when it leaves the bridge.
pub async fn plug_libvirt_port(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Mac,
) -> Result<PortRecord, OpsError> {
    plug_port(
        ctx,
        network,
        PortDevice::Existing(dev),
        Some(mac),
        &[],
        false,
        true,
        Some((None, None)),
        &[],
        None,
    )
    .await
}

/// Checks that `ips` can be a port's static addresses in running
/// network `network` (see [`attach_interface_with`]), changing nothing.
pub fn check_guest_addresses(ctx: &Context, network: &str, ips: &[String]) -> Result<(), OpsError> {
    static_addresses(&find(ctx, network)?, ips).map(drop)
}

/// The port libvirt's qemu hook describes (`vxdp libvirt-hook`): the tap
/// `dev` libvirt created on the network's bridge, with the guest's exact
/// MAC and addresses from the domain XML. `vxdp serve` may have plugged
/// the tap already, with the MAC it derived from the tap's: that port's
/// endpoint and record are corrected in place (the guest's CPUs have not
/// run yet when libvirt calls the hook). A port `attach-interface`
/// plugged is the operator's and is left as it is.
pub async fn set_libvirt_port(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Mac,
    ips: &[String],
) -> Result<PortRecord, OpsError> {
    for _ in 0..3 {
        {
            let (state, nl, _lock) = crate::modes::shared::lock_for_change(ctx).await?;
            let mut rec = state
                .network(network)?
                .ok_or_else(|| OpsError::NotStarted(network.into()))?;
            if let Some(pos) = rec.ports.iter().position(|p| p.dev == dev) {
                let port = &rec.ports[pos];
                if !port.from_bridge {
                    log::info!("{network}: {dev} was plugged by attach-interface: left as it is");
                    return Ok(port.clone());
                }
                let (ipv4, ipv6) = static_addresses(&rec, ips)?;
                let updated = PortRecord {
                    mac: Some(mac.to_string()),
                    ipv4,
                    ipv6,
                    ..port.clone()
                };
                if &updated != port {
                    let link = nl
                        .link_by_index(updated.ifindex)
                        .await?
                        .ok_or_else(|| OpsError::no_such_interface(dev))?;
                    let endpoint =
                        port_endpoint(&ctx.state_dir, &rec, &updated, takes_xdp_frames(&link))?;
                    Maps::open(&ctx.pins)
                        .and_then(|maps| maps.set_endpoint(updated.ifindex, &endpoint))
                        .map_err(ModeError::from)?;
                    rec.ports[pos] = updated.clone();
                    state.save_network(&rec)?;
                    log::info!("{network}: {dev} now has guest MAC {mac} and addresses {ips:?}");
                }
                return Ok(updated);
            }
        }
        match plug_port(
            ctx,
            network,
            PortDevice::Existing(dev),
            Some(mac),
            ips,
            false,
            true,
            // Unshaped, as the ports `vxdp serve` plugs from the bridge.
            Some((None, None)),
            &[],
            None,
        )
        .await
        {
            // `vxdp serve` plugged it in the meantime: correct that port.
            Err(OpsError::PortInUse { .. }) => continue,
            r => return r,
        }
    }
    Err(OpsError::PortInUse {
        dev: dev.into(),
        network: network.into(),
    })
}

/// Plugs a port under the state directory's lock. Every change is
/// journaled before it is made ([`Undo::journaled`]): a failure reverts
/// them, and so does the next command if this one dies. `shaping` is the
/// port's portgroup and `<bandwidth>` ([`port_shaping`]); `None`: the
/// network's default portgroup's. `forwards` (the `<portForward>`s) are
/// checked before anything changes.
#[allow(clippy::too_many_arguments)]
async fn plug_port(
    ctx: &Context,
    network: &str,
    device: PortDevice<'_>,
    mac: Option<Mac>,
    ips: &[String],
    services_allowed: bool,
    from_bridge: bool,
    shaping: Option<(Option<String>, Option<Bandwidth>)>,
    forwards: &[PortForward],
    guest_xdp: Option<bool>,
) -> Result<PortRecord, OpsError> {
    let (state, nl, _) = crate::modes::shared::lock_for_change(ctx).await?;
    let mut rec = state
        .network(network)?
        .ok_or_else(|| OpsError::NotStarted(network.into()))?;
    let (ipv4, ipv6) = static_addresses(&rec, ips)?;
    let (portgroup, bandwidth) = match shaping {
        Some(s) => s,
        None => port_shaping(&rec, None, None, network, "/network/portgroup")?,
    };
    if let Some((element, what)) = xml::port_needs(
        &xml::parse_network(&rec.xml, &rec.name)?,
        portgroup.as_deref(),
    ) {
        return Err(OpsError::from(PlanError::NotSupported {
            file: network.into(),
            element,
            what,
        }));
    }
    if !forwards.is_empty() {
        let dev = match &device {
            PortDevice::Existing(d) => d,
            PortDevice::Tap { target, .. } => target.unwrap_or("the new tap"),
        };
        forwards::check(&state.networks()?, &rec, dev, forwards)?;
    }
    let mut undo = Undo::journaled(
        &ctx.state_dir,
        &ctx.pins,
        &format!("attach-interface {network}"),
    )?;
    let res: Result<PortRecord, OpsError> = async {
        let (dev, created_tap) = match device {
            PortDevice::Existing(dev) => (dev.to_owned(), false),
            PortDevice::Tap { target, owner } => {
                let (dev, create) = match target {
                    Some(t) => (t.to_owned(), nl.link_by_name(t).await?.is_none()),
                    None => (free_tap_name(&nl).await?, true),
                };
                if create {
                    let guest = mac.map_or([0x52, 0x54, 0, 0, 0, 0], |m| m.octets());
                    let mut host_mac = guest;
                    host_mac[0] = 0xfe;
                    log::info!("{network}: creating tap {dev} for guest MAC {}", Mac(guest));
                    undo.push(Step::DeleteTap { name: dev.clone() });
                    tap::create(&dev, host_mac, owner)?;
                    fault::point("attach:tap");
                }
                (dev, create)
            }
        };
        let dev = dev.as_str();
        let link = nl
            .link_by_name(dev)
            .await?
            .ok_or_else(|| OpsError::no_such_interface(dev))?;
        if let Some(other) = state
            .networks()?
            .into_iter()
            .find(|r| r.ports.iter().any(|p| p.ifindex == link.index))
        {
            return Err(OpsError::PortInUse {
                dev: dev.into(),
                network: other.name,
            });
        }
        let port = PortRecord {
            dev: dev.into(),
            ifindex: link.index,
            mac: mac.map(|m| m.to_string()),
            ipv4,
            ipv6,
            created_tap,
            services_allowed,
            from_bridge,
            bandwidth,
            portgroup,
            forwards: forwards.to_vec(),
            guest_xdp,
        };
        // The static address (--ip) or else a static <host> or a current
        // DHCP lease gives the guest's address.
        let endpoint = port_endpoint(&ctx.state_dir, &rec, &port, takes_xdp_frames(&link))?;
        // The endpoint entry exists before the program can see a packet.
        let maps = Maps::open(&ctx.pins).map_err(ModeError::from)?;
        undo.push(Step::RemoveEndpoint {
            ifindex: link.index,
        });
        // The bucket before the endpoint whose flag says to look it up.
        shaping::apply(&nl, &maps, &port, Some(&mut undo)).await?;
        maps.set_endpoint(link.index, &endpoint)
            .map_err(ModeError::from)?;
        fault::point("attach:endpoint");
        let joined = Realization::of_record(&rec)
            .plug(&nl, &ctx.pins, &maps, &rec, link.index, dev, &mut undo)
            .await?;
        if rec.is_direct() {
            log::info!("{network}: {dev} on {joined}");
        }
        undo.push(Step::DetachLinks {
            paths: vec![
                ctx.pins.tc_link(link.index),
                ctx.pins.guest_xdp_link(link.index),
            ],
        });
        dataplane::attach_guest_port(&ctx.pins, link.index, dev).map_err(ModeError::from)?;
        let xdp = guest_xdp_wanted(ctx, &rec, &port, takes_xdp_frames(&link));
        dataplane::set_guest_xdp(&ctx.pins, link.index, dev, xdp).map_err(ModeError::from)?;
        // (Undone with the endpoint: `Step::RemoveEndpoint`.)
        if !port.forwards.is_empty()
            && let Some(why) = forwards::write(&maps, &rec, &port)?
        {
            log::warn!("{network}: the port forwards of {dev} wait: {why}");
        }
        nl.set_up(link.index).await?;
        fault::point("attach:plugged");
        rec.ports.push(port.clone());
        state.save_network(&rec)?;
        Ok(port)
    }
    .await;
    match res {
        Ok(port) => {
            undo.commit();
            log::info!("{network}: plugged {} (ifindex {})", port.dev, port.ifindex);
            Ok(port)
        }
        Err(e) => {
            undo.run(&nl).await;
            Err(e)
        }
    }
}

/// Unplugs an interface from a network.
pub async fn detach_interface(ctx: &Context, network: &str, dev: &str) -> Result<(), OpsError> {
    let (state, nl, _) = crate::modes::shared::lock_for_change(ctx).await?;
    let mut rec = state
        .network(network)?
        .ok_or_else(|| OpsError::NotStarted(network.into()))?;
    let pos = OpsError::port_index(&rec, dev)?;
    let port = rec.ports.remove(pos);
    unplug(ctx, &nl, &port).await?;
    state.save_network(&rec)?;
    log::info!("{network}: unplugged {dev}");
    Ok(())
}

/// Takes a port out of its network: program, map entries, bridge (and the
/// tap, when vxdp created it).
pub(crate) async fn unplug(ctx: &Context, nl: &Netlink, port: &PortRecord) -> Result<(), OpsError> {
    dataplane::detach_guest_port(&ctx.pins, port.ifindex)?;
    if let Ok(maps) = Maps::open(&ctx.pins) {
        maps.remove_endpoint(port.ifindex)?;
        direct::unplug(&maps, port.ifindex)?;
        shaping::clear(nl, &maps, port).await?;
    }
    if nl.link_by_index(port.ifindex).await?.is_some() {
        nl.set_nomaster(port.ifindex).await?;
        if port.created_tap {
            // RTM_DELLINK, not TUNSETPERSIST: it also works while the
            // hypervisor still holds the tap open.
            nl.delete_link(port.ifindex).await?;
        }
    }
    Ok(())
}

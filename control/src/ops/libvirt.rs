//! Taking a libvirt network over (`vxdp libvirt-adopt`) and giving it back
//! (`vxdp libvirt-release`), through libvirt's own client
//! ([`crate::host::libvirt::Virsh`]).
//!
//! Adopt: vxdp defines and starts the network from libvirt's persistent
//! definition (same name, UUID, bridge, MAC, addresses, DHCP), and libvirt
//! keeps a network of the same name and UUID redefined as `<forward
//! mode='bridge'/>` on that bridge: a domain's `<interface type='network'>`
//! still works, libvirt creates and enslaves its tap (which `vxdp serve`
//! then plugs, see `modes::bridged`), installs no firewall rules and runs
//! no dnsmasq. Order matters: libvirt's `net-destroy` deletes the bridge,
//! so vxdp starts after it. Running domains' taps fall off with the bridge;
//! adopt plugs them back with the MAC `virsh domiflist` gives.
//!
//! Release: the reverse; libvirt's original definition, autostart flag and
//! state come back, running domains' taps are enslaved to libvirt's bridge
//! again.
//!
//! Both record what they do under the state directory
//! (`libvirt/NAME.json`: libvirt's original definition and state) and undo
//! the steps already done when one fails, naming the step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    host::{
        Context,
        dnsmasq::LeaseEntry,
        libvirt::{LibvirtError, NetInfo, NetLease, Virsh},
        netlink::Netlink,
    },
    model::mac::Mac,
    ops::{OpsError, definitions, lifecycle, ports},
    xml,
};

/// What adopt found in libvirt, kept until release.
#[derive(Debug, Serialize, Deserialize)]
pub struct Adopted {
    pub name: String,
    /// libvirt's persistent definition before adopt (`net-dumpxml --inactive`).
    pub original_xml: String,
    /// The network was running in libvirt.
    pub was_active: bool,
    pub autostart: bool,
    pub bridge: String,
}

fn adopted_path(ctx: &Context, name: &str) -> PathBuf {
    ctx.state_dir.join("libvirt").join(format!("{name}.json"))
}

/// The network `name` adopt recorded, if any.
pub fn adopted(ctx: &Context, name: &str) -> Result<Option<Adopted>, OpsError> {
    let path = adopted_path(ctx, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| refused(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(refused(format!("{}: {e}", path.display()))),
    }
}

fn refused(why: String) -> OpsError {
    OpsError::LibvirtRefused(why)
}

fn step(what: &str) -> impl FnOnce(LibvirtError) -> OpsError + '_ {
    move |source| OpsError::Libvirt {
        step: what.into(),
        source,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// libvirt's stand-in while vxdp has the network: same name and UUID, a
/// `<forward mode='bridge'/>` on vxdp's bridge.
pub fn bridge_xml(name: &str, uuid: &str, bridge: &str) -> String {
    format!(
        "<network>\n  <name>{}</name>\n  <uuid>{}</uuid>\n  <forward mode='bridge'/>\n  <bridge name='{}'/>\n</network>\n",
        escape(name),
        escape(uuid),
        escape(bridge)
    )
}

/// A step done, and how to take it back.
enum Done {
    VxdpDefined,
    VxdpStarted,
    LibvirtDestroyed,
    LibvirtRedefined(String),
    LibvirtStarted,
    Recorded(PathBuf),
    LeasesSeeded(PathBuf),
}

async fn roll_back(ctx: &Context, virsh: &Virsh, name: &str, done: Vec<Done>) {
    for d in done.into_iter().rev() {
        let r = match d {
            Done::VxdpDefined => definitions::undefine(ctx, name).map_err(|e| e.to_string()),
            Done::VxdpStarted => lifecycle::stop(ctx, name).await.map_err(|e| e.to_string()),
            Done::LibvirtDestroyed => virsh.net_start(name).map_err(|e| e.to_string()),
            Done::LibvirtRedefined(xml) => virsh.net_define(&xml).map_err(|e| e.to_string()),
            Done::LibvirtStarted => virsh.net_destroy(name).map_err(|e| e.to_string()),
            Done::Recorded(path) | Done::LeasesSeeded(path) => {
                std::fs::remove_file(&path).map_err(|e| e.to_string())
            }
        };
        if let Err(e) = r {
            log::warn!("{name}: rolling back: {e}");
        }
    }
}

/// The running domains' taps on libvirt network `name`: (device, MAC).
fn domain_taps(virsh: &Virsh, name: &str) -> Result<Vec<(String, Mac)>, LibvirtError> {
    let mut taps = Vec::new();
    for dom in virsh.running_domains()? {
        for i in virsh.domiflist(&dom)? {
            if i.kind == "network" && i.source == name && i.dev != "-" {
                match Mac::parse_unicast(&i.mac) {
                    Ok(mac) => taps.push((i.dev, mac)),
                    Err(e) => log::warn!("{name}: domain {dom}: {}: {e}", i.mac),
                }
            }
        }
    }
    Ok(taps)
}

/// libvirt's leases as dnsmasq lease-file entries; a lease whose MAC does
/// not parse is left out (and said).
fn carried_leases(name: &str, leases: &[NetLease]) -> Vec<LeaseEntry> {
    leases
        .iter()
        .filter_map(|l| match Mac::parse_unicast(&l.mac) {
            Ok(mac) => Some(LeaseEntry {
                expiry: l.expiry,
                mac: Some(mac.octets()),
                ip: l.ip.into(),
                hostname: l.hostname.clone(),
                client_id: l.client_id.clone(),
            }),
            Err(e) => {
                log::warn!("{name}: libvirt lease of {}: {}: {e}", l.ip, l.mac);
                None
            }
        })
        .collect()
}

/// `vxdp libvirt-adopt NAME`; returns the taps of running domains plugged.
pub async fn adopt(ctx: &Context, virsh: &Virsh, name: &str) -> Result<Vec<String>, OpsError> {
    if adopted(ctx, name)?.is_some() {
        return Err(refused(format!(
            "network '{name}' is already adopted (`vxdp libvirt-release {name}` gives it back)"
        )));
    }
    let info: NetInfo = virsh
        .net_info(name)
        .map_err(step("reading libvirt's network"))?;
    if !info.persistent {
        return Err(refused(format!(
            "libvirt's network '{name}' is transient; vxdp adopts persistent networks only (virsh net-define it first)"
        )));
    }
    let original = virsh
        .net_dumpxml(name, true)
        .map_err(step("reading libvirt's definition"))?;
    let def = xml::parse_network(&original, &format!("libvirt network {name}"))?;
    match def.mode() {
        Some(vxdp_common::mode::NAT)
        | Some(vxdp_common::mode::ROUTE)
        | Some(vxdp_common::mode::OPEN)
        | Some(vxdp_common::mode::ISOLATED) => {}
        _ => {
            return Err(refused(format!(
                "libvirt's network '{name}' is not a NAT, route, open or isolated network on a bridge of libvirt's: nothing for vxdp to take over"
            )));
        }
    }
    let (Some(uuid), Some(bridge)) = (def.uuid.clone(), def.bridge.name.clone()) else {
        return Err(refused(format!(
            "libvirt's definition of '{name}' has no UUID or no bridge name"
        )));
    };
    let record = Adopted {
        name: name.into(),
        original_xml: original.clone(),
        was_active: info.active,
        autostart: info.autostart,
        bridge: bridge.clone(),
    };
    let taps = if info.active {
        domain_taps(virsh, name).map_err(step("listing the running domains' interfaces"))?
    } else {
        Vec::new()
    };
    // libvirt's dnsmasq's leases, read while it runs: vxdp's dnsmasq starts
    // with them, so running guests keep their addresses (and anti-spoofing
    // allows them) without waiting for a renewal.
    let leases = if info.active {
        virsh
            .net_dhcp_leases(name)
            .map_err(step("reading libvirt's DHCP leases"))?
    } else {
        Vec::new()
    };

    let mut done = Vec::new();
    let res: Result<(), OpsError> = async {
        let path = adopted_path(ctx, name);
        std::fs::create_dir_all(path.parent().expect("under the state directory"))
            .and_then(|()| {
                std::fs::write(
                    &path,
                    serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?,
                )
            })
            .map_err(|e| refused(format!("recording {}: {e}", path.display())))?;
        done.push(Done::Recorded(path));
        definitions::define(ctx, &original, &format!("libvirt network {name}")).await?;
        done.push(Done::VxdpDefined);
        if info.active {
            // Deletes libvirt's bridge, firewall rules and dnsmasq.
            virsh
                .net_destroy(name)
                .map_err(step("stopping libvirt's network"))?;
            done.push(Done::LibvirtDestroyed);
        }
        virsh
            .net_define(&bridge_xml(name, &uuid, &bridge))
            .map_err(step("redefining libvirt's network on vxdp's bridge"))?;
        done.push(Done::LibvirtRedefined(original.clone()));
        virsh
            .net_autostart(name, info.autostart)
            .map_err(step("keeping libvirt's autostart flag"))?;
        definitions::set_autostart(ctx, name, info.autostart)?;
        if info.active {
            let path = crate::host::dnsmasq::leases::seed_leases(
                &ctx.state_dir,
                name,
                &carried_leases(name, &leases),
            )
            .map_err(|e| refused(format!("carrying libvirt's DHCP leases over: {e}")))?;
            done.push(Done::LeasesSeeded(path));
            definitions::start_defined(ctx, name).await?;
            done.push(Done::VxdpStarted);
            virsh
                .net_start(name)
                .map_err(step("starting libvirt's network on vxdp's bridge"))?;
            done.push(Done::LibvirtStarted);
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        roll_back(ctx, virsh, name, done).await;
        // A running domain's tap that fell off libvirt's bridge goes back.
        if info.active {
            reenslave(name, &bridge, &taps).await;
        }
        return Err(e);
    }
    let mut plugged = Vec::new();
    for (dev, mac) in taps {
        match ports::plug_libvirt_port(ctx, name, &dev, mac).await {
            Ok(_) => plugged.push(dev),
            Err(e) => log::warn!(
                "{name}: plugging {dev} of a running domain failed ({e}); `vxdp serve` plugs it when it is on {bridge}"
            ),
        }
    }
    Ok(plugged)
}

/// Puts the taps back on `bridge` (libvirt's, after a release or a failed
/// adopt): libvirt enslaves a tap only when it creates it.
async fn reenslave(name: &str, bridge: &str, taps: &[(String, Mac)]) {
    let Ok(nl) = Netlink::connect() else { return };
    let Ok(Some(br)) = nl.link_by_name(bridge).await else {
        return;
    };
    for (dev, _) in taps {
        if let Ok(Some(link)) = nl.link_by_name(dev).await
            && link.master != Some(br.index)
            && let Err(e) = nl.set_master(link.index, br.index).await
        {
            log::warn!("{name}: putting {dev} back on {bridge}: {e}");
        }
    }
}

/// `vxdp libvirt-release NAME`.
pub async fn release(ctx: &Context, virsh: &Virsh, name: &str) -> Result<(), OpsError> {
    let Some(rec) = adopted(ctx, name)? else {
        return Err(refused(format!(
            "network '{name}' was not adopted from libvirt (see `vxdp libvirt-adopt`)"
        )));
    };
    let info = virsh
        .net_info(name)
        .map_err(step("reading libvirt's network"))?;
    let standin = virsh
        .net_dumpxml(name, true)
        .map_err(step("reading libvirt's definition"))?;
    let taps = domain_taps(virsh, name).map_err(step("listing the running domains' interfaces"))?;
    let running = crate::ops::networks::list(ctx)?
        .iter()
        .any(|r| r.name == name);
    let mut done = Vec::new();
    let res: Result<(), OpsError> = async {
        if running {
            lifecycle::stop(ctx, name).await?;
        }
        if info.active {
            virsh
                .net_destroy(name)
                .map_err(step("stopping libvirt's stand-in network"))?;
            done.push(Done::LibvirtDestroyed);
        }
        virsh
            .net_define(&rec.original_xml)
            .map_err(step("restoring libvirt's definition"))?;
        done.push(Done::LibvirtRedefined(standin.clone()));
        virsh
            .net_autostart(name, rec.autostart)
            .map_err(step("restoring libvirt's autostart flag"))?;
        if info.active {
            virsh
                .net_start(name)
                .map_err(step("starting libvirt's own network"))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = res {
        roll_back(ctx, virsh, name, done).await;
        if running && let Err(e) = definitions::start_defined(ctx, name).await {
            log::warn!("{name}: rolling back: starting it in vxdp again: {e}");
        }
        return Err(e);
    }
    if info.active {
        reenslave(name, &rec.bridge, &taps).await;
    }
    if let Err(e) = definitions::undefine(ctx, name) {
        log::warn!("{name}: undefining vxdp's copy: {e}");
    }
    let path = adopted_path(ctx, name);
    std::fs::remove_file(&path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// What `vxdp libvirt-hook` did for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAction {
    pub network: String,
    pub dev: String,
    pub what: String,
}

/// `vxdp libvirt-hook DOMAIN OPERATION …` with the domain XML `xml`, as
/// libvirt's `/etc/libvirt/hooks/qemu` passes them. Only the domain's
/// interfaces on a running vxdp network (by network name, or by bridge)
/// matter:
///
/// - `prepare`: their addresses are checked (a domain vxdp cannot plug
///   exactly is refused before libvirt allocates anything);
/// - `started`, `reconnect`, `attach` (the taps exist, the guest's CPUs
///   have not run yet at `started`): each tap is plugged, or corrected if
///   `vxdp serve` plugged it first, with the exact MAC and addresses;
/// - `stopped`, `release`: their ports are unplugged (`vxdp serve` does
///   it too when the taps go);
/// - anything else: nothing.
pub async fn hook(
    ctx: &Context,
    domain: &str,
    operation: &str,
    xml_text: &str,
) -> Result<Vec<HookAction>, OpsError> {
    let file = format!("domain {domain} (stdin)");
    let relevant = matches!(
        operation,
        "prepare" | "started" | "reconnect" | "attach" | "stopped" | "release"
    );
    if !relevant {
        return Ok(Vec::new());
    }
    let running = crate::ops::networks::list(ctx)?;
    let mut actions = Vec::new();
    for port in xml::domain_ports(xml_text, &file)? {
        let Some(rec) = running.iter().find(|r| {
            !r.is_direct()
                && (port.network.as_deref() == Some(r.name.as_str())
                    || port.bridge.as_deref() == Some(r.bridge.as_str()))
        }) else {
            continue;
        };
        let ips: Vec<String> = port.ips.iter().map(ToString::to_string).collect();
        let network = rec.name.clone();
        let mut act = |dev: &str, what: String| {
            actions.push(HookAction {
                network: network.clone(),
                dev: dev.into(),
                what,
            })
        };
        match operation {
            "prepare" => {
                ports::check_guest_addresses(ctx, &network, &ips)?;
                act("-", format!("addresses {ips:?} accepted"));
            }
            "started" | "reconnect" | "attach" => {
                let (Some(dev), Some(mac)) = (port.target.as_deref(), port.mac) else {
                    return Err(refused(format!(
                        "{file}: an interface on network '{network}' has no <target dev> or <mac>: nothing to plug"
                    )));
                };
                let p = ports::set_libvirt_port(ctx, &network, dev, Mac(mac), &ips).await?;
                act(
                    dev,
                    format!(
                        "plugged, guest MAC {}, addresses {ips:?}",
                        p.mac.as_deref().unwrap_or("-")
                    ),
                );
            }
            _ => {
                let Some(dev) = port.target.as_deref() else {
                    continue;
                };
                if rec.ports.iter().any(|p| p.dev == dev && p.from_bridge) {
                    match ports::detach_interface(ctx, &network, dev).await {
                        Ok(()) | Err(OpsError::PortNotFound { .. }) => act(dev, "unplugged".into()),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(actions)
}

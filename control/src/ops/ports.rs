//! Guest ports from a domain `<interface>` (`vxdp attach-interface --xml`,
//! `detach-interface --xml`): which network, which MAC, which device. A port
//! without an existing `<target dev>` gets a persistent tap created by vxdp
//! (named by `<target dev>` or the first free `vnetN`), removed again when the
//! port is unplugged or when plugging fails.

use crate::{
    host::netlink::Netlink,
    host::state::PortRecord,
    host::tap,
    modes::bridged::{self, Context, NetworkError},
    ops::definitions::random_bytes,
    xml::{self, InterfaceDef, InterfaceSource, format_mac},
};

/// The running network an `<interface>` names.
fn network_of(ctx: &Context, def: &InterfaceDef, file: &str) -> Result<String, NetworkError> {
    match &def.source {
        InterfaceSource::Network {
            portgroup: Some(_), ..
        } => Err(NetworkError::NotSupported {
            file: file.into(),
            element: "/interface/source@portgroup".into(),
            what: "portgroups".into(),
        }),
        InterfaceSource::Network { name, .. } => Ok(bridged::find(ctx, name)?.name),
        InterfaceSource::Bridge(bridge) => bridged::list(ctx)?
            .into_iter()
            .find(|r| &r.bridge == bridge)
            .map(|r| r.name)
            .ok_or_else(|| NetworkError::Invalid {
                file: file.into(),
                element: "/interface/source@bridge".into(),
                reason: format!(
                    "no running vxdp network has bridge {bridge} (see `vxdp net-list`)"
                ),
            }),
        // libvirt would create a macvtap on `dev`; vxdp plugs a tap into the
        // running direct network whose device `dev` is, in the same mode.
        InterfaceSource::Direct { dev, mode } => {
            let rec = bridged::list(ctx)?
                .into_iter()
                .find(|r| r.direct_nics.iter().any(|(n, _)| n == dev))
                .ok_or_else(|| NetworkError::Invalid {
                    file: file.into(),
                    element: "/interface/source@dev".into(),
                    reason: format!(
                        "no running vxdp direct network has device {dev} (see `vxdp net-list`)"
                    ),
                })?;
            if rec.mode != format!("direct-{mode}") {
                return Err(NetworkError::Invalid {
                    file: file.into(),
                    element: "/interface/source@mode".into(),
                    reason: format!(
                        "network '{}' on {dev} is {}, not direct-{mode}",
                        rec.name, rec.mode
                    ),
                });
            }
            Ok(rec.name)
        }
    }
}

/// The first `vnetN` no link uses.
async fn free_tap_name(nl: &Netlink) -> Result<String, NetworkError> {
    for n in 0..65536 {
        let name = format!("vnet{n}");
        if nl.link_by_name(&name).await?.is_none() {
            return Ok(name);
        }
    }
    Err(NetworkError::NoSuchInterface(
        "a free vnetN name (vnet0..vnet65535 are all taken)".into(),
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
) -> Result<PortRecord, NetworkError> {
    let def = xml::parse_interface(xml_text, file)?;
    let network = network_of(ctx, &def, file)?;
    // Like libvirt: a guest without <mac> gets one in 52:54:00.
    let mac = match def.mac {
        Some(m) => m,
        None => {
            let r: [u8; 3] = random_bytes()?;
            [0x52, 0x54, 0x00, r[0], r[1], r[2]]
        }
    };
    let nl = Netlink::connect()?;
    let (dev, create) = match &def.target {
        Some(t) => (t.clone(), nl.link_by_name(t).await?.is_none()),
        None => (free_tap_name(&nl).await?, true),
    };
    if create {
        // The host side of a tap must not claim the guest's MAC; libvirt
        // uses the guest MAC with a first byte of 0xfe.
        let mut host_mac = mac;
        host_mac[0] = 0xfe;
        log::info!(
            "{network}: creating tap {dev} for guest MAC {}",
            format_mac(&mac)
        );
        tap::create(&dev, host_mac, tap_owner)?;
    }
    match bridged::attach_port(
        ctx,
        &network,
        &dev,
        Some(&format_mac(&mac)),
        &[],
        create,
        false,
    )
    .await
    {
        Ok(port) => Ok(port),
        Err(e) => {
            if create {
                let _ = tap::delete(&dev);
            }
            Err(e)
        }
    }
}

/// Unplugs the port an `<interface>` describes, found by `<target dev>` or
/// else by `<mac>`; a tap vxdp created goes with it.
pub async fn detach_xml(ctx: &Context, xml_text: &str, file: &str) -> Result<String, NetworkError> {
    let def = xml::parse_interface(xml_text, file)?;
    let network = network_of(ctx, &def, file)?;
    let rec = bridged::find(ctx, &network)?;
    let port = match (&def.target, def.mac) {
        (Some(dev), _) => rec.ports.iter().find(|p| &p.dev == dev),
        (None, Some(mac)) => rec
            .ports
            .iter()
            .find(|p| p.mac.as_deref() == Some(format_mac(&mac).as_str())),
        (None, None) => {
            return Err(NetworkError::Invalid {
                file: file.into(),
                element: "/interface".into(),
                reason: "give <target dev> or <mac address> to say which port to unplug".into(),
            });
        }
    };
    let dev = port
        .map(|p| p.dev.clone())
        .ok_or_else(|| NetworkError::Invalid {
            file: file.into(),
            element: if def.target.is_some() {
                "/interface/target@dev".into()
            } else {
                "/interface/mac@address".into()
            },
            reason: format!("no such port in network '{network}'"),
        })?;
    bridged::detach_interface(ctx, &network, &dev).await?;
    Ok(dev)
}

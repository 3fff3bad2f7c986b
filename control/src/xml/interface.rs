//! A domain's `<interface>` element (libvirt's formatdomain "Network
//! interfaces"), as `vxdp attach-interface --xml` takes it: which network the
//! guest port joins, the guest's MAC, and the host-side device name.
//!
//! Only the parts that concern the host side of the port are modelled; the
//! guest-side details the hypervisor handles (`<model>`, `<address>`,
//! `<alias>`, `<driver>`, `<boot>`, `<rom>`) are accepted and kept out of the
//! way. Port features vxdp does not implement (`<bandwidth>`, `<vlan>`,
//! `<virtualport>`, `<filterref>`, ...) are errors naming the element, never
//! silently ignored.

use crate::model::mac::Mac;
use roxmltree::{Document, Node, ParsingOptions};

use super::XmlError;

/// `<interface type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceType {
    Network,
    Bridge,
    Direct,
}

/// What `<source>` names, by interface type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSource {
    /// `<source network='NAME' portgroup?>`.
    Network {
        name: String,
        portgroup: Option<String>,
    },
    /// `<source bridge='BR'>`.
    Bridge(String),
    /// `<source dev='DEV' mode='bridge|vepa|private|passthrough'>`.
    Direct { dev: String, mode: String },
}

/// A parsed domain `<interface>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceDef {
    pub kind: InterfaceType,
    pub source: InterfaceSource,
    /// `<mac address>`: the guest's MAC.
    pub mac: Option<[u8; 6]>,
    /// `<model type>` (virtio, e1000, ...): informational for vxdp.
    pub model: Option<String>,
    /// `<target dev>`: the host-side device name.
    pub target: Option<String>,
}

type R<T> = Result<T, XmlError>;

fn err(
    file: &str,
    element: impl Into<String>,
    value: Option<&str>,
    reason: impl Into<String>,
) -> XmlError {
    XmlError {
        file: file.into(),
        element: element.into(),
        value: value.map(str::to_string),
        reason: reason.into(),
    }
}

fn attrs(file: &str, node: Node, path: &str, allowed: &[&str]) -> R<()> {
    for a in node.attributes() {
        if a.namespace().is_some() || !allowed.contains(&a.name()) {
            return Err(err(
                file,
                format!("{path}@{}", a.name()),
                Some(a.value()),
                "attribute not known here",
            ));
        }
    }
    Ok(())
}

fn req<'a>(file: &str, node: Node<'a, '_>, path: &str, name: &str) -> R<&'a str> {
    node.attribute(name).ok_or_else(|| {
        err(
            file,
            format!("{path}@{name}"),
            None,
            "missing required attribute",
        )
    })
}

/// A Linux interface name (dev_valid_name, IFNAMSIZ).
fn ifname<'a>(file: &str, v: &'a str, at: &str) -> R<&'a str> {
    let ok = !v.is_empty()
        && v.len() <= 15
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(err(
            file,
            at,
            Some(v),
            "not a valid interface name (1-15 letters, digits, '_', '.', '-')",
        ));
    }
    Ok(v)
}

/// A guest's MAC: unicast ([`Mac::parse_unicast`]).
fn mac(file: &str, v: &str, at: &str) -> R<[u8; 6]> {
    Mac::parse_unicast(v)
        .map(Mac::octets)
        .map_err(|e| err(file, at, Some(v), e.to_string()))
}

/// Parses one `<interface>` document. `file` names the source in errors.
pub fn parse_interface(xml: &str, file: &str) -> R<InterfaceDef> {
    let opts = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(xml, opts)
        .map_err(|e| err(file, "/", None, format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().namespace().is_some() || root.tag_name().name() != "interface" {
        return Err(err(
            file,
            format!("/{}", root.tag_name().name()),
            None,
            "root element must be a domain <interface>",
        ));
    }
    let path = "/interface";
    attrs(file, root, path, &["type", "trustGuestRxFilters"])?;
    let ty = req(file, root, path, "type")?;
    let kind = match ty {
        "network" => InterfaceType::Network,
        "bridge" => InterfaceType::Bridge,
        "direct" => InterfaceType::Direct,
        other => {
            return Err(err(
                file,
                "/interface@type",
                Some(other),
                "vxdp plugs interfaces of type network, bridge or direct",
            ));
        }
    };
    let mut source = None;
    let mut def_mac = None;
    let mut model = None;
    let mut target = None;
    for child in root.children().filter(Node::is_element) {
        let name = child.tag_name().name();
        let cpath = format!("{path}/{name}");
        if child.tag_name().namespace().is_some() {
            return Err(err(file, cpath, None, "element not known here"));
        }
        let once = |seen: bool| {
            if seen {
                Err(err(
                    file,
                    cpath.clone(),
                    None,
                    "element may appear only once",
                ))
            } else {
                Ok(())
            }
        };
        match name {
            "source" => {
                once(source.is_some())?;
                source = Some(match kind {
                    InterfaceType::Network => {
                        attrs(file, child, &cpath, &["network", "portgroup"])?;
                        let name = req(file, child, &cpath, "network")?;
                        if let Some(problem) = super::network_name_problem(name) {
                            return Err(err(file, format!("{cpath}@network"), Some(name), problem));
                        }
                        InterfaceSource::Network {
                            name: name.to_string(),
                            portgroup: child.attribute("portgroup").map(str::to_string),
                        }
                    }
                    InterfaceType::Bridge => {
                        attrs(file, child, &cpath, &["bridge"])?;
                        let b = req(file, child, &cpath, "bridge")?;
                        InterfaceSource::Bridge(
                            ifname(file, b, &format!("{cpath}@bridge"))?.to_string(),
                        )
                    }
                    InterfaceType::Direct => {
                        attrs(file, child, &cpath, &["dev", "mode"])?;
                        let d = req(file, child, &cpath, "dev")?;
                        let dev = ifname(file, d, &format!("{cpath}@dev"))?.to_string();
                        // libvirt's default direct mode is vepa.
                        let mode = child.attribute("mode").unwrap_or("vepa");
                        if !["bridge", "vepa", "private", "passthrough"].contains(&mode) {
                            return Err(err(
                                file,
                                format!("{cpath}@mode"),
                                Some(mode),
                                "expected bridge, vepa, private or passthrough",
                            ));
                        }
                        InterfaceSource::Direct {
                            dev,
                            mode: mode.to_string(),
                        }
                    }
                });
            }
            "mac" => {
                once(def_mac.is_some())?;
                attrs(file, child, &cpath, &["address", "type", "check"])?;
                def_mac = Some(mac(
                    file,
                    req(file, child, &cpath, "address")?,
                    &format!("{cpath}@address"),
                )?);
            }
            "model" => {
                once(model.is_some())?;
                attrs(file, child, &cpath, &["type"])?;
                model = Some(req(file, child, &cpath, "type")?.to_string());
            }
            "target" => {
                once(target.is_some())?;
                attrs(file, child, &cpath, &["dev", "managed"])?;
                let d = req(file, child, &cpath, "dev")?;
                target = Some(ifname(file, d, &format!("{cpath}@dev"))?.to_string());
            }
            // Guest-side details the hypervisor deals with.
            "address" | "alias" | "driver" | "boot" | "rom" | "acpi" => {}
            other => {
                return Err(err(
                    file,
                    cpath.clone(),
                    None,
                    format!("not supported yet: <{other}> on a guest port"),
                ));
            }
        }
    }
    let source = source.ok_or_else(|| {
        err(
            file,
            "/interface/source",
            None,
            "missing required element <source>",
        )
    })?;
    Ok(InterfaceDef {
        kind,
        source,
        mac: def_mac,
        model,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_network_interface() {
        let d = parse_interface(
            "<interface type='network'>
               <mac address='52:54:00:12:34:56'/>
               <source network='default'/>
               <model type='virtio'/>
               <target dev='vnet7'/>
               <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
             </interface>",
            "if.xml",
        )
        .unwrap();
        assert_eq!(d.kind, InterfaceType::Network);
        assert_eq!(
            d.source,
            InterfaceSource::Network {
                name: "default".into(),
                portgroup: None
            }
        );
        assert_eq!(d.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(d.model.as_deref(), Some("virtio"));
        assert_eq!(d.target.as_deref(), Some("vnet7"));
    }

    #[test]
    fn parses_bridge_and_direct_sources() {
        let b = parse_interface(
            "<interface type='bridge'><source bridge='virbr0'/></interface>",
            "b",
        )
        .unwrap();
        assert_eq!(b.source, InterfaceSource::Bridge("virbr0".into()));
        let d = parse_interface(
            "<interface type='direct'><source dev='eth1'/></interface>",
            "d",
        )
        .unwrap();
        assert_eq!(
            d.source,
            InterfaceSource::Direct {
                dev: "eth1".into(),
                mode: "vepa".into()
            }
        );
    }

    #[test]
    fn errors_name_the_element() {
        let cases = [
            (
                "<interface type='user'><source network='n'/></interface>",
                "/interface@type",
            ),
            ("<interface type='network'/>", "/interface/source"),
            (
                "<interface type='network'><source network='..'/></interface>",
                "/interface/source@network",
            ),
            (
                "<interface type='network'><source bridge='b'/></interface>",
                "/interface/source@bridge",
            ),
            (
                "<interface type='network'><source network='n'/><mac address='01:00:5e:00:00:01'/></interface>",
                "/interface/mac@address",
            ),
            (
                "<interface type='network'><source network='n'/><target dev='a/b'/></interface>",
                "/interface/target@dev",
            ),
            (
                "<interface type='direct'><source dev='eth1' mode='bogus'/></interface>",
                "/interface/source@mode",
            ),
            (
                "<interface type='network'><source network='n'/><bandwidth/></interface>",
                "/interface/bandwidth",
            ),
            ("<domain/>", "/domain"),
        ];
        for (xml, element) in cases {
            let e = parse_interface(xml, "f.xml").unwrap_err();
            assert_eq!(e.element, element, "{xml}: {e}");
            assert_eq!(e.file, "f.xml");
        }
    }
}

//! A domain's `<interface>` element (libvirt's formatdomain "Network
//! interfaces"), as `vxdp attach-interface --xml` takes it: which network the
//! guest port joins, the guest's MAC, and the host-side device name.
//!
//! Only the parts that concern the host side of the port are modelled; the
//! guest-side details the hypervisor handles (`<model>`, `<address>`,
//! `<alias>`, `<driver>`, `<boot>`, `<rom>`) are accepted and kept out of the
//! way. `<bandwidth>` is the port's rates (checked as libvirt checks
//! them). Port features vxdp does not implement (`<vlan>`, `<virtualport>`,
//! `<filterref>`, ...) are errors naming the element, never silently
//! ignored.
//!
//! `<portForward>` (libvirt's element of the passt backend) gives port
//! forwards into the port's NAT network, `<ip>` the guest's IPv4 address
//! they lead to.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{
    bandwidth::Bandwidth,
    forward::{PortForward, PortRange, Proto, range_problem},
    mac::Mac,
};
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
    /// `<bandwidth>` with at least one direction (an empty one is no
    /// limit, as in libvirt).
    pub bandwidth: Option<Bandwidth>,
    /// `<ip address family='ipv4'>`: the guest's IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// `<portForward>` elements, in document order.
    pub forwards: Vec<PortForward>,
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

/// A port number attribute (1-65535).
fn port_attr(file: &str, node: Node, at: &str, name: &str) -> R<Option<u16>> {
    let Some(v) = node.attribute(name) else {
        return Ok(None);
    };
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(err(
            file,
            format!("{at}@{name}"),
            Some(v),
            "not a port number (1-65535)",
        )),
    }
}

/// `<portForward proto address dev>` with its `<range>` children.
fn port_forward(file: &str, node: Node, path: &str) -> R<PortForward> {
    attrs(file, node, path, &["proto", "address", "dev"])?;
    let p = req(file, node, path, "proto")?;
    let proto = Proto::parse(p).ok_or_else(|| {
        err(
            file,
            format!("{path}@proto"),
            Some(p),
            "expected tcp or udp",
        )
    })?;
    let address = match node.attribute("address") {
        None => None,
        Some(a) => match a.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4))
                if !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast() =>
            {
                Some(v4)
            }
            Ok(IpAddr::V4(_)) => {
                return Err(err(
                    file,
                    format!("{path}@address"),
                    Some(a),
                    "not a unicast address",
                ));
            }
            Ok(IpAddr::V6(_)) => {
                return Err(err(
                    file,
                    format!("{path}@address"),
                    Some(a),
                    "IPv6 forwards (NAT66) are not supported yet; give an IPv4 address or none (the network's NAT address)",
                ));
            }
            Err(_) => {
                return Err(err(
                    file,
                    format!("{path}@address"),
                    Some(a),
                    "not an IP address",
                ));
            }
        },
    };
    let dev = match node.attribute("dev") {
        None => None,
        Some(d) => Some(ifname(file, d, &format!("{path}@dev"))?.to_string()),
    };
    let mut ranges = Vec::new();
    for child in node.children().filter(Node::is_element) {
        let name = child.tag_name().name();
        let rpath = format!("{path}/{name}");
        if child.tag_name().namespace().is_some() || name != "range" {
            return Err(err(
                file,
                rpath,
                None,
                "element not known here (expected <range>)",
            ));
        }
        attrs(file, child, &rpath, &["start", "end", "to", "exclude"])?;
        let start = port_attr(file, child, &rpath, "start")?.ok_or_else(|| {
            err(
                file,
                format!("{rpath}@start"),
                None,
                "missing required attribute",
            )
        })?;
        let end = port_attr(file, child, &rpath, "end")?.unwrap_or(start);
        let to = port_attr(file, child, &rpath, "to")?;
        let exclude = match child.attribute("exclude") {
            None | Some("no") => false,
            Some("yes") => true,
            Some(v) => {
                return Err(err(
                    file,
                    format!("{rpath}@exclude"),
                    Some(v),
                    "expected yes or no",
                ));
            }
        };
        let range = PortRange {
            start,
            end,
            to,
            exclude,
        };
        if let Some((at, problem)) = range_problem(&range) {
            let value = child.attribute(at).unwrap_or_default();
            return Err(err(file, format!("{rpath}@{at}"), Some(value), problem));
        }
        ranges.push(range);
    }
    let fwd = PortForward {
        proto,
        address,
        dev,
        ranges,
    };
    if !fwd.ranges.iter().any(|r| !r.exclude) {
        return Err(err(
            file,
            format!("{path}/range"),
            None,
            "a <portForward> needs at least one <range> that is not excluded",
        ));
    }
    if let Some(port) = fwd.overlap() {
        return Err(err(
            file,
            format!("{path}/range"),
            Some(&port.to_string()),
            "two ranges forward the same port",
        ));
    }
    Ok(fwd)
}

/// `<ip address family prefix>`: the guest's IPv4 address (IPv6 ones are
/// the guest's business: NAT networks route or masquerade IPv6 by prefix).
fn guest_ip(file: &str, node: Node, path: &str) -> R<Option<Ipv4Addr>> {
    attrs(file, node, path, &["address", "family", "prefix", "peer"])?;
    let a = req(file, node, path, "address")?;
    match (a.parse::<IpAddr>(), node.attribute("family")) {
        (Ok(IpAddr::V4(v4)), None | Some("ipv4")) => Ok(Some(v4)),
        (Ok(IpAddr::V6(_)), None | Some("ipv6")) => Ok(None),
        (Ok(_), Some(f)) => Err(err(
            file,
            format!("{path}@family"),
            Some(f),
            "does not match the address",
        )),
        (Err(_), _) => Err(err(
            file,
            format!("{path}@address"),
            Some(a),
            "not an IP address",
        )),
    }
}

/// Parses `xml` (no DTD) and returns its root element when it is `<tag>`
/// without a namespace; otherwise an error naming the root found.
fn parse_root<'a>(
    doc: &'a Result<Document<'a>, roxmltree::Error>,
    file: &str,
    tag: &str,
    what: &str,
) -> R<Node<'a, 'a>> {
    let doc = doc
        .as_ref()
        .map_err(|e| err(file, "/", None, format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().namespace().is_some() || root.tag_name().name() != tag {
        return Err(err(
            file,
            format!("/{}", root.tag_name().name()),
            None,
            format!("root element must be {what}"),
        ));
    }
    Ok(root)
}

fn parse_doc(xml: &str) -> Result<Document<'_>, roxmltree::Error> {
    let opts = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(xml, opts)
}

/// Parses a `<portForward>` document on its own (`vxdp port-forward add
/// --xml`). `file` names the source in errors.
pub fn parse_port_forward(xml: &str, file: &str) -> R<PortForward> {
    let doc = parse_doc(xml);
    let root = parse_root(&doc, file, "portForward", "a <portForward>")?;
    port_forward(file, root, "/portForward")
}

/// Parses one `<interface>` document. `file` names the source in errors.
pub fn parse_interface(xml: &str, file: &str) -> R<InterfaceDef> {
    let doc = parse_doc(xml);
    let root = parse_root(&doc, file, "interface", "a domain <interface>")?;
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
    let mut bandwidth: Option<Bandwidth> = None;
    let mut seen_bandwidth = false;
    let mut ipv4 = None;
    let mut forwards = Vec::new();
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
            "bandwidth" => {
                once(seen_bandwidth)?;
                seen_bandwidth = true;
                check_bandwidth(file, child, &cpath, kind == InterfaceType::Network)?;
                bandwidth = Some(Bandwidth::from_node(child)).filter(|b| !b.is_empty());
            }
            "portForward" => forwards.push(port_forward(file, child, &cpath)?),
            "ip" => {
                if let Some(a) = guest_ip(file, child, &cpath)?
                    && ipv4.replace(a).is_some()
                {
                    return Err(err(
                        file,
                        cpath.clone(),
                        Some(&a.to_string()),
                        "a second IPv4 <ip> (a guest port has one IPv4 address)",
                    ));
                }
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
        bandwidth,
        ipv4,
        forwards,
    })
}

/// libvirt's checks of a domain `<bandwidth>` (its schema and
/// `virNetDevBandwidthParse`): `<inbound>` and `<outbound>` once each,
/// rates and burst whole numbers from 1 to 2^32-1, `average` required
/// (an inbound `floor` may stand alone), `peak` and `burst` only with
/// `average`, `floor` only inbound and only on a `type='network'` port.
fn check_bandwidth(file: &str, node: Node, path: &str, floor_allowed: bool) -> R<()> {
    attrs(file, node, path, &[])?;
    let mut seen: Vec<&str> = Vec::new();
    for dir in node.children().filter(Node::is_element) {
        let name = dir.tag_name().name();
        let dpath = format!("{path}/{name}");
        if dir.tag_name().namespace().is_some() || !["inbound", "outbound"].contains(&name) {
            return Err(err(file, dpath, None, "element not known here"));
        }
        if seen.contains(&name) {
            return Err(err(file, dpath, None, "element may appear only once"));
        }
        seen.push(name);
        attrs(file, dir, &dpath, &["average", "peak", "burst", "floor"])?;
        for a in ["average", "peak", "burst", "floor"] {
            if let Some(v) = dir.attribute(a) {
                let ok = !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_digit())
                    && v.parse::<u32>().is_ok_and(|n| n >= 1);
                if !ok {
                    return Err(err(
                        file,
                        format!("{dpath}@{a}"),
                        Some(v),
                        "expected a whole number from 1 to 4294967295 (kilobytes/s, or kibibytes for burst)",
                    ));
                }
            }
        }
        if let Some(v) = dir.attribute("floor") {
            if name == "outbound" || !floor_allowed {
                return Err(err(
                    file,
                    format!("{dpath}@floor"),
                    Some(v),
                    "'floor' is allowed only in <inbound> of a type='network' interface",
                ));
            }
        } else if dir.attribute("average").is_none() {
            return Err(err(
                file,
                format!("{dpath}@average"),
                None,
                "missing mandatory average (or, inbound, floor)",
            ));
        }
        if dir.attribute("average").is_none()
            && (dir.attribute("peak").is_some() || dir.attribute("burst").is_some())
        {
            return Err(err(
                file,
                format!("{dpath}@average"),
                None,
                "'peak' and 'burst' need 'average'",
            ));
        }
    }
    Ok(())
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
        assert_eq!(d.bandwidth, None);
    }

    #[test]
    fn parses_bandwidth_and_portgroup() {
        let d = parse_interface(
            "<interface type='network'>
               <source network='default' portgroup='gold'/>
               <bandwidth><inbound average='100' peak='200' burst='32'/><outbound average='50'/></bandwidth>
             </interface>",
            "if.xml",
        )
        .unwrap();
        assert_eq!(
            d.source,
            InterfaceSource::Network {
                name: "default".into(),
                portgroup: Some("gold".into())
            }
        );
        let b = d.bandwidth.unwrap();
        assert_eq!(
            b.inbound.map(|r| (r.average, r.peak, r.burst)),
            Some((100, Some(200), Some(32)))
        );
        assert_eq!(b.outbound.map(|r| r.average), Some(50));
        let empty = parse_interface(
            "<interface type='network'><source network='n'/><bandwidth/></interface>",
            "if.xml",
        )
        .unwrap();
        assert_eq!(empty.bandwidth, None, "libvirt drops an empty <bandwidth/>");
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
    fn parses_port_forwards_and_the_guest_address() {
        let d = parse_interface(
            "<interface type='network'>
               <source network='default'/>
               <ip address='192.168.122.10' family='ipv4' prefix='24'/>
               <ip address='2001:db8::10' family='ipv6'/>
               <portForward proto='tcp' address='198.51.100.1' dev='eth0'>
                 <range start='2022' to='22'/>
                 <range start='5000' end='5020' to='6000'/>
                 <range start='5010' end='5015' exclude='yes'/>
               </portForward>
               <portForward proto='udp'><range start='53'/></portForward>
             </interface>",
            "pf.xml",
        )
        .unwrap();
        assert_eq!(d.ipv4, Some(Ipv4Addr::new(192, 168, 122, 10)));
        assert_eq!(d.forwards.len(), 2);
        let t = &d.forwards[0];
        assert_eq!(t.proto, Proto::Tcp);
        assert_eq!(t.address, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(t.dev.as_deref(), Some("eth0"));
        assert_eq!(
            t.ranges,
            vec![
                PortRange {
                    start: 2022,
                    end: 2022,
                    to: Some(22),
                    exclude: false
                },
                PortRange {
                    start: 5000,
                    end: 5020,
                    to: Some(6000),
                    exclude: false
                },
                PortRange {
                    start: 5010,
                    end: 5015,
                    to: None,
                    exclude: true
                },
            ]
        );
        let u = &d.forwards[1];
        assert_eq!(
            (u.proto, u.address, u.mappings()),
            (Proto::Udp, None, vec![(53, 53)])
        );
    }

    #[test]
    fn port_forward_errors_name_attribute_and_value() {
        let wrap =
            |pf: &str| format!("<interface type='network'><source network='n'/>{pf}</interface>");
        let cases = [
            (
                "<portForward><range start='1'/></portForward>",
                "/interface/portForward@proto",
                None,
            ),
            (
                "<portForward proto='sctp'><range start='1'/></portForward>",
                "/interface/portForward@proto",
                Some("sctp"),
            ),
            (
                "<portForward proto='tcp' address='2001:db8::1'><range start='1'/></portForward>",
                "/interface/portForward@address",
                Some("2001:db8::1"),
            ),
            (
                "<portForward proto='tcp' address='nope'><range start='1'/></portForward>",
                "/interface/portForward@address",
                Some("nope"),
            ),
            (
                "<portForward proto='tcp' dev='a/b'><range start='1'/></portForward>",
                "/interface/portForward@dev",
                Some("a/b"),
            ),
            (
                "<portForward proto='tcp'/>",
                "/interface/portForward/range",
                None,
            ),
            (
                "<portForward proto='tcp'><range start='5' exclude='yes'/></portForward>",
                "/interface/portForward/range",
                None,
            ),
            (
                "<portForward proto='tcp'><range/></portForward>",
                "/interface/portForward/range@start",
                None,
            ),
            (
                "<portForward proto='tcp'><range start='0'/></portForward>",
                "/interface/portForward/range@start",
                Some("0"),
            ),
            (
                "<portForward proto='tcp'><range start='70000'/></portForward>",
                "/interface/portForward/range@start",
                Some("70000"),
            ),
            (
                "<portForward proto='tcp'><range start='20' end='10'/></portForward>",
                "/interface/portForward/range@end",
                Some("10"),
            ),
            (
                "<portForward proto='tcp'><range start='20' to='65535' end='21'/></portForward>",
                "/interface/portForward/range@to",
                Some("65535"),
            ),
            (
                "<portForward proto='tcp'><range start='20' exclude='maybe'/></portForward>",
                "/interface/portForward/range@exclude",
                Some("maybe"),
            ),
            (
                "<portForward proto='tcp'><range start='20'/><range start='20' exclude='yes' to='3'/></portForward>",
                "/interface/portForward/range@to",
                Some("3"),
            ),
            (
                "<portForward proto='tcp'><range start='20' end='30'/><range start='25' to='1'/></portForward>",
                "/interface/portForward/range",
                Some("25"),
            ),
            (
                "<portForward proto='tcp'><port start='20'/></portForward>",
                "/interface/portForward/port",
                None,
            ),
            (
                "<portForward proto='tcp' bogus='1'><range start='20'/></portForward>",
                "/interface/portForward@bogus",
                Some("1"),
            ),
            (
                "<ip address='192.168.122.5'/><ip address='192.168.122.6'/>",
                "/interface/ip",
                Some("192.168.122.6"),
            ),
            (
                "<ip address='192.168.122.5' family='ipv6'/>",
                "/interface/ip@family",
                Some("ipv6"),
            ),
        ];
        for (pf, element, value) in cases {
            let e = parse_interface(&wrap(pf), "f.xml").unwrap_err();
            assert_eq!(e.element, element, "{pf}: {e}");
            assert_eq!(e.value.as_deref(), value, "{pf}: {e}");
        }
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
                "<interface type='network'><source network='n'/><bandwidth><inbound peak='5'/></bandwidth></interface>",
                "/interface/bandwidth/inbound@average",
            ),
            (
                "<interface type='network'><source network='n'/><bandwidth><outbound average='0'/></bandwidth></interface>",
                "/interface/bandwidth/outbound@average",
            ),
            (
                "<interface type='network'><source network='n'/><bandwidth><outbound average='5' floor='1'/></bandwidth></interface>",
                "/interface/bandwidth/outbound@floor",
            ),
            (
                "<interface type='bridge'><source bridge='b'/><bandwidth><inbound average='5' floor='1'/></bandwidth></interface>",
                "/interface/bandwidth/inbound@floor",
            ),
            (
                "<interface type='network'><source network='n'/><bandwidth><inbound average='5'/><inbound average='6'/></bandwidth></interface>",
                "/interface/bandwidth/inbound",
            ),
            (
                "<interface type='network'><source network='n'/><vlan><tag id='5'/></vlan></interface>",
                "/interface/vlan",
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

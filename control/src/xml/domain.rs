//! The guest ports of a whole libvirt domain document, as libvirt's qemu
//! hook hands it over on stdin (`vxdp libvirt-hook`): for every
//! `<devices><interface type='network'|'bridge'>`, the network or bridge
//! it joins, the guest's exact MAC, the host-side device and the guest
//! addresses the domain states (`<ip address>`, and the `IP`/`IPV6`
//! parameters of its `<filterref>`, as libvirt's `clean-traffic` takes
//! them).
//!
//! The document is libvirt's own full definition, so elements vxdp has no
//! use for are skipped, not refused; the values vxdp uses are checked.

use std::net::IpAddr;

use roxmltree::{Document, Node, ParsingOptions};

use super::XmlError;
use crate::model::mac::Mac;

/// One `<interface>` of a domain that sits on a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPort {
    /// `<source network>`.
    pub network: Option<String>,
    /// `<source bridge>` (type bridge; libvirt also writes it into the
    /// live definition of a type network interface).
    pub bridge: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// `<target dev>`: the tap, once libvirt created it.
    pub target: Option<String>,
    /// The guest's addresses, in document order, without repeats.
    pub ips: Vec<IpAddr>,
}

fn err(file: &str, element: String, value: Option<&str>, reason: &str) -> XmlError {
    XmlError {
        file: file.into(),
        element,
        value: value.map(str::to_string),
        reason: reason.into(),
    }
}

fn elements<'a, 'i>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The bridge-attached interfaces of the `<domain>` document `xml`;
/// `file` names it in errors.
pub fn domain_ports(xml: &str, file: &str) -> Result<Vec<DomainPort>, XmlError> {
    let opts = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(xml, opts)
        .map_err(|e| err(file, "/".into(), None, &format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(err(
            file,
            format!("/{}", root.tag_name().name()),
            None,
            "root element must be <domain>",
        ));
    }
    let mut out = Vec::new();
    for (i, iface) in elements(root, "devices")
        .flat_map(|d| elements(d, "interface"))
        .enumerate()
    {
        let at = format!("/domain/devices/interface[{}]", i + 1);
        if !matches!(iface.attribute("type"), Some("network" | "bridge")) {
            continue;
        }
        let source = elements(iface, "source").next();
        let mac =
            match elements(iface, "mac")
                .next()
                .and_then(|m| m.attribute("address"))
            {
                Some(v) => Some(Mac::parse_unicast(v).map(Mac::octets).map_err(|e| {
                    err(file, format!("{at}/mac@address"), Some(v), &e.to_string())
                })?),
                None => None,
            };
        let mut ips: Vec<IpAddr> = Vec::new();
        let mut add = |v: &str, element: String| -> Result<(), XmlError> {
            let ip = v
                .parse::<IpAddr>()
                .map_err(|_| err(file, element, Some(v), "not an IPv4 or IPv6 address"))?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
            Ok(())
        };
        for (j, ip) in elements(iface, "ip").enumerate() {
            if let Some(v) = ip.attribute("address") {
                add(v, format!("{at}/ip[{}]@address", j + 1))?;
            }
        }
        for f in elements(iface, "filterref") {
            for (j, p) in elements(f, "parameter").enumerate() {
                if matches!(p.attribute("name"), Some("IP" | "IPV6"))
                    && let Some(v) = p.attribute("value")
                {
                    add(v, format!("{at}/filterref/parameter[{}]@value", j + 1))?;
                }
            }
        }
        out.push(DomainPort {
            network: source
                .and_then(|s| s.attribute("network"))
                .map(String::from),
            bridge: source.and_then(|s| s.attribute("bridge")).map(String::from),
            mac,
            target: elements(iface, "target")
                .next()
                .and_then(|t| t.attribute("dev"))
                .map(String::from),
            ips,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "<domain type='qemu' id='3'><name>vm</name><devices>\
        <interface type='network'><mac address='02:11:22:33:44:55'/>\
          <source network='default' portid='5d7b' bridge='virbr0'/><target dev='vnet4'/>\
          <model type='virtio'/><filterref filter='clean-traffic'>\
            <parameter name='IP' value='192.168.122.50'/><parameter name='IPV6' value='2001:db8::50'/>\
            <parameter name='CTRL_IP_LEARNING' value='none'/></filterref>\
          <alias name='net0'/></interface>\
        <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/>\
          <ip address='198.51.100.7' prefix='24'/><ip address='198.51.100.7'/></interface>\
        <interface type='user'><mac address='52:54:00:00:00:03'/></interface>\
        <serial type='pty'/></devices></domain>";

    #[test]
    fn ports_of_a_live_domain() {
        let ports = domain_ports(LIVE, "stdin").unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[0],
            DomainPort {
                network: Some("default".into()),
                bridge: Some("virbr0".into()),
                mac: Some([2, 0x11, 0x22, 0x33, 0x44, 0x55]),
                target: Some("vnet4".into()),
                ips: vec![
                    "192.168.122.50".parse().unwrap(),
                    "2001:db8::50".parse().unwrap()
                ],
            }
        );
        assert_eq!(ports[1].bridge.as_deref(), Some("br0"));
        assert_eq!(ports[1].target, None);
        assert_eq!(
            ports[1].ips,
            vec!["198.51.100.7".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_values_name_the_element() {
        let e =
            domain_ports(&LIVE.replace("192.168.122.50", "192.168.122.500"), "stdin").unwrap_err();
        assert_eq!(
            e.element,
            "/domain/devices/interface[1]/filterref/parameter[1]@value"
        );
        let e = domain_ports(&LIVE.replace("02:11:22", "01:11:22"), "stdin").unwrap_err();
        assert_eq!(e.element, "/domain/devices/interface[1]/mac@address");
        assert!(domain_ports("<network/>", "stdin").is_err());
        assert!(domain_ports("<!DOCTYPE d [<!ENTITY x 'y'>]><domain/>", "stdin").is_err());
    }
}

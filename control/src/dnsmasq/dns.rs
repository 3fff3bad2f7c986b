//! The `<dns>` element's values. The XML module checks its element and
//! attribute names and keeps it verbatim; here its values are parsed and
//! checked for what dnsmasq will be told, with errors naming the element.

use std::net::IpAddr;

use roxmltree::{Document, Node};

use crate::xml::{NetworkDef, XmlError};

/// `<dns>`: the network's DNS service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsDef {
    /// `enable='no'` turns the DNS server off (dnsmasq `port=0`).
    pub enabled: bool,
    /// `forwardPlainNames='no'`: names without a dot are never forwarded.
    pub forward_plain_names: bool,
    pub forwarders: Vec<Forwarder>,
    pub txts: Vec<(String, String)>,
    pub srvs: Vec<Srv>,
    pub hosts: Vec<DnsHost>,
}

/// `<forwarder addr domain>`: at least one of the two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarder {
    pub addr: Option<IpAddr>,
    pub domain: Option<String>,
}

/// `<srv service protocol domain target port priority weight>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub service: String,
    pub protocol: String,
    pub domain: Option<String>,
    pub target: Option<String>,
    pub port: Option<u16>,
    pub priority: Option<u16>,
    pub weight: Option<u16>,
}

/// `<host ip><hostname>…</hostname></host>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsHost {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

fn err(file: &str, element: String, value: Option<&str>, reason: impl Into<String>) -> XmlError {
    XmlError { file: file.into(), element, value: value.map(str::to_string), reason: reason.into() }
}

/// Letters, digits, '-', '.' and '_' (the last for SRV labels): nothing that
/// could break a dnsmasq option line.
fn check_name(file: &str, at: String, v: &str) -> Result<String, XmlError> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
        return Err(err(file, at, Some(v), "may only contain letters, digits, '-', '.' and '_'"));
    }
    Ok(v.to_string())
}

fn check_u16(file: &str, at: String, v: &str) -> Result<u16, XmlError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(file, at, Some(v), "expected a number between 0 and 65535"));
    }
    v.parse().map_err(|_| err(file, at, Some(v), "expected a number between 0 and 65535"))
}

fn yes_no(file: &str, node: Node, path: &str, name: &str, default: bool) -> Result<bool, XmlError> {
    match node.attribute(name) {
        None => Ok(default),
        Some("yes") => Ok(true),
        Some("no") => Ok(false),
        Some(v) => Err(err(file, format!("{path}@{name}"), Some(v), "expected 'yes' or 'no'")),
    }
}

/// The network's `<dns>`, or the defaults (enabled, nothing configured).
pub fn parse(def: &NetworkDef, file: &str) -> Result<DnsDef, XmlError> {
    let mut dns = DnsDef { enabled: true, forward_plain_names: true, ..DnsDef::default() };
    let Some(raw) = def.extra.iter().find(|r| r.name == "dns") else {
        return Ok(dns);
    };
    let doc = Document::parse(&raw.xml)
        .map_err(|e| err(file, "/network/dns".into(), None, format!("cannot re-read the element: {e}")))?;
    let root = doc.root_element();
    let path = "/network/dns";
    dns.enabled = yes_no(file, root, path, "enable", true)?;
    dns.forward_plain_names = yes_no(file, root, path, "forwardPlainNames", true)?;
    let (mut nf, mut nt, mut ns, mut nh) = (0, 0, 0, 0);
    for child in root.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "forwarder" => {
                nf += 1;
                let p = format!("{path}/forwarder[{nf}]");
                let addr = match child.attribute("addr") {
                    Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                        err(file, format!("{p}@addr"), Some(a), "not an IPv4 or IPv6 address")
                    })?),
                    None => None,
                };
                let domain = child.attribute("domain").map(|d| check_name(file, format!("{p}@domain"), d)).transpose()?;
                if addr.is_none() && domain.is_none() {
                    return Err(err(file, p, None, "a forwarder needs addr, domain or both"));
                }
                dns.forwarders.push(Forwarder { addr, domain });
            }
            "txt" => {
                nt += 1;
                let p = format!("{path}/txt[{nt}]");
                let name = child.attribute("name").ok_or_else(|| err(file, p.clone(), None, "missing required attribute name"))?;
                let name = check_name(file, format!("{p}@name"), name)?;
                let value = child.attribute("value").ok_or_else(|| err(file, p.clone(), None, "missing required attribute value"))?;
                if value.is_empty() || value.contains(['\n', '\r', '"']) {
                    return Err(err(file, format!("{p}@value"), Some(value), "must be non-empty, on one line, without '\"'"));
                }
                dns.txts.push((name, value.to_string()));
            }
            "srv" => {
                ns += 1;
                let p = format!("{path}/srv[{ns}]");
                let service = child.attribute("service").ok_or_else(|| err(file, p.clone(), None, "missing required attribute service"))?;
                let service = check_name(file, format!("{p}@service"), service)?;
                if service.len() > 15 {
                    return Err(err(file, format!("{p}@service"), Some(&service), "a service name has at most 15 characters"));
                }
                let protocol = child.attribute("protocol").ok_or_else(|| err(file, p.clone(), None, "missing required attribute protocol"))?;
                let protocol = check_name(file, format!("{p}@protocol"), protocol)?;
                let opt_name = |a: &str| child.attribute(a).map(|v| check_name(file, format!("{p}@{a}"), v)).transpose();
                let opt_u16 = |a: &str| child.attribute(a).map(|v| check_u16(file, format!("{p}@{a}"), v)).transpose();
                let srv = Srv {
                    service,
                    protocol,
                    domain: opt_name("domain")?,
                    target: opt_name("target")?,
                    port: opt_u16("port")?,
                    priority: opt_u16("priority")?,
                    weight: opt_u16("weight")?,
                };
                if srv.target.is_none() && (srv.port.is_some() || srv.priority.is_some() || srv.weight.is_some()) {
                    return Err(err(file, p, None, "port, priority and weight need a target"));
                }
                dns.srvs.push(srv);
            }
            "host" => {
                nh += 1;
                let p = format!("{path}/host[{nh}]");
                let ip_txt = child.attribute("ip").ok_or_else(|| err(file, p.clone(), None, "missing required attribute ip"))?;
                let ip = ip_txt
                    .parse::<IpAddr>()
                    .map_err(|_| err(file, format!("{p}@ip"), Some(ip_txt), "not an IPv4 or IPv6 address"))?;
                let mut hostnames = Vec::new();
                for (i, h) in child.children().filter(Node::is_element).enumerate() {
                    let text = h.text().unwrap_or("");
                    hostnames.push(check_name(file, format!("{p}/hostname[{}]", i + 1), text)?);
                }
                if hostnames.is_empty() {
                    return Err(err(file, p, Some(ip_txt), "a DNS host needs at least one <hostname>"));
                }
                dns.hosts.push(DnsHost { ip, hostnames });
            }
            // The XML module already refused any other child.
            other => return Err(err(file, format!("{path}/{other}"), None, "unknown element")),
        }
    }
    Ok(dns)
}

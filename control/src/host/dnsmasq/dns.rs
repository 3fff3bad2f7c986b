//! The `<dns>` element as dnsmasq needs it. The XML module parses and
//! checks it like libvirt; here names are re-checked for what may go into a
//! dnsmasq option line, with errors naming the element.

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

// The records themselves are the XML module's types.
pub use crate::xml::{DnsForwarder as Forwarder, DnsHost, DnsSrv as Srv};

fn err(file: &str, element: String, value: Option<&str>, reason: impl Into<String>) -> XmlError {
    XmlError {
        file: file.into(),
        element,
        value: value.map(str::to_string),
        reason: reason.into(),
    }
}

/// Longest DNS name (RFC 1035, in text form without the final dot).
pub const MAX_DNS_NAME: usize = 253;

/// Letters, digits, '-', '.' and '_' (the last for SRV labels): nothing that
/// could break a dnsmasq option line.
fn check_name(file: &str, at: String, v: &str) -> Result<String, XmlError> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(err(
            file,
            at,
            Some(v),
            "may only contain letters, digits, '-', '.' and '_'",
        ));
    }
    if v.len() > MAX_DNS_NAME {
        return Err(err(
            file,
            at,
            Some(v),
            format!("a DNS name has at most {} characters", MAX_DNS_NAME),
        ));
    }
    Ok(v.to_string())
}

/// The network's `<dns>` (typed and checked by the XML module), or the
/// defaults (enabled, nothing configured), with the names re-checked for
/// what may go into a dnsmasq option line.
pub fn parse(def: &NetworkDef, file: &str) -> Result<DnsDef, XmlError> {
    let mut dns = DnsDef {
        enabled: true,
        forward_plain_names: true,
        ..DnsDef::default()
    };
    let Some(x) = &def.dns else {
        return Ok(dns);
    };
    let path = "/network/dns";
    dns.enabled = x.enable.unwrap_or(true);
    dns.forward_plain_names = x.forward_plain_names.unwrap_or(true);
    for (i, f) in x.forwarders.iter().enumerate() {
        let p = format!("{path}/forwarder[{}]", i + 1);
        let domain = f
            .domain
            .as_deref()
            .map(|d| check_name(file, format!("{p}@domain"), d))
            .transpose()?;
        if f.addr.is_none() && domain.is_none() {
            return Err(err(file, p, None, "a forwarder needs addr, domain or both"));
        }
        dns.forwarders.push(Forwarder {
            addr: f.addr,
            domain,
        });
    }
    for (i, t) in x.txts.iter().enumerate() {
        let p = format!("{path}/txt[{}]", i + 1);
        let name = check_name(file, format!("{p}@name"), &t.name)?;
        // Written quoted, with backslashes and '"' escaped; control characters
        // would end or split the line.
        if t.value.is_empty() || t.value.chars().any(char::is_control) {
            return Err(err(
                file,
                format!("{p}@value"),
                Some(&t.value),
                "must be non-empty and without control characters",
            ));
        }
        dns.txts.push((name, t.value.clone()));
    }
    for (i, s) in x.srvs.iter().enumerate() {
        let p = format!("{path}/srv[{}]", i + 1);
        let service = check_name(file, format!("{p}@service"), &s.service)?;
        if service.len() > 15 {
            return Err(err(
                file,
                format!("{p}@service"),
                Some(&service),
                "a service name has at most 15 characters",
            ));
        }
        let opt_name = |a: &str, v: &Option<String>| {
            v.as_deref()
                .map(|v| check_name(file, format!("{p}@{a}"), v))
                .transpose()
        };
        let srv = Srv {
            service,
            protocol: check_name(file, format!("{p}@protocol"), &s.protocol)?,
            domain: opt_name("domain", &s.domain)?,
            target: opt_name("target", &s.target)?,
            port: s.port,
            priority: s.priority,
            weight: s.weight,
        };
        if srv.target.is_none()
            && (srv.port.is_some() || srv.priority.is_some() || srv.weight.is_some())
        {
            return Err(err(
                file,
                p,
                None,
                "port, priority and weight need a target",
            ));
        }
        dns.srvs.push(srv);
    }
    for (i, h) in x.hosts.iter().enumerate() {
        let p = format!("{path}/host[{}]", i + 1);
        let mut hostnames = Vec::new();
        for (j, name) in h.hostnames.iter().enumerate() {
            hostnames.push(check_name(file, format!("{p}/hostname[{}]", j + 1), name)?);
        }
        if hostnames.is_empty() {
            return Err(err(
                file,
                p,
                None,
                "a DNS host needs at least one <hostname>",
            ));
        }
        dns.hosts.push(DnsHost {
            ip: h.ip,
            hostnames,
        });
    }
    Ok(dns)
}

//! dnsmasq's configuration file, generated from the network definition the
//! way libvirt's network driver writes it, plus what vxdp needs (its own
//! paths, the lease hook, foreground operation for the supervisor).

use crate::model::mac::Mac;
use std::{fmt::Write as _, net::IpAddr, path::Path};

use crate::xml::{IpDef, Lease, NetworkDef, XmlError};

use super::{
    Paths,
    dns::{self, MAX_DNS_NAME},
};

/// The user dnsmasq runs as once it has opened its sockets, lease file and
/// pid file as root: it parses guests' DHCP, DNS and TFTP requests, so not
/// as root. Debian's dnsmasq-base creates this user (libvirt uses a user of
/// its own the same way); vxdp refuses to start dnsmasq without it.
pub const DNSMASQ_USER: &str = "dnsmasq";

/// Who dnsmasq runs as: [`DNSMASQ_USER`] and, by name, that user's primary
/// group (without `group=`, dnsmasq would switch to its built-in `dip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: String,
}

/// Longest configuration line dnsmasq reads whole, newline included: it
/// reads with `fgets` into a 1,025-byte buffer, and the rest of a longer
/// line is read as a line of its own.
pub const MAX_LINE: usize = 1024;

fn err(file: &str, element: String, value: &str, reason: &str) -> XmlError {
    XmlError {
        file: file.into(),
        element,
        value: Some(value.into()),
        reason: reason.into(),
    }
}

/// dnsmasq's lease time syntax: seconds, `<n>m`, `<n>h` or `infinite`.
fn lease_time(lease: &Lease) -> String {
    if lease.expiry == 0 {
        return "infinite".into();
    }
    match lease.unit.as_deref() {
        Some("seconds") => format!("{}", lease.expiry),
        Some("hours") => format!("{}h", lease.expiry),
        // libvirt's default unit.
        _ => format!("{}m", lease.expiry),
    }
}

/// Number of addresses in an inclusive range (saturating for IPv6).
fn range_size(start: IpAddr, end: IpAddr) -> u64 {
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => u64::from(e.to_bits() - s.to_bits()) + 1,
        (IpAddr::V6(s), IpAddr::V6(e)) => {
            u64::try_from(e.to_bits() - s.to_bits()).unwrap_or(u64::MAX - 1) + 1
        }
        _ => 0,
    }
}

fn netmask_v4(prefix: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from_bits(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// The generated file, a line at a time; no line longer than dnsmasq
/// reads whole.
struct Conf<'a> {
    text: String,
    file: &'a str,
}

impl Conf<'_> {
    /// A line made only of constants, addresses and numbers.
    fn fixed(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        debug_assert!(line.len() < MAX_LINE && !line.contains('\n'), "{line}");
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// A line holding `value` of `element`, refused (naming them) when
    /// dnsmasq would cut it and read the rest as a line of its own.
    fn put(&mut self, element: &str, value: &str, line: String) -> Result<(), XmlError> {
        if line.len() + 1 > MAX_LINE || line.contains('\n') {
            return Err(err(
                self.file,
                element.into(),
                value,
                &format!(
                    "makes a dnsmasq configuration line of {} bytes; dnsmasq reads at most {MAX_LINE} bytes a line",
                    line.len() + 1
                ),
            ));
        }
        self.text.push_str(&line);
        self.text.push('\n');
        Ok(())
    }
}

/// No control characters (newlines, tabs, NUL, DEL...): in a dnsmasq line
/// they end it or change how it is split.
fn no_controls(file: &str, element: &str, v: &str) -> Result<(), XmlError> {
    if v.chars().any(char::is_control) {
        return Err(err(
            file,
            element.into(),
            v,
            "must not contain control characters (newline, tab, ...)",
        ));
    }
    Ok(())
}

/// A value dnsmasq reads unquoted, where whitespace ends it, ',' starts
/// another field, '#' a comment, and '"' and the backslash are quoting
/// syntax.
fn plain_token(file: &str, element: &str, v: &str, what: &str) -> Result<(), XmlError> {
    no_controls(file, element, v)?;
    if v.chars().any(|c| c.is_whitespace() || ",#\"\\".contains(c)) {
        return Err(err(
            file,
            element.into(),
            v,
            &format!("{what} must not contain whitespace, ',', '#', '\"' or '\\'"),
        ));
    }
    Ok(())
}

/// A DNS name: letters, digits, '-', '.', '_' (the XML module checked the
/// characters; this keeps them and the length dnsmasq can hold).
fn dns_name(file: &str, element: &str, v: &str) -> Result<(), XmlError> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(err(
            file,
            element.into(),
            v,
            "may only contain letters, digits, '-', '.' and '_'",
        ));
    }
    if v.len() > MAX_DNS_NAME {
        return Err(err(
            file,
            element.into(),
            v,
            &format!("a DNS name has at most {MAX_DNS_NAME} characters"),
        ));
    }
    Ok(())
}

/// Longest boot file name: the BOOTP `file` field holds 128 bytes with
/// its terminating NUL.
pub const MAX_BOOT_FILE: usize = 127;

/// `v` inside a dnsmasq double-quoted string: dnsmasq reads `\\` and `\"`
/// there as a backslash and a quote, so a value ending in a backslash
/// cannot escape the closing quote.
fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// True when the definition gives dnsmasq something to do: it has an
/// `<ip>` (libvirt runs no dnsmasq without one) and DNS, DHCP or TFTP is on.
pub fn wanted(def: &NetworkDef, file: &str) -> Result<bool, XmlError> {
    if def.ips.is_empty() {
        return Ok(false);
    }
    let dns = dns::parse(def, file)?;
    Ok(dns.enabled
        || def
            .ips
            .iter()
            .any(|ip| ip.has_dhcp() || ip.tftp_root.is_some()))
}

/// The configuration for the network's dnsmasq. `bridge` is the interface it
/// serves; `file` names the definition in errors. Every value from the
/// definition is checked for what would change how dnsmasq reads it, and
/// no line is longer than dnsmasq reads whole ([`MAX_LINE`]).
pub fn generate(
    def: &NetworkDef,
    bridge: &str,
    paths: &Paths,
    run_as: &RunAs,
    file: &str,
) -> Result<String, XmlError> {
    let dns = dns::parse(def, file)?;
    let mut c = Conf {
        text: String::new(),
        file,
    };
    // A comment line: only its length matters ('#' starts it).
    c.put(
        "/network/name",
        &def.name,
        format!(
            "# Generated by vxdp for network '{}'; rewritten on every start.",
            def.name
        ),
    )?;
    // Ask upstream servers in the order given.
    c.fixed("strict-order");
    // Names from the host's user database: checked like any value.
    plain_token(file, "(dnsmasq user)", &run_as.user, "a user name")?;
    plain_token(file, "(dnsmasq group)", &run_as.group, "a group name")?;
    c.put(
        "(dnsmasq user)",
        &run_as.user,
        format!("user={}", run_as.user),
    )?;
    c.put(
        "(dnsmasq group)",
        &run_as.group,
        format!("group={}", run_as.group),
    )?;
    // The paths hold the state directory and the network's name, unquoted.
    plain_token(
        file,
        "/network/name",
        &def.name,
        "the name of a network with dnsmasq",
    )?;
    for (opt, path) in [
        ("pid-file", paths.pid()),
        ("dhcp-leasefile", paths.leases()),
        ("dhcp-script", paths.hook()),
    ] {
        let path = path.to_string_lossy();
        c.put("/network/name", &def.name, format!("{opt}={path}"))?;
    }
    // Our log, not syslog: the supervisor sends stderr to the log file.
    c.fixed("log-facility=-");
    // Only this bridge, only its addresses: several networks' dnsmasqs share
    // the host (libvirt's bind-dynamic setup), and the host's own resolver
    // on loopback is never shadowed.
    c.fixed("except-interface=lo");
    c.fixed("bind-dynamic");
    plain_token(file, "/network/bridge@name", bridge, "a bridge name")?;
    c.put(
        "/network/bridge@name",
        bridge,
        format!("interface={bridge}"),
    )?;
    for ip in &def.ips {
        c.fixed(format!("listen-address={}", ip.address));
    }
    // The hypervisor's /etc/hosts is not the guests' business.
    c.fixed("no-hosts");

    if !dns.enabled {
        c.fixed("port=0");
    } else {
        if !dns.forward_plain_names {
            c.fixed("domain-needed");
        }
        if dns.forwarders.iter().any(|f| f.addr.is_some()) {
            // Only the configured forwarders, not the host's resolv.conf.
            c.fixed("no-resolv");
        }
        for (i, f) in dns.forwarders.iter().enumerate() {
            let at = format!("/network/dns/forwarder[{}]@domain", i + 1);
            match (&f.domain, f.addr) {
                (Some(d), Some(a)) => c.put(&at, d, format!("server=/{d}/{a}"))?,
                // A domain without address: answered locally only.
                (Some(d), None) => c.put(&at, d, format!("server=/{d}/"))?,
                (None, Some(a)) => c.fixed(format!("server={a}")),
                (None, None) => {}
            }
        }
    }
    if let Some(domain) = &def.domain {
        let at = "/network/domain@name";
        dns_name(file, at, domain)?;
        c.put(at, domain, format!("domain={domain}"))?;
        c.fixed("expand-hosts");
        if def.domain_local_only {
            c.put(at, domain, format!("local=/{domain}/"))?;
        }
    }
    if dns.enabled {
        for (i, h) in dns.hosts.iter().enumerate() {
            // host-record names are not expanded with the domain the way
            // libvirt's hosts file entries are: add the long names here.
            let mut names = h.hostnames.clone();
            if let Some(domain) = &def.domain {
                names.extend(
                    h.hostnames
                        .iter()
                        .filter(|n| !n.contains('.'))
                        .map(|n| format!("{n}.{domain}")),
                );
            }
            let names = names.join(",");
            c.put(
                &format!("/network/dns/host[{}]", i + 1),
                &names,
                format!("host-record={names},{}", h.ip),
            )?;
        }
        for (i, (name, value)) in dns.txts.iter().enumerate() {
            c.put(
                &format!("/network/dns/txt[{}]@value", i + 1),
                value,
                format!("txt-record={name},{}", quoted(value)),
            )?;
        }
        for (i, s) in dns.srvs.iter().enumerate() {
            let mut name = format!("_{}._{}", s.service, s.protocol);
            if let Some(d) = s.domain.as_ref().or(def.domain.as_ref()) {
                name.push('.');
                name.push_str(d);
            }
            let mut v = format!("srv-host={name}");
            if let Some(t) = &s.target {
                let _ = write!(
                    v,
                    ",{t},{},{},{}",
                    s.port.unwrap_or(0),
                    s.priority.unwrap_or(0),
                    s.weight.unwrap_or(0)
                );
            }
            let at = format!(
                "/network/dns/srv[{}]@{}",
                i + 1,
                if s.target.is_some() {
                    "target"
                } else {
                    "domain"
                }
            );
            c.put(&at, s.target.as_deref().unwrap_or(&name), v)?;
        }
    }

    let mut lease_max: u64 = 0;
    let mut dhcp_v4 = false;
    let mut dhcp_v6 = false;
    for (i, ip) in def.ips.iter().enumerate() {
        let at = format!("/network/ip[{}]", i + 1);
        dhcp_lines(ip, &at, &mut c, &mut lease_max)?;
        if ip.has_dhcp() {
            if ip.address.is_ipv4() {
                dhcp_v4 = true;
                c.fixed(format!("dhcp-option=option:router,{}", ip.address));
                if dns.enabled {
                    c.fixed(format!("dhcp-option=option:dns-server,{}", ip.address));
                } else {
                    let fwd: Vec<String> = dns
                        .forwarders
                        .iter()
                        .filter_map(|f| f.addr)
                        .filter(IpAddr::is_ipv4)
                        .map(|a| a.to_string())
                        .collect();
                    if fwd.is_empty() {
                        // No DNS here and none elsewhere: send no DNS option.
                        c.fixed("dhcp-option=option:dns-server");
                    } else {
                        c.put(
                            "/network/dns/forwarder",
                            "",
                            format!("dhcp-option=option:dns-server,{}", fwd.join(",")),
                        )?;
                    }
                }
            } else {
                dhcp_v6 = true;
            }
        }
        if let Some(root) = &ip.tftp_root {
            let at = format!("{at}/tftp@root");
            // tftp-root=<dir>[,<interface>]: a ',' would start an interface filter.
            plain_token(file, &at, root, "a tftp root")?;
            if !Path::new(root).is_absolute() {
                return Err(err(file, at, root, "tftp root must be an absolute path"));
            }
            c.fixed("enable-tftp");
            c.put(&at, root, format!("tftp-root={root}"))?;
        }
        if let Some(bootp) = &ip.bootp {
            let server_at = format!("{at}/dhcp/bootp@server");
            let at = format!("{at}/dhcp/bootp@file");
            plain_token(file, &at, &bootp.file, "a boot file name")?;
            if bootp.file.len() > MAX_BOOT_FILE {
                return Err(err(
                    file,
                    at,
                    &bootp.file,
                    &format!(
                        "a boot file name has at most {MAX_BOOT_FILE} bytes (the BOOTP file field)"
                    ),
                ));
            }
            match &bootp.server {
                Some(server) => {
                    dns_name(file, &server_at, server)?;
                    c.put(
                        &at,
                        &bootp.file,
                        format!("dhcp-boot={},,{server}", bootp.file),
                    )?;
                }
                None => c.put(&at, &bootp.file, format!("dhcp-boot={}", bootp.file))?,
            }
        }
    }
    if dhcp_v4 || dhcp_v6 {
        c.fixed("dhcp-no-override");
        c.fixed("dhcp-authoritative");
        c.fixed(format!("dhcp-lease-max={}", lease_max.clamp(1, 1 << 24)));
    }
    if dhcp_v6 {
        c.fixed("enable-ra");
    }
    // The network's <mtu>, to every DHCPv4 client whether it asks or not
    // (as libvirt does): guests then use the bridge's MTU.
    if let (true, Some(mtu)) = (dhcp_v4, def.mtu) {
        c.fixed(format!("dhcp-option-force=option:mtu,{mtu}"));
    }
    // The administrator's own option lines (libvirt's dnsmasq:options): taken
    // as written, which is their purpose, but each stays one whole line.
    for (i, opt) in def.dnsmasq_options.iter().enumerate() {
        let at = format!("/network/dnsmasq:options/dnsmasq:option[{}]@value", i + 1);
        no_controls(file, &at, opt)?;
        c.put(&at, opt, opt.clone())?;
    }
    Ok(c.text)
}

fn dhcp_lines(ip: &IpDef, at: &str, c: &mut Conf, lease_max: &mut u64) -> Result<(), XmlError> {
    for (j, (start, end)) in ip.dhcp_ranges.iter().enumerate() {
        let mut v = match ip.address {
            IpAddr::V4(_) => format!("dhcp-range={start},{end},{}", netmask_v4(ip.prefix)),
            IpAddr::V6(_) => format!("dhcp-range={start},{end},{}", ip.prefix),
        };
        if let Some(Some(lease)) = ip.range_leases.get(j) {
            let _ = write!(v, ",{}", lease_time(lease));
        }
        c.fixed(v);
        *lease_max = lease_max.saturating_add(range_size(*start, *end));
    }
    if ip.dhcp_ranges.is_empty() && !ip.dhcp_hosts.is_empty() {
        // Static hosts only: dnsmasq still needs the subnet as a range.
        match ip.network() {
            IpAddr::V4(net) => {
                c.fixed(format!("dhcp-range={net},static,{}", netmask_v4(ip.prefix)))
            }
            IpAddr::V6(net) => c.fixed(format!("dhcp-range={net},static,{}", ip.prefix)),
        }
    }
    for (j, h) in ip.dhcp_hosts.iter().enumerate() {
        let Some(addr) = h.ip else { continue };
        let hat = format!("{at}/dhcp/host[{}]", j + 1);
        let mut fields: Vec<String> = Vec::new();
        if let Some(mac) = &h.mac {
            fields.push(Mac(*mac).to_string());
        }
        if let Some(id) = &h.id {
            // Checked by the XML module: colon-separated hex bytes.
            fields.push(format!("id:{id}"));
        }
        match addr {
            IpAddr::V4(a) => fields.push(a.to_string()),
            IpAddr::V6(a) => fields.push(format!("[{a}]")),
        }
        let mut element = format!("{hat}@id");
        let mut value = h.id.clone().unwrap_or_default();
        if let Some(name) = &h.name {
            element = format!("{hat}@name");
            value = name.clone();
            dns_name(c.file, &element, name)?;
            fields.push(name.clone());
        }
        if let Some(lease) = &h.lease {
            fields.push(lease_time(lease));
        }
        c.put(&element, &value, format!("dhcp-host={}", fields.join(",")))?;
        *lease_max = lease_max.saturating_add(1);
    }
    Ok(())
}

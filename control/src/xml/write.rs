//! [`NetworkDef`] → XML text, in libvirt's element order and quoting style, plus the
//! serialiser for elements kept verbatim.

use crate::model::mac::Mac;
use std::fmt::Write as _;
use std::net::IpAddr;

use roxmltree::Node;

use super::{DNSMASQ_NS, DhcpHost, DnsDef, ForwardDef, IpDef, Lease, NetworkDef, RouteDef};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

pub(super) fn network(def: &NetworkDef) -> String {
    let mut o = String::new();
    o.push_str("<network");
    if !def.dnsmasq_options.is_empty() {
        attr(&mut o, "xmlns:dnsmasq", DNSMASQ_NS);
    }
    if def.ipv6 {
        attr(&mut o, "ipv6", "yes");
    }
    if def.trust_guest_rx_filters {
        attr(&mut o, "trustGuestRxFilters", "yes");
    }
    o.push_str(">\n");

    text_elem(&mut o, "name", &def.name);
    if let Some(u) = &def.uuid {
        text_elem(&mut o, "uuid", u);
    }
    if let Some(t) = &def.title {
        text_elem(&mut o, "title", t);
    }
    if let Some(d) = &def.description {
        text_elem(&mut o, "description", d);
    }
    if let Some(m) = &def.metadata {
        // Already serialised XML: written as is.
        let _ = writeln!(o, "  <metadata>{m}</metadata>");
    }
    if let Some(fwd) = &def.forward {
        forward(&mut o, fwd);
    }
    bridge(&mut o, def);
    if let Some(mtu) = def.mtu {
        o.push_str("  <mtu");
        attr(&mut o, "size", &mtu.to_string());
        o.push_str("/>\n");
    }
    if let Some(mac) = &def.mac {
        o.push_str("  <mac");
        attr(&mut o, "address", &Mac(*mac).to_string());
        o.push_str("/>\n");
    }
    if let Some(d) = &def.domain {
        o.push_str("  <domain");
        attr(&mut o, "name", d);
        if def.domain_local_only {
            attr(&mut o, "localOnly", "yes");
        }
        if def.domain_register {
            attr(&mut o, "register", "yes");
        }
        o.push_str("/>\n");
    }
    if let Some(dns) = &def.dns {
        dns_elem(&mut o, dns);
    }
    for raw in &def.extra {
        let _ = writeln!(o, "  {}", raw.xml);
    }
    if def.port_isolated {
        o.push_str("  <port isolated='yes'/>\n");
    }
    for ip in &def.ips {
        ip_elem(&mut o, ip);
    }
    for r in &def.routes {
        route(&mut o, r);
    }
    if !def.dnsmasq_options.is_empty() {
        o.push_str("  <dnsmasq:options>\n");
        for v in &def.dnsmasq_options {
            o.push_str("    <dnsmasq:option");
            attr(&mut o, "value", v);
            o.push_str("/>\n");
        }
        o.push_str("  </dnsmasq:options>\n");
    }
    o.push_str("</network>\n");
    o
}

fn dns_elem(o: &mut String, dns: &DnsDef) {
    let yn = |b: bool| if b { "yes" } else { "no" };
    o.push_str("  <dns");
    if let Some(e) = dns.enable {
        attr(o, "enable", yn(e));
    }
    if let Some(f) = dns.forward_plain_names {
        attr(o, "forwardPlainNames", yn(f));
    }
    if dns.forwarders.is_empty()
        && dns.txts.is_empty()
        && dns.srvs.is_empty()
        && dns.hosts.is_empty()
    {
        o.push_str("/>\n");
        return;
    }
    o.push_str(">\n");
    for f in &dns.forwarders {
        o.push_str("    <forwarder");
        if let Some(d) = &f.domain {
            attr(o, "domain", d);
        }
        if let Some(a) = f.addr {
            attr(o, "addr", &a.to_string());
        }
        o.push_str("/>\n");
    }
    for t in &dns.txts {
        o.push_str("    <txt");
        attr(o, "name", &t.name);
        attr(o, "value", &t.value);
        o.push_str("/>\n");
    }
    for s in &dns.srvs {
        o.push_str("    <srv");
        attr(o, "service", &s.service);
        attr(o, "protocol", &s.protocol);
        for (name, v) in [("domain", &s.domain), ("target", &s.target)] {
            if let Some(v) = v {
                attr(o, name, v);
            }
        }
        for (name, v) in [
            ("port", s.port),
            ("priority", s.priority),
            ("weight", s.weight),
        ] {
            if let Some(v) = v {
                attr(o, name, &v.to_string());
            }
        }
        o.push_str("/>\n");
    }
    for h in &dns.hosts {
        o.push_str("    <host");
        attr(o, "ip", &h.ip.to_string());
        o.push_str(">\n");
        for n in &h.hostnames {
            o.push_str("    ");
            text_elem(o, "hostname", n);
        }
        o.push_str("    </host>\n");
    }
    o.push_str("  </dns>\n");
}

fn forward(o: &mut String, fwd: &ForwardDef) {
    o.push_str("  <forward");
    attr(o, "mode", fwd.mode.as_str());
    if let Some(dev) = &fwd.dev {
        attr(o, "dev", dev);
    }
    if fwd.managed {
        attr(o, "managed", "yes");
    }
    if fwd.nat.is_none() && fwd.extra.is_empty() {
        o.push_str("/>\n");
        return;
    }
    o.push_str(">\n");
    if let Some(nat) = &fwd.nat {
        o.push_str("    <nat");
        if nat.ipv6 {
            attr(o, "ipv6", "yes");
        }
        if nat.addresses.is_none() && nat.ports.is_none() {
            o.push_str("/>\n");
        } else {
            o.push_str(">\n");
            if let Some((s, e)) = nat.addresses {
                o.push_str("      <address");
                attr(o, "start", &s.to_string());
                attr(o, "end", &e.to_string());
                o.push_str("/>\n");
            }
            if let Some((s, e)) = nat.ports {
                o.push_str("      <port");
                attr(o, "start", &s.to_string());
                attr(o, "end", &e.to_string());
                o.push_str("/>\n");
            }
            o.push_str("    </nat>\n");
        }
    }
    for raw in &fwd.extra {
        let _ = writeln!(o, "    {}", raw.xml);
    }
    o.push_str("  </forward>\n");
}

fn bridge(o: &mut String, def: &NetworkDef) {
    let b = &def.bridge;
    // Direct modes do not manage the bridge, so stp/delay are only written there when
    // they differ from the defaults (which the parser will then reject, loudly).
    let direct = def.forward.as_ref().is_some_and(|f| f.mode.is_direct());
    let write_stp = !direct || !b.stp || b.delay != 0;
    if direct && b.name.is_none() && !write_stp && b.zone.is_none() && b.mac_table_manager.is_none()
    {
        return;
    }
    o.push_str("  <bridge");
    if let Some(n) = &b.name {
        attr(o, "name", n);
    }
    if let Some(z) = &b.zone {
        attr(o, "zone", z);
    }
    if write_stp {
        attr(o, "stp", if b.stp { "on" } else { "off" });
        attr(o, "delay", &b.delay.to_string());
    }
    if let Some(m) = &b.mac_table_manager {
        attr(o, "macTableManager", m);
    }
    o.push_str("/>\n");
}

fn ip_elem(o: &mut String, ip: &IpDef) {
    o.push_str("  <ip");
    match ip.address {
        IpAddr::V4(_) => {
            attr(o, "address", &ip.address.to_string());
            // libvirt's own files use the dotted netmask for IPv4.
            let mask = u32::MAX
                .checked_shl(32 - u32::from(ip.prefix.min(32)))
                .unwrap_or(0);
            attr(
                o,
                "netmask",
                &std::net::Ipv4Addr::from_bits(mask).to_string(),
            );
        }
        IpAddr::V6(_) => {
            attr(o, "family", "ipv6");
            attr(o, "address", &ip.address.to_string());
            attr(o, "prefix", &ip.prefix.to_string());
        }
    }
    if ip.local_ptr {
        attr(o, "localPtr", "yes");
    }
    let has_dhcp = ip.has_dhcp() || ip.bootp.is_some();
    if ip.tftp_root.is_none() && !has_dhcp {
        o.push_str("/>\n");
        return;
    }
    o.push_str(">\n");
    if let Some(root) = &ip.tftp_root {
        o.push_str("    <tftp");
        attr(o, "root", root);
        o.push_str("/>\n");
    }
    if has_dhcp {
        o.push_str("    <dhcp>\n");
        for (i, (s, e)) in ip.dhcp_ranges.iter().enumerate() {
            o.push_str("      <range");
            attr(o, "start", &s.to_string());
            attr(o, "end", &e.to_string());
            close_with_lease(o, ip.range_leases.get(i).and_then(Option::as_ref), "range");
        }
        for h in &ip.dhcp_hosts {
            host(o, h);
        }
        if let Some(b) = &ip.bootp {
            o.push_str("      <bootp");
            attr(o, "file", &b.file);
            if let Some(s) = &b.server {
                attr(o, "server", s);
            }
            o.push_str("/>\n");
        }
        o.push_str("    </dhcp>\n");
    }
    o.push_str("  </ip>\n");
}

fn host(o: &mut String, h: &DhcpHost) {
    o.push_str("      <host");
    if let Some(mac) = &h.mac {
        attr(o, "mac", &Mac(*mac).to_string());
    }
    if let Some(id) = &h.id {
        attr(o, "id", id);
    }
    if let Some(n) = &h.name {
        attr(o, "name", n);
    }
    if let Some(ip) = &h.ip {
        attr(o, "ip", &ip.to_string());
    }
    close_with_lease(o, h.lease.as_ref(), "host");
}

/// Ends an open `<range>`/`<host>` start tag, either empty or with a `<lease>` child.
fn close_with_lease(o: &mut String, lease: Option<&Lease>, elem: &str) {
    let Some(l) = lease else {
        o.push_str("/>\n");
        return;
    };
    o.push_str(">\n        <lease");
    attr(o, "expiry", &l.expiry.to_string());
    if let Some(u) = &l.unit {
        attr(o, "unit", u);
    }
    let _ = writeln!(o, "/>\n      </{elem}>");
}

fn route(o: &mut String, r: &RouteDef) {
    o.push_str("  <route");
    if r.address.is_ipv6() {
        attr(o, "family", "ipv6");
    }
    attr(o, "address", &r.address.to_string());
    attr(o, "prefix", &r.prefix.to_string());
    attr(o, "gateway", &r.gateway.to_string());
    if let Some(m) = r.metric {
        attr(o, "metric", &m.to_string());
    }
    o.push_str("/>\n");
}

fn text_elem(o: &mut String, name: &str, text: &str) {
    let _ = writeln!(o, "  <{name}>{}</{name}>", esc_text(text));
}

/// Appends ` name='value'` with the value escaped for single quotes.
fn attr(o: &mut String, name: &str, value: &str) {
    let _ = write!(o, " {name}='{}'", esc_attr(value));
}

fn esc_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A raw CR would be folded into LF by the next parse.
            '\r' => out.push_str("&#13;"),
            _ => out.push(c),
        }
    }
    out
}

fn esc_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Attribute-value normalisation would turn these into spaces on re-parse.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            _ => out.push(c),
        }
    }
    out
}

/// Serialises one element and its subtree.
pub(super) fn serialize_element(node: Node) -> String {
    let mut out = String::new();
    ser_node(node, &mut out, None);
    out
}

/// Serialises the children (elements and text) of `node`.
pub(super) fn serialize_children(node: Node) -> String {
    let mut out = String::new();
    for c in node.children() {
        ser_node(c, &mut out, None);
    }
    out
}

/// Namespaces are written out explicitly on the element that uses them (default
/// namespace for elements, numbered prefixes for attributes), so the fragment stays
/// well-formed wherever it is pasted and re-serialising a re-parse gives the same text.
/// Comments and processing instructions are dropped.
fn ser_node(node: Node, out: &mut String, default_ns: Option<&str>) {
    if node.is_text() {
        out.push_str(&esc_text(node.text().unwrap_or_default()));
        return;
    }
    if !node.is_element() {
        return;
    }
    let tag = node.tag_name();
    let ns = tag.namespace();
    out.push('<');
    out.push_str(tag.name());
    if ns != default_ns {
        attr(out, "xmlns", ns.unwrap_or_default());
    }
    let mut n = 0;
    for a in node.attributes() {
        match a.namespace() {
            None => attr(out, a.name(), a.value()),
            Some(XML_NS) => attr(out, &format!("xml:{}", a.name()), a.value()),
            Some(uri) => {
                n += 1;
                attr(out, &format!("xmlns:ns{n}"), uri);
                attr(out, &format!("ns{n}:{}", a.name()), a.value());
            }
        }
    }
    let mut children = node
        .children()
        .filter(|c| c.is_element() || c.is_text())
        .peekable();
    if children.peek().is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for c in children {
        ser_node(c, out, ns);
    }
    out.push_str("</");
    out.push_str(tag.name());
    out.push('>');
}

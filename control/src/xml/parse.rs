//! Document → [`NetworkDef`]: the schema's structure checks and libvirt's semantic checks.

use crate::model::mac::Mac;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use roxmltree::{Document, Node, ParsingOptions};

use super::write::{serialize_children, serialize_element};
use super::{
    BootpDef, BridgeDef, DNSMASQ_NS, DhcpHost, DnsDef, DnsForwarder, DnsHost, DnsSrv, DnsTxt,
    ForwardDef, ForwardMode, IpDef, Lease, NatDef, NetworkDef, RawElement, RouteDef, XmlError,
    broadcast_v4, mask_addr, max_prefix, same_family,
};

type R<T> = Result<T, XmlError>;

pub(super) fn parse(xml: &str, source: &str) -> R<NetworkDef> {
    let p = Parser { file: source };
    // DTDs are refused: libvirt documents never carry one, and entity expansion is
    // an attack surface we do not need.
    let opts = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(xml, opts)
        .map_err(|e| p.err("/", None, format!("not well-formed XML: {e}")))?;
    p.network(doc.root_element())
}

struct Parser<'s> {
    file: &'s str,
}

impl Parser<'_> {
    fn err(
        &self,
        element: impl Into<String>,
        value: Option<&str>,
        reason: impl Into<String>,
    ) -> XmlError {
        XmlError {
            file: self.file.to_string(),
            element: element.into(),
            value: value.map(str::to_string),
            reason: reason.into(),
        }
    }

    // ---- the document ------------------------------------------------------------

    fn network(&self, root: Node) -> R<NetworkDef> {
        let tag = root.tag_name();
        if tag.namespace().is_some() || tag.name() != "network" {
            return Err(self.err(
                format!("/{}", qname(root)),
                None,
                "root element must be <network> (without a namespace)",
            ));
        }
        let path = "/network";
        self.attrs(root, path, &["connections", "ipv6", "trustGuestRxFilters"])?;
        // `connections` is a read-only live-state counter: checked, not kept.
        if let Some(v) = root.attribute("connections") {
            self.uint::<u32>(v, "/network@connections")?;
        }
        self.no_text(root, path)?;

        let mut def = NetworkDef {
            ipv6: self.yes_no(root, path, "ipv6")?,
            trust_guest_rx_filters: self.yes_no(root, path, "trustGuestRxFilters")?,
            ..NetworkDef::default()
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut portgroups = 0usize;
        // (name, default) of each portgroup.
        let mut portgroup_names: Vec<(String, bool)> = Vec::new();

        for child in root.children().filter(Node::is_element) {
            let tag = child.tag_name();
            if tag.namespace() == Some(DNSMASQ_NS) && tag.name() == "options" {
                let cpath = "/network/dnsmasq:options";
                self.once(&mut seen, "dnsmasq:options", cpath)?;
                def.dnsmasq_options = self.dnsmasq_options(child, cpath)?;
                continue;
            }
            if tag.namespace().is_some() {
                return Err(self.unknown(child, path));
            }
            let cpath = format!("/network/{}", tag.name());
            let cpath = cpath.as_str();
            match tag.name() {
                "name" => {
                    self.once(&mut seen, "name", cpath)?;
                    def.name = self.name(child, cpath)?;
                }
                "uuid" => {
                    self.once(&mut seen, "uuid", cpath)?;
                    self.attrs(child, cpath, &[])?;
                    let text = self.text(child, cpath)?;
                    def.uuid = Some(self.uuid(&text, cpath)?);
                }
                "title" => {
                    self.once(&mut seen, "title", cpath)?;
                    self.attrs(child, cpath, &[])?;
                    let text = self.text(child, cpath)?;
                    // libvirt: a title is a single line.
                    if text.contains('\n') {
                        return Err(self.err(
                            cpath,
                            Some(&text),
                            "title must not contain newlines",
                        ));
                    }
                    def.title = Some(text);
                }
                "description" => {
                    self.once(&mut seen, "description", cpath)?;
                    self.attrs(child, cpath, &[])?;
                    def.description = Some(self.text(child, cpath)?);
                }
                "metadata" => {
                    self.once(&mut seen, "metadata", cpath)?;
                    self.attrs(child, cpath, &[])?;
                    def.metadata = Some(serialize_children(child));
                }
                "bridge" => {
                    self.once(&mut seen, "bridge", cpath)?;
                    def.bridge = self.bridge(child, cpath)?;
                }
                "mtu" => {
                    self.once(&mut seen, "mtu", cpath)?;
                    def.mtu = self.mtu(child, cpath)?;
                }
                "mac" => {
                    self.once(&mut seen, "mac", cpath)?;
                    self.attrs(child, cpath, &["address"])?;
                    self.empty(child, cpath)?;
                    let v = self.req_attr(child, cpath, "address")?;
                    def.mac = Some(self.mac(v, &format!("{cpath}@address"))?);
                }
                "domain" => {
                    self.once(&mut seen, "domain", cpath)?;
                    self.attrs(child, cpath, &["name", "localOnly", "register"])?;
                    self.empty(child, cpath)?;
                    let v = self.req_attr(child, cpath, "name")?;
                    def.domain = Some(self.dns_name(v, &format!("{cpath}@name"))?);
                    def.domain_local_only = self.yes_no(child, cpath, "localOnly")?;
                    def.domain_register = self.yes_no(child, cpath, "register")?;
                }
                "forward" => {
                    self.once(&mut seen, "forward", cpath)?;
                    def.forward = Some(self.forward(child, cpath)?);
                }
                "port" => {
                    self.once(&mut seen, "port", cpath)?;
                    self.attrs(child, cpath, &["isolated"])?;
                    self.empty(child, cpath)?;
                    def.port_isolated = self.yes_no(child, cpath, "isolated")?;
                }
                "ip" => {
                    let ipath = format!("/network/ip[{}]", def.ips.len() + 1);
                    def.ips.push(self.ip(child, &ipath)?);
                }
                "route" => {
                    let rpath = format!("/network/route[{}]", def.routes.len() + 1);
                    def.routes.push(self.route(child, &rpath)?);
                }
                "portgroup" => {
                    portgroups += 1;
                    let ppath = format!("/network/portgroup[{portgroups}]");
                    def.extra.push(self.raw(child, &ppath, "portgroup")?);
                    self.check_portgroup(child, &ppath, &mut portgroup_names)?;
                }
                "dns" => {
                    self.once(&mut seen, "dns", cpath)?;
                    def.dns = Some(self.dns(child, cpath)?);
                }
                name @ ("virtualport" | "bandwidth" | "vlan") => {
                    self.once(&mut seen, name, cpath)?;
                    def.extra.push(self.raw(child, cpath, name)?);
                    // libvirt parses the network's own <virtualport> with
                    // VIR_VPORT_XML_REQUIRE_TYPE (a portgroup's may omit it).
                    if name == "virtualport" && child.attribute("type").is_none() {
                        return Err(self.err(
                            format!("{cpath}@type"),
                            None,
                            "the network's <virtualport> needs a type",
                        ));
                    }
                }
                _ => return Err(self.unknown(child, path)),
            }
        }

        if !seen.contains("name") {
            return Err(self.err("/network/name", None, "missing required element <name>"));
        }
        self.check_dhcp_count(&def)?;
        self.check_routes(&def)?;
        self.check_forward_devices(root, &def)?;
        self.check_mode_bridge(root, &def)?;
        self.check_mode_validate(root, &def)?;
        Ok(def)
    }

    /// libvirt runs one dnsmasq per network and gives it one DHCP range set per family.
    fn check_dhcp_count(&self, def: &NetworkDef) -> R<()> {
        let (mut v4, mut v6) = (false, false);
        for (i, ip) in def.ips.iter().enumerate() {
            if !ip.has_dhcp() {
                continue;
            }
            let seen = if ip.address.is_ipv4() {
                &mut v4
            } else {
                &mut v6
            };
            if *seen {
                let fam = if ip.address.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(self.err(
                    format!("/network/ip[{}]/dhcp", i + 1),
                    Some(&ip.address.to_string()),
                    format!("only one {fam} <ip> may have DHCP (multiple {fam} dhcp sections)"),
                ));
            }
            *seen = true;
        }
        Ok(())
    }

    /// Like libvirt: a static route's gateway must be directly reachable on the bridge.
    fn check_routes(&self, def: &NetworkDef) -> R<()> {
        for (i, r) in def.routes.iter().enumerate() {
            if !def.ips.iter().any(|ip| ip.contains(r.gateway)) {
                return Err(self.err(
                    format!("/network/route[{}]@gateway", i + 1),
                    Some(&r.gateway.to_string()),
                    "unreachable static route gateway: not inside any <ip> subnet of this network",
                ));
            }
        }
        Ok(())
    }

    /// libvirt's `virNetworkForwardDefParseXML` device list: `<forward dev>` is the
    /// first device and must equal the first `<interface dev>`; no device twice;
    /// `dev` not together with `<address>` or `<pf>`; `<address type='pci'>`.
    /// Returns nothing; the device count is recomputed by [`forward_devices`].
    fn check_forward_devices(&self, root: Node, def: &NetworkDef) -> R<()> {
        let Some(f) = child(root, "forward") else {
            return Ok(());
        };
        let dev = f.attribute("dev");
        let n_addr = f.children().filter(|c| c.has_tag_name("address")).count();
        let n_pf = f.children().filter(|c| c.has_tag_name("pf")).count();
        if let (Some(d), true) = (dev, n_addr + n_pf > 0) {
            return Err(self.err("/network/forward@dev", Some(d), "the <forward> dev attribute cannot be used together with <address> or <pf> devices"));
        }
        let mut devs: Vec<&str> = dev.into_iter().collect();
        for (i, itf) in f
            .children()
            .filter(|c| c.has_tag_name("interface"))
            .enumerate()
        {
            let p = format!("/network/forward/interface[{}]", i + 1);
            let d = self.req_attr(itf, &p, "dev")?;
            self.ifname(d, &format!("{p}@dev"))?;
            if let (0, Some(fd)) = (i, dev) {
                if d != fd {
                    return Err(self.err(
                        format!("{p}@dev"),
                        Some(d),
                        format!("<forward dev='{fd}'> must match the first <interface dev>"),
                    ));
                }
                continue;
            }
            if devs.contains(&d) {
                return Err(self.err(
                    format!("{p}@dev"),
                    Some(d),
                    "interface listed more than once in <forward>",
                ));
            }
            devs.push(d);
        }
        let mut pcis: Vec<[u32; 4]> = Vec::new();
        for (i, a) in f
            .children()
            .filter(|c| c.has_tag_name("address"))
            .enumerate()
        {
            let p = format!("/network/forward/address[{}]", i + 1);
            let t = self.req_attr(a, &p, "type")?;
            if t != "pci" {
                return Err(self.err(
                    format!("{p}@type"),
                    Some(t),
                    "only PCI addresses (type='pci') may be listed in <forward>",
                ));
            }
            // The schema's pciaddress types, read as virPCIDeviceAddressParseXML
            // does (strtoul base 0); a device only once.
            let mut pci = [0u32; 4];
            for (k, (attr, max, hex)) in [
                ("domain", u32::MAX, 8),
                ("bus", 0xFF, 2),
                ("slot", 0x1F, 2),
                ("function", 7, 1),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(v) = a.attribute(attr) {
                    pci[k] = self.schema_uint(v, &format!("{p}@{attr}"), max, hex)?;
                }
            }
            if pcis.contains(&pci) {
                return Err(self.err(p, None, "PCI device listed more than once in <forward>"));
            }
            pcis.push(pci);
        }
        if let Some(d) = f.children().find(|c| c.has_tag_name("driver"))
            && let Some(name) = d.attribute("name")
            && name != "kvm"
            && name != "vfio"
        {
            return Err(self.err(
                "/network/forward/driver@name",
                Some(name),
                "expected 'kvm' or 'vfio'",
            ));
        }
        if let Some(pf) = f.children().find(|c| c.has_tag_name("pf")) {
            let dev = self.req_attr(pf, "/network/forward/pf", "dev")?;
            self.device_name(dev, "/network/forward/pf@dev", "<pf dev>")?;
        }
        let _ = def;
        Ok(())
    }

    /// The forward-mode switch at the end of libvirt's `virNetworkDefParseXML`
    /// (network_conf.c): what each mode allows of `<ip>`, forward devices,
    /// `<bridge>` and `<mtu>`.
    fn check_mode_bridge(&self, root: Node, def: &NetworkDef) -> R<()> {
        let Some(fwd) = &def.forward else {
            return Ok(());
        };
        let mode = fwd.mode.as_str();
        let devs = forward_devices(root);
        let n_pf = forward_pf_count(root);
        let n_addr = child(root, "forward").map_or(0, |f| {
            f.children().filter(|c| c.has_tag_name("address")).count()
        });
        let b = &def.bridge;
        let bridge_node = child(root, "bridge");
        match fwd.mode {
            ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open => {
                if def.ips.is_empty() {
                    return Err(self.err(
                        "/network/forward@mode",
                        Some(mode),
                        format!("{mode} forwarding requested, but the network has no <ip> address"),
                    ));
                }
                if devs.len() > 1 {
                    return Err(self.err("/network/forward/interface[2]@dev", Some(devs[1]), format!("several forwarding interfaces given; forward mode '{mode}' uses only one")));
                }
                if let (ForwardMode::Open, Some(d)) = (fwd.mode, devs.first()) {
                    let at = if fwd.dev.is_some() {
                        "/network/forward@dev"
                    } else {
                        "/network/forward/interface[1]@dev"
                    };
                    return Err(self.err(at, Some(d), "forward dev not allowed with forward mode 'open' (an open network does not restrict where traffic goes)"));
                }
            }
            _ => {
                if fwd.mode != ForwardMode::Bridge {
                    let not = |what: &str| format!("{what} not allowed in {mode} mode");
                    if let Some(n) = &b.name {
                        return Err(self.err("/network/bridge@name", Some(n), not("bridge name")));
                    }
                    if let Some(z) = &b.zone {
                        return Err(self.err("/network/bridge@zone", Some(z), not("bridge zone")));
                    }
                    if let Some(m) = &b.mac_table_manager {
                        return Err(self.err(
                            "/network/bridge@macTableManager",
                            Some(m),
                            not("bridge macTableManager"),
                        ));
                    }
                }
                let why = format!(
                    "bridge delay/stp/zone options are only allowed in route, nat, open and isolated mode, not in {mode}"
                );
                if b.delay != 0 {
                    return Err(self.err("/network/bridge@delay", Some(&b.delay.to_string()), why));
                }
                if let Some(stp) = bridge_node.and_then(|n| n.attribute("stp")) {
                    return Err(self.err("/network/bridge@stp", Some(stp), why));
                }
                if let Some(z) = &b.zone {
                    return Err(self.err("/network/bridge@zone", Some(z), why));
                }
                if let (Some(n), true) = (&b.name, !devs.is_empty() || n_addr + n_pf > 0) {
                    return Err(self.err("/network/bridge@name", Some(n), format!("forward mode '{mode}' takes either a bridge name or forward devices, not both")));
                }
                if let (ForwardMode::Bridge, None, true) =
                    (fwd.mode, &b.name, devs.is_empty() && n_pf == 0)
                {
                    // libvirt only finds out when starting (vxdp is stricter, see README).
                    return Err(self.err(
                        "/network/forward@mode",
                        Some(mode),
                        "forward mode 'bridge' needs <bridge name> or a forward dev/interface",
                    ));
                }
                if let Some(m) = def.mtu {
                    return Err(self.err("/network/mtu@size", Some(&m.to_string()), format!("mtu size is only allowed in open, route, nat and isolated mode, not in {mode}")));
                }
            }
        }
        Ok(())
    }

    /// The network driver's `networkValidate` (bridge_driver.c), run by libvirt on
    /// every define: per-mode limits on `<mac>`, `<ip>`, `<dns>` records, `<domain>`
    /// and `<bandwidth>`; the kinds of forward devices; where `<vlan>` may be used.
    /// (One DHCP `<ip>` per family is [`Self::check_dhcp_count`].)
    fn check_mode_validate(&self, root: Node, def: &NetworkDef) -> R<()> {
        let mode = def.forward.as_ref().map(|f| f.mode);
        let mode_s = mode.map_or("none", ForwardMode::as_str);
        let unsupported =
            |what: &str| format!("unsupported {what} in a network with forward mode '{mode_s}'");
        let bandwidth_allowed = match mode {
            None | Some(ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open) => true,
            Some(ForwardMode::Bridge) => def.bridge.name.is_some(),
            _ => false,
        };
        if mode.is_some_and(ForwardMode::is_direct) {
            if let Some(mac) = &def.mac {
                return Err(self.err(
                    "/network/mac@address",
                    Some(&Mac(*mac).to_string()),
                    unsupported("<mac> element"),
                ));
            }
            if let Some(ip) = def.ips.first() {
                return Err(self.err(
                    "/network/ip[1]",
                    Some(&ip.address.to_string()),
                    unsupported("<ip> element"),
                ));
            }
            if let Some(dns) = &def.dns {
                // Forwarders and the enable/forwardPlainNames switches pass; records do not.
                let rec = if !dns.txts.is_empty() {
                    Some("txt[1]")
                } else if !dns.hosts.is_empty() {
                    Some("host[1]")
                } else if !dns.srvs.is_empty() {
                    Some("srv[1]")
                } else {
                    None
                };
                if let Some(r) = rec {
                    return Err(self.err(
                        format!("/network/dns/{r}"),
                        None,
                        unsupported("<dns> record"),
                    ));
                }
            }
            if let Some(d) = &def.domain {
                return Err(self.err(
                    "/network/domain@name",
                    Some(d),
                    unsupported("<domain> element"),
                ));
            }
        }
        if has_rates(root) && !bandwidth_allowed {
            return Err(self.err(
                "/network/bandwidth",
                Some(mode_s),
                unsupported("network-wide <bandwidth>"),
            ));
        }
        let devs = forward_devices(root);
        let fwd_node = child(root, "forward");
        let n_pf = forward_pf_count(root);
        let n_addr = fwd_node.map_or(0, |f| {
            f.children().filter(|c| c.has_tag_name("address")).count()
        });
        if mode == Some(ForwardMode::Hostdev) && !devs.is_empty() {
            let at = if def.forward.as_ref().is_some_and(|f| f.dev.is_some()) {
                "/network/forward@dev"
            } else {
                "/network/forward/interface[1]@dev"
            };
            return Err(self.err(
                at,
                Some(devs[0]),
                "hostdev networks list their devices by PCI <address>, not by network device name",
            ));
        }
        if mode != Some(ForwardMode::Hostdev) && n_addr > 0 {
            return Err(self.err(
                "/network/forward/address[1]",
                Some(mode_s),
                "devices by PCI <address> are only for forward mode 'hostdev'",
            ));
        }
        if usize::from(n_pf > 0) + usize::from(!devs.is_empty()) + usize::from(n_addr > 0) > 1 {
            return Err(self.err(
                "/network/forward/pf",
                None,
                "<address>, <interface> and <pf> devices of <forward> are mutually exclusive",
            ));
        }
        // VLAN tags need hostdev/passthrough devices or an Open vSwitch bridge.
        fn vport_type<'a>(n: Node<'a, '_>) -> Option<&'a str> {
            child(n, "virtualport").and_then(|v| v.attribute("type"))
        }
        let vlan_allowed = matches!(mode, Some(ForwardMode::Hostdev | ForwardMode::Passthrough))
            || (mode == Some(ForwardMode::Bridge) && vport_type(root) == Some("openvswitch"));
        let vlan_used = child(root, "vlan").is_some();
        let mut bad_vlan: Option<String> = None;
        let mut has_default = false;
        for (i, pg) in root
            .children()
            .filter(|c| c.has_tag_name("portgroup"))
            .enumerate()
        {
            let p = format!("/network/portgroup[{}]", i + 1);
            let pg_vlan = child(pg, "vlan").is_some();
            if vlan_used || pg_vlan {
                let bad = if child(pg, "virtualport").is_some() {
                    mode != Some(ForwardMode::Bridge) || vport_type(pg) != Some("openvswitch")
                } else {
                    !vlan_allowed
                };
                if bad && bad_vlan.is_none() {
                    bad_vlan = Some(if pg_vlan {
                        format!("{p}/vlan")
                    } else {
                        "/network/vlan".into()
                    });
                }
            }
            has_default |= pg.attribute("default") == Some("yes");
            if has_rates(pg) && (!bandwidth_allowed || mode == Some(ForwardMode::Hostdev)) {
                return Err(self.err(
                    format!("{p}/bandwidth"),
                    Some(mode_s),
                    unsupported("<bandwidth> in a <portgroup>"),
                ));
            }
        }
        if bad_vlan.is_none() && vlan_used && !vlan_allowed && !has_default {
            bad_vlan = Some("/network/vlan".into());
        }
        if let Some(at) = bad_vlan {
            return Err(self.err(at, Some(mode_s), "<vlan> given, but this network's forward mode (or virtualport) cannot tag: only hostdev, passthrough and bridge mode with an Open vSwitch virtualport can"));
        }
        Ok(())
    }

    // ---- top-level elements --------------------------------------------------------

    fn name(&self, node: Node, path: &str) -> R<String> {
        self.attrs(node, path, &[])?;
        let name = self.text(node, path)?;
        // The name becomes a file name (libvirt's rules and vxdp's own).
        if let Some(reason) = super::network_name_problem(&name) {
            return Err(self.err(path, Some(&name), reason));
        }
        Ok(name)
    }

    fn bridge(&self, node: Node, path: &str) -> R<BridgeDef> {
        self.attrs(
            node,
            path,
            &["name", "stp", "delay", "macTableManager", "zone"],
        )?;
        self.empty(node, path)?;
        let mut b = BridgeDef::default();
        if let Some(v) = node.attribute("name") {
            b.name = Some(self.ifname(v, &format!("{path}@name"))?);
        }
        if let Some(v) = node.attribute("stp") {
            b.stp = match v {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(self.err(format!("{path}@stp"), Some(v), "expected 'on' or 'off'"));
                }
            };
        }
        if let Some(v) = node.attribute("delay") {
            let at = format!("{path}@delay");
            // The schema's unsignedLong; vxdp keeps seconds in 32 bits (the
            // kernel's bridge takes at most 30 s anyway).
            let delay: u64 = self.uint(v, &at)?;
            b.delay = u32::try_from(delay).map_err(|_| {
                self.err(
                    at,
                    Some(v),
                    "bridge delay must fit in 32 bits (at most 4294967295 seconds)",
                )
            })?;
        }
        if let Some(v) = node.attribute("macTableManager") {
            if v != "kernel" && v != "libvirt" {
                return Err(self.err(
                    format!("{path}@macTableManager"),
                    Some(v),
                    "expected 'kernel' or 'libvirt'",
                ));
            }
            b.mac_table_manager = Some(v.to_string());
        }
        if let Some(v) = node.attribute("zone") {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.err(
                    format!("{path}@zone"),
                    Some(v),
                    "firewalld zone name may only contain letters, digits, '_' and '-'",
                ));
            }
            b.zone = Some(v.to_string());
        }
        Ok(b)
    }

    /// `<mtu size>`; `None` for 0, which libvirt reads as "not set".
    fn mtu(&self, node: Node, path: &str) -> R<Option<u32>> {
        self.attrs(node, path, &["size"])?;
        self.empty(node, path)?;
        let at = format!("{path}@size");
        let v = self.req_attr(node, path, "size")?;
        let mtu: u32 = self.xsd_uint(v, &at)?;
        // Schema type is unsignedShort.
        if mtu > 65535 {
            return Err(self.err(at, Some(v), "MTU must be between 0 and 65535"));
        }
        Ok((mtu != 0).then_some(mtu))
    }

    fn forward(&self, node: Node, path: &str) -> R<ForwardDef> {
        self.attrs(node, path, &["mode", "dev", "managed"])?;
        self.no_text(node, path)?;
        let mode = match node.attribute("mode") {
            None => ForwardMode::Nat,
            Some(v) => ForwardMode::from_xml(v).ok_or_else(|| {
                let all: Vec<&str> = ForwardMode::ALL.iter().map(|m| m.as_str()).collect();
                self.err(
                    format!("{path}@mode"),
                    Some(v),
                    format!("unknown forward mode; expected one of {}", all.join(", ")),
                )
            })?,
        };
        let mut fwd = ForwardDef {
            mode,
            managed: self.yes_no(node, path, "managed")?,
            ..ForwardDef::default()
        };
        if let Some(v) = node.attribute("dev") {
            fwd.dev = Some(self.ifname(v, &format!("{path}@dev"))?);
        }
        let mut seen = HashSet::new();
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().namespace().is_some() {
                return Err(self.unknown(child, path));
            }
            let name = child.tag_name().name();
            let cpath = format!("{path}/{name}");
            match name {
                "nat" => {
                    if mode != ForwardMode::Nat {
                        return Err(self.err(
                            cpath,
                            Some(mode.as_str()),
                            "<nat> is only allowed with forward mode 'nat'",
                        ));
                    }
                    self.once(&mut seen, "nat", &cpath)?;
                    fwd.nat = Some(self.nat(child, &cpath)?);
                }
                "interface" | "address" => {
                    // The schema makes a device list either interfaces or PCI addresses.
                    let other = if name == "interface" {
                        "address"
                    } else {
                        "interface"
                    };
                    if fwd.extra.iter().any(|r| r.name == other) {
                        return Err(self.err(
                            cpath,
                            None,
                            "<forward> may list <interface> or <address> devices, not both",
                        ));
                    }
                    fwd.extra
                        .push(self.raw(child, &cpath, &format!("forward/{name}"))?);
                }
                "pf" | "driver" => {
                    let key = if name == "pf" { "pf" } else { "driver" };
                    self.once(&mut seen, key, &cpath)?;
                    fwd.extra
                        .push(self.raw(child, &cpath, &format!("forward/{name}"))?);
                }
                _ => return Err(self.unknown(child, path)),
            }
        }
        Ok(fwd)
    }

    fn nat(&self, node: Node, path: &str) -> R<NatDef> {
        self.attrs(node, path, &["ipv6"])?;
        self.no_text(node, path)?;
        let mut nat = NatDef {
            ipv6: self.yes_no(node, path, "ipv6")?,
            ..NatDef::default()
        };
        let mut seen = HashSet::new();
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().namespace().is_some() {
                return Err(self.unknown(child, path));
            }
            match child.tag_name().name() {
                "address" => {
                    let cpath = format!("{path}/address");
                    self.once(&mut seen, "address", &cpath)?;
                    nat.addresses = Some(self.nat_range(child, &cpath, "address", Self::ipv4)?);
                }
                "port" => {
                    let cpath = format!("{path}/port");
                    self.once(&mut seen, "port", &cpath)?;
                    nat.ports = Some(self.nat_range(child, &cpath, "port", Self::port)?);
                }
                _ => return Err(self.unknown(child, path)),
            }
        }
        Ok(nat)
    }

    /// `<address start end/>` or `<port start end/>` inside `<nat>`: both
    /// bounds required, parsed by `parse`, the end not before the start.
    fn nat_range<T: PartialOrd + std::fmt::Display>(
        &self,
        node: Node,
        path: &str,
        what: &str,
        parse: impl Fn(&Self, &str, &str) -> R<T>,
    ) -> R<(T, T)> {
        self.attrs(node, path, &["start", "end"])?;
        self.empty(node, path)?;
        let (s_at, e_at) = (format!("{path}@start"), format!("{path}@end"));
        let s_txt = self.req_attr(node, path, "start")?;
        let e_txt = self.req_attr(node, path, "end")?;
        let start = parse(self, s_txt, &s_at)?;
        let end = parse(self, e_txt, &e_at)?;
        if start > end {
            return Err(self.err(
                e_at,
                Some(e_txt),
                format!("NAT {what} range ends before its start {start}"),
            ));
        }
        Ok((start, end))
    }

    fn port(&self, v: &str, at: &str) -> R<u16> {
        let port: u16 = self.xsd_uint(v, at)?;
        if port == 0 {
            return Err(self.err(at, Some(v), "port must be between 1 and 65535"));
        }
        Ok(port)
    }

    // ---- <ip> ------------------------------------------------------------------------

    fn ip(&self, node: Node, path: &str) -> R<IpDef> {
        self.attrs(
            node,
            path,
            &["address", "netmask", "prefix", "family", "localPtr"],
        )?;
        self.no_text(node, path)?;
        let addr_txt = self.req_attr(node, path, "address")?;
        let address = self.ip_addr(addr_txt, &format!("{path}@address"))?;
        self.family(node, path, address)?;
        let prefix = self.prefix(node, path, address, true)?;
        let mut ip = IpDef::new(address, prefix);
        ip.local_ptr = self.yes_no(node, path, "localPtr")?;

        let mut seen = HashSet::new();
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().namespace().is_some() {
                return Err(self.unknown(child, path));
            }
            match child.tag_name().name() {
                "tftp" => {
                    let cpath = format!("{path}/tftp");
                    self.once(&mut seen, "tftp", &cpath)?;
                    self.attrs(child, &cpath, &["root"])?;
                    self.empty(child, &cpath)?;
                    let root = self.req_attr(child, &cpath, "root")?;
                    if address.is_ipv6() {
                        return Err(self.err(
                            cpath,
                            Some(root),
                            "<tftp> is only supported on an IPv4 <ip>",
                        ));
                    }
                    // libvirt reads an empty root as no <tftp> at all.
                    ip.tftp_root = (!root.is_empty()).then(|| root.to_string());
                }
                "dhcp" => {
                    let cpath = format!("{path}/dhcp");
                    self.once(&mut seen, "dhcp", &cpath)?;
                    self.dhcp(child, &cpath, &mut ip)?;
                }
                _ => return Err(self.unknown(child, path)),
            }
        }
        Ok(ip)
    }

    /// `family`, when given, must agree with the address.
    fn family(&self, node: Node, path: &str, address: IpAddr) -> R<()> {
        let Some(fam) = node.attribute("family") else {
            // libvirt reads an <ip>/<route> without family as IPv4.
            if address.is_ipv6() {
                return Err(self.err(
                    format!("{path}@family"),
                    Some(&address.to_string()),
                    "an IPv6 address needs family='ipv6' (without family libvirt expects IPv4)",
                ));
            }
            return Ok(());
        };
        let want_v4 = match fam {
            "ipv4" => true,
            "ipv6" => false,
            _ => {
                return Err(self.err(
                    format!("{path}@family"),
                    Some(fam),
                    "expected 'ipv4' or 'ipv6'",
                ));
            }
        };
        if want_v4 != address.is_ipv4() {
            return Err(self.err(
                format!("{path}@family"),
                Some(fam),
                format!("family does not match address {address}"),
            ));
        }
        Ok(())
    }

    /// Prefix from `netmask` or `prefix`, or libvirt's default when neither is
    /// given (`virSocketAddrGetIPPrefix`). On an `<ip>` (`zero_is_unset`)
    /// libvirt reads `prefix='0'` as "not given"; on a `<route>` it is /0.
    fn prefix(&self, node: Node, path: &str, address: IpAddr, zero_is_unset: bool) -> R<u8> {
        let (m_at, p_at) = (format!("{path}@netmask"), format!("{path}@prefix"));
        match (node.attribute("netmask"), node.attribute("prefix")) {
            (Some(_), Some(p)) => {
                Err(self.err(p_at, Some(p), "netmask and prefix are mutually exclusive"))
            }
            (Some(m), None) => {
                if address.is_ipv6() {
                    return Err(self.err(
                        m_at,
                        Some(m),
                        "netmask is IPv4-only; use prefix with an IPv6 address",
                    ));
                }
                let bits = self.ipv4(m, &m_at)?.to_bits();
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(self.err(m_at, Some(m), "netmask is not contiguous"));
                }
                // leading_ones() of a u32 is at most 32, so this cannot truncate.
                Ok(bits.leading_ones() as u8)
            }
            (None, Some(p)) => {
                let prefix: u32 = self.uint(p, &p_at)?;
                let max = max_prefix(address);
                if prefix > u32::from(max) {
                    return Err(self.err(
                        p_at,
                        Some(p),
                        format!("prefix must be between 0 and {max} for {address}"),
                    ));
                }
                if prefix == 0 && zero_is_unset {
                    return self.default_prefix(path, address);
                }
                // Checked against max (at most 128) just above.
                Ok(prefix as u8)
            }
            (None, None) => self.default_prefix(path, address),
        }
    }

    /// libvirt's prefix of an `<ip>` without one: classful for IPv4, /64 for
    /// IPv6, /0 for the unspecified address.
    fn default_prefix(&self, path: &str, address: IpAddr) -> R<u8> {
        match address {
            a if a.is_unspecified() => Ok(0),
            IpAddr::V6(_) => Ok(64),
            IpAddr::V4(a) => match a.octets()[0] {
                0..=127 => Ok(8),
                128..=191 => Ok(16),
                192..=223 => Ok(24),
                _ => Err(self.err(
                    format!("{path}@address"),
                    Some(&a.to_string()),
                    "no netmask or prefix given, and class D/E addresses have no classful default",
                )),
            },
        }
    }

    fn dhcp(&self, node: Node, path: &str, ip: &mut IpDef) -> R<()> {
        self.attrs(node, path, &[])?;
        self.no_text(node, path)?;
        let mut seen = HashSet::new();
        let mut leases = Vec::new();
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().namespace().is_some() {
                return Err(self.unknown(child, path));
            }
            match child.tag_name().name() {
                "range" => {
                    let rpath = format!("{path}/range[{}]", ip.dhcp_ranges.len() + 1);
                    let (range, lease) = self.range(child, &rpath, ip)?;
                    ip.dhcp_ranges.push(range);
                    leases.push(lease);
                }
                "host" => {
                    let hpath = format!("{path}/host[{}]", ip.dhcp_hosts.len() + 1);
                    let host = self.host(child, &hpath, ip)?;
                    ip.dhcp_hosts.push(host);
                }
                "bootp" => {
                    let cpath = format!("{path}/bootp");
                    self.once(&mut seen, "bootp", &cpath)?;
                    self.attrs(child, &cpath, &["file", "server"])?;
                    self.empty(child, &cpath)?;
                    let file = self.req_attr(child, &cpath, "file")?;
                    if ip.address.is_ipv6() {
                        return Err(self.err(
                            cpath,
                            Some(file),
                            "<bootp> is only supported on an IPv4 <ip>",
                        ));
                    }
                    if file.is_empty() {
                        return Err(self.err(
                            format!("{cpath}@file"),
                            Some(file),
                            "bootp file must not be empty",
                        ));
                    }
                    let server = match child.attribute("server") {
                        // libvirt parses it as a numeric address (virSocketAddrParse).
                        Some(s) => {
                            self.ip_addr(s, &format!("{cpath}@server"))?;
                            Some(s.to_string())
                        }
                        None => None,
                    };
                    ip.bootp = Some(BootpDef {
                        file: file.to_string(),
                        server,
                    });
                }
                _ => return Err(self.unknown(child, path)),
            }
        }
        // Keep the "no leases" case an empty Vec so hand-built defs compare equal.
        if leases.iter().any(Option::is_some) {
            ip.range_leases = leases;
        }
        Ok(())
    }

    fn range(&self, node: Node, path: &str, ip: &IpDef) -> R<((IpAddr, IpAddr), Option<Lease>)> {
        self.attrs(node, path, &["start", "end"])?;
        self.no_text(node, path)?;
        let (s_at, e_at) = (format!("{path}@start"), format!("{path}@end"));
        let s_txt = self.req_attr(node, path, "start")?;
        let e_txt = self.req_attr(node, path, "end")?;
        let start = self.ip_addr(s_txt, &s_at)?;
        let end = self.ip_addr(e_txt, &e_at)?;
        let subnet = format!("{}/{}", ip.network(), ip.prefix);
        for (addr, at, txt) in [(start, &s_at, s_txt), (end, &e_at, e_txt)] {
            if !same_family(addr, ip.address) {
                return Err(self.err(
                    at.as_str(),
                    Some(txt),
                    format!("address family differs from <ip> {}", ip.address),
                ));
            }
            if !ip.contains(addr) {
                return Err(self.err(
                    at.as_str(),
                    Some(txt),
                    format!("DHCP range is not inside network {subnet}"),
                ));
            }
        }
        if start > end {
            return Err(self.err(
                e_at,
                Some(e_txt),
                format!("DHCP range ends before its start {start}"),
            ));
        }
        // libvirt (virSocketAddrGetRange): an IPv4 range never starts at the
        // network address nor ends at the broadcast address, whatever the
        // prefix (so a /32 has no DHCP range at all).
        if let IpAddr::V4(net) = ip.network() {
            if start == IpAddr::V4(net) {
                return Err(self.err(
                    s_at,
                    Some(s_txt),
                    format!("DHCP range starts at the network address of {subnet}"),
                ));
            }
            if end == IpAddr::V4(broadcast_v4(net, ip.prefix)) {
                return Err(self.err(
                    e_at,
                    Some(e_txt),
                    format!("DHCP range ends at the broadcast address of {subnet}"),
                ));
            }
        }
        // libvirt's "legacy" size check: all but the last 16 bits are equal.
        let same_upper = match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => s.to_bits() >> 16 == e.to_bits() >> 16,
            (IpAddr::V6(s), IpAddr::V6(e)) => s.to_bits() >> 16 == e.to_bits() >> 16,
            _ => false,
        };
        if !same_upper {
            return Err(self.err(
                e_at,
                Some(e_txt),
                format!(
                    "DHCP range {start} - {end} is too large (more than 65536 addresses apart)"
                ),
            ));
        }
        let lease = self.lease_child(node, path)?;
        Ok(((start, end), lease))
    }

    fn host(&self, node: Node, path: &str, ip: &IpDef) -> R<DhcpHost> {
        self.attrs(node, path, &["mac", "id", "name", "ip"])?;
        self.no_text(node, path)?;
        let mut host = DhcpHost::default();
        if let Some(v) = node.attribute("mac") {
            let at = format!("{path}@mac");
            if ip.address.is_ipv6() {
                return Err(self.err(
                    at,
                    Some(v),
                    "mac is not allowed in an IPv6 static host; use id (DUID)",
                ));
            }
            host.mac = Some(self.mac(v, &at)?);
        }
        if let Some(v) = node.attribute("id") {
            let at = format!("{path}@id");
            // The schema: a host has mac or id, not both. An IPv4 host may
            // carry an id (libvirt keeps it; dnsmasq's IPv4 hosts go by mac
            // or name).
            if host.mac.is_some() {
                return Err(self.err(at, Some(v), "a static host has mac or id, not both"));
            }
            host.id = Some(self.duid(v, &at)?);
        }
        if let Some(v) = node.attribute("name") {
            host.name = Some(self.host_name(v, &format!("{path}@name"))?);
        }
        let ip_at = format!("{path}@ip");
        let ip_txt = self.req_attr(node, path, "ip")?;
        let addr = self.ip_addr(ip_txt, &ip_at)?;
        if !same_family(addr, ip.address) {
            return Err(self.err(
                ip_at,
                Some(ip_txt),
                format!("address family differs from <ip> {}", ip.address),
            ));
        }
        if !ip.contains(addr) {
            return Err(self.err(
                ip_at,
                Some(ip_txt),
                format!(
                    "static host address is not inside network {}/{}",
                    ip.network(),
                    ip.prefix
                ),
            ));
        }
        host.ip = Some(addr);
        let identified = host.name.is_some()
            || if ip.address.is_ipv4() {
                host.mac.is_some()
            } else {
                host.id.is_some()
            };
        if !identified {
            let need = if ip.address.is_ipv4() {
                "mac or name"
            } else {
                "id or name"
            };
            return Err(self.err(path, Some(ip_txt), format!("static host needs {need}")));
        }
        host.lease = self.lease_child(node, path)?;
        Ok(host)
    }

    /// The optional single `<lease>` child of `<range>`/`<host>`; nothing else is allowed.
    fn lease_child(&self, node: Node, path: &str) -> R<Option<Lease>> {
        let mut lease = None;
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().namespace().is_some() || child.tag_name().name() != "lease" {
                return Err(self.unknown(child, path));
            }
            let lpath = format!("{path}/lease");
            if lease.is_some() {
                return Err(self.err(lpath, None, "element may appear only once"));
            }
            self.attrs(child, &lpath, &["expiry", "unit"])?;
            self.empty(child, &lpath)?;
            let exp = self.req_attr(child, &lpath, "expiry")?;
            let expiry = self.uint(exp, &format!("{lpath}@expiry"))?;
            let unit = match child.attribute("unit") {
                None => None,
                Some(u @ ("seconds" | "minutes" | "hours")) => Some(u.to_string()),
                Some(u) => {
                    return Err(self.err(
                        format!("{lpath}@unit"),
                        Some(u),
                        "expected 'seconds', 'minutes' or 'hours'",
                    ));
                }
            };
            // libvirt (virNetworkDHCPLeaseTimeDefParseXML), after dnsmasq: the
            // shortest lease is two minutes; 0 means infinite.
            let too_short = match unit.as_deref() {
                Some("seconds") => expiry < 120,
                Some("hours") => false,
                _ => expiry < 2,
            };
            if expiry > 0 && too_short {
                return Err(self.err(
                    format!("{lpath}@expiry"),
                    Some(exp),
                    "the shortest DHCP lease is two minutes",
                ));
            }
            lease = Some(Lease { expiry, unit });
        }
        Ok(lease)
    }

    // ---- <route> ---------------------------------------------------------------------

    fn route(&self, node: Node, path: &str) -> R<RouteDef> {
        self.attrs(
            node,
            path,
            &[
                "family", "address", "netmask", "prefix", "gateway", "metric",
            ],
        )?;
        self.empty(node, path)?;
        let a_txt = self.req_attr(node, path, "address")?;
        let address = self.ip_addr(a_txt, &format!("{path}@address"))?;
        self.family(node, path, address)?;
        // libvirt (virNetDevIPRouteCreate): a route without prefix or netmask has
        // prefix 0, not the classful default of an <ip>.
        let prefix = if node.attribute("prefix").is_none() && node.attribute("netmask").is_none() {
            0
        } else {
            self.prefix(node, path, address, false)?
        };
        if mask_addr(address, prefix) != address {
            return Err(self.err(
                format!("{path}@address"),
                Some(a_txt),
                format!(
                    "route address has host bits set for prefix {prefix}; give the network address"
                ),
            ));
        }
        let g_at = format!("{path}@gateway");
        let g_txt = self.req_attr(node, path, "gateway")?;
        let gateway = self.ip_addr(g_txt, &g_at)?;
        if !same_family(gateway, address) {
            return Err(self.err(
                g_at,
                Some(g_txt),
                format!("gateway family differs from route address {address}"),
            ));
        }
        let metric = match node.attribute("metric") {
            None => None,
            Some(m) => {
                let at = format!("{path}@metric");
                let v: u32 = self.uint(m, &at)?;
                if v == 0 {
                    return Err(self.err(at, Some(m), "route metric must be greater than 0"));
                }
                Some(v)
            }
        };
        Ok(RouteDef {
            address,
            prefix,
            gateway,
            metric,
        })
    }

    // ---- <dns> -----------------------------------------------------------------------

    /// `<dns>` with libvirt's checks (virNetworkDNSDefParseXML and the schema).
    fn dns(&self, node: Node, path: &str) -> R<DnsDef> {
        self.attrs(node, path, &["enable", "forwardPlainNames"])?;
        self.no_text(node, path)?;
        let tri = |name: &str| -> R<Option<bool>> {
            match node.attribute(name) {
                None => Ok(None),
                Some(_) => self.yes_no(node, path, name).map(Some),
            }
        };
        let mut dns = DnsDef {
            enable: tri("enable")?,
            forward_plain_names: tri("forwardPlainNames")?,
            ..DnsDef::default()
        };
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().namespace().is_some() {
                return Err(self.unknown(child, path));
            }
            match child.tag_name().name() {
                "forwarder" => {
                    let p = format!("{path}/forwarder[{}]", dns.forwarders.len() + 1);
                    self.attrs(child, &p, &["addr", "domain"])?;
                    self.empty(child, &p)?;
                    let addr = match child.attribute("addr") {
                        Some(a) => Some(self.ip_addr(a, &format!("{p}@addr"))?),
                        None => None,
                    };
                    let domain = match child.attribute("domain") {
                        Some(d) => Some(self.dns_name(d, &format!("{p}@domain"))?),
                        None => None,
                    };
                    if addr.is_none() && domain.is_none() {
                        return Err(self.err(
                            p,
                            None,
                            "a DNS forwarder needs addr, domain or both",
                        ));
                    }
                    dns.forwarders.push(DnsForwarder { addr, domain });
                }
                "txt" => {
                    let p = format!("{path}/txt[{}]", dns.txts.len() + 1);
                    self.attrs(child, &p, &["name", "value"])?;
                    self.empty(child, &p)?;
                    // The schema's dnsName (which also keeps out libvirt's
                    // forbidden ' ' and ','); any value, even an empty one.
                    let name = self.req_attr(child, &p, "name")?;
                    let name = self.dns_name(name, &format!("{p}@name"))?;
                    let value = self.req_attr(child, &p, "value")?;
                    dns.txts.push(DnsTxt {
                        name,
                        value: value.into(),
                    });
                }
                "srv" => {
                    let p = format!("{path}/srv[{}]", dns.srvs.len() + 1);
                    dns.srvs.push(self.dns_srv(child, &p)?);
                }
                "host" => {
                    let p = format!("{path}/host[{}]", dns.hosts.len() + 1);
                    self.attrs(child, &p, &["ip"])?;
                    self.no_text(child, &p)?;
                    let ip_txt = self.req_attr(child, &p, "ip")?;
                    let ip = self.ip_addr(ip_txt, &format!("{p}@ip"))?;
                    let mut hostnames = Vec::new();
                    for h in child.children().filter(Node::is_element) {
                        if h.tag_name().namespace().is_some() || h.tag_name().name() != "hostname" {
                            return Err(self.unknown(h, &p));
                        }
                        let hp = format!("{p}/hostname[{}]", hostnames.len() + 1);
                        self.attrs(h, &hp, &[])?;
                        let text = self.text(h, &hp)?;
                        hostnames.push(self.dns_name(&text, &hp)?);
                    }
                    if hostnames.is_empty() {
                        return Err(self.err(
                            format!("{p}/hostname"),
                            Some(ip_txt),
                            "a DNS host needs at least one <hostname>",
                        ));
                    }
                    dns.hosts.push(DnsHost { ip, hostnames });
                }
                _ => return Err(self.unknown(child, path)),
            }
        }
        let has_records = !dns.forwarders.is_empty()
            || !dns.txts.is_empty()
            || !dns.srvs.is_empty()
            || !dns.hosts.is_empty();
        if dns.enable == Some(false) && has_records {
            return Err(self.err(
                format!("{path}@enable"),
                Some("no"),
                "a disabled <dns> must not contain forwarders or records",
            ));
        }
        Ok(dns)
    }

    fn dns_srv(&self, node: Node, p: &str) -> R<DnsSrv> {
        self.attrs(
            node,
            p,
            &[
                "service", "protocol", "domain", "target", "port", "priority", "weight",
            ],
        )?;
        self.empty(node, p)?;
        // libvirt (virNetworkDNSSrvDefParseXML): at most DNS_RECORD_LENGTH_SRV
        // (482) bytes of letters, digits and "_-+/*".
        let service = self.req_attr(node, p, "service")?;
        if service.len() > 482
            || !service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-+/*".contains(c))
        {
            return Err(self.err(
                format!("{p}@service"),
                Some(service),
                "SRV service must be at most 482 letters, digits, '_', '-', '+', '/' or '*'",
            ));
        }
        let protocol = self.req_attr(node, p, "protocol")?;
        if protocol != "tcp" && protocol != "udp" {
            return Err(self.err(
                format!("{p}@protocol"),
                Some(protocol),
                "SRV protocol must be 'tcp' or 'udp'",
            ));
        }
        let name = |a: &str| -> R<Option<String>> {
            node.attribute(a)
                .map(|v| self.dns_name(v, &format!("{p}@{a}")))
                .transpose()
        };
        let num = |a: &str| -> R<Option<u16>> {
            node.attribute(a)
                .map(|v| self.xsd_uint::<u16>(v, &format!("{p}@{a}")))
                .transpose()
        };
        if let Some(v) = node.attribute("port")
            && v.bytes().all(|b| b == b'0')
        {
            return Err(self.err(
                format!("{p}@port"),
                Some(v),
                "SRV port must be between 1 and 65535",
            ));
        }
        let srv = DnsSrv {
            service: service.into(),
            protocol: protocol.into(),
            domain: name("domain")?,
            target: name("target")?,
            port: num("port")?,
            priority: num("priority")?,
            weight: num("weight")?,
        };
        if srv.target.is_none() {
            for (a, v) in [
                ("port", srv.port),
                ("priority", srv.priority),
                ("weight", srv.weight),
            ] {
                if let Some(v) = v {
                    return Err(self.err(
                        format!("{p}@{a}"),
                        Some(&v.to_string()),
                        format!("SRV {a} is not allowed without target"),
                    ));
                }
            }
        }
        Ok(srv)
    }

    // ---- kept-verbatim parts -------------------------------------------------------

    fn dnsmasq_options(&self, node: Node, path: &str) -> R<Vec<String>> {
        self.attrs(node, path, &[])?;
        self.no_text(node, path)?;
        let mut out = Vec::new();
        for child in node.children().filter(Node::is_element) {
            let tag = child.tag_name();
            if tag.namespace() != Some(DNSMASQ_NS) || tag.name() != "option" {
                return Err(self.unknown(child, path));
            }
            let opath = format!("{path}/dnsmasq:option[{}]", out.len() + 1);
            self.attrs(child, &opath, &["value"])?;
            self.empty(child, &opath)?;
            out.push(self.req_attr(child, &opath, "value")?.to_string());
        }
        Ok(out)
    }

    /// Checks an element we keep as XML against the schema's element and attribute
    /// names (values are not checked), then serialises it.
    fn raw(&self, node: Node, path: &str, key: &str) -> R<RawElement> {
        self.check_raw(node, path, key)?;
        self.check_raw_values(node, path, key)?;
        Ok(RawElement {
            name: node.tag_name().name().to_string(),
            xml: serialize_element(node),
        })
    }

    /// libvirt's value checks for the parts kept verbatim: bandwidth rates,
    /// VLAN tags, virtualport types (recursively through portgroups).
    fn check_raw_values(&self, node: Node, path: &str, key: &str) -> R<()> {
        match key {
            "bandwidth" => {
                // virNetDevBandwidthParse without a class id to fill in.
                if let Some(v) = node.attribute("classID") {
                    return Err(self.err(
                        format!("{path}@classID"),
                        Some(v),
                        "classID is not supported on a network's <bandwidth> (only in a network's live status)",
                    ));
                }
                for dir in node.children().filter(Node::is_element) {
                    let name = dir.tag_name().name();
                    let dpath = format!("{path}/{name}");
                    for a in ["average", "peak", "burst", "floor"] {
                        if let Some(v) = dir.attribute(a) {
                            let n: u32 = self.uint(v, &format!("{dpath}@{a}"))?;
                            if n == 0 {
                                return Err(self.err(
                                    format!("{dpath}@{a}"),
                                    Some(v),
                                    "must be at least 1 (kibibytes/s, or kibibytes for burst)",
                                ));
                            }
                        }
                    }
                    if let Some(v) = dir.attribute("floor") {
                        let reason = if name == "outbound" {
                            "'floor' is allowed only in <inbound>"
                        } else {
                            "'floor' is not supported in a network definition (only on a domain <interface>)"
                        };
                        return Err(self.err(format!("{dpath}@floor"), Some(v), reason));
                    }
                    if dir.attribute("average").is_none() {
                        return Err(self.err(
                            format!("{dpath}@average"),
                            None,
                            "missing mandatory average",
                        ));
                    }
                }
            }
            "vlan" => {
                // The schema allows only trunk='yes' (libvirt's parser would
                // also take 'no' for one tag, but the schema refuses it first).
                if let Some(v) = node.attribute("trunk")
                    && v != "yes"
                {
                    return Err(self.err(
                        format!("{path}@trunk"),
                        Some(v),
                        "expected 'yes' (the only value libvirt's schema allows)",
                    ));
                }
                let tags: Vec<Node> = node.children().filter(|c| c.has_tag_name("tag")).collect();
                if tags.is_empty() {
                    return Err(self.err(
                        format!("{path}/tag"),
                        None,
                        "a <vlan> needs at least one <tag>",
                    ));
                }
                let mut native = false;
                for (i, t) in tags.iter().enumerate() {
                    let tpath = format!("{path}/tag[{}]", i + 1);
                    // libvirt (virNetDevVlanParse): one native VLAN at most.
                    if t.attribute("nativeMode").is_some() {
                        if native {
                            return Err(self.err(
                                format!("{tpath}@nativeMode"),
                                t.attribute("nativeMode"),
                                "duplicate native vlan setting: only one <tag> may have nativeMode",
                            ));
                        }
                        native = true;
                    }
                    let id = self.req_attr(*t, &tpath, "id")?;
                    let n: u32 = self.uint(id, &format!("{tpath}@id"))?;
                    if n > 4095 {
                        return Err(self.err(
                            format!("{tpath}@id"),
                            Some(id),
                            "VLAN id must be between 0 and 4095",
                        ));
                    }
                    if let Some(m) = t.attribute("nativeMode")
                        && m != "tagged"
                        && m != "untagged"
                    {
                        return Err(self.err(
                            format!("{tpath}@nativeMode"),
                            Some(m),
                            "expected 'tagged' or 'untagged'",
                        ));
                    }
                }
            }
            "virtualport" => {
                // network.rng's virtualPortProfile is a choice by type: each
                // type allows only its own <parameters> (libvirt's
                // virNetDevVPortProfileCheckNoExtras says the same), midonet
                // requires its interfaceid.
                let vtype = node.attribute("type");
                if let Some(t) = vtype
                    && !["802.1Qbg", "802.1Qbh", "openvswitch", "midonet"].contains(&t)
                {
                    return Err(self.err(
                        format!("{path}@type"),
                        Some(t),
                        "expected 802.1Qbg, 802.1Qbh, openvswitch or midonet",
                    ));
                }
                let allowed: &[&str] = match vtype {
                    Some("802.1Qbg") => &["managerid", "typeid", "typeidversion", "instanceid"],
                    Some("802.1Qbh") => &["profileid"],
                    Some("openvswitch") => &["profileid", "interfaceid"],
                    Some("midonet") => &["interfaceid"],
                    _ => &[
                        "managerid",
                        "typeid",
                        "typeidversion",
                        "instanceid",
                        "profileid",
                        "interfaceid",
                    ],
                };
                let params = node.children().find(|c| c.has_tag_name("parameters"));
                if vtype == Some("midonet")
                    && params.is_none_or(|p| p.attribute("interfaceid").is_none())
                {
                    return Err(self.err(
                        format!("{path}/parameters@interfaceid"),
                        None,
                        "a midonet <virtualport> needs <parameters interfaceid>",
                    ));
                }
                if let Some(prm) = params {
                    let pp = format!("{path}/parameters");
                    for a in prm.attributes() {
                        if !allowed.contains(&a.name()) {
                            return Err(self.err(
                                format!("{pp}@{}", a.name()),
                                Some(a.value()),
                                format!(
                                    "parameter not allowed with virtualport type '{}'",
                                    vtype.unwrap_or("(none)")
                                ),
                            ));
                        }
                    }
                    // The schema's uint8/uint24: hex with 0x or a decimal int.
                    for (a, max) in [
                        ("managerid", 0xFFu32),
                        ("typeidversion", 0xFF),
                        ("typeid", 0xFF_FFFF),
                    ] {
                        if let Some(v) = prm.attribute(a) {
                            let digits = if max > 0xFF { 6 } else { 2 };
                            self.schema_uint(v, &format!("{pp}@{a}"), max, digits)?;
                        }
                    }
                    for a in ["instanceid", "interfaceid"] {
                        if let Some(v) = prm.attribute(a) {
                            self.uuid(v, &format!("{pp}@{a}"))?;
                        }
                    }
                    // virtualPortProfileID: at most 39 characters.
                    if let Some(v) = prm.attribute("profileid")
                        && v.chars().count() > 39
                    {
                        return Err(self.err(
                            format!("{pp}@profileid"),
                            Some(v),
                            "profileid is longer than 39 characters",
                        ));
                    }
                }
            }
            "portgroup" => {
                for child in node.children().filter(Node::is_element) {
                    let name = child.tag_name().name();
                    self.check_raw_values(child, &format!("{path}/{name}"), name)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Portgroup names are required and unique; at most one is the default.
    fn check_portgroup(&self, node: Node, path: &str, seen: &mut Vec<(String, bool)>) -> R<()> {
        let name = self.req_attr(node, path, "name")?;
        self.device_name(name, &format!("{path}@name"), "portgroup name")?;
        let default = self.yes_no(node, path, "default")?;
        self.yes_no(node, path, "trustGuestRxFilters")?;
        if seen.iter().any(|(n, _)| n == name) {
            return Err(self.err(
                format!("{path}@name"),
                Some(name),
                "another <portgroup> has the same name",
            ));
        }
        if let (true, Some((other, _))) = (default, seen.iter().find(|(_, d)| *d)) {
            return Err(self.err(
                format!("{path}@default"),
                Some("yes"),
                format!("portgroup '{other}' is already the default; only one may be"),
            ));
        }
        seen.push((name.to_string(), default));
        Ok(())
    }

    fn check_raw(&self, node: Node, path: &str, key: &str) -> R<()> {
        let Some(rule) = raw_rule(key) else {
            return Err(self.unknown(node, path));
        };
        self.attrs(node, path, rule.attrs)?;
        if !rule.text {
            self.no_text(node, path)?;
        }
        let mut seen = HashSet::new();
        for child in node.children().filter(Node::is_element) {
            let name = child.tag_name().name();
            // The schema repeats only VLAN tags; every other child appears once.
            if key != "vlan" {
                self.once(&mut seen, name, &format!("{path}/{name}"))?;
            }
            let found = rule.children.iter().find(|(n, _)| *n == name);
            match found {
                Some((_, ckey)) if child.tag_name().namespace().is_none() => {
                    self.check_raw(child, &format!("{path}/{name}"), ckey)?;
                }
                _ => return Err(self.unknown(child, path)),
            }
        }
        Ok(())
    }

    // ---- value parsers -------------------------------------------------------------

    /// Plain decimal digits only (no sign, no spaces), and the value must fit `T`.
    fn uint<T: FromStr>(&self, v: &str, at: &str) -> R<T> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(at, Some(v), "expected a non-negative decimal integer"));
        }
        v.parse::<T>().map_err(|_| {
            self.err(
                at,
                Some(v),
                format!("number out of range for {}", std::any::type_name::<T>()),
            )
        })
    }

    /// A number of the schema's uint8/uint24/uint32/PCI types (`0x` and up to
    /// `hex_digits` hex digits, or a decimal int) as libvirt reads it (`strtoul`
    /// base 0, so a leading 0 means octal), at most `max`.
    fn schema_uint(&self, v: &str, at: &str, max: u32, hex_digits: usize) -> R<u32> {
        let parsed = if let Some(h) = v.strip_prefix("0x") {
            (!h.is_empty() && h.len() <= hex_digits && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(h, 16).ok())
                .flatten()
        } else {
            let d = v.strip_prefix('+').unwrap_or(v);
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else if d.len() > 1 && d.starts_with('0') {
                u32::from_str_radix(&d[1..], 8).ok()
            } else {
                d.parse::<u32>().ok()
            }
        };
        match parsed {
            Some(n) if n <= max => Ok(n),
            Some(_) => Err(self.err(at, Some(v), format!("must be between 0 and {max}"))),
            None => Err(self.err(
                at,
                Some(v),
                "expected a number (decimal, or hexadecimal with 0x)",
            )),
        }
    }

    /// A number the schema types as `xsd:integer` (libvirt's `port` and
    /// `unsignedShort`): libxml2 takes a leading '+' there (not for
    /// `unsignedInt`/`unsignedLong`), and so do libvirt's `strtoul`-based readers.
    fn xsd_uint<T: FromStr>(&self, v: &str, at: &str) -> R<T> {
        let digits = v.strip_prefix('+').unwrap_or(v);
        self.uint(digits, at).map_err(|e| XmlError {
            value: Some(v.to_string()),
            ..e
        })
    }

    fn ip_addr(&self, v: &str, at: &str) -> R<IpAddr> {
        IpAddr::from_str(v).map_err(|_| self.err(at, Some(v), "expected an IPv4 or IPv6 address"))
    }

    fn ipv4(&self, v: &str, at: &str) -> R<Ipv4Addr> {
        Ipv4Addr::from_str(v)
            .map_err(|_| self.err(at, Some(v), "expected a dotted-quad IPv4 address"))
    }

    /// A unicast MAC (the schema's uniMacAddr): [`Mac::parse_unicast`].
    fn mac(&self, v: &str, at: &str) -> R<[u8; 6]> {
        Mac::parse_unicast(v)
            .map(Mac::octets)
            .map_err(|e| self.err(at, Some(v), e.to_string()))
    }

    /// `8-4-4-4-12` or 32 hex digits; returned in canonical lower-case hyphenated form.
    fn uuid(&self, v: &str, at: &str) -> R<String> {
        let hex: String = match v.len() {
            32 => v.to_string(),
            36 if [8, 13, 18, 23].iter().all(|&i| v.as_bytes()[i] == b'-') => v.replace('-', ""),
            _ => String::new(),
        };
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.err(
                at,
                Some(v),
                "expected a UUID (8-4-4-4-12 hex digits, or 32 hex digits)",
            ));
        }
        let h = hex.to_ascii_lowercase();
        Ok(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// The schema's deviceName (network.rng, basictypes): one or more of
    /// letters, digits, '_', '.', '-', '\\', ':' and '/'.
    fn device_name(&self, v: &str, at: &str, what: &str) -> R<()> {
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-\\:/".contains(c))
        {
            return Err(self.err(
                at,
                Some(v),
                format!(
                    "{what} must be one or more letters, digits, '_', '.', '-', '\\', ':' or '/'"
                ),
            ));
        }
        Ok(())
    }

    /// A Linux interface name the kernel would accept (dev_valid_name, IFNAMSIZ) drawn
    /// from the schema's deviceName characters.
    fn ifname(&self, v: &str, at: &str) -> R<String> {
        let reason = if v.is_empty() {
            Some("interface name must not be empty")
        } else if v.len() > 15 {
            Some("interface name is longer than 15 characters")
        } else if v == "." || v == ".." {
            Some("interface name must not be '.' or '..'")
        } else if v.contains('/') {
            Some("interface name must not contain '/'")
        } else if v.chars().any(char::is_whitespace) {
            Some("interface name must not contain whitespace")
        } else if v.contains(':') {
            Some("interface name must not contain ':'")
        } else if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-\\".contains(c))
        {
            Some("interface name may only contain letters, digits, '_', '.', '-' and '\\'")
        } else {
            None
        };
        match reason {
            Some(r) => Err(self.err(at, Some(v), r)),
            None => Ok(v.to_string()),
        }
    }

    /// The schema's dnsName: letters, digits, '.' and '-'.
    fn dns_name(&self, v: &str, at: &str) -> R<String> {
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(self.err(
                at,
                Some(v),
                "DNS name may only contain letters, digits, '.' and '-'",
            ));
        }
        Ok(v.to_string())
    }

    /// libvirt refuses static-host names that do not start with a letter or digit; we also keep
    /// out characters that would corrupt dnsmasq's host files.
    fn host_name(&self, v: &str, at: &str) -> R<String> {
        // libvirt 9.0: a letter or a digit first.
        let starts_alpha = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !starts_alpha
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(self.err(
                at,
                Some(v),
                "host name must start with a letter or digit and contain only letters, digits, '-', '.' and '_'",
            ));
        }
        Ok(v.to_string())
    }

    /// A DHCPv6 DUID as the schema's `DUID` patterns spell one: colon-separated
    /// hex bytes of type 1 (LLT), 2 (EN), 3 (LL) or 4 (UUID) with their lengths.
    fn duid(&self, v: &str, at: &str) -> R<String> {
        let g: Vec<&str> = v.split(':').collect();
        let byte = |s: &str| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        let zero = |s: &str| s == "0" || s == "00";
        // The type and hardware-type low bytes: an optional '0', then the digit.
        let low = |s: &str, ok: &dyn Fn(u8) -> bool| {
            let d = s.strip_prefix('0').filter(|d| !d.is_empty()).unwrap_or(s);
            d.len() == 1 && ok(d.as_bytes()[0])
        };
        let nonzero_hex = |b: u8| b.is_ascii_hexdigit() && b != b'0';
        let ok = g.len() >= 2
            && zero(g[0])
            && g.iter().all(|s| byte(s))
            && if low(g[1], &|b| b == b'1') {
                // LLT: hardware type, 4 bytes of time, 6-8 bytes of address.
                (14..=16).contains(&g.len()) && zero(g[2]) && low(g[3], &nonzero_hex)
            } else if low(g[1], &|b| b == b'2') {
                // EN: 4 bytes of enterprise number, 1-124 bytes of id.
                (7..=130).contains(&g.len())
            } else if low(g[1], &|b| b == b'3') {
                // LL: hardware type, 6-8 bytes of address.
                (10..=12).contains(&g.len()) && zero(g[2]) && low(g[3], &nonzero_hex)
            } else if low(g[1], &|b| b == b'4') {
                // UUID: 16 bytes.
                g.len() == 18
            } else {
                false
            };
        if !ok {
            return Err(self.err(
                at,
                Some(v),
                "expected a DUID of type 1-4 as colon-separated hex bytes (e.g. 00:01:00:01:...)",
            ));
        }
        Ok(v.to_string())
    }

    // ---- structure helpers ---------------------------------------------------------

    /// Every attribute must be one the schema allows on this element.
    fn attrs(&self, node: Node, path: &str, allowed: &[&str]) -> R<()> {
        for a in node.attributes() {
            if a.namespace().is_some() || !allowed.contains(&a.name()) {
                return Err(self.err(
                    format!("{path}@{}", a.name()),
                    Some(a.value()),
                    "attribute not in libvirt's network schema",
                ));
            }
        }
        Ok(())
    }

    fn req_attr<'a>(&self, node: Node<'a, '_>, path: &str, name: &str) -> R<&'a str> {
        node.attribute(name)
            .ok_or_else(|| self.err(format!("{path}@{name}"), None, "missing required attribute"))
    }

    /// libvirt's yes/no attributes; absent means no.
    fn yes_no(&self, node: Node, path: &str, name: &str) -> R<bool> {
        match node.attribute(name) {
            None | Some("no") => Ok(false),
            Some("yes") => Ok(true),
            Some(v) => Err(self.err(format!("{path}@{name}"), Some(v), "expected 'yes' or 'no'")),
        }
    }

    fn once(&self, seen: &mut HashSet<String>, key: &str, path: &str) -> R<()> {
        if !seen.insert(key.to_string()) {
            return Err(self.err(path, None, "element may appear only once"));
        }
        Ok(())
    }

    /// Only whitespace may sit between child elements.
    fn no_text(&self, node: Node, path: &str) -> R<()> {
        for c in node.children().filter(Node::is_text) {
            let t = c.text().unwrap_or_default();
            if !t.trim().is_empty() {
                return Err(self.err(path, Some(t.trim()), "unexpected text content"));
            }
        }
        Ok(())
    }

    /// No child elements and no text.
    fn empty(&self, node: Node, path: &str) -> R<()> {
        if let Some(child) = node.children().find(Node::is_element) {
            return Err(self.unknown(child, path));
        }
        self.no_text(node, path)
    }

    /// Text content (all text nodes, comments skipped); no child elements.
    fn text(&self, node: Node, path: &str) -> R<String> {
        let mut s = String::new();
        for c in node.children() {
            if c.is_element() {
                return Err(self.unknown(c, path));
            }
            if c.is_text() {
                s.push_str(c.text().unwrap_or_default());
            }
        }
        Ok(s)
    }

    fn unknown(&self, node: Node, parent: &str) -> XmlError {
        self.err(
            format!("{parent}/{}", qname(node)),
            None,
            "element not in libvirt's network schema here",
        )
    }
}

/// The first child element of `node` named `name` (no namespace).
fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| {
        c.is_element() && c.tag_name().namespace().is_none() && c.tag_name().name() == name
    })
}

/// libvirt's forward interface list (`forward.ifs`): `<forward dev>` first, then
/// each `<interface dev>` (the first one equals `dev` when both are given).
fn forward_devices<'a>(root: Node<'a, '_>) -> Vec<&'a str> {
    let Some(f) = child(root, "forward") else {
        return Vec::new();
    };
    let dev = f.attribute("dev");
    let mut out: Vec<&str> = dev.into_iter().collect();
    for (i, itf) in f
        .children()
        .filter(|c| c.has_tag_name("interface"))
        .enumerate()
    {
        if i == 0 && dev.is_some() {
            continue;
        }
        out.extend(itf.attribute("dev"));
    }
    out
}

/// True when `node` has a `<bandwidth>` with an `<inbound>` or `<outbound>`:
/// libvirt drops an empty `<bandwidth/>`, so only then does a mode's
/// bandwidth limit apply.
fn has_rates(node: Node) -> bool {
    child(node, "bandwidth").is_some_and(|b| {
        b.children()
            .any(|c| c.has_tag_name("inbound") || c.has_tag_name("outbound"))
    })
}

/// The `<pf>` devices libvirt keeps: `virNetworkForwardDefParseXML` reads `<pf>`
/// only when there is no `<forward dev>`, `<interface>` or `<address>` device
/// (otherwise it is ignored, so it never conflicts with them).
fn forward_pf_count(root: Node) -> usize {
    let Some(f) = child(root, "forward") else {
        return 0;
    };
    let other = f.attribute("dev").is_some()
        || f.children()
            .any(|c| c.has_tag_name("interface") || c.has_tag_name("address"));
    if other {
        0
    } else {
        f.children().filter(|c| c.has_tag_name("pf")).count()
    }
}

/// Element name as written, with its prefix (or `{uri}` when unprefixed in a namespace).
fn qname(node: Node) -> String {
    let tag = node.tag_name();
    match tag.namespace() {
        None => tag.name().to_string(),
        Some(uri) => match node.lookup_prefix(uri) {
            Some(p) if !p.is_empty() => format!("{p}:{}", tag.name()),
            _ => format!("{{{uri}}}{}", tag.name()),
        },
    }
}

/// What the schema allows inside an element kept verbatim.
struct RawRule {
    attrs: &'static [&'static str],
    /// (child element name, rule key for that child)
    children: &'static [(&'static str, &'static str)],
    text: bool,
}

fn raw_rule(key: &str) -> Option<RawRule> {
    const NONE: &[(&str, &str)] = &[];
    let r = |attrs, children, text| {
        Some(RawRule {
            attrs,
            children,
            text,
        })
    };
    match key {
        "virtualport" => r(
            &["type"],
            &[("parameters", "virtualport/parameters")],
            false,
        ),
        "virtualport/parameters" => r(
            &[
                "managerid",
                "typeid",
                "typeidversion",
                "instanceid",
                "profileid",
                "interfaceid",
            ],
            NONE,
            false,
        ),
        "portgroup" => r(
            &["name", "default", "trustGuestRxFilters"],
            &[
                ("virtualport", "virtualport"),
                ("bandwidth", "bandwidth"),
                ("vlan", "vlan"),
            ],
            false,
        ),
        "bandwidth" => r(
            &["classID"],
            &[
                ("inbound", "bandwidth/rate"),
                ("outbound", "bandwidth/rate"),
            ],
            false,
        ),
        "bandwidth/rate" => r(&["average", "peak", "floor", "burst"], NONE, false),
        "vlan" => r(&["trunk"], &[("tag", "vlan/tag")], false),
        "vlan/tag" => r(&["id", "nativeMode"], NONE, false),
        "forward/interface" => r(&["dev", "connections"], NONE, false),
        "forward/pf" => r(&["dev"], NONE, false),
        "forward/address" => r(
            &[
                "type",
                "domain",
                "bus",
                "slot",
                "function",
                "multifunction",
                "connections",
            ],
            NONE,
            false,
        ),
        "forward/driver" => r(&["name"], NONE, false),
        _ => None,
    }
}

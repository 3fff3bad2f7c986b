//! Libvirt network XML: this module owns the `<network>` document format.
//!
//! It turns libvirt network XML (<https://libvirt.org/formatnetwork.html>) into a
//! validated [`NetworkDef`] ([`parse_network`]) and back ([`to_xml`]), and says which
//! parts of a definition vxdp parses but does not implement ([`unsupported_features`]).
//! Nothing here touches the host: it is pure text in, typed data out.
//!
//! Validation follows libvirt's parser and its RelaxNG schema (`network.rng`):
//! elements and attributes the schema does not know are errors, values are not
//! trimmed, numbers are plain decimal digits that must fit their type. Where
//! libvirt has a choice we document ours:
//!
//! * An IPv4 `<ip>` without `netmask`/`prefix` gets its classful prefix (class A /8,
//!   B /16, C /24; class D/E is refused), an IPv6 one gets /64 — as libvirt does.
//! * A `<forward>` without `mode` means `nat`.
//! * Error paths are XPath-like: `/network/ip[1]/dhcp/range[2]@start`; `[n]` is the
//!   1-based position among siblings of that name and appears for repeatable elements.
//!
//! Parts vxdp does not model field-by-field (`<portgroup>`, `<virtualport>`,
//! `<bandwidth>`, `<vlan>`, `<forward>`'s `<interface>`/`<pf>`/`<address>`/`<driver>`)
//! are checked against the schema's element and attribute names, plus libvirt's value
//! checks for bandwidth rates, VLAN tags, virtualport types and portgroup names and
//! defaults (`<forward>` device lists: names only), and kept as normalised XML in
//! [`RawElement`]s so that [`to_xml`] writes them back. Of these vxdp realizes
//! portgroups ([`portgroups`]) with their `<bandwidth>`; [`unsupported_features`]
//! lists the rest.
//! `<metadata>` is kept the same way; comments are dropped and namespaces are written
//! out on the elements that use them.

mod domain;
mod interface;
mod parse;
mod write;

pub use domain::{DomainPort, domain_ports};
pub use interface::{
    InterfaceDef, InterfaceSource, InterfaceType, parse_interface, parse_port_forward,
};

use crate::model::bandwidth::Bandwidth;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub use crate::model::mode::ForwardMode;

/// Namespace of libvirt's `<dnsmasq:options>` extension element.
pub const DNSMASQ_NS: &str = "http://libvirt.org/schemas/network/dnsmasq/1.0";

/// A rejected document: which file, which element or attribute, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {element}: {reason}{}", ValueSuffix(.value))]
pub struct XmlError {
    /// The `source` given to [`parse_network`].
    pub file: String,
    /// Path of the element or attribute at fault, e.g. `/network/forward@mode`.
    pub element: String,
    /// The offending value, when there is one.
    pub value: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
}

/// Formats the ` (value '...')` tail of an error message, or nothing.
struct ValueSuffix<'a>(&'a Option<String>);

impl fmt::Display for ValueSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, " (value '{v}')"),
            None => Ok(()),
        }
    }
}

/// One libvirt virtual network definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkDef {
    pub name: String,
    /// Canonical lower-case `8-4-4-4-12` form.
    pub uuid: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Children of `<metadata>`, re-serialised with their namespaces made explicit.
    pub metadata: Option<String>,
    /// `<network ipv6='yes'>`: guest-to-guest IPv6 without an IPv6 `<ip>`.
    pub ipv6: bool,
    /// `<network trustGuestRxFilters='yes'>`.
    pub trust_guest_rx_filters: bool,
    pub bridge: BridgeDef,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// `<domain name>`.
    pub domain: Option<String>,
    /// `<domain localOnly='yes'>`; only written when `domain` is set.
    pub domain_local_only: bool,
    /// `<domain register='yes'>`; only written when `domain` is set.
    pub domain_register: bool,
    /// `None`: isolated network (no `<forward>`).
    pub forward: Option<ForwardDef>,
    pub ips: Vec<IpDef>,
    pub routes: Vec<RouteDef>,
    /// `<port isolated='yes'/>`.
    pub port_isolated: bool,
    /// Values of `<dnsmasq:options><dnsmasq:option value/>`.
    pub dnsmasq_options: Vec<String>,
    /// `<dns>`.
    pub dns: Option<DnsDef>,
    /// Schema-valid top-level elements kept verbatim (portgroup, virtualport,
    /// bandwidth, vlan), in document order.
    pub extra: Vec<RawElement>,
}

/// `<dns>`: the network's DNS service (dnsmasq in libvirt).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsDef {
    /// `enable` as written (`None`: absent, which means yes).
    pub enable: Option<bool>,
    /// `forwardPlainNames` as written.
    pub forward_plain_names: Option<bool>,
    pub forwarders: Vec<DnsForwarder>,
    pub txts: Vec<DnsTxt>,
    pub srvs: Vec<DnsSrv>,
    pub hosts: Vec<DnsHost>,
}

/// `<dns><forwarder addr domain>`: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsForwarder {
    pub addr: Option<IpAddr>,
    pub domain: Option<String>,
}

/// `<dns><txt name value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTxt {
    pub name: String,
    pub value: String,
}

/// `<dns><srv>`: `service` and `protocol` required; `port`, `priority` and
/// `weight` only together with `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSrv {
    pub service: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub domain: Option<String>,
    pub target: Option<String>,
    pub port: Option<u16>,
    pub priority: Option<u16>,
    pub weight: Option<u16>,
}

/// `<dns><host ip><hostname>...`: at least one host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

/// `<bridge>`: the Linux bridge backing the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeDef {
    pub name: Option<String>,
    /// Spanning tree; libvirt's default is on.
    pub stp: bool,
    /// Forward delay in seconds.
    pub delay: u32,
    /// `macTableManager`: `kernel` or `libvirt`.
    pub mac_table_manager: Option<String>,
    /// firewalld zone.
    pub zone: Option<String>,
}

impl Default for BridgeDef {
    fn default() -> Self {
        BridgeDef {
            name: None,
            stp: true,
            delay: 0,
            mac_table_manager: None,
            zone: None,
        }
    }
}

/// `<forward>`: how the network reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardDef {
    pub mode: ForwardMode,
    pub dev: Option<String>,
    /// `Some` only when mode is nat and a `<nat>` child was given.
    pub nat: Option<NatDef>,
    /// `<forward managed='yes'>` (hostdev pools).
    pub managed: bool,
    /// `<interface>`, `<pf>`, `<address>`, `<driver>` children kept verbatim.
    pub extra: Vec<RawElement>,
}

impl NetworkDef {
    /// The mode vxdp realizes for this definition (one of
    /// `vxdp_common::mode`; see [`crate::model::mode::of`]), `None` for a
    /// mode it does not realize.
    pub fn mode(&self) -> Option<u32> {
        crate::model::mode::of(
            self.forward.as_ref().map(|f| f.mode),
            self.bridge.name.is_some(),
        )
    }
}

/// `<forward mode='nat'><nat>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatDef {
    /// `<address start end>`: SNAT source range.
    pub addresses: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `<port start end>`: SNAT source port range.
    pub ports: Option<(u16, u16)>,
    /// `<nat ipv6='yes'>`: also NAT IPv6.
    pub ipv6: bool,
}

/// `<ip>`: an address on the bridge, its subnet and DHCP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpDef {
    pub address: IpAddr,
    pub prefix: u8,
    /// `<ip localPtr='yes'>`.
    pub local_ptr: bool,
    /// `<tftp root>` (IPv4 only).
    pub tftp_root: Option<String>,
    /// `<dhcp><bootp>` (IPv4 only).
    pub bootp: Option<BootpDef>,
    pub dhcp_ranges: Vec<(IpAddr, IpAddr)>,
    /// `<range><lease>` per range, same index as `dhcp_ranges`. Empty when no range
    /// has a lease; missing trailing entries mean "no lease".
    pub range_leases: Vec<Option<Lease>>,
    pub dhcp_hosts: Vec<DhcpHost>,
}

impl IpDef {
    /// An `<ip>` with no DHCP and nothing optional.
    pub fn new(address: IpAddr, prefix: u8) -> IpDef {
        IpDef {
            address,
            prefix,
            local_ptr: false,
            tftp_root: None,
            bootp: None,
            dhcp_ranges: Vec::new(),
            range_leases: Vec::new(),
            dhcp_hosts: Vec::new(),
        }
    }

    /// The subnet's network address (address masked by prefix).
    pub fn network(&self) -> IpAddr {
        mask_addr(self.address, self.prefix)
    }

    /// True when `addr` is of the same family and inside this subnet.
    pub fn contains(&self, addr: IpAddr) -> bool {
        same_family(addr, self.address) && mask_addr(addr, self.prefix) == self.network()
    }

    /// True when this `<ip>` would run a DHCP server (has ranges or hosts).
    pub fn has_dhcp(&self) -> bool {
        !self.dhcp_ranges.is_empty() || !self.dhcp_hosts.is_empty()
    }
}

/// `<dhcp><host>`: a static lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhcpHost {
    /// IPv4 hosts only.
    pub mac: Option<[u8; 6]>,
    /// DHCPv6 DUID (`id` attribute), IPv6 hosts only.
    pub id: Option<String>,
    pub name: Option<String>,
    /// Always `Some` after parsing (the schema requires it).
    pub ip: Option<IpAddr>,
    pub lease: Option<Lease>,
}

/// `<dhcp><bootp file server>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootpDef {
    pub file: String,
    pub server: Option<String>,
}

/// `<lease expiry unit>`; expiry 0 means infinite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub expiry: u64,
    /// `seconds`, `minutes` (libvirt's default) or `hours`.
    pub unit: Option<String>,
}

/// `<route>`: a static route added on the host via a guest-side gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDef {
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
    pub metric: Option<u32>,
}

/// A schema-checked element vxdp does not model, kept to write it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawElement {
    /// Element name, e.g. `dns`.
    pub name: String,
    /// The whole element, serialised.
    pub xml: String,
}

/// `<portgroup>`: settings a guest port takes when its `<interface>` names
/// the group (`<source portgroup>`), or when it names none and the group is
/// the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portgroup {
    pub name: String,
    pub default: bool,
    /// Its `<bandwidth>` with at least one direction.
    pub bandwidth: Option<Bandwidth>,
    /// Has a `<vlan>`.
    pub vlan: bool,
    /// Has a `<virtualport>`.
    pub virtualport: bool,
    /// `trustGuestRxFilters='yes'`.
    pub trust_guest_rx_filters: bool,
}

/// The network-wide `<bandwidth>`, when it limits a direction.
pub fn network_bandwidth(def: &NetworkDef) -> Option<Bandwidth> {
    def.extra
        .iter()
        .find(|r| r.name == "bandwidth")
        .and_then(|r| Bandwidth::from_xml(&r.xml))
}

/// The definition's portgroups, in document order.
pub fn portgroups(def: &NetworkDef) -> Vec<Portgroup> {
    def.extra
        .iter()
        .filter(|r| r.name == "portgroup")
        .filter_map(|r| {
            let doc = roxmltree::Document::parse(&r.xml).ok()?;
            let pg = doc.root_element();
            let has = |n: &str| pg.children().any(|c| c.has_tag_name(n));
            Some(Portgroup {
                name: pg.attribute("name")?.to_string(),
                default: pg.attribute("default") == Some("yes"),
                bandwidth: pg
                    .children()
                    .find(|c| c.has_tag_name("bandwidth"))
                    .map(Bandwidth::from_node)
                    .filter(|b| !b.is_empty()),
                vlan: has("vlan"),
                virtualport: has("virtualport"),
                trust_guest_rx_filters: pg.attribute("trustGuestRxFilters") == Some("yes"),
            })
        })
        .collect()
}

/// Longest network name: it names files such as `<name>.autostart`, which
/// must fit the 255 bytes of a file name.
pub const MAX_NETWORK_NAME: usize = 200;

/// Why `name` cannot name a network, or None. Like libvirt: not empty, no
/// '/', no newline. Because the name also names vxdp's files and
/// directories and is passed to programs vxdp runs: not only whitespace,
/// not '.' or '..', not starting with '-' (an option to a program), no
/// control characters, at most [`MAX_NETWORK_NAME`] bytes.
pub fn network_name_problem(name: &str) -> Option<String> {
    let problem = if name.is_empty() {
        "network name must not be empty"
    } else if name.trim().is_empty() {
        "network name must not be only whitespace"
    } else if name.contains('/') {
        "network name must not contain '/'"
    } else if name.contains('\n') {
        "network name must not contain a newline"
    } else if name.chars().any(char::is_control) {
        "network name must not contain control characters"
    } else if name == "." || name == ".." {
        "network name must not be '.' or '..' (it names a directory)"
    } else if name.starts_with('-') {
        "network name must not start with '-' (programs would read it as an option)"
    } else if name.len() > MAX_NETWORK_NAME {
        return Some(format!(
            "network name has more than {MAX_NETWORK_NAME} bytes"
        ));
    } else {
        return None;
    };
    Some(problem.to_string())
}

/// Parses and validates one libvirt network document. `source` names the file in errors.
pub fn parse_network(xml: &str, source: &str) -> Result<NetworkDef, XmlError> {
    parse::parse(xml, source)
}

/// Serialises a definition as libvirt network XML. For any `d` produced by
/// [`parse_network`], `parse_network(&to_xml(&d), _) == Ok(d)`.
pub fn to_xml(def: &NetworkDef) -> String {
    write::network(def)
}

/// Paths of the parts of `def` that are parsed and kept but not implemented by vxdp,
/// for the caller to refuse with `"not supported yet: <path>"`.
///
/// Covered: everything kept as [`RawElement`] except `<dns>` (served by dnsmasq)
/// and portgroups themselves (their `<vlan>`, `<virtualport>` and
/// `trustGuestRxFilters` are listed; their `<bandwidth>` is realized), the
/// network's `<bandwidth>`, and attributes with a non-default meaning
/// (`trustGuestRxFilters`, `macTableManager='libvirt'`, domain `register`, forward
/// `managed`, `localPtr`). `<tftp>`, `<bootp>`, leases, DHCPv6 host
/// ids, `<domain localOnly>` and `<dnsmasq:options>` go to the network's dnsmasq;
/// `<network ipv6='yes'>` keeps IPv6 on the bridge; a bridge `zone` needs nothing
/// (vxdp adds no firewall rules).
/// `<title>`, `<description>` and `<metadata>` are informational and never listed.
pub fn unsupported_features(def: &NetworkDef) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    if def.trust_guest_rx_filters {
        push("/network@trustGuestRxFilters".into());
    }
    if def.bridge.mac_table_manager.as_deref() == Some("libvirt") {
        push("/network/bridge@macTableManager".into());
    }
    if def.domain.is_some() && def.domain_register {
        push("/network/domain@register".into());
    }
    if let Some(fwd) = &def.forward {
        if fwd.managed {
            push("/network/forward@managed".into());
        }
        for raw in &fwd.extra {
            push(format!("/network/forward/{}", raw.name));
        }
    }
    // The network's <bandwidth> is realized (see `modes::plan` for where).
    // <virtualport> and <vlan> are port settings: see `port_needs`.
    for raw in def.extra.iter().filter(|r| {
        !matches!(
            r.name.as_str(),
            "portgroup" | "bandwidth" | "virtualport" | "vlan"
        )
    }) {
        push(format!("/network/{}", raw.name));
    }
    // A portgroup's <bandwidth> is realized on the ports that join it.
    for (i, pg) in portgroups(def).iter().enumerate() {
        let p = format!("/network/portgroup[{}]", i + 1);
        if pg.trust_guest_rx_filters {
            push(format!("{p}@trustGuestRxFilters"));
        }
    }
    for (i, ip) in def.ips.iter().enumerate() {
        let p = format!("/network/ip[{}]", i + 1);
        if ip.local_ptr {
            push(format!("{p}@localPtr"));
        }
    }
    out
}

/// What a port joining portgroup `group` of `def` (`None`: the default
/// portgroup, if any) would need that vxdp does not drive: the element's
/// path and what it is. libvirt applies a network's or portgroup's
/// `<virtualport>` (Open vSwitch, 802.1Qbg/Qbh through lldpad or the NIC)
/// and `<vlan>` when a domain's interface is plugged, not when the network
/// starts, so vxdp starts such networks as libvirt does and refuses their
/// ports as "not supported yet".
pub fn port_needs(def: &NetworkDef, group: Option<&str>) -> Option<(String, String)> {
    for (name, what) in [
        (
            "virtualport",
            "<virtualport> (Open vSwitch or 802.1Qbg/Qbh ports)",
        ),
        ("vlan", "<vlan> (tagging by Open vSwitch or the NIC)"),
    ] {
        if def.extra.iter().any(|r| r.name == name) {
            return Some((format!("/network/{name}"), what.to_string()));
        }
    }
    let groups = portgroups(def);
    let (i, pg) = groups.iter().enumerate().find(|(_, g)| match group {
        Some(n) => g.name == n,
        None => g.default,
    })?;
    let p = format!("/network/portgroup[{}]", i + 1);
    if pg.virtualport {
        return Some((
            format!("{p}/virtualport"),
            format!("portgroup '{}''s <virtualport>", pg.name),
        ));
    }
    if pg.vlan {
        return Some((
            format!("{p}/vlan"),
            format!("portgroup '{}''s <vlan>", pg.name),
        ));
    }
    None
}

/// libvirt's stock `default` network, as shipped in `networks/default.xml`.
pub fn default_network_xml() -> &'static str {
    "<network>
  <name>default</name>
  <bridge name='virbr0' stp='on' delay='0'/>
  <forward mode='nat'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
"
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Clears the host bits of `addr`; a prefix beyond the family's width keeps all bits.
fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & keep))
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from_bits(a.to_bits() & keep))
        }
    }
}

/// IPv4 broadcast address of `addr/prefix`.
fn broadcast_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host = u32::MAX.checked_shr(u32::from(prefix.min(32))).unwrap_or(0);
    Ipv4Addr::from_bits(addr.to_bits() | host)
}

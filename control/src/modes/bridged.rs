//! Starting and stopping networks on the host: a validated definition is
//! turned into a bridge, map entries and attached programs. Every step that
//! changes the host pushes its undo; if a later step fails, the undo stack
//! runs, so a failed start leaves nothing behind.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use vxdp_common::{
    Endpoint, MAX_NETWORKS, NetworkConfig, SubnetOwner, endpoint_flags, mode, mode_routes,
    network_flags,
};

use crate::{
    dataplane::{self, DataplaneError, LoadOptions, Maps, Pins},
    host::dnsmasq::{self, DnsmasqError},
    host::netlink::{Netlink, NetlinkError},
    host::state::{HostRecord, NetworkRecord, PortRecord, StateDir, StateError},
    xml::{self, ForwardMode, NetworkDef, XmlError, format_mac},
};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("{file}: {element}: not supported yet: {what}")]
    NotSupported {
        file: String,
        element: String,
        what: String,
    },
    #[error("{file}: {element}: {reason}")]
    Invalid {
        file: String,
        element: String,
        reason: String,
    },
    #[error("network '{0}' is already started")]
    AlreadyStarted(String),
    #[error("network '{0}' is not started (see `vxdp net-list`)")]
    NotStarted(String),
    #[error("network '{0}' is not defined (see `vxdp net-list --all`)")]
    NotDefined(String),
    #[error(
        "network '{0}' is transient (started with net-create, not defined): define it first with `vxdp net-define`"
    )]
    Transient(String),
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {dev} is already plugged into network '{network}'")]
    PortInUse { dev: String, network: String },
    #[error("interface {dev} is not plugged into network '{network}'")]
    PortNotFound { dev: String, network: String },
    #[error("no uplink: the host has no IPv4 default route; name one with <forward dev='...'>")]
    NoUplink,
    #[error(
        "uplink {0} has no IPv4 address to masquerade to; add one or give <nat><address start end/>"
    )]
    UplinkWithoutAddress(String),
    #[error(
        "uplink {0} has no global IPv6 address to masquerade to (<nat ipv6='yes'>); add one, or drop ipv6='yes' to route the network's IPv6"
    )]
    UplinkWithoutIpv6Address(String),
    #[error(
        "enabling IPv6 forwarding would drop the IPv6 routes learned from router advertisements on {0} (the kernel ignores them there with forwarding on unless accept_ra is 2): set net.ipv6.conf.<interface>.accept_ra=2 first, as libvirt requires"
    )]
    RaRoutesAtRisk(String),
    #[error("no free network id (at most {} networks)", MAX_NETWORKS - 1)]
    TooManyNetworks,
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tap(#[from] crate::host::tap::TapError),
    #[error(transparent)]
    Dnsmasq(#[from] DnsmasqError),
    #[error("--mac {0}: not a MAC address (expected xx:xx:xx:xx:xx:xx)")]
    BadMac(String),
    #[error("--ip {ip}: {reason}")]
    BadIp { ip: String, reason: String },
}

/// Host paths and load options; every path is configurable so several
/// instances (tests) can run side by side.
#[derive(Clone, Debug)]
pub struct Context {
    pub state_dir: PathBuf,
    pub pins: Pins,
    pub load: LoadOptions,
}

/// A network's IPv4 side: the bridge's address and the subnet it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Plan {
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub subnet: Ipv4Addr,
}

/// What a network needs, checked and computed from the definition before
/// anything on the host changes.
#[derive(Clone, Debug)]
pub struct NetworkPlan {
    pub def: NetworkDef,
    /// One of `vxdp_common::mode`.
    pub mode: u32,
    /// The IPv4 `<ip>`; `None` only in a very isolated network (or a
    /// route/open network with IPv6 only).
    pub ipv4: Option<Ipv4Plan>,
    /// The IPv6 `<ip>` (address on the bridge, prefix).
    pub ipv6: Option<(Ipv6Addr, u8)>,
    pub nat_addresses: Option<(Ipv4Addr, Ipv4Addr)>,
    pub nat_ports: (u16, u16),
}

/// The name before this version realized other modes than NAT.
pub type NatPlan = NetworkPlan;

impl NetworkPlan {
    /// The mode as `net-list` and the state records show it.
    pub fn mode_name(&self) -> &'static str {
        mode_name(self.mode, self.ipv4.is_some() || self.ipv6.is_some())
    }
}

/// `nat`, `route`, `open`, `isolated`, or `very-isolated` (isolated without
/// any `<ip>`).
pub fn mode_name(m: u32, has_ip: bool) -> &'static str {
    match m {
        mode::NAT => "nat",
        mode::ROUTE => "route",
        mode::OPEN => "open",
        mode::BRIDGE => "bridge",
        m if crate::modes::direct::mode_name(m).is_some() => {
            crate::modes::direct::mode_name(m).unwrap_or_default()
        }
        _ if has_ip => "isolated",
        _ => "very-isolated",
    }
}

fn invalid(file: &str, element: &str, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        file: file.into(),
        element: element.into(),
        reason: reason.into(),
    }
}

fn not_supported(file: &str, element: &str, what: impl Into<String>) -> NetworkError {
    NetworkError::NotSupported {
        file: file.into(),
        element: element.into(),
        what: what.into(),
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

fn prefix_mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix as u32)
    }
}

/// Parses and checks a definition for what this version of vxdp realizes.
/// This is the one place that decides which modes and features are
/// supported; anything else is refused by name ("not supported yet").
///
/// Realized: `<forward mode='nat'>` (one IPv4 `<ip>`, optionally one IPv6
/// `<ip>`: routed, or masqueraded with `<nat ipv6='yes'>`), `mode='route'` and
/// `mode='open'` (one IPv4 and/or one IPv6 `<ip>`), no `<forward>`
/// (isolated; without `<ip>`: very isolated), host bridge, and the direct
/// modes (bridge without `<bridge name>`, vepa, private, passthrough).
///
/// `net-define` accepts every valid definition; `net-start`, `net-create`
/// and `net-validate` refuse what this function refuses.
pub fn plan(xml_text: &str, file: &str) -> Result<NetworkPlan, NetworkError> {
    plan_def(xml::parse_network(xml_text, file)?, file)
}

/// [`plan`] for a parsed definition: the one place that says which parts of
/// a valid definition vxdp can realize.
pub fn check_supported(def: &NetworkDef, file: &str) -> Result<(), NetworkError> {
    plan_def(def.clone(), file).map(|_| ())
}

/// [`plan`] for a parsed definition.
pub fn plan_def(def: NetworkDef, file: &str) -> Result<NetworkPlan, NetworkError> {
    let direct = crate::modes::direct::direct_mode(&def);
    // A direct network's <interface dev> children are its device pool.
    if let Some(what) = xml::unsupported_features(&def)
        .into_iter()
        .find(|w| direct.is_none() || w != "/network/forward/interface")
    {
        return Err(not_supported(
            file,
            &what,
            format!("<{}>", what.rsplit('/').next().unwrap_or(&what)),
        ));
    }
    let net_mode = match def.forward.as_ref().map(|f| f.mode) {
        _ if direct.is_some() => {
            crate::modes::direct::check(&def, file)?;
            direct.unwrap_or_default()
        }
        None => mode::ISOLATED,
        Some(ForwardMode::Nat) => mode::NAT,
        Some(ForwardMode::Route) => mode::ROUTE,
        Some(ForwardMode::Open) => mode::OPEN,
        // Without <bridge name> it is direct bridge mode (above).
        Some(ForwardMode::Bridge) => mode::BRIDGE,
        Some(other) => {
            return Err(not_supported(
                file,
                "/network/forward@mode",
                format!(
                    "<forward mode='{}'> (nat, route, open, isolated, host bridge and direct networks so far)",
                    other.as_str()
                ),
            ));
        }
    };
    let forward = def.forward.as_ref();
    let v4: Vec<_> = def.ips.iter().filter(|ip| ip.address.is_ipv4()).collect();
    let v6: Vec<_> = def.ips.iter().filter(|ip| ip.address.is_ipv6()).collect();
    if v4.len() > 1 {
        return Err(not_supported(
            file,
            "/network/ip[2]",
            "more than one IPv4 <ip>",
        ));
    }
    if v6.len() > 1 {
        return Err(not_supported(
            file,
            "/network/ip",
            "more than one IPv6 <ip>",
        ));
    }
    let ipv4 = match v4.first() {
        Some(ip) => {
            let IpAddr::V4(gateway) = ip.address else {
                unreachable!("filtered to IPv4")
            };
            if ip.prefix > 30 {
                return Err(invalid(
                    file,
                    "/network/ip@prefix",
                    format!("prefix /{} leaves no room for guests", ip.prefix),
                ));
            }
            let subnet = Ipv4Addr::from(u32::from(gateway) & prefix_mask(ip.prefix));
            Some(Ipv4Plan {
                gateway,
                prefix: ip.prefix,
                subnet,
            })
        }
        None => None,
    };
    let ipv6 = match v6.first() {
        Some(ip) => {
            let IpAddr::V6(addr) = ip.address else {
                unreachable!("filtered to IPv6")
            };
            if ip.prefix > 126 {
                return Err(invalid(
                    file,
                    "/network/ip@prefix",
                    format!("prefix /{} leaves no room for guests", ip.prefix),
                ));
            }
            Some((addr, ip.prefix))
        }
        None => None,
    };
    match net_mode {
        mode::NAT if ipv4.is_none() => {
            return Err(invalid(
                file,
                "/network/ip",
                "a NAT network needs an IPv4 <ip>",
            ));
        }
        mode::ROUTE | mode::OPEN if ipv4.is_none() && ipv6.is_none() => {
            return Err(invalid(
                file,
                "/network/ip",
                format!("a {} network needs an <ip>", mode_name(net_mode, false)),
            ));
        }
        _ => {}
    }
    if net_mode == mode::BRIDGE && !def.ips.is_empty() {
        return Err(invalid(
            file,
            "/network/ip",
            "a host bridge network has no <ip>: the host's bridge is configured outside libvirt/vxdp",
        ));
    }
    if def.mtu.is_some() {
        return Err(not_supported(file, "/network/mtu", "<mtu>"));
    }
    // The guest services' configuration is checked now, before any host change.
    dnsmasq::check(&def, file)?;
    let nat = forward.and_then(|f| f.nat.as_ref());
    Ok(NetworkPlan {
        mode: net_mode,
        ipv4,
        ipv6,
        nat_addresses: nat.and_then(|n| n.addresses),
        nat_ports: nat.and_then(|n| n.ports).unwrap_or((1024, 65535)),
        def,
    })
}

fn overlaps(a: Ipv4Addr, ap: u8, b: Ipv4Addr, bp: u8) -> bool {
    let p = ap.min(bp);
    u32::from(a) & prefix_mask(p) == u32::from(b) & prefix_mask(p)
}

/// A locally administered MAC in libvirt's 52:54:00 prefix, derived from
/// the network name so restarts keep it.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    [0x52, 0x54, 0x00, (h >> 16) as u8, (h >> 8) as u8, h as u8]
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], NetworkError> {
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(NetworkError::BadMac(s.into()));
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| NetworkError::BadMac(s.into()))?;
    }
    Ok(mac)
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn write_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(path, value).map_err(|source| NetworkError::Sysctl {
        path: path.into(),
        source,
    })
}

/// A network's entry in `VXDP_NETWORKS`, from its plan and what the host
/// gave it: the bridge (ifindex, MAC), the uplink (0: none) and the NAT
/// addresses (unspecified outside NAT mode). `net-start` writes it and
/// reconcile writes it back when the map holds anything else.
pub fn network_config(
    plan: &NetworkPlan,
    bridge_ifindex: u32,
    bridge_mac: [u8; 6],
    uplink_ifindex: u32,
    (nat_first, nat_last): (Ipv4Addr, Ipv4Addr),
) -> NetworkConfig {
    let mut flags = network_flags::ACTIVE;
    if plan.ipv4.is_some() || plan.ipv6.is_some() {
        flags |= network_flags::HOST_ADDRESS;
    }
    if plan.def.forward.as_ref().is_some_and(|f| f.dev.is_some()) {
        flags |= network_flags::FORWARD_DEV;
    }
    let v4 = plan.ipv4.unwrap_or(Ipv4Plan {
        gateway: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        subnet: Ipv4Addr::UNSPECIFIED,
    });
    NetworkConfig {
        mode: plan.mode,
        flags,
        subnet: u32::from_ne_bytes(v4.subnet.octets()),
        netmask: if plan.ipv4.is_some() {
            prefix_mask(v4.prefix).to_be()
        } else {
            0
        },
        gateway: u32::from_ne_bytes(v4.gateway.octets()),
        nat_addr_first: u32::from_ne_bytes(nat_first.octets()),
        nat_addr_last: u32::from_ne_bytes(nat_last.octets()),
        nat_port_min: plan.nat_ports.0,
        nat_port_max: plan.nat_ports.1,
        uplink_ifindex,
        bridge_ifindex,
        bridge_mac,
        _pad0: [0; 2],
    }
}

/// `NetworkConfig::flags` a host bridge adds: what the operator's bridge
/// does itself (VLAN filtering, netfilter calls, isolated ports) must not
/// be bypassed, so frames between guests then cross it.
pub async fn host_bridge_flags(
    nl: &Netlink,
    bridge: &crate::host::netlink::LinkInfo,
) -> Result<u32, NetworkError> {
    let isolated_port = nl
        .links()
        .await?
        .iter()
        .any(|l| l.master == Some(bridge.index) && l.bridge_port_isolated);
    Ok(if bridge.bridge_filters || isolated_port {
        network_flags::BRIDGE_FILTERS
    } else {
        0
    })
}

/// What `VXDP_SUBNETS`/`VXDP_SUBNETS6` map a network's prefixes to.
pub fn subnet_owner(id: u32, plan: &NetworkPlan) -> SubnetOwner {
    SubnetOwner {
        network_id: id,
        mode: plan.mode,
    }
}

/// The network's IPv4 prefix as `VXDP_SUBNETS` keys it (address, length).
pub fn subnet4_key(plan: &NetworkPlan) -> Option<(u32, u32)> {
    plan.ipv4
        .map(|v4| (u32::from_ne_bytes(v4.subnet.octets()), v4.prefix as u32))
}

/// The network's IPv6 prefix as `VXDP_SUBNETS6` keys it (address, length).
pub fn subnet6_key(plan: &NetworkPlan) -> Option<([u8; 16], u32)> {
    plan.ipv6.map(|(a, p)| {
        (
            Ipv6Addr::from(u128::from(a) & prefix_mask6(p)).octets(),
            p as u32,
        )
    })
}

/// Writes the network's subnet entries, IPv4 and IPv6 (those it has).
pub fn write_subnets(maps: &Maps, id: u32, plan: &NetworkPlan) -> Result<(), DataplaneError> {
    let owner = subnet_owner(id, plan);
    if let Some((a, p)) = subnet4_key(plan) {
        maps.set_subnet(a, p, &owner)?;
    }
    if let Some((a, p)) = subnet6_key(plan) {
        maps.set_subnet6(a, p, &owner)?;
    }
    Ok(())
}

/// Gives a bridge vxdp created (never a host bridge) its host side: the
/// network's addresses, or — without an IPv6 `<ip>` — `disable_ipv6=1`
/// (a very isolated network's bridge has no address at all), then sets it
/// up. Used by `net-start` and by reconcile when it recreates the bridge.
pub async fn configure_bridge(
    nl: &Netlink,
    plan: &NetworkPlan,
    bridge: &str,
    ifindex: u32,
) -> Result<(), NetworkError> {
    if plan.ipv6.is_none() {
        // Like libvirt: without an IPv6 <ip> the host has no IPv6 address
        // (not even link-local) on the bridge.
        write_sysctl(
            &format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"),
            "1",
        )?;
    }
    if let Some(v4) = plan.ipv4 {
        nl.add_address(ifindex, IpAddr::V4(v4.gateway), v4.prefix)
            .await?;
    }
    if let Some((a, p)) = plan.ipv6 {
        nl.add_address(ifindex, IpAddr::V6(a), p).await?;
    }
    nl.set_up(ifindex).await?;
    Ok(())
}

/// Whether a guest port's device takes frames redirected by XDP. A tap
/// does (`tun_xdp_xmit`, while a reader has it open; a refusal is counted
/// as `xdp_redirect_refused`). A veth drops them unless its peer has NAPI
/// (an XDP program or GRO on the guest's end), which vxdp does not
/// control; macvtap and the rest have no XDP transmit. Those get frames
/// from the uplink through its TC program instead.
pub fn takes_xdp_frames(link: &crate::host::netlink::LinkInfo) -> bool {
    link.kind.as_deref() == Some("tun")
}

/// The endpoint entry of a guest port: its MAC when known, its IPv4
/// address when known (`--ip`, else a static `<host>` or a current lease),
/// and whether the device takes XDP frames ([`takes_xdp_frames`]).
pub fn port_endpoint(
    state_dir: &std::path::Path,
    rec: &NetworkRecord,
    port: &PortRecord,
    xdp_frames: bool,
) -> Result<Endpoint, NetworkError> {
    let mac = port.mac.as_deref().map(parse_mac).transpose()?;
    let ipv4 = port
        .ipv4
        .or_else(|| mac.and_then(|m| dnsmasq::guest_ipv4(state_dir, rec, &m)));
    let mut flags = if mac.is_some() {
        endpoint_flags::MAC_KNOWN
    } else {
        0
    };
    if ipv4.is_some() {
        flags |= endpoint_flags::IPV4_KNOWN;
    }
    if port.ipv6.is_some() {
        flags |= endpoint_flags::IPV6_KNOWN;
    }
    if xdp_frames {
        flags |= endpoint_flags::XDP_FRAMES;
    }
    if port.services_allowed {
        flags |= endpoint_flags::SERVICES_ALLOWED;
    }
    Ok(Endpoint {
        network_id: rec.id,
        flags,
        mac: mac.unwrap_or_default(),
        ipv4: ipv4.map_or(0, |a| u32::from_ne_bytes(a.octets())),
        ipv6: port.ipv6.map_or([0; 16], |a| a.octets()),
        ..Endpoint::default()
    })
}

/// The first step of every start: the dataplane loaded (or adopted); the
/// first network's start unloads it again on failure and forgets a stale
/// host record (a crash would otherwise restore a wrong value later).
pub fn load_dataplane(
    ctx: &Context,
    state: &StateDir,
    name: &str,
    first_network: bool,
    undo: &mut Undo,
) -> Result<(), NetworkError> {
    log::info!(
        "{name}: loading the dataplane under {}",
        ctx.pins.root.display()
    );
    if dataplane::ensure_loaded(&ctx.pins, &ctx.load)? && first_network {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                let _ = dataplane::unload(&pins);
            })
        });
    }
    if first_network {
        state.remove_host()?;
    }
    Ok(())
}

/// One undo action: given the netlink handle, a future that reverts one change.
type UndoStep = Box<dyn FnOnce(&Netlink) -> futures::future::BoxFuture<'_, ()>>;

/// Undo actions for a partly applied change, run in reverse on failure.
#[derive(Default)]
pub struct Undo {
    steps: Vec<UndoStep>,
}

impl Undo {
    pub fn push<F>(&mut self, f: F)
    where
        F: FnOnce(&Netlink) -> futures::future::BoxFuture<'_, ()> + 'static,
    {
        self.steps.push(Box::new(f));
    }
    pub async fn run(self, nl: &Netlink) {
        for step in self.steps.into_iter().rev() {
            step(nl).await;
        }
    }
}

const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Records a sysctl's value before vxdp first changes it, so the last
/// network to stop can restore it.
fn remember_sysctl(
    state: &StateDir,
    path: &str,
    pick: impl Fn(&mut HostRecord) -> &mut Option<String>,
) -> Result<(), NetworkError> {
    let mut host = state.host()?;
    if pick(&mut host).is_none() {
        let before = std::fs::read_to_string(path).map_err(|source| NetworkError::Sysctl {
            path: path.into(),
            source,
        })?;
        *pick(&mut host) = Some(before.trim().to_string());
        state.save_host(&host)?;
    }
    Ok(())
}

/// Starts a network from its definition (`vxdp net-create`).
pub async fn start(
    ctx: &Context,
    xml_text: &str,
    file: &str,
) -> Result<NetworkRecord, NetworkError> {
    let plan = plan(xml_text, file)?;
    if vxdp_common::mode_direct(plan.mode) {
        return crate::modes::direct::start(ctx, &plan, file).await;
    }
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let running = state.networks()?;
    let name = plan.def.name.clone();
    if running.iter().any(|r| r.name == name) {
        return Err(NetworkError::AlreadyStarted(name));
    }
    if let Some(v4) = plan.ipv4
        && let Some(other) = running.iter().find(|r| {
            !r.gateway.is_unspecified() && overlaps(r.subnet, r.prefix, v4.subnet, v4.prefix)
        })
    {
        return Err(invalid(
            file,
            "/network/ip@address",
            format!(
                "subnet {}/{} overlaps network '{}' ({}/{})",
                v4.subnet, v4.prefix, other.name, other.subnet, other.prefix
            ),
        ));
    }
    if let Some((a, p)) = plan.ipv6
        && let Some(other) = running.iter().find(|r| {
            r.ipv6.is_some_and(|(b, q)| {
                let m = prefix_mask6(p.min(q));
                u128::from(a) & m == u128::from(b) & m
            })
        })
    {
        return Err(invalid(
            file,
            "/network/ip@address",
            format!("subnet {a}/{p} overlaps network '{}'", other.name),
        ));
    }
    let bridge = match &plan.def.bridge.name {
        Some(b) if plan.mode == mode::BRIDGE => {
            let link = nl.link_by_name(b).await?.ok_or_else(|| {
                invalid(
                    file,
                    "/network/bridge@name",
                    format!("bridge {b} does not exist (host bridge mode uses an existing bridge)"),
                )
            })?;
            if link.kind.as_deref() != Some("bridge") {
                return Err(invalid(
                    file,
                    "/network/bridge@name",
                    format!("{b} is not a bridge"),
                ));
            }
            if let Some(other) = running.iter().find(|r| r.bridge == *b) {
                return Err(invalid(
                    file,
                    "/network/bridge@name",
                    format!("bridge {b} is already used by network '{}'", other.name),
                ));
            }
            b.clone()
        }
        Some(b) => {
            if nl.link_by_name(b).await?.is_some() {
                return Err(invalid(
                    file,
                    "/network/bridge@name",
                    format!("interface {b} already exists"),
                ));
            }
            b.clone()
        }
        None => {
            let mut n = 0;
            loop {
                let candidate = format!("virbr{n}");
                if nl.link_by_name(&candidate).await?.is_none()
                    && running.iter().all(|r| r.bridge != candidate)
                {
                    break candidate;
                }
                n += 1;
            }
        }
    };
    // NAT needs an uplink; route/open use <forward dev> or the default
    // route's interface when there is one; isolated networks take the
    // default route's interface only to refuse inbound traffic there; a host
    // bridge holds its uplink itself.
    let uplink = if plan.mode == mode::BRIDGE {
        None
    } else {
        match plan.def.forward.as_ref().and_then(|f| f.dev.clone()) {
            Some(dev) => Some(nl.link_by_name(&dev).await?.ok_or_else(|| {
                invalid(
                    file,
                    "/network/forward@dev",
                    format!("interface {dev} does not exist"),
                )
            })?),
            None => match nl.default_route_v4().await? {
                Some(route) => nl.link_by_index(route.oif).await?,
                None => None,
            },
        }
    };
    if plan.mode == mode::NAT && uplink.is_none() {
        return Err(NetworkError::NoUplink);
    }
    let (nat_first, nat_last) = match (plan.mode, plan.nat_addresses, &uplink) {
        (mode::NAT, Some(range), _) => range,
        (mode::NAT, None, Some(up)) => {
            let addrs = nl.ipv4_addresses(up.index).await?;
            let (a, _) = *addrs
                .first()
                .ok_or_else(|| NetworkError::UplinkWithoutAddress(up.name.clone()))?;
            (a, a)
        }
        _ => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
    };
    if (mode_routes(plan.mode) || plan.mode == mode::NAT) && plan.ipv6.is_some() {
        crate::modes::nat6::check_ipv6_forwarding(&nl).await?;
    }
    let nat6_addr = match &uplink {
        Some(up) if crate::modes::nat6::masquerades(&plan) => {
            Some(crate::modes::nat6::uplink_address(&nl, up.index, &up.name).await?)
        }
        _ => None,
    };
    let id = (1..MAX_NETWORKS)
        .find(|id| running.iter().all(|r| r.id != *id))
        .ok_or(NetworkError::TooManyNetworks)?;

    let mut undo = Undo::default();
    let result = apply_start(
        ctx,
        &state,
        &nl,
        &plan,
        &bridge,
        uplink.as_ref(),
        id,
        (nat_first, nat_last),
        nat6_addr,
        running.is_empty(),
        &mut undo,
    )
    .await;
    match result {
        Ok(rec) => Ok(rec),
        Err(e) => {
            undo.run(&nl).await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_start(
    ctx: &Context,
    state: &StateDir,
    nl: &Netlink,
    plan: &NetworkPlan,
    bridge: &str,
    uplink: Option<&crate::host::netlink::LinkInfo>,
    id: u32,
    (nat_first, nat_last): (Ipv4Addr, Ipv4Addr),
    nat6_addr: Option<Ipv6Addr>,
    first_network: bool,
    undo: &mut Undo,
) -> Result<NetworkRecord, NetworkError> {
    let name = plan.def.name.clone();
    let mode_name = plan.mode_name();
    load_dataplane(ctx, state, &name, first_network, undo)?;
    // bpf_fib_lookup only forwards with forwarding on; the programs, not a
    // firewall, decide what may cross. Isolated networks forward nothing
    // and leave the setting alone, as libvirt does.
    let forward_v4 = mode_routes(plan.mode) || plan.mode == mode::NAT;
    // A NAT network's IPv6 is routed or NATed by the programs: forwarded too.
    let forward_v6 = (mode_routes(plan.mode) || plan.mode == mode::NAT) && plan.ipv6.is_some();
    if forward_v4 {
        remember_sysctl(state, IP_FORWARD, |h| &mut h.ip_forward_before)?;
    }
    if forward_v6 {
        remember_sysctl(state, IPV6_FORWARD, |h| &mut h.ipv6_forward_before)?;
    }
    if first_network {
        // The values to restore are captured now: the undo runs while this
        // process still holds the state directory's lock, so it must not
        // open the state directory again (flock would wait for ourselves).
        let host = state.host()?;
        let host_file = ctx.state_dir.join("host.json");
        undo.push(move |_| {
            Box::pin(async move {
                if let Some(v) = host.ip_forward_before {
                    let _ = write_sysctl(IP_FORWARD, &v);
                }
                if let Some(v) = host.ipv6_forward_before {
                    let _ = write_sysctl(IPV6_FORWARD, &v);
                }
                let _ = std::fs::remove_file(&host_file);
            })
        });
    }
    if forward_v4 {
        write_sysctl(IP_FORWARD, "1")?;
    }
    if forward_v6 {
        write_sysctl(IPV6_FORWARD, "1")?;
    }

    let mut bridge_flags = 0;
    let (bridge_ifindex, mac) = if plan.mode == mode::BRIDGE {
        // The operator's bridge: used as it is, never changed or removed.
        let link = nl
            .link_by_name(bridge)
            .await?
            .ok_or_else(|| NetworkError::NoSuchInterface(bridge.into()))?;
        log::info!(
            "{name}: using host bridge {bridge} (ifindex {})",
            link.index
        );
        bridge_flags = host_bridge_flags(nl, &link).await?;
        if bridge_flags & network_flags::BRIDGE_FILTERS != 0 {
            log::info!(
                "{name}: {bridge} filters VLANs, calls netfilter or has isolated ports: frames between guests stay on it"
            );
        }
        (link.index, link.mac.unwrap_or_default())
    } else {
        log::info!("{name}: creating {mode_name} bridge {bridge}");
        let mac = plan.def.mac.unwrap_or_else(|| bridge_mac(&name));
        let bridge_ifindex = nl
            .create_bridge(
                bridge,
                Some(mac),
                plan.def.bridge.stp,
                plan.def.bridge.delay * 100,
            )
            .await?;
        undo.push(move |nl| {
            Box::pin(async move {
                let _ = nl.delete_link(bridge_ifindex).await;
            })
        });
        configure_bridge(nl, plan, bridge, bridge_ifindex).await?;
        (bridge_ifindex, mac)
    };

    let maps = Maps::open(&ctx.pins)?;
    let mut cfg = network_config(
        plan,
        bridge_ifindex,
        mac,
        uplink.map_or(0, |u| u.index),
        (nat_first, nat_last),
    );
    cfg.flags |= bridge_flags;
    maps.reset_counters(id)?;
    maps.set_network(id, &cfg)?;
    {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) {
                    let _ = m.set_network(id, &NetworkConfig::default());
                }
            })
        });
    }
    // The undo comes first: removing an entry that was never written is
    // harmless, and a failure between the two writes still removes the first.
    let (v4_key, v6_key) = (subnet4_key(plan), subnet6_key(plan));
    {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) {
                    if let Some((a, p)) = v4_key {
                        let _ = m.remove_subnet(a, p);
                    }
                    if let Some((a, p)) = v6_key {
                        let _ = m.remove_subnet6(a, p);
                    }
                }
            })
        });
    }
    write_subnets(&maps, id, plan)?;
    if let Some(cfg) = crate::modes::nat6::config(plan, nat6_addr) {
        let pins = ctx.pins.clone();
        undo.push(move |_| {
            Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) {
                    let _ = m.set_nat6(id, &vxdp_common::Nat6Config::default());
                }
            })
        });
        maps.set_nat6(id, &cfg)?;
    }
    let v4 = plan.ipv4.unwrap_or(Ipv4Plan {
        gateway: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        subnet: Ipv4Addr::UNSPECIFIED,
    });

    if let Some(uplink) = uplink {
        log::info!(
            "{name}: attaching XDP to uplink {} (ifindex {})",
            uplink.name,
            uplink.index
        );
        let uplink_shared = crate::modes::direct::device_used(&state.networks()?, uplink.index);
        dataplane::attach_uplink(&ctx.pins, uplink.index, &uplink.name)?;
        if !uplink_shared {
            let (pins, index) = (ctx.pins.clone(), uplink.index);
            undo.push(move |_| {
                Box::pin(async move {
                    let _ = dataplane::detach_uplink(&pins, index);
                })
            });
        }
    }

    if dnsmasq::wanted(&plan.def, &name)? {
        log::info!("{name}: starting dnsmasq (DHCP/DNS/TFTP) on {bridge}");
        let inv = dnsmasq::Invocation::current(&ctx.state_dir, &ctx.pins.root)?;
        dnsmasq::start(&inv, &plan.def, bridge, &name)?;
        let state_dir = ctx.state_dir.clone();
        let net = name.clone();
        undo.push(move |_| {
            Box::pin(async move {
                let _ = dnsmasq::stop(&state_dir, &net);
            })
        });
    }

    let rec = NetworkRecord {
        name: name.clone(),
        id,
        mode: mode_name.into(),
        bridge: bridge.into(),
        bridge_ifindex,
        uplink: uplink.map_or_else(String::new, |u| u.name.clone()),
        uplink_ifindex: uplink.map_or(0, |u| u.index),
        subnet: v4.subnet,
        prefix: v4.prefix,
        gateway: v4.gateway,
        nat_first,
        nat_last,
        nat_ports: plan.nat_ports,
        ports: Vec::new(),
        xml: xml::to_xml(&plan.def),
        ipv6: plan.ipv6,
        direct_nics: Vec::new(),
        nat6: nat6_addr,
    };
    state.save_network(&rec)?;
    if plan.mode == mode::NAT {
        log::info!(
            "{name}: started (network id {id}, NAT to {nat_first}, ports {}-{})",
            plan.nat_ports.0,
            plan.nat_ports.1
        );
        match (nat6_addr, plan.ipv6) {
            (Some(a), _) => log::info!("{name}: IPv6 masqueraded (NAT66) to {a}"),
            (None, Some(_)) => {
                log::info!("{name}: IPv6 routed without NAT (no <nat ipv6='yes'>)")
            }
            _ => {}
        }
    } else {
        log::info!("{name}: started (network id {id}, {mode_name})");
    }
    Ok(rec)
}

/// Stops a network (`vxdp net-destroy`): detaches its ports, removes its
/// map entries, conntrack flows and bridge; the last network to go takes the
/// programs, maps and the forwarding settings with it.
pub async fn stop(ctx: &Context, name: &str) -> Result<(), NetworkError> {
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let rec = state
        .network(name)?
        .ok_or_else(|| NetworkError::NotStarted(name.into()))?;
    dnsmasq::stop(&ctx.state_dir, name)?;
    for port in &rec.ports {
        unplug(ctx, &nl, &rec, port).await?;
    }
    if let Ok(maps) = Maps::open(&ctx.pins) {
        maps.set_network(rec.id, &NetworkConfig::default())?;
        if !rec.gateway.is_unspecified() {
            maps.remove_subnet(u32::from_ne_bytes(rec.subnet.octets()), rec.prefix as u32)?;
        }
        if let Some((a, p)) = rec.ipv6 {
            maps.remove_subnet6(
                Ipv6Addr::from(u128::from(a) & prefix_mask6(p)).octets(),
                p as u32,
            )?;
            maps.set_nat6(rec.id, &vxdp_common::Nat6Config::default())?;
        }
        maps.flush_conntrack(rec.id)?;
    }
    let others: Vec<_> = state
        .networks()?
        .into_iter()
        .filter(|r| r.name != rec.name)
        .collect();
    if rec.uplink_ifindex != 0 && !crate::modes::direct::device_used(&others, rec.uplink_ifindex) {
        dataplane::detach_uplink(&ctx.pins, rec.uplink_ifindex)?;
    }
    crate::modes::direct::stop_nics(&ctx.pins, &rec, &others)?;
    if rec.mode != mode_name(mode::BRIDGE, false)
        && rec.bridge_ifindex != 0
        && nl.link_by_index(rec.bridge_ifindex).await?.is_some()
    {
        nl.delete_link(rec.bridge_ifindex).await?;
    }
    state.remove_network(&rec.name)?;
    if others.is_empty() {
        dataplane::unload(&ctx.pins)?;
        let host = state.host()?;
        if let Some(before) = host.ip_forward_before {
            write_sysctl(IP_FORWARD, &before)?;
        }
        if let Some(before) = host.ipv6_forward_before {
            write_sysctl(IPV6_FORWARD, &before)?;
        }
        state.remove_host()?;
    }
    log::info!("{name}: stopped");
    Ok(())
}

async fn unplug(
    ctx: &Context,
    nl: &Netlink,
    _rec: &NetworkRecord,
    port: &PortRecord,
) -> Result<(), NetworkError> {
    dataplane::detach(&ctx.pins.tc_link(port.ifindex))?;
    if let Ok(maps) = Maps::open(&ctx.pins) {
        maps.remove_endpoint(port.ifindex)?;
        crate::modes::direct::unplug(&maps, port.ifindex)?;
    }
    if nl.link_by_index(port.ifindex).await?.is_some() {
        nl.set_nomaster(port.ifindex).await?;
        if port.created_tap {
            // RTM_DELLINK, not TUNSETPERSIST: it also works while the
            // hypervisor still holds the tap open.
            nl.delete_link(port.ifindex).await?;
        }
    }
    Ok(())
}

/// Plugs an existing interface (tap or veth end) into a started network:
/// enslaves it to the bridge and attaches the guest-port program.
pub async fn attach_interface(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Option<&str>,
) -> Result<PortRecord, NetworkError> {
    attach_port(ctx, network, dev, mac, &[], false, false).await
}

/// [`attach_interface`] with the guest's static addresses (`--ip`, at most
/// one IPv4 and one IPv6), which then are the only source addresses the
/// guest may send from (IPv6 link-local aside).
pub async fn attach_interface_with(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Option<&str>,
    ips: &[String],
    services_allowed: bool,
) -> Result<PortRecord, NetworkError> {
    attach_port(ctx, network, dev, mac, ips, false, services_allowed).await
}

/// The guest's static addresses from `--ip` values: at most one IPv4 in
/// the network's IPv4 subnet and one IPv6 in its IPv6 prefix (when the
/// network has them), never the host's own.
fn static_addresses(
    rec: &NetworkRecord,
    ips: &[String],
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), NetworkError> {
    let (mut v4, mut v6) = (None, None);
    for text in ips {
        let bad = |reason: String| NetworkError::BadIp {
            ip: text.clone(),
            reason,
        };
        match text
            .parse::<IpAddr>()
            .map_err(|_| bad("not an IPv4 or IPv6 address".into()))?
        {
            IpAddr::V4(a) => {
                if v4.replace(a).is_some() {
                    return Err(bad(
                        "a second IPv4 address (give one IPv4 and one IPv6 at most)".into(),
                    ));
                }
                if !rec.gateway.is_unspecified() {
                    let m = prefix_mask(rec.prefix);
                    if u32::from(a) & m != u32::from(rec.subnet) || a == rec.gateway {
                        return Err(bad(format!(
                            "not a guest address of network '{}' ({}/{}, host {})",
                            rec.name, rec.subnet, rec.prefix, rec.gateway
                        )));
                    }
                }
            }
            IpAddr::V6(a) => {
                if v6.replace(a).is_some() {
                    return Err(bad(
                        "a second IPv6 address (give one IPv4 and one IPv6 at most)".into(),
                    ));
                }
                if a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local() {
                    return Err(bad("not a global unicast IPv6 address".into()));
                }
                if let Some((host, p)) = rec.ipv6
                    && (u128::from(a) & prefix_mask6(p) != u128::from(host) & prefix_mask6(p)
                        || a == host)
                {
                    return Err(bad(format!(
                        "not a guest address of network '{}' ({host}/{p} is the host's)",
                        rec.name
                    )));
                }
            }
        }
    }
    Ok((v4, v6))
}

/// [`attach_interface_with`]; `created_tap` records that vxdp created `dev`
/// and removes it when the port is unplugged; `services_allowed` lets the
/// guest serve its network (RA, DHCP server).
pub async fn attach_port(
    ctx: &Context,
    network: &str,
    dev: &str,
    mac: Option<&str>,
    ips: &[String],
    created_tap: bool,
    services_allowed: bool,
) -> Result<PortRecord, NetworkError> {
    let mac_bytes = mac.map(parse_mac).transpose()?;
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let mut rec = state
        .network(network)?
        .ok_or_else(|| NetworkError::NotStarted(network.into()))?;
    let (ipv4, ipv6) = static_addresses(&rec, ips)?;
    let link = nl
        .link_by_name(dev)
        .await?
        .ok_or_else(|| NetworkError::NoSuchInterface(dev.into()))?;
    if let Some(other) = state
        .networks()?
        .into_iter()
        .find(|r| r.ports.iter().any(|p| p.ifindex == link.index))
    {
        return Err(NetworkError::PortInUse {
            dev: dev.into(),
            network: other.name,
        });
    }
    let port = PortRecord {
        dev: dev.into(),
        ifindex: link.index,
        mac: mac_bytes.map(|m| format_mac(&m)),
        ipv4,
        ipv6,
        created_tap,
        services_allowed,
    };
    let mut undo = Undo::default();
    let res: Result<(), NetworkError> = async {
        // The static address (--ip) or else a static <host> or a current
        // DHCP lease gives the guest's address.
        let endpoint = port_endpoint(&ctx.state_dir, &rec, &port, takes_xdp_frames(&link))?;
        // The endpoint entry exists before the program can see a packet.
        let maps = Maps::open(&ctx.pins)?;
        maps.set_endpoint(link.index, &endpoint)?;
        {
            let pins = ctx.pins.clone();
            let ifindex = link.index;
            undo.push(move |_| {
                Box::pin(async move {
                    if let Ok(m) = Maps::open(&pins) {
                        let _ = m.remove_endpoint(ifindex);
                    }
                })
            });
        }
        if crate::modes::direct::is_direct(&rec) {
            // No bridge: the port joins its device's guest ports.
            let nic =
                crate::modes::direct::plug(&ctx.pins, &maps, &rec, link.index, dev, &mut undo)?;
            log::info!("{network}: {dev} on device {nic}");
        } else {
            nl.set_master(link.index, rec.bridge_ifindex).await?;
            let ifindex = link.index;
            undo.push(move |nl| {
                Box::pin(async move {
                    let _ = nl.set_nomaster(ifindex).await;
                })
            });
        }
        dataplane::attach_guest_port(&ctx.pins, link.index, dev)?;
        nl.set_up(link.index).await?;
        rec.ports.push(port.clone());
        state.save_network(&rec)?;
        Ok(())
    }
    .await;
    if let Err(e) = res {
        dataplane::detach(&ctx.pins.tc_link(link.index)).ok();
        undo.run(&nl).await;
        return Err(e);
    }
    log::info!("{network}: plugged {dev} (ifindex {})", link.index);
    Ok(port)
}

/// Unplugs an interface from a network.
pub async fn detach_interface(ctx: &Context, network: &str, dev: &str) -> Result<(), NetworkError> {
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let mut rec = state
        .network(network)?
        .ok_or_else(|| NetworkError::NotStarted(network.into()))?;
    let pos =
        rec.ports
            .iter()
            .position(|p| p.dev == dev)
            .ok_or_else(|| NetworkError::PortNotFound {
                dev: dev.into(),
                network: network.into(),
            })?;
    let port = rec.ports.remove(pos);
    unplug(ctx, &nl, &rec, &port).await?;
    state.save_network(&rec)?;
    log::info!("{network}: unplugged {dev}");
    Ok(())
}

/// The started networks.
pub fn list(ctx: &Context) -> Result<Vec<NetworkRecord>, NetworkError> {
    Ok(StateDir::open(&ctx.state_dir)?.networks()?)
}

pub fn find(ctx: &Context, name: &str) -> Result<NetworkRecord, NetworkError> {
    StateDir::open(&ctx.state_dir)?
        .network(name)?
        .ok_or_else(|| NetworkError::NotStarted(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(inner: &str) -> String {
        format!("<network><name>n</name>{inner}</network>")
    }

    #[test]
    fn plan_realizes_each_supported_mode() {
        let ip = "<ip address='192.168.150.1' prefix='24'/>";
        let cases = [
            (net(&format!("<forward mode='nat'/>{ip}")), mode::NAT, "nat"),
            (
                net(&format!("<forward mode='route'/>{ip}")),
                mode::ROUTE,
                "route",
            ),
            (
                net(&format!("<forward mode='open'/>{ip}")),
                mode::OPEN,
                "open",
            ),
            (net(ip), mode::ISOLATED, "isolated"),
            (net(""), mode::ISOLATED, "very-isolated"),
            (
                net("<bridge name='br0'/><forward mode='bridge'/>"),
                mode::BRIDGE,
                "bridge",
            ),
            (
                net("<forward mode='bridge' dev='eth0'/>"),
                mode::DIRECT_BRIDGE,
                "direct-bridge",
            ),
            (
                net("<forward mode='vepa'><interface dev='eth0'/></forward>"),
                mode::DIRECT_VEPA,
                "direct-vepa",
            ),
            (
                net(
                    "<forward mode='private'><interface dev='eth0'/><interface dev='eth1'/></forward>",
                ),
                mode::DIRECT_PRIVATE,
                "direct-private",
            ),
            (
                net("<forward mode='passthrough' dev='eth0'/>"),
                mode::DIRECT_PASSTHROUGH,
                "direct-passthrough",
            ),
        ];
        for (xml, m, name) in cases {
            let p = plan(&xml, "t.xml").unwrap_or_else(|e| panic!("{xml}: {e}"));
            assert_eq!((p.mode, p.mode_name()), (m, name), "{xml}");
        }
        let p = plan(
            &net("<forward mode='route'/><ip family='ipv6' address='2001:db8:5::1' prefix='64'/>"),
            "t.xml",
        )
        .unwrap();
        assert_eq!(p.ipv6, Some(("2001:db8:5::1".parse().unwrap(), 64)));
        assert!(p.ipv4.is_none());
        let p = plan(&net(""), "t.xml").unwrap();
        assert!(
            p.ipv4.is_none() && p.ipv6.is_none(),
            "very isolated: no address for the host"
        );
    }

    #[test]
    fn network_config_and_subnet_keys_follow_the_plan() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let none = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        let p = plan(&net("<forward mode='route' dev='up0'/><ip address='192.168.150.1' prefix='24'/><ip family='ipv6' address='2001:db8:5::1' prefix='64'/>"), "t.xml").unwrap();
        let c = network_config(&p, 7, mac, 2, none);
        assert_eq!(
            (c.mode, c.bridge_ifindex, c.uplink_ifindex, c.bridge_mac),
            (mode::ROUTE, 7, 2, mac)
        );
        assert_eq!(
            c.flags,
            network_flags::ACTIVE | network_flags::HOST_ADDRESS | network_flags::FORWARD_DEV
        );
        assert_eq!(
            (c.subnet, c.netmask),
            (
                u32::from_ne_bytes([192, 168, 150, 0]),
                u32::from_ne_bytes([255, 255, 255, 0])
            )
        );
        assert_eq!(
            subnet4_key(&p),
            Some((u32::from_ne_bytes([192, 168, 150, 0]), 24))
        );
        let (a6, p6) = subnet6_key(&p).unwrap();
        assert_eq!(
            (Ipv6Addr::from(a6), p6),
            ("2001:db8:5::".parse().unwrap(), 64),
            "IPv6 key is the masked prefix"
        );
        assert_eq!(
            subnet_owner(3, &p),
            SubnetOwner {
                network_id: 3,
                mode: mode::ROUTE
            }
        );

        // Very isolated: no address for the host, no subnet entries.
        let p = plan(&net(""), "t.xml").unwrap();
        let c = network_config(&p, 7, mac, 0, none);
        assert_eq!(
            (c.mode, c.flags, c.netmask, c.gateway),
            (mode::ISOLATED, network_flags::ACTIVE, 0, 0)
        );
        assert!(subnet4_key(&p).is_none() && subnet6_key(&p).is_none());

        // NAT: the addresses resolved at start are carried as given.
        let p = plan(
            &net("<forward mode='nat'/><ip address='192.168.150.1' prefix='24'/>"),
            "t.xml",
        )
        .unwrap();
        let nat = (
            "198.51.100.2".parse().unwrap(),
            "198.51.100.3".parse().unwrap(),
        );
        let c = network_config(&p, 7, mac, 2, nat);
        assert_eq!(
            (c.nat_addr_first, c.nat_addr_last),
            (
                u32::from_ne_bytes([198, 51, 100, 2]),
                u32::from_ne_bytes([198, 51, 100, 3])
            )
        );
        assert_eq!((c.nat_port_min, c.nat_port_max), (1024, 65535));
    }

    #[test]
    fn plan_refuses_unrealized_modes_by_name() {
        let cases = [
            (
                net("<forward mode='hostdev'><pf dev='eth0'/></forward>"),
                "/network/forward/pf",
                "not supported yet",
            ),
            (
                net(
                    "<forward mode='nat'><interface dev='eth0'/></forward><ip address='192.168.150.1' prefix='24'/>",
                ),
                "/network/forward/interface",
                "not supported yet",
            ),
            (
                net("<forward mode='vepa'/>"),
                "/network/forward",
                "needs a device",
            ),
            // Refused already by the definition checks (libvirt's own).
            (
                net("<forward mode='route'/>"),
                "/network/forward@mode",
                "has no <ip> address",
            ),
            (
                net("<forward mode='nat'/>"),
                "/network/forward@mode",
                "has no <ip> address",
            ),
        ];
        for (xml, element, words) in cases {
            let e = plan(&xml, "t.xml").expect_err(&xml).to_string();
            assert!(
                e.contains("t.xml") && e.contains(element) && e.contains(words),
                "{xml}: {e}"
            );
        }
    }
}

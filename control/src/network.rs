//! Starting and stopping networks on the host: a validated definition is
//! turned into a bridge, map entries and attached programs. Every step that
//! changes the host pushes its undo; if a later step fails, the undo stack
//! runs, so a failed start leaves nothing behind.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use vxdp_common::{
    Endpoint, NetworkConfig, SubnetOwner, endpoint_flags, mode, network_flags, MAX_NETWORKS,
};

use crate::{
    dataplane::{self, DataplaneError, LoadOptions, Maps, Pins},
    dnsmasq::{self, DnsmasqError},
    netlink::{Netlink, NetlinkError},
    state::{HostRecord, NetworkRecord, PortRecord, StateDir, StateError},
    xml::{self, ForwardMode, NetworkDef, XmlError, format_mac},
};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("{file}: {element}: not supported yet: {what}")]
    NotSupported { file: String, element: String, what: String },
    #[error("{file}: {element}: {reason}")]
    Invalid { file: String, element: String, reason: String },
    #[error("network '{0}' is already started")]
    AlreadyStarted(String),
    #[error("network '{0}' is not started (see `vxdp net-list`)")]
    NotStarted(String),
    #[error("network '{0}' is not defined (see `vxdp net-list --all`)")]
    NotDefined(String),
    #[error("network '{0}' is transient (started with net-create, not defined): define it first with `vxdp net-define`")]
    Transient(String),
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {dev} is already plugged into network '{network}'")]
    PortInUse { dev: String, network: String },
    #[error("interface {dev} is not plugged into network '{network}'")]
    PortNotFound { dev: String, network: String },
    #[error("no uplink: the host has no IPv4 default route; name one with <forward dev='...'>")]
    NoUplink,
    #[error("uplink {0} has no IPv4 address to masquerade to; add one or give <nat><address start end/>")]
    UplinkWithoutAddress(String),
    #[error("no free network id (at most {} networks)", MAX_NETWORKS - 1)]
    TooManyNetworks,
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Sysctl { path: String, source: std::io::Error },
    #[error("{0}")]
    Tap(#[from] crate::tap::TapError),
    #[error(transparent)]
    Dnsmasq(#[from] DnsmasqError),
    #[error("--mac {0}: not a MAC address (expected xx:xx:xx:xx:xx:xx)")]
    BadMac(String),
}

/// Host paths and load options; every path is configurable so several
/// instances (tests) can run side by side.
#[derive(Clone, Debug)]
pub struct Context {
    pub state_dir: PathBuf,
    pub pins: Pins,
    pub load: LoadOptions,
}

/// What a NAT network needs, checked and computed from the definition
/// before anything on the host changes.
#[derive(Clone, Debug)]
pub struct NatPlan {
    pub def: NetworkDef,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub subnet: Ipv4Addr,
    pub nat_addresses: Option<(Ipv4Addr, Ipv4Addr)>,
    pub nat_ports: (u16, u16),
}

fn invalid(file: &str, element: &str, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid { file: file.into(), element: element.into(), reason: reason.into() }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) }
}

/// Forward modes this version of vxdp realizes on the host (`None`: an
/// isolated network, no `<forward>`). `net-define` accepts every valid
/// definition; `net-start`, `net-create` and `net-validate` refuse the rest
/// with "not supported yet". Supporting a mode starts here.
pub const SUPPORTED_MODES: &[Option<ForwardMode>] = &[Some(ForwardMode::Nat)];

/// The one place that says which parts of a valid definition vxdp can
/// realize: an error naming the first element it cannot, or `Ok`.
pub fn check_supported(def: &NetworkDef, file: &str) -> Result<(), NetworkError> {
    let not_supported = |element: &str, what: String| NetworkError::NotSupported {
        file: file.into(),
        element: element.into(),
        what,
    };
    if let Some(what) = xml::unsupported_features(def).into_iter().next() {
        let short = format!("<{}>", what.rsplit('/').next().unwrap_or(&what));
        return Err(not_supported(&what, short));
    }
    let mode = def.forward.as_ref().map(|f| f.mode);
    if !SUPPORTED_MODES.contains(&mode) {
        return Err(match mode {
            None => not_supported("/network", "isolated networks (no <forward>)".into()),
            Some(m) => not_supported("/network/forward@mode", format!("<forward mode='{m}'> (only nat so far)")),
        });
    }
    if def.ips.iter().filter(|ip| ip.address.is_ipv4()).count() > 1 {
        return Err(not_supported("/network/ip[2]", "more than one IPv4 <ip>".into()));
    }
    if let Some(i) = def.ips.iter().position(|ip| ip.address.is_ipv6()) {
        return Err(not_supported(&format!("/network/ip[{}]", i + 1), "IPv6 <ip>".into()));
    }
    if def.mtu.is_some() {
        return Err(not_supported("/network/mtu", "<mtu>".into()));
    }
    Ok(())
}

/// Parses and checks a definition for what this version of vxdp realizes:
/// NAT networks with one IPv4 subnet. Anything else is refused by name.
pub fn plan(xml_text: &str, file: &str) -> Result<NatPlan, NetworkError> {
    let def = xml::parse_network(xml_text, file)?;
    check_supported(&def, file)?;
    let forward = def.forward.as_ref().ok_or_else(|| invalid(file, "/network", "a NAT network needs <forward>"))?;
    let mut v4 = def.ips.iter().filter(|ip| ip.address.is_ipv4());
    let ip = v4.next().ok_or_else(|| invalid(file, "/network/ip", "a NAT network needs an IPv4 <ip>"))?;
    let IpAddr::V4(gateway) = ip.address else { unreachable!("filtered to IPv4") };
    if ip.prefix > 30 {
        return Err(invalid(file, "/network/ip@prefix", format!("prefix /{} leaves no room for guests", ip.prefix)));
    }
    let subnet = Ipv4Addr::from(u32::from(gateway) & prefix_mask(ip.prefix));
    // The guest services' configuration is checked now, before any host change.
    dnsmasq::check(&def, file)?;
    let nat = forward.nat.as_ref();
    let nat_ports = nat.and_then(|n| n.ports).unwrap_or((1024, 65535));
    Ok(NatPlan {
        gateway,
        prefix: ip.prefix,
        subnet,
        nat_addresses: nat.and_then(|n| n.addresses),
        nat_ports,
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
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
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
    std::fs::write(path, value).map_err(|source| NetworkError::Sysctl { path: path.into(), source })
}

/// Undo actions for a partly applied change, run in reverse on failure.
#[derive(Default)]
struct Undo {
    steps: Vec<Box<dyn FnOnce(&Netlink) -> futures::future::BoxFuture<'_, ()>>>,
}

impl Undo {
    fn push<F>(&mut self, f: F)
    where
        F: FnOnce(&Netlink) -> futures::future::BoxFuture<'_, ()> + 'static,
    {
        self.steps.push(Box::new(f));
    }
    async fn run(self, nl: &Netlink) {
        for step in self.steps.into_iter().rev() {
            step(nl).await;
        }
    }
}

/// Starts a NAT network from its definition (`vxdp net-create`).
pub async fn start(ctx: &Context, xml_text: &str, file: &str) -> Result<NetworkRecord, NetworkError> {
    let plan = plan(xml_text, file)?;
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let running = state.networks()?;
    let name = plan.def.name.clone();
    if running.iter().any(|r| r.name == name) {
        return Err(NetworkError::AlreadyStarted(name));
    }
    if let Some(other) = running.iter().find(|r| overlaps(r.subnet, r.prefix, plan.subnet, plan.prefix)) {
        return Err(invalid(
            file,
            "/network/ip@address",
            format!("subnet {}/{} overlaps network '{}' ({}/{})", plan.subnet, plan.prefix, other.name, other.subnet, other.prefix),
        ));
    }
    let bridge = match &plan.def.bridge.name {
        Some(b) => {
            if nl.link_by_name(b).await?.is_some() {
                return Err(invalid(file, "/network/bridge@name", format!("interface {b} already exists")));
            }
            b.clone()
        }
        None => {
            let mut n = 0;
            loop {
                let candidate = format!("virbr{n}");
                if nl.link_by_name(&candidate).await?.is_none() && running.iter().all(|r| r.bridge != candidate) {
                    break candidate;
                }
                n += 1;
            }
        }
    };
    let uplink = match plan.def.forward.as_ref().and_then(|f| f.dev.clone()) {
        Some(dev) => nl.link_by_name(&dev).await?.ok_or_else(|| {
            invalid(file, "/network/forward@dev", format!("interface {dev} does not exist"))
        })?,
        None => {
            let route = nl.default_route_v4().await?.ok_or(NetworkError::NoUplink)?;
            nl.link_by_index(route.oif).await?.ok_or(NetworkError::NoUplink)?
        }
    };
    let (nat_first, nat_last) = match plan.nat_addresses {
        Some(range) => range,
        None => {
            let addrs = nl.ipv4_addresses(uplink.index).await?;
            let (a, _) = *addrs.first().ok_or_else(|| NetworkError::UplinkWithoutAddress(uplink.name.clone()))?;
            (a, a)
        }
    };
    let id = (1..MAX_NETWORKS)
        .find(|id| running.iter().all(|r| r.id != *id))
        .ok_or(NetworkError::TooManyNetworks)?;

    let mut undo = Undo::default();
    let result = apply_start(ctx, &state, &nl, &plan, &bridge, &uplink, id, (nat_first, nat_last), running.is_empty(), &mut undo).await;
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
    plan: &NatPlan,
    bridge: &str,
    uplink: &crate::netlink::LinkInfo,
    id: u32,
    (nat_first, nat_last): (Ipv4Addr, Ipv4Addr),
    first_network: bool,
    undo: &mut Undo,
) -> Result<NetworkRecord, NetworkError> {
    let name = plan.def.name.clone();
    eprintln!("[vxdp] {name}: loading the dataplane under {}", ctx.pins.root.display());
    if dataplane::ensure_loaded(&ctx.pins, &ctx.load)? && first_network {
        let pins = ctx.pins.clone();
        undo.push(move |_| Box::pin(async move { let _ = dataplane::unload(&pins); }));
    }
    if first_network {
        let before = std::fs::read_to_string(IP_FORWARD)
            .map_err(|source| NetworkError::Sysctl { path: IP_FORWARD.into(), source })?;
        state.save_host(&HostRecord { ip_forward_before: Some(before.trim().to_string()) })?;
        let restore = before.trim().to_string();
        undo.push(move |_| Box::pin(async move { let _ = write_sysctl(IP_FORWARD, &restore); }));
    }
    // bpf_fib_lookup only forwards with forwarding on; the programs, not a
    // firewall, decide what may cross.
    write_sysctl(IP_FORWARD, "1")?;

    eprintln!("[vxdp] {name}: creating bridge {bridge} {}/{}", plan.gateway, plan.prefix);
    let mac = plan.def.mac.unwrap_or_else(|| bridge_mac(&name));
    let bridge_ifindex = nl
        .create_bridge(bridge, Some(mac), plan.def.bridge.stp, plan.def.bridge.delay * 100)
        .await?;
    undo.push(move |nl| Box::pin(async move { let _ = nl.delete_link(bridge_ifindex).await; }));
    nl.add_address(bridge_ifindex, IpAddr::V4(plan.gateway), plan.prefix).await?;
    nl.set_up(bridge_ifindex).await?;

    let maps = Maps::open(&ctx.pins)?;
    let cfg = NetworkConfig {
        mode: mode::NAT,
        flags: network_flags::ACTIVE,
        subnet: u32::from_ne_bytes(plan.subnet.octets()),
        netmask: prefix_mask(plan.prefix).to_be(),
        gateway: u32::from_ne_bytes(plan.gateway.octets()),
        nat_addr_first: u32::from_ne_bytes(nat_first.octets()),
        nat_addr_last: u32::from_ne_bytes(nat_last.octets()),
        nat_port_min: plan.nat_ports.0,
        nat_port_max: plan.nat_ports.1,
        uplink_ifindex: uplink.index,
        bridge_ifindex,
        bridge_mac: mac,
        _pad0: [0; 2],
    };
    maps.reset_counters(id)?;
    maps.set_network(id, &cfg)?;
    {
        let pins = ctx.pins.clone();
        undo.push(move |_| Box::pin(async move {
            if let Ok(m) = Maps::open(&pins) { let _ = m.set_network(id, &NetworkConfig::default()); }
        }));
    }
    let subnet_key = u32::from_ne_bytes(plan.subnet.octets());
    maps.set_subnet(subnet_key, plan.prefix as u32, &SubnetOwner { network_id: id, mode: mode::NAT })?;
    {
        let pins = ctx.pins.clone();
        let prefix = plan.prefix as u32;
        undo.push(move |_| Box::pin(async move {
            if let Ok(m) = Maps::open(&pins) { let _ = m.remove_subnet(subnet_key, prefix); }
        }));
    }

    eprintln!("[vxdp] {name}: attaching XDP to uplink {} (ifindex {})", uplink.name, uplink.index);
    let uplink_shared = state.networks()?.iter().any(|r| r.uplink_ifindex == uplink.index);
    dataplane::attach_uplink(&ctx.pins, uplink.index, &uplink.name)?;
    if !uplink_shared {
        let path = ctx.pins.xdp_link(uplink.index);
        undo.push(move |_| Box::pin(async move { let _ = dataplane::detach(&path); }));
    }

    if dnsmasq::wanted(&plan.def, &name)? {
        eprintln!("[vxdp] {name}: starting dnsmasq (DHCP/DNS/TFTP) on {bridge}");
        let inv = dnsmasq::Invocation::current(&ctx.state_dir, &ctx.pins.root)?;
        dnsmasq::start(&inv, &plan.def, bridge, &name)?;
        let state_dir = ctx.state_dir.clone();
        let net = name.clone();
        undo.push(move |_| Box::pin(async move { let _ = dnsmasq::stop(&state_dir, &net); }));
    }

    let rec = NetworkRecord {
        name: name.clone(),
        id,
        mode: "nat".into(),
        bridge: bridge.into(),
        bridge_ifindex,
        uplink: uplink.name.clone(),
        uplink_ifindex: uplink.index,
        subnet: plan.subnet,
        prefix: plan.prefix,
        gateway: plan.gateway,
        nat_first,
        nat_last,
        nat_ports: plan.nat_ports,
        ports: Vec::new(),
        xml: xml::to_xml(&plan.def),
    };
    state.save_network(&rec)?;
    eprintln!("[vxdp] {name}: started (network id {id}, NAT to {nat_first}, ports {}-{})", plan.nat_ports.0, plan.nat_ports.1);
    Ok(rec)
}

/// Stops a network (`vxdp net-destroy`): detaches its ports, removes its
/// map entries, conntrack flows and bridge; the last network to go takes the
/// programs, maps and the forwarding setting with it.
pub async fn stop(ctx: &Context, name: &str) -> Result<(), NetworkError> {
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let rec = state.network(name)?.ok_or_else(|| NetworkError::NotStarted(name.into()))?;
    dnsmasq::stop(&ctx.state_dir, name)?;
    for port in &rec.ports {
        unplug(ctx, &nl, &rec, port).await?;
    }
    if let Ok(maps) = Maps::open(&ctx.pins) {
        maps.set_network(rec.id, &NetworkConfig::default())?;
        maps.remove_subnet(u32::from_ne_bytes(rec.subnet.octets()), rec.prefix as u32)?;
        maps.flush_conntrack(rec.id)?;
    }
    let others: Vec<_> = state.networks()?.into_iter().filter(|r| r.name != rec.name).collect();
    if others.iter().all(|r| r.uplink_ifindex != rec.uplink_ifindex) {
        dataplane::detach(&ctx.pins.xdp_link(rec.uplink_ifindex))?;
    }
    if nl.link_by_index(rec.bridge_ifindex).await?.is_some() {
        nl.delete_link(rec.bridge_ifindex).await?;
    }
    state.remove_network(&rec.name)?;
    if others.is_empty() {
        dataplane::unload(&ctx.pins)?;
        if let Some(before) = state.host()?.ip_forward_before {
            write_sysctl(IP_FORWARD, &before)?;
        }
        state.remove_host()?;
    }
    eprintln!("[vxdp] {name}: stopped");
    Ok(())
}

async fn unplug(ctx: &Context, nl: &Netlink, _rec: &NetworkRecord, port: &PortRecord) -> Result<(), NetworkError> {
    dataplane::detach(&ctx.pins.tc_link(port.ifindex))?;
    if let Ok(maps) = Maps::open(&ctx.pins) {
        maps.remove_endpoint(port.ifindex)?;
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
pub async fn attach_interface(ctx: &Context, network: &str, dev: &str, mac: Option<&str>) -> Result<PortRecord, NetworkError> {
    attach_port(ctx, network, dev, mac, false).await
}

/// [`attach_interface`]; `created_tap` records that vxdp created `dev` and
/// removes it when the port is unplugged.
pub async fn attach_port(ctx: &Context, network: &str, dev: &str, mac: Option<&str>, created_tap: bool) -> Result<PortRecord, NetworkError> {
    let mac_bytes = mac.map(parse_mac).transpose()?;
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let mut rec = state.network(network)?.ok_or_else(|| NetworkError::NotStarted(network.into()))?;
    let link = nl.link_by_name(dev).await?.ok_or_else(|| NetworkError::NoSuchInterface(dev.into()))?;
    if let Some(other) = state.networks()?.into_iter().find(|r| r.ports.iter().any(|p| p.ifindex == link.index)) {
        return Err(NetworkError::PortInUse { dev: dev.into(), network: other.name });
    }
    let port = PortRecord { dev: dev.into(), ifindex: link.index, mac: mac_bytes.map(|m| format_mac(&m)), created_tap };
    let mut undo = Undo::default();
    let res: Result<(), NetworkError> = async {
        // A static <host> or a current lease gives the guest's address.
        let ipv4 = mac_bytes.and_then(|m| dnsmasq::guest_ipv4(&ctx.state_dir, &rec, &m));
        let endpoint = Endpoint {
            network_id: rec.id,
            flags: if mac_bytes.is_some() { endpoint_flags::MAC_KNOWN } else { 0 }
                | if ipv4.is_some() { endpoint_flags::IPV4_KNOWN } else { 0 },
            mac: mac_bytes.unwrap_or_default(),
            ipv4: ipv4.map_or(0, |a| u32::from_ne_bytes(a.octets())),
            ..Endpoint::default()
        };
        // The endpoint entry exists before the program can see a packet.
        let maps = Maps::open(&ctx.pins)?;
        maps.set_endpoint(link.index, &endpoint)?;
        {
            let pins = ctx.pins.clone();
            let ifindex = link.index;
            undo.push(move |_| Box::pin(async move {
                if let Ok(m) = Maps::open(&pins) { let _ = m.remove_endpoint(ifindex); }
            }));
        }
        nl.set_master(link.index, rec.bridge_ifindex).await?;
        {
            let ifindex = link.index;
            undo.push(move |nl| Box::pin(async move { let _ = nl.set_nomaster(ifindex).await; }));
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
    eprintln!("[vxdp] {network}: plugged {dev} (ifindex {})", link.index);
    Ok(port)
}

/// Unplugs an interface from a network.
pub async fn detach_interface(ctx: &Context, network: &str, dev: &str) -> Result<(), NetworkError> {
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let mut rec = state.network(network)?.ok_or_else(|| NetworkError::NotStarted(network.into()))?;
    let pos = rec
        .ports
        .iter()
        .position(|p| p.dev == dev)
        .ok_or_else(|| NetworkError::PortNotFound { dev: dev.into(), network: network.into() })?;
    let port = rec.ports.remove(pos);
    unplug(ctx, &nl, &rec, &port).await?;
    state.save_network(&rec)?;
    eprintln!("[vxdp] {network}: unplugged {dev}");
    Ok(())
}

/// The started networks.
pub fn list(ctx: &Context) -> Result<Vec<NetworkRecord>, NetworkError> {
    Ok(StateDir::open(&ctx.state_dir)?.networks()?)
}

pub fn find(ctx: &Context, name: &str) -> Result<NetworkRecord, NetworkError> {
    StateDir::open(&ctx.state_dir)?.network(name)?.ok_or_else(|| NetworkError::NotStarted(name.into()))
}

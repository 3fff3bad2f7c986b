//! What every mode's start, stop, plug and reconcile share: the errors,
//! the first step of a start (the dataplane loaded), the sysctls to restore,
//! the bridge's host side, a port's endpoint, and the repairs reconcile
//! reports. Helpers used by several modes live here, below all of them.

use std::net::IpAddr;

use vxdp_common::{
    Endpoint, Forward, ForwardKey, MAX_NETWORKS, endpoint_flags, mode, mode_routes, network_flags,
};

use crate::{
    dataplane::{self, DataplaneError, Maps},
    host::{
        Context,
        dnsmasq::{self, DnsmasqError},
        netlink::{Netlink, NetlinkError},
        state::{HostRecord, NetworkRecord, PortRecord, StateDir, StateError},
        sysctl::{self, IP_FORWARD, IPV6_FORWARD, SysctlError},
        undo::{self, Step, Undo},
    },
    model::mac::{Mac, MacError},
    modes::plan::{
        NetworkPlan, PlanError, route4_entries, subnet_owner, subnet4_keys, subnet6_keys,
    },
    xml::XmlError,
};

/// Why realizing a network on the host failed.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("network '{0}' is already started")]
    AlreadyStarted(String),
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
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
    #[error("port {dev}: its recorded MAC {mac}: {source}")]
    RecordedMac {
        dev: String,
        mac: String,
        source: MacError,
    },
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Dnsmasq(#[from] DnsmasqError),
}

impl From<XmlError> for ModeError {
    fn from(e: XmlError) -> Self {
        ModeError::Plan(e.into())
    }
}

/// Where every verb that changes the host begins: the state directory
/// opened (its lock held until the returned `StateDir` drops) and a
/// netlink handle, after reverting what `vxdp` commands that died half-way
/// left (their undo journals, see [`crate::host::undo`]: under the lock,
/// none can still be running). Also returns what each reverted command was.
pub async fn lock_for_change(ctx: &Context) -> Result<(StateDir, Netlink, Vec<String>), ModeError> {
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let reverted = undo::recover(&ctx.state_dir, &nl).await;
    Ok((state, nl, reverted))
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
) -> Result<(), ModeError> {
    log::info!(
        "{name}: loading the dataplane under {}",
        ctx.pins.root.display()
    );
    if first_network && !ctx.pins.is_loaded() {
        undo.push(Step::Unload);
    }
    dataplane::ensure_loaded(&ctx.pins, &ctx.load)?;
    if first_network {
        state.remove_host()?;
    }
    Ok(())
}

/// Records a sysctl's value before vxdp first changes it, so the last
/// network to stop can restore it.
pub fn remember_sysctl(
    state: &StateDir,
    path: &str,
    pick: impl Fn(&mut HostRecord) -> &mut Option<String>,
) -> Result<(), ModeError> {
    let mut host = state.host()?;
    if pick(&mut host).is_none() {
        *pick(&mut host) = Some(sysctl::read(path)?);
        state.save_host(&host)?;
    }
    Ok(())
}

/// The forwarding sysctls a network needs (IPv4, IPv6): `bpf_fib_lookup`
/// only forwards with forwarding on. Isolated networks and host bridges
/// need neither, as with libvirt.
pub fn forwarding(plan: &NetworkPlan) -> (bool, bool) {
    let v4 = mode_routes(plan.mode) || plan.mode == mode::NAT;
    (v4, v4 && plan.ipv6.is_some())
}

/// Reconcile: turns forwarding back on where a started network needs it
/// and something turned it off (the value before vxdp is remembered once,
/// as `net-start` does, and restored when the last network stops).
pub fn ensure_forwarding(
    state: &StateDir,
    plan: &NetworkPlan,
    repairs: &mut Repairs,
) -> Result<(), ModeError> {
    let (v4, v6) = forwarding(plan);
    for (needed, path, pick) in [
        (
            v4,
            IP_FORWARD,
            (|h: &mut HostRecord| &mut h.ip_forward_before)
                as fn(&mut HostRecord) -> &mut Option<String>,
        ),
        (v6, IPV6_FORWARD, |h: &mut HostRecord| {
            &mut h.ipv6_forward_before
        }),
    ] {
        if !needed {
            continue;
        }
        let now = sysctl::read(path)?;
        if now != "1" {
            remember_sysctl(state, path, pick)?;
            sysctl::write(path, "1")?;
            repairs.note(format!(
                "{}: {path} was {now}: set it to 1 (the network forwards)",
                plan.def.name
            ));
        }
    }
    Ok(())
}

/// Writes the network's subnet entries, IPv4 and IPv6: one per prefix
/// (`<ip>` blocks and `<route>`s), and its IPv4 routes' gateways.
pub fn write_subnets(maps: &Maps, id: u32, plan: &NetworkPlan) -> Result<(), DataplaneError> {
    let owner = subnet_owner(id, plan);
    for (a, p) in subnet4_keys(plan) {
        maps.set_subnet(a, p, &owner)?;
    }
    for (a, p) in subnet6_keys(plan) {
        maps.set_subnet6(a, p, &owner)?;
    }
    for (a, p, route) in route4_entries(plan, id) {
        maps.set_route(a, p, &route)?;
    }
    Ok(())
}

/// Gives a bridge vxdp created (never a host bridge) its host side: its
/// `<mtu>` (set explicitly, so ports never change it), the
/// network's addresses (every `<ip>`), or — without an IPv6 `<ip>` or
/// `<network ipv6='yes'>` — `disable_ipv6=1` (a very isolated network's
/// bridge has no address at all; with IPv6, `accept_ra=0` and
/// `autoconf=0`), then sets it up and adds its static routes. Used by `net-start` and by reconcile when it recreates the bridge.
pub async fn configure_bridge(
    nl: &Netlink,
    plan: &NetworkPlan,
    bridge: &str,
    ifindex: u32,
) -> Result<(), ModeError> {
    if plan.ipv6.is_none() && !plan.def.ipv6 {
        // Like libvirt: without an IPv6 <ip> (or <network ipv6='yes'>) the
        // host has no IPv6 address (not even link-local) on the bridge.
        sysctl::write(
            &format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"),
            "1",
        )?;
    } else {
        // Like libvirt: the host takes no router advertisements and
        // configures no address from them on the bridge, or a guest could
        // become the host's IPv6 router (vxdp drops guests' RAs too).
        for knob in ["accept_ra", "autoconf"] {
            sysctl::write(&format!("/proc/sys/net/ipv6/conf/{bridge}/{knob}"), "0")?;
        }
    }
    if let Some(mtu) = plan.def.mtu {
        nl.set_mtu(ifindex, mtu).await?;
    }
    for v4 in &plan.ipv4_all {
        nl.add_address(ifindex, IpAddr::V4(v4.gateway), v4.prefix)
            .await?;
    }
    for &(a, p) in &plan.ipv6_all {
        nl.add_address(ifindex, IpAddr::V6(a), p).await?;
    }
    nl.set_up(ifindex).await?;
    add_routes(nl, plan, ifindex).await.map(drop)
}

/// The network's static `<route>`s as kernel routes via the bridge (as
/// libvirt adds them), those missing; the kernel removes them with the
/// bridge. Returns the routes it added (`prefix via gateway`).
pub async fn add_routes(
    nl: &Netlink,
    plan: &NetworkPlan,
    ifindex: u32,
) -> Result<Vec<String>, ModeError> {
    let mut added = Vec::new();
    for r in &plan.routes {
        if !nl
            .has_route(ifindex, r.address, r.prefix, r.gateway)
            .await?
        {
            nl.add_route(ifindex, r.address, r.prefix, r.gateway, r.metric)
                .await?;
            added.push(format!("{}/{} via {}", r.address, r.prefix, r.gateway));
        }
    }
    Ok(added)
}

/// `NetworkConfig::flags` a host bridge adds: what the operator's bridge
/// does itself (VLAN filtering, netfilter calls, isolated ports) must not
/// be bypassed, so frames between guests then cross it.
pub async fn host_bridge_flags(
    nl: &Netlink,
    bridge: &crate::host::netlink::LinkInfo,
) -> Result<u32, ModeError> {
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

/// Whether a guest port's device takes frames redirected by XDP. A tap
/// does (`tun_xdp_xmit`, while a reader has it open; a refusal is counted
/// as `xdp_redirect_refused`). A veth drops them unless its peer has NAPI
/// (an XDP program or GRO on the guest's end), which vxdp does not
/// control; macvtap and the rest have no XDP transmit. Those get frames
/// from the uplink through its TC program instead.
pub fn takes_xdp_frames(link: &crate::host::netlink::LinkInfo) -> bool {
    link.kind.as_deref() == Some("tun")
}

/// Records whether the uplink `ifindex` takes XDP frames (the kernel's
/// word: `host::xdp_features`), so tap guest ports' XDP programs send
/// their NAT and routed frames out of it directly, or leave them to the TC
/// program. Asked again at every reconcile: a veth's answer follows its
/// peer.
pub fn offer_uplink_to_guest_xdp(
    pins: &crate::dataplane::Pins,
    ifindex: u32,
    ifname: &str,
) -> Result<(), crate::dataplane::DataplaneError> {
    let takes = crate::host::xdp_features::takes_xdp_frames(ifindex).unwrap_or_else(|e| {
        log::debug!("XDP features of {ifname}: {e}; guest XDP programs leave it to TC");
        false
    });
    crate::dataplane::Maps::open(pins)?.set_xdp_target(ifindex, takes)
}

/// Whether a guest port gets the guest XDP program: a tap (native XDP in
/// the writer's context; a veth would drop GSO frames larger than a page
/// for a program without multi-buffer support) of a bridged network whose
/// port has no outbound rate limit (that path is the TC program's), when
/// the port's choice, else the global `--guest-xdp` (as kept in the
/// state directory), says so.
pub fn guest_xdp_wanted(
    ctx: &crate::host::Context,
    rec: &NetworkRecord,
    port: &PortRecord,
    tap: bool,
) -> bool {
    tap && !rec.is_direct()
        && port.bandwidth.is_none_or(|b| b.outbound.is_none())
        && port.guest_xdp.unwrap_or_else(|| {
            // The kept setting, which a later command may have changed
            // while this process (the daemon) runs; this process's own
            // when none is kept or it cannot be read.
            crate::host::state::read_settings(&ctx.state_dir)
                .ok()
                .and_then(|s| s.guest_xdp)
                .unwrap_or(ctx.load.guest_xdp)
        })
}

/// The endpoint entry of a guest port: its MAC when known, its IPv4
/// address when known (`--ip`, else a static `<host>` or a current lease),
/// and whether the device takes XDP frames ([`takes_xdp_frames`]).
pub fn port_endpoint(
    state_dir: &std::path::Path,
    rec: &NetworkRecord,
    port: &PortRecord,
    xdp_frames: bool,
) -> Result<Endpoint, ModeError> {
    let mac = port
        .mac
        .as_deref()
        .map(|m| {
            Mac::parse(m)
                .map(Mac::octets)
                .map_err(|source| ModeError::RecordedMac {
                    dev: port.dev.clone(),
                    mac: m.into(),
                    source,
                })
        })
        .transpose()?;
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
    // An XDP redirect into the port would pass its inbound shaping (a
    // qdisc): frames to a shaped port take the socket-buffer path.
    if xdp_frames && port.bandwidth.is_none_or(|b| b.inbound.is_none()) {
        flags |= endpoint_flags::XDP_FRAMES;
    }
    if port.bandwidth.is_some_and(|b| b.outbound.is_some()) {
        flags |= endpoint_flags::RATE_LIMITED;
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

/// The `VXDP_FORWARDS` entries of a NAT network's guest port: one per
/// forwarded public port, to the guest's IPv4 address (the endpoint's:
/// `--ip`, `<ip>`, a static `<host>` or its lease). An error says why the
/// port's forwards cannot be written (the guest's address or MAC unknown,
/// an inbound device missing).
pub fn port_forward_entries(
    rec: &NetworkRecord,
    port: &PortRecord,
    ep: Option<&Endpoint>,
) -> Result<Vec<(ForwardKey, Forward)>, String> {
    if port.forwards.is_empty() {
        return Ok(Vec::new());
    }
    let ep = ep.ok_or("the port has no endpoint entry")?;
    if ep.flags & endpoint_flags::IPV4_KNOWN == 0 {
        return Err(format!(
            "the guest's IPv4 address is not known yet (give it with --ip or <ip>, a static <host>, or wait for its DHCP lease); {} forwards nothing until then",
            port.dev
        ));
    }
    if ep.flags & endpoint_flags::MAC_KNOWN == 0 {
        return Err(format!(
            "the guest's MAC is not known (plug {} with --mac)",
            port.dev
        ));
    }
    let mut out = Vec::new();
    for f in &port.forwards {
        let public = f.address.unwrap_or(rec.nat_first);
        let in_ifindex = match &f.dev {
            None => rec.uplink_ifindex,
            Some(d) => ifindex_of(d).ok_or_else(|| format!("inbound device {d} does not exist"))?,
        };
        for (p, to) in f.mappings() {
            out.push((
                ForwardKey {
                    addr: u32::from_ne_bytes(public.octets()),
                    port: p.to_be(),
                    proto: f.proto.number(),
                    _pad: 0,
                },
                Forward {
                    guest_addr: ep.ipv4,
                    guest_port: to.to_be(),
                    network_id: rec.id as u16,
                    ifindex: port.ifindex,
                    in_ifindex,
                    mac: ep.mac,
                    ..Forward::default()
                },
            ));
        }
    }
    Ok(out)
}

/// An interface's index by name (0 and errors: none).
fn ifindex_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Whether one of `others` has `ifindex` as its uplink or direct device.
pub fn device_used(others: &[NetworkRecord], ifindex: u32) -> bool {
    others
        .iter()
        .any(|r| r.uplink_ifindex == ifindex || r.direct_nics.iter().any(|(_, i)| *i == ifindex))
}

/// What one reconcile pass changed, one line per repair, and what it found
/// wrong but cannot repair (a missing guest port, uplink or host bridge).
#[derive(Debug, Default)]
pub struct Repairs {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
}

impl Repairs {
    pub(crate) fn note(&mut self, line: String) {
        log::info!("reconcile: {line}");
        self.lines.push(line);
    }

    pub(crate) fn problem(&mut self, line: String) {
        log::warn!("reconcile: {line}");
        self.problems.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bandwidth::{Bandwidth, Rate};
    use std::net::Ipv4Addr;

    /// A shaped port's endpoint: inbound shaping takes XDP redirects away
    /// (they would pass the port's qdisc), outbound sets the flag the
    /// program checks before looking its bucket up.
    #[test]
    fn a_shaped_ports_endpoint_has_no_xdp_frames_and_says_it_is_limited() {
        let rec = NetworkRecord {
            name: "n".into(),
            id: 3,
            mode: "nat".into(),
            bridge: "virbr9".into(),
            bridge_ifindex: 9,
            uplink: "up0".into(),
            uplink_ifindex: 2,
            subnet: Ipv4Addr::new(192, 168, 9, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(192, 168, 9, 1),
            nat_first: Ipv4Addr::UNSPECIFIED,
            nat_last: Ipv4Addr::UNSPECIFIED,
            nat_ports: (1024, 65535),
            ports: Vec::new(),
            xml: String::new(),
            ipv6: None,
            direct_nics: Vec::new(),
            nat6: None,
        };
        let rate = Some(Rate {
            average: 10,
            ..Rate::default()
        });
        let port = |bandwidth| PortRecord {
            dev: "vnet9".into(),
            ifindex: 42,
            mac: None,
            created_tap: true,
            ipv4: None,
            ipv6: None,
            services_allowed: false,
            from_bridge: false,
            bandwidth,
            portgroup: None,
            guest_xdp: None,
            forwards: Vec::new(),
        };
        let dir = std::path::Path::new("/nonexistent-vxdp-state");
        let flags = |bw| port_endpoint(dir, &rec, &port(bw), true).unwrap().flags;
        let limits = endpoint_flags::XDP_FRAMES | endpoint_flags::RATE_LIMITED;
        for (bw, want, what) in [
            (None, endpoint_flags::XDP_FRAMES, "unshaped"),
            (
                Some(Bandwidth {
                    inbound: rate,
                    outbound: None,
                }),
                0,
                "inbound shaped",
            ),
            (
                Some(Bandwidth {
                    inbound: None,
                    outbound: rate,
                }),
                limits,
                "outbound limited",
            ),
            (
                Some(Bandwidth {
                    inbound: rate,
                    outbound: rate,
                }),
                endpoint_flags::RATE_LIMITED,
                "both",
            ),
        ] {
            assert_eq!(flags(bw) & limits, want, "{what}");
        }
    }
}

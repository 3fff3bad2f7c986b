//! Port forwards into NAT networks (`<portForward>` in a domain
//! `<interface>`, `vxdp port-forward add|list|remove`): checked before
//! anything changes, kept with the guest port's record (so a restart and
//! `vxdp serve` restore them), written to `VXDP_FORWARDS`.
//!
//! Refused, naming the conflict: a forward into a network that is not NAT
//! (its guests are reachable at their own addresses, or not at all); a
//! public address inside a vxdp network's subnet (a forward must not lead
//! from one network into another); a public port another forward has; a
//! public port a host socket listens on (the forward would take its
//! connections).

use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::{
    dataplane::Maps,
    host::{
        Context,
        state::{NetworkRecord, PortRecord},
    },
    model::{
        addr::prefix_mask,
        forward::{PortForward, Proto},
    },
    modes::shared::{ModeError, port_forward_entries},
    ops::error::OpsError,
};

fn refused(what: impl Into<String>, reason: impl Into<String>) -> OpsError {
    OpsError::Forward {
        what: what.into(),
        reason: reason.into(),
    }
}

/// `tcp 198.51.100.2:2022`.
fn public_name(proto: Proto, addr: Ipv4Addr, port: u16) -> String {
    format!("{} {addr}:{port}", proto.name())
}

/// The public (protocol, address, port) triples a port's forwards take.
fn public_ports(rec: &NetworkRecord, fwds: &[PortForward]) -> Vec<(Proto, Ipv4Addr, u16)> {
    fwds.iter()
        .flat_map(|f| {
            let a = f.address.unwrap_or(rec.nat_first);
            f.mappings().into_iter().map(move |(p, _)| (f.proto, a, p))
        })
        .collect()
}

/// Local ports host sockets hold: TCP listeners and bound UDP sockets,
/// from `/proc/net/{tcp,tcp6,udp,udp6}` of this network namespace, as
/// (protocol, local address (None: any), port).
fn host_sockets() -> Vec<(Proto, Option<Ipv4Addr>, u16)> {
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            // TCP: only listeners (state 0A); UDP: every bound socket.
            if proto == Proto::Tcp && f[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = f[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            out.push((proto, local_v4(addr), port));
        }
    }
    out
}

/// A /proc/net local address (hex, in memory order per 32-bit word): the
/// IPv4 address it is, `None` for any address (IPv4 or IPv6 wildcard,
/// which also takes IPv4 unless v6only) and for other IPv6 addresses,
/// which are told apart by `Some(UNSPECIFIED)`.
fn local_v4(hex: &str) -> Option<Ipv4Addr> {
    let word = |i: usize| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok();
    match hex.len() {
        8 => {
            let a = Ipv4Addr::from(word(0)?.to_ne_bytes());
            (!a.is_unspecified()).then_some(a)
        }
        32 => {
            let w: Vec<u32> = (0..4).filter_map(word).collect();
            if w.len() != 4 {
                return Some(Ipv4Addr::UNSPECIFIED);
            }
            if w.iter().all(|x| *x == 0) {
                return None;
            }
            // ::ffff:a.b.c.d
            if w[0] == 0 && w[1] == 0 && w[2].to_ne_bytes() == [0, 0, 0xff, 0xff] {
                return Some(Ipv4Addr::from(w[3].to_ne_bytes()));
            }
            Some(Ipv4Addr::UNSPECIFIED)
        }
        _ => Some(Ipv4Addr::UNSPECIFIED),
    }
}

/// Checks `fwds`, the forwards port `dev` of network `rec` is to have,
/// against the rules above; `all` are the started networks, whose other
/// ports' forwards stay.
pub fn check(
    all: &[NetworkRecord],
    rec: &NetworkRecord,
    dev: &str,
    fwds: &[PortForward],
) -> Result<(), OpsError> {
    if fwds.is_empty() {
        return Ok(());
    }
    if rec.mode != "nat" {
        return Err(refused(
            format!("to {dev}"),
            format!(
                "network '{}' is in {} mode; forwards lead into NAT networks only (a route or open network's guests are reachable at their own addresses)",
                rec.name, rec.mode
            ),
        ));
    }
    if rec.nat_first.is_unspecified() {
        return Err(refused(
            format!("to {dev}"),
            format!(
                "network '{}' has no NAT address yet (its uplink has no IPv4 address)",
                rec.name
            ),
        ));
    }
    for f in fwds {
        if let Some(a) = f.address
            && let Some(other) = all.iter().find(|r| {
                !r.gateway.is_unspecified()
                    && u32::from(a) & prefix_mask(r.prefix) == u32::from(r.subnet)
            })
        {
            return Err(refused(
                format!("address {a}"),
                format!(
                    "{a} is inside network '{}' ({}/{}): a forward's public address must not lead from one network into another",
                    other.name, other.subnet, other.prefix
                ),
            ));
        }
        if let Some(d) = &f.dev
            && !std::path::Path::new("/sys/class/net").join(d).exists()
        {
            return Err(refused(
                format!("dev {d}"),
                format!("interface {d} does not exist"),
            ));
        }
    }
    // Overlaps: within the new set, and with every other port's forwards.
    let mut taken: BTreeMap<(Proto, Ipv4Addr, u16), String> = BTreeMap::new();
    for r in all {
        for p in r
            .ports
            .iter()
            .filter(|p| !(r.name == rec.name && p.dev == dev))
        {
            for k in public_ports(r, &p.forwards) {
                taken.insert(k, format!("{} of network '{}'", p.dev, r.name));
            }
        }
    }
    let sockets = host_sockets();
    let mut mine = std::collections::BTreeSet::new();
    for k @ (proto, addr, port) in public_ports(rec, fwds) {
        let name = public_name(proto, addr, port);
        if let Some(owner) = taken.get(&k) {
            return Err(refused(name, format!("already forwarded to {owner}")));
        }
        if !mine.insert(k) {
            return Err(refused(
                name,
                format!("two of {dev}'s forwards forward this port"),
            ));
        }
        if sockets
            .iter()
            .any(|(sp, sa, sport)| *sp == proto && *sport == port && sa.is_none_or(|a| a == addr))
        {
            let flag = if proto == Proto::Tcp { "-ltn" } else { "-lun" };
            return Err(refused(
                name,
                format!(
                    "a host socket {} port {port} (see `ss {flag} 'sport = {port}'`); the forward would take its traffic",
                    if proto == Proto::Tcp {
                        "listens on"
                    } else {
                        "is bound to"
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Writes port `port`'s forwards to `VXDP_FORWARDS` (removing what it no
/// longer has). A port whose guest address is not known yet gets none
/// until reconcile finds it; the reason is returned to be shown.
pub fn write(
    maps: &Maps,
    rec: &NetworkRecord,
    port: &PortRecord,
) -> Result<Option<String>, OpsError> {
    let ep = maps.endpoint(port.ifindex).map_err(ModeError::from)?;
    match port_forward_entries(rec, port, ep.as_ref()) {
        Ok(want) => {
            maps.set_port_forwards(port.ifindex, &want)
                .map_err(ModeError::from)?;
            Ok(None)
        }
        Err(why) => {
            maps.set_port_forwards(port.ifindex, &[])
                .map_err(ModeError::from)?;
            Ok(Some(why))
        }
    }
}

/// `vxdp port-forward add`: adds `fwd` to guest port `dev` of `network`.
/// Returns a warning when the forward waits for the guest's address.
pub async fn add(
    ctx: &Context,
    network: &str,
    dev: &str,
    fwd: PortForward,
) -> Result<Option<String>, OpsError> {
    let (state, _nl, _) = crate::modes::shared::lock_for_change(ctx).await?;
    let all = state.networks()?;
    let mut rec = all
        .iter()
        .find(|r| r.name == network)
        .cloned()
        .ok_or_else(|| OpsError::NotStarted(network.into()))?;
    let idx = OpsError::port_index(&rec, dev)?;
    let mut fwds = rec.ports[idx].forwards.clone();
    fwds.push(fwd);
    check(&all, &rec, dev, &fwds)?;
    rec.ports[idx].forwards = fwds;
    let maps = Maps::open(&ctx.pins).map_err(ModeError::from)?;
    let pending = write(&maps, &rec, &rec.ports[idx])?;
    state.save_network(&rec)?;
    Ok(pending)
}

/// `vxdp port-forward remove`: removes guest port `dev`'s forwards of
/// protocol `proto` (all protocols: `None`) whose ranges hold public port
/// `port` (any: `None`). Returns how many `<portForward>`s went.
pub async fn remove(
    ctx: &Context,
    network: &str,
    dev: &str,
    proto: Option<Proto>,
    port: Option<u16>,
) -> Result<usize, OpsError> {
    let (state, _nl, _) = crate::modes::shared::lock_for_change(ctx).await?;
    let mut rec = state
        .network(network)?
        .ok_or_else(|| OpsError::NotStarted(network.into()))?;
    let idx = OpsError::port_index(&rec, dev)?;
    let before = rec.ports[idx].forwards.len();
    rec.ports[idx].forwards.retain(|f| {
        !(proto.is_none_or(|p| p == f.proto)
            && port.is_none_or(|p| f.mappings().iter().any(|(pp, _)| *pp == p)))
    });
    let gone = before - rec.ports[idx].forwards.len();
    if gone == 0 {
        return Err(refused(
            format!("on {dev}"),
            "no forward of that port matches (see `vxdp port-forward list`)",
        ));
    }
    let maps = Maps::open(&ctx.pins).map_err(ModeError::from)?;
    write(&maps, &rec, &rec.ports[idx])?;
    state.save_network(&rec)?;
    Ok(gone)
}

/// One line of `vxdp port-forward list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForwardRow {
    pub network: String,
    pub dev: String,
    pub proto: &'static str,
    pub address: Ipv4Addr,
    pub in_dev: Option<String>,
    pub ranges: String,
    pub guest: Option<Ipv4Addr>,
    /// Flows opened through this forward's ports since they were written.
    pub opened: u64,
    /// Why the forward is not in the dataplane (the guest's address not
    /// known yet), if it is not.
    pub pending: Option<String>,
}

/// `vxdp port-forward list`: every forward of the started networks (of
/// `network` alone when given).
pub fn list(ctx: &Context, network: Option<&str>) -> Result<Vec<ForwardRow>, OpsError> {
    let recs = crate::ops::networks::list(ctx)?;
    let maps = Maps::open(&ctx.pins).ok();
    rows(&recs, maps.as_ref(), network)
}

/// The forwards of `recs` (of `network` alone when given) with what
/// `maps` (none: the dataplane is not loaded) holds of them.
pub fn rows(
    recs: &[NetworkRecord],
    maps: Option<&Maps>,
    network: Option<&str>,
) -> Result<Vec<ForwardRow>, OpsError> {
    let entries = maps
        .map(|m| m.forward_entries())
        .transpose()
        .map_err(ModeError::from)?
        .unwrap_or_default();
    let mut rows = Vec::new();
    for r in recs.iter().filter(|r| network.is_none_or(|n| n == r.name)) {
        for p in &r.ports {
            for f in &p.forwards {
                let address = f.address.unwrap_or(r.nat_first);
                let mine: Vec<_> = entries
                    .iter()
                    .filter(|(k, v)| {
                        v.ifindex == p.ifindex
                            && k.proto == f.proto.number()
                            && k.addr == u32::from_ne_bytes(address.octets())
                            && f.mappings().iter().any(|(pp, _)| pp.to_be() == k.port)
                    })
                    .collect();
                let pending = if mine.is_empty() {
                    Some(match maps {
                        None => "the dataplane is not loaded".to_string(),
                        Some(m) => {
                            let ep = m.endpoint(p.ifindex).ok().flatten();
                            port_forward_entries(r, p, ep.as_ref())
                                .err()
                                .unwrap_or_else(|| "not written yet (reconcile writes it)".into())
                        }
                    })
                } else {
                    None
                };
                rows.push(ForwardRow {
                    network: r.name.clone(),
                    dev: p.dev.clone(),
                    proto: f.proto.name(),
                    address,
                    in_dev: f.dev.clone(),
                    ranges: f.describe_ranges(),
                    guest: mine
                        .first()
                        .map(|(_, v)| Ipv4Addr::from(v.guest_addr.to_ne_bytes())),
                    opened: mine.iter().map(|(_, v)| v.opened).sum(),
                    pending,
                });
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::forward::PortRange;

    fn net(name: &str, id: u32, mode: &str, third: u8) -> NetworkRecord {
        NetworkRecord {
            name: name.into(),
            id,
            mode: mode.into(),
            bridge: format!("virbr{id}"),
            bridge_ifindex: 10 + id,
            uplink: "eth0".into(),
            uplink_ifindex: 2,
            subnet: Ipv4Addr::new(192, 168, third, 0),
            prefix: 24,
            gateway: Ipv4Addr::new(192, 168, third, 1),
            nat_first: Ipv4Addr::new(198, 51, 100, 2),
            nat_last: Ipv4Addr::new(198, 51, 100, 2),
            nat_ports: (1024, 65535),
            ports: Vec::new(),
            xml: String::new(),
            ipv6: None,
            direct_nics: Vec::new(),
            nat6: None,
        }
    }

    fn port(dev: &str, forwards: Vec<PortForward>) -> PortRecord {
        PortRecord {
            dev: dev.into(),
            ifindex: 100,
            mac: None,
            created_tap: false,
            ipv4: None,
            ipv6: None,
            services_allowed: false,
            from_bridge: false,
            bandwidth: None,
            portgroup: None,
            guest_xdp: None,
            forwards,
        }
    }

    /// A TCP forward of `start` to the guest's `to`, on `address`.
    fn tcp(start: u16, to: u16, address: Option<Ipv4Addr>) -> PortForward {
        PortForward {
            proto: Proto::Tcp,
            address,
            dev: None,
            ranges: vec![PortRange {
                start,
                end: start,
                to: Some(to),
                exclude: false,
            }],
        }
    }

    #[test]
    fn forwards_are_refused_naming_the_conflict() {
        let mut nat = net("default", 1, "nat", 122);
        nat.ports.push(port("vnet0", vec![tcp(2022, 22, None)]));
        let routed = net("routed", 2, "route", 100);
        let all = vec![nat.clone(), routed.clone()];
        // Free ports of the NAT network (port 1 is not a host listener in
        // the test's namespace: nothing unprivileged binds it).
        check(&all, &nat, "vnet1", &[tcp(1, 22, None)]).unwrap();

        let e = check(&all, &routed, "vnet5", &[tcp(1, 22, None)]).unwrap_err();
        assert!(e.to_string().contains("route mode"), "{e}");

        let e = check(&all, &nat, "vnet1", &[tcp(2022, 80, None)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("already forwarded to vnet0 of network 'default'"),
            "{e}"
        );
        // The same port's own forwards are replaced, not conflicting.
        check(&all, &nat, "vnet0", &[tcp(2022, 80, None)]).unwrap();
        // Another public address may use the same port.
        let other = Some(Ipv4Addr::new(203, 0, 113, 7));
        check(&all, &nat, "vnet1", &[tcp(2022, 80, other)]).unwrap();

        let e = check(&all, &nat, "vnet1", &[tcp(1, 22, None), tcp(1, 23, None)]).unwrap_err();
        assert!(e.to_string().contains("two of vnet1's forwards"), "{e}");

        let inside = Some(Ipv4Addr::new(192, 168, 100, 5));
        let e = check(&all, &nat, "vnet1", &[tcp(1, 22, inside)]).unwrap_err();
        assert!(e.to_string().contains("inside network 'routed'"), "{e}");
    }

    #[test]
    fn proc_net_addresses_are_read_as_ipv4_or_any() {
        // 127.0.0.1 as /proc/net/tcp prints it (little-endian word).
        assert_eq!(local_v4("0100007F"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(local_v4("00000000"), None);
        assert_eq!(local_v4(&"0".repeat(32)), None);
        // ::ffff:198.51.100.2
        assert_eq!(
            local_v4("0000000000000000FFFF0000026433C6"),
            Some(Ipv4Addr::new(198, 51, 100, 2))
        );
        // 2001:db8::1: an IPv6 address, which no IPv4 forward meets.
        assert_eq!(
            local_v4("B80D0120000000000000000001000000"),
            Some(Ipv4Addr::UNSPECIFIED)
        );
    }
}

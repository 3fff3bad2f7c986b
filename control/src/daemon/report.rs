//! Human-readable tables of counters and conntrack entries.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use vxdp_common::{
    Action, Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, Counter, DIR_ORIGINAL,
    DropReason, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ct_state,
};

use crate::host::state::NetworkRecord;

/// One named counter of a network.
pub struct CounterRow {
    pub network: String,
    pub kind: &'static str,
    pub name: &'static str,
    pub direction: &'static str,
    pub counter: Counter,
}

/// Names the slots of a network's summed counters; zero counters are kept
/// out unless `all`.
pub fn counter_rows(network: &str, slots: &[(u32, Counter)], all: bool) -> Vec<CounterRow> {
    let get = |slot: u32| {
        slots
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    };
    let mut rows = Vec::new();
    for a in Action::ALL {
        let c = get(a.slot());
        if all || c.packets != 0 {
            rows.push(CounterRow {
                network: network.into(),
                kind: "action",
                name: a.name(),
                direction: a.direction(),
                counter: c,
            });
        }
    }
    for r in DropReason::ALL {
        let c = get(r.slot());
        if all || c.packets != 0 {
            rows.push(CounterRow {
                network: network.into(),
                kind: "drop",
                name: r.name(),
                direction: "",
                counter: c,
            });
        }
    }
    rows
}

pub fn counters_table(rows: &[CounterRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<7} {:<26} {:<12} {:>12} {:>14}",
        "NETWORK", "KIND", "NAME", "DIRECTION", "PACKETS", "BYTES"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:<7} {:<26} {:<12} {:>12} {:>14}",
            r.network, r.kind, r.name, r.direction, r.counter.packets, r.counter.bytes
        );
    }
    out
}

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        PROTO_ICMPV6 => "icmp6",
        _ => "?",
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        ct_state::NEW => "new",
        ct_state::ESTABLISHED => "established",
        ct_state::CLOSING => "closing",
        ct_state::FIN_ORIGINAL => "fin-guest",
        ct_state::FIN_REPLY => "fin-remote",
        _ => "?",
    }
}

fn addr(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a.to_ne_bytes())
}

fn port(p: u16) -> u16 {
    u16::from_be(p)
}

/// One NAT flow, from its original-direction entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    pub network: String,
    pub proto: &'static str,
    pub guest: SocketAddr,
    pub remote: SocketAddr,
    pub nat: SocketAddr,
    pub state: &'static str,
    pub idle_s: u64,
}

/// The name of network `id`, or `#id` when no record names it.
fn network_name(networks: &[NetworkRecord], id: u16) -> String {
    networks
        .iter()
        .find(|n| n.id == id as u32)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| format!("#{id}"))
}

/// Flows (one row per original-direction entry) with their network names.
pub fn flow_rows(
    entries: &[(ConntrackKey, ConntrackEntry)],
    networks: &[NetworkRecord],
    now_ns: u64,
) -> Vec<FlowRow> {
    let mut rows: Vec<_> = entries
        .iter()
        .filter(|(_, e)| e.direction == DIR_ORIGINAL)
        .map(|(k, e)| FlowRow {
            network: network_name(networks, e.network_id),
            proto: proto_name(k.proto),
            guest: SocketAddr::new(IpAddr::V4(addr(k.src_addr)), port(k.src_port)),
            remote: SocketAddr::new(IpAddr::V4(addr(k.dst_addr)), port(k.dst_port)),
            nat: SocketAddr::new(IpAddr::V4(addr(e.rewrite_addr)), port(e.rewrite_port)),
            state: state_name(e.state),
            idle_s: now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000,
        })
        .collect();
    rows.sort_by(|a, b| (&a.network, a.guest, a.remote).cmp(&(&b.network, b.guest, b.remote)));
    rows
}

/// NAT66 flows, as [`flow_rows`] (addresses shown `[v6]:port`).
pub fn flow6_rows(
    entries: &[(Conntrack6Key, Conntrack6Entry)],
    networks: &[NetworkRecord],
    now_ns: u64,
) -> Vec<FlowRow> {
    let v6 = |a: [u8; 16], p: u16| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port(p));
    let mut rows: Vec<_> = entries
        .iter()
        .filter(|(_, e)| e.direction == DIR_ORIGINAL)
        .map(|(k, e)| FlowRow {
            network: network_name(networks, e.network_id),
            proto: proto_name(k.proto),
            guest: v6(k.src_addr, k.src_port),
            remote: v6(k.dst_addr, k.dst_port),
            nat: v6(e.rewrite_addr, e.rewrite_port),
            state: state_name(e.state),
            idle_s: now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000,
        })
        .collect();
    rows.sort_by(|a, b| (&a.network, a.guest, a.remote).cmp(&(&b.network, b.guest, b.remote)));
    rows
}

pub fn flows_table(rows: &[FlowRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<5} {:<22} {:<22} {:<22} {:<12} {:>6}",
        "NETWORK", "PROTO", "GUEST", "REMOTE", "NAT", "STATE", "IDLE"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:<5} {:<22} {:<22} {:<22} {:<12} {:>5}s",
            r.network,
            r.proto,
            r.guest.to_string(),
            r.remote.to_string(),
            r.nat.to_string(),
            r.state,
            r.idle_s
        );
    }
    out
}

/// `vxdp port-forward list`: one line per `<portForward>`.
pub fn forwards_table(rows: &[crate::ops::forwards::ForwardRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<10} {:<5} {:<16} {:<10} {:<30} {:<16} {:>7}",
        "NETWORK", "PORT", "PROTO", "PUBLIC", "IN", "PORTS", "GUEST", "OPENED"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:<5} {:<16} {:<10} {:<30} {:<16} {:>7}",
            r.network,
            r.dev,
            r.proto,
            r.address.to_string(),
            r.in_dev.as_deref().unwrap_or("(uplink)"),
            r.ranges,
            r.guest.map_or("-".into(), |g| g.to_string()),
            r.opened
        );
        if let Some(why) = &r.pending {
            let _ = writeln!(out, "  (not active: {why})");
        }
    }
    out
}

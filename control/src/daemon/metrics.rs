//! Prometheus metrics: the dataplane's counters (CPUs summed), the
//! conntrack table's size and the networks' state, read from the pinned
//! maps at every scrape and encoded with `prometheus-client`.
//!
//! Families (every one with HELP text):
//! - `vxdp_packets_total`, `vxdp_bytes_total`
//!   {network, interface, direction, action}: what the programs did, by the
//!   interface the packet arrived on (guest port or uplink).
//! - `vxdp_drops_total`, `vxdp_dropped_bytes_total`
//!   {network, interface, reason}: drops by numbered reason's name.
//! - `vxdp_conntrack_events_total` {network, event}: flows created, stale
//!   flows reused, reply entries repaired.
//! - `vxdp_conntrack_entries` {network}: entries in the table (two per flow).
//! - `vxdp_conntrack_table_entries`, `vxdp_conntrack_table_capacity`
//!   {table}: entries in the IPv4 and the NAT66 conntrack table (all
//!   networks share each) and how many each holds, for a "table near full"
//!   alert.
//! - `vxdp_nat_port_exhausted_total` {network}: packets dropped because no
//!   NAT port was free.
//! - `vxdp_network_up` {network, mode}: 1 while the network's dataplane is in
//!   place (map entry active, uplink program attached), else 0.
//!
//! - from `vxdp serve` itself (since it started): `vxdp_reconcile_repairs_total`,
//!   `vxdp_reconcile_failures_total`, `vxdp_conntrack_expired_total` {network}.
//!
//! `network` is empty for packets that belong to no network (uplink frames
//! passed on to the host).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use vxdp_common::{Action, DropReason, names, network_flags};

use crate::{
    dataplane::pinned,
    dataplane::{DataplaneError, Maps},
    host::Context,
    host::state::{NetworkRecord, StateError},
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("reading the size of the pinned map {path}: {error}")]
    MapInfo {
        path: std::path::PathBuf,
        error: String,
    },
    #[error("encoding metrics: {0}")]
    Encode(#[from] std::fmt::Error),
    #[error("reading the port forwards: {0}")]
    Forwards(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    network: String,
    interface: String,
    direction: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    network: String,
    interface: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    network: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    network: String,
    interface: String,
    proto: String,
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpLabels {
    network: String,
    mode: String,
}

/// Events counted per network without a packet behind them.
const CONNTRACK_EVENTS: [(Action, &str); 7] = [
    (Action::ConntrackCreated, "created"),
    (Action::ConntrackExpiredReused, "expired_reused"),
    (Action::ConntrackRepaired, "repaired"),
    (Action::FlowYieldedToHost, "yielded_to_host"),
    (Action::TcpRstIgnored, "tcp_rst_ignored"),
    (Action::ForwardOpened, "forward_opened"),
    (Action::HostForwarded, "host_forwarded"),
];

/// Adds one counter slot to the packet or the drop families. Conntrack
/// events (no packet) have their own family.
#[allow(clippy::too_many_arguments)]
fn count_slot(
    packets: &Family<PacketLabels, Counter>,
    bytes: &Family<PacketLabels, Counter>,
    drops: &Family<DropLabels, Counter>,
    drop_bytes: &Family<DropLabels, Counter>,
    network: String,
    interface: String,
    slot: u32,
    p: u64,
    b: u64,
) {
    if CONNTRACK_EVENTS.iter().any(|(a, _)| a.slot() == slot) {
        return;
    }
    if let Some(a) = Action::ALL.iter().find(|a| a.slot() == slot) {
        if p == 0 {
            return;
        }
        let labels = PacketLabels {
            network,
            interface,
            direction: a.direction().into(),
            action: a.name().into(),
        };
        packets.get_or_create(&labels).inc_by(p);
        bytes.get_or_create(&labels).inc_by(b);
    } else if let Some(r) = DropReason::ALL.iter().find(|r| r.slot() == slot) {
        let labels = DropLabels {
            network,
            interface,
            reason: r.name().into(),
        };
        drops.get_or_create(&labels).inc_by(p);
        drop_bytes.get_or_create(&labels).inc_by(b);
    }
}

/// What `vxdp serve` itself did since it started.
#[derive(Debug, Default)]
pub struct DaemonStats {
    pub repairs: AtomicU64,
    pub reconcile_failures: AtomicU64,
    /// Flows removed by the conntrack sweep, by network id.
    pub expired: Mutex<BTreeMap<u32, u64>>,
}

impl DaemonStats {
    pub fn add_expired(&self, by_network: &BTreeMap<u32, u64>) {
        let mut expired = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        for (id, n) in by_network {
            *expired.entry(*id).or_default() += n;
        }
    }
}

/// Reads everything and encodes it (OpenMetrics text). Never waits for the
/// state directory's lock: a command holding it must not stall a scrape.
pub fn render(ctx: &Context, daemon: Option<&DaemonStats>) -> Result<String, MetricsError> {
    let records = crate::host::state::read_networks(&ctx.state_dir)?;
    render_records(ctx, &records, daemon)
}

fn render_records(
    ctx: &Context,
    records: &[NetworkRecord],
    daemon: Option<&DaemonStats>,
) -> Result<String, MetricsError> {
    let mut registry = Registry::default();
    let packets = Family::<PacketLabels, Counter>::default();
    let bytes = Family::<PacketLabels, Counter>::default();
    let drops = Family::<DropLabels, Counter>::default();
    let drop_bytes = Family::<DropLabels, Counter>::default();
    let events = Family::<EventLabels, Counter>::default();
    let ct_entries = Family::<NetworkLabels, Gauge>::default();
    let exhausted = Family::<NetworkLabels, Counter>::default();
    let table_entries = Family::<TableLabels, Gauge>::default();
    let table_capacity = Family::<TableLabels, Gauge>::default();
    let up = Family::<UpLabels, Gauge>::default();
    let forwards = Family::<ForwardLabels, Counter>::default();
    registry.register(
        "vxdp_packets",
        "Packets handled by vxdp's eBPF programs, by the interface they arrived on and what was done with them (summed over CPUs)",
        packets.clone(),
    );
    registry.register(
        "vxdp_bytes",
        "Bytes of the packets counted in vxdp_packets_total (frame length as the program saw it)",
        bytes.clone(),
    );
    registry.register(
        "vxdp_drops",
        "Packets dropped by vxdp's eBPF programs, by numbered drop reason (see README, drop reasons)",
        drops.clone(),
    );
    registry.register(
        "vxdp_dropped_bytes",
        "Bytes of the packets counted in vxdp_drops_total",
        drop_bytes.clone(),
    );
    registry.register(
        "vxdp_conntrack_events",
        "NAT conntrack events: flows created, stale flows reused for their port, reply entries repaired after eviction",
        events.clone(),
    );
    registry.register(
        "vxdp_conntrack_entries",
        "Entries in vxdp's NAT conntrack tables, IPv4 and NAT66 (two per flow: original and reply direction)",
        ct_entries.clone(),
    );
    registry.register(
        "vxdp_conntrack_table_entries",
        "Entries in each vxdp conntrack table (ipv4: NAT; ipv6: NAT66), all networks together",
        table_entries.clone(),
    );
    registry.register(
        "vxdp_conntrack_table_capacity",
        "Entries each vxdp conntrack table holds (its map's max_entries); when full, the oldest flows are evicted",
        table_capacity.clone(),
    );
    registry.register(
        "vxdp_nat_port_exhausted",
        "Packets dropped because no NAT source port was free for their destination",
        exhausted.clone(),
    );
    registry.register(
        "vxdp_port_forward_flows",
        "Flows opened by port forwards (<portForward>), by network, guest port, protocol and public address, since each forward was written",
        forwards.clone(),
    );
    registry.register(
        "vxdp_network_up",
        "1 while the network is started and its dataplane is in place (map entry active, uplink program attached), else 0",
        up.clone(),
    );

    let net_name: HashMap<u32, &str> = records.iter().map(|r| (r.id, r.name.as_str())).collect();
    let name_of = |id: u32| -> String {
        match id {
            0 => String::new(),
            id => net_name
                .get(&id)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("#{id}")),
        }
    };
    let mut if_name: HashMap<u32, &str> = HashMap::new();
    for r in records {
        if_name.insert(r.uplink_ifindex, &r.uplink);
        for p in &r.ports {
            if_name.insert(p.ifindex, &p.dev);
        }
    }

    // Every drop reason starts at 0 on each of a network's interfaces, so
    // the series exist (and rate() works) before the first drop.
    for r in records {
        let ifaces =
            std::iter::once(r.uplink.as_str()).chain(r.ports.iter().map(|p| p.dev.as_str()));
        for interface in ifaces {
            for reason in DropReason::ALL {
                let labels = DropLabels {
                    network: r.name.clone(),
                    interface: interface.into(),
                    reason: reason.name().into(),
                };
                let _ = drops.get_or_create(&labels);
                let _ = drop_bytes.get_or_create(&labels);
            }
        }
    }

    let maps = if ctx.pins.is_loaded() {
        Some(Maps::open(&ctx.pins)?)
    } else {
        None
    };
    if let Some(maps) = &maps {
        // Pins adopted from a vxdp older than the per-port map have no
        // VXDP_PORT_STATS: then the per-network counters stand in, with an
        // empty interface label, until the dataplane is reloaded.
        let port_counters = maps.port_counters().ok();
        if port_counters.is_none() {
            for id in std::iter::once(0).chain(records.iter().map(|r| r.id)) {
                for (slot, c) in maps.counters(id)? {
                    count_slot(
                        &packets,
                        &bytes,
                        &drops,
                        &drop_bytes,
                        name_of(id),
                        String::new(),
                        slot,
                        c.packets,
                        c.bytes,
                    );
                }
            }
        }
        for item in port_counters.iter().flat_map(|m| m.iter()) {
            // Entries can be removed between the key and the value read.
            let Ok((key, per_cpu)) = item else { continue };
            let (p, b) = per_cpu
                .iter()
                .fold((0u64, 0u64), |(p, b), c| (p + c.packets, b + c.bytes));
            let network = name_of(key.network_id as u32);
            let interface = if_name
                .get(&key.ifindex)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("if{}", key.ifindex));
            count_slot(
                &packets,
                &bytes,
                &drops,
                &drop_bytes,
                network,
                interface,
                key.slot as u32,
                p,
                b,
            );
        }
        let mut per_network: HashMap<u32, i64> = HashMap::new();
        let v4 = maps.conntrack_entries(None)?;
        for (_, e) in &v4 {
            *per_network.entry(e.network_id as u32).or_default() += 1;
        }
        let v6 = maps.conntrack6_entries(None)?;
        for (_, e) in &v6 {
            *per_network.entry(e.network_id as u32).or_default() += 1;
        }
        for (table, map, n) in [
            ("ipv4", names::MAP_CONNTRACK, v4.len()),
            ("ipv6", names::MAP_CONNTRACK6, v6.len()),
        ] {
            let labels = TableLabels {
                table: table.into(),
            };
            table_entries.get_or_create(&labels).set(n as i64);
            let path = ctx.pins.map(map);
            let info = aya::maps::MapData::from_pin(&path)
                .and_then(|m| m.info())
                .map_err(|e| MetricsError::MapInfo {
                    path: path.clone(),
                    error: e.to_string(),
                })?;
            table_capacity
                .get_or_create(&labels)
                .set(i64::from(info.max_entries()));
        }
        for (k, v) in maps.forward_entries()? {
            let proto = match k.proto {
                vxdp_common::PROTO_TCP => "tcp",
                vxdp_common::PROTO_UDP => "udp",
                _ => "other",
            };
            forwards
                .get_or_create(&ForwardLabels {
                    network: name_of(v.network_id as u32),
                    interface: if_name
                        .get(&v.ifindex)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("if{}", v.ifindex)),
                    proto: proto.into(),
                    address: std::net::Ipv4Addr::from(k.addr.to_ne_bytes()).to_string(),
                })
                .inc_by(v.opened);
        }
        let networks = maps.networks()?;
        for r in records {
            let labels = NetworkLabels {
                network: r.name.clone(),
            };
            ct_entries
                .get_or_create(&labels)
                .set(per_network.get(&r.id).copied().unwrap_or(0));
            let slots = maps.counters(r.id)?;
            let get = |slot: u32| {
                slots
                    .iter()
                    .find(|(s, _)| *s == slot)
                    .map(|(_, c)| c.packets)
                    .unwrap_or(0)
            };
            exhausted
                .get_or_create(&labels)
                .inc_by(get(DropReason::NatPortExhausted.slot()));
            for (action, event) in CONNTRACK_EVENTS {
                events
                    .get_or_create(&EventLabels {
                        network: r.name.clone(),
                        event: event.into(),
                    })
                    .inc_by(get(action.slot()));
            }
        }
        for r in records {
            let active = networks
                .get(&r.id, 0)
                .is_ok_and(|c| c.flags & network_flags::ACTIVE != 0);
            let attached =
                pinned::link_attached(&ctx.pins.xdp_link(r.uplink_ifindex), r.uplink_ifindex);
            up.get_or_create(&UpLabels {
                network: r.name.clone(),
                mode: r.mode.clone(),
            })
            .set(i64::from(active && attached));
        }
    } else {
        for r in records {
            up.get_or_create(&UpLabels {
                network: r.name.clone(),
                mode: r.mode.clone(),
            })
            .set(0);
        }
    }
    if let Some(d) = daemon {
        let repairs = Counter::<u64>::default();
        repairs.inc_by(d.repairs.load(Ordering::Relaxed));
        registry.register(
            "vxdp_reconcile_repairs",
            "Repairs made by vxdp serve's reconcile passes since it started (bridge recreated, program re-attached, map entry refilled, ...)",
            repairs,
        );
        let failures = Counter::<u64>::default();
        failures.inc_by(d.reconcile_failures.load(Ordering::Relaxed));
        registry.register(
            "vxdp_reconcile_failures",
            "Reconcile passes of vxdp serve that failed since it started (see its log)",
            failures,
        );
        let expired = Family::<NetworkLabels, Counter>::default();
        for r in records {
            let _ = expired.get_or_create(&NetworkLabels {
                network: r.name.clone(),
            });
        }
        for (id, n) in d.expired.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            expired
                .get_or_create(&NetworkLabels {
                    network: name_of(*id),
                })
                .inc_by(*n);
        }
        registry.register(
            "vxdp_conntrack_expired",
            "NAT flows removed by vxdp serve's conntrack sweep for being idle past their timeout, since it started",
            expired,
        );
    }

    // Defined networks that are not started are down.
    if let Ok(down) = crate::ops::definitions::defined_not_running(&ctx.state_dir, records) {
        for (network, mode) in down {
            up.get_or_create(&UpLabels { network, mode }).set(0);
        }
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition, for
/// scrapers that do not ask for OpenMetrics (promtool, curl): counter
/// families are named with their `_total` suffix and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kind}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `vxdp stats --by-interface`: the per-port counters (the metrics'
/// packet and drop series) as a table, optionally of one network.
pub fn port_table(
    maps: &Maps,
    records: &[NetworkRecord],
    only: Option<u32>,
) -> Result<String, DataplaneError> {
    use std::fmt::Write as _;
    let mut rows = Vec::new();
    for item in maps.port_counters()?.iter() {
        let Ok((key, per_cpu)) = item else { continue };
        let network_id = key.network_id as u32;
        if only.is_some_and(|id| id != network_id) {
            continue;
        }
        let (p, b) = per_cpu
            .iter()
            .fold((0u64, 0u64), |(p, b), c| (p + c.packets, b + c.bytes));
        let network = match records.iter().find(|r| r.id == network_id) {
            Some(r) => r.name.clone(),
            None if network_id == 0 => "(uplink)".into(),
            None => format!("#{network_id}"),
        };
        let interface = records
            .iter()
            .find_map(|r| {
                if r.uplink_ifindex == key.ifindex {
                    return Some(r.uplink.clone());
                }
                r.ports
                    .iter()
                    .find(|port| port.ifindex == key.ifindex)
                    .map(|port| port.dev.clone())
            })
            .unwrap_or_else(|| format!("if{}", key.ifindex));
        let slot = key.slot as u32;
        let (kind, name, direction) = if let Some(a) = Action::ALL.iter().find(|a| a.slot() == slot)
        {
            ("action", a.name(), a.direction())
        } else if let Some(r) = DropReason::ALL.iter().find(|r| r.slot() == slot) {
            ("drop", r.name(), "")
        } else {
            continue;
        };
        rows.push((network, interface, kind, name, direction, p, b));
    }
    rows.sort();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:<7} {:<26} {:<12} {:>12} {:>14}",
        "NETWORK", "INTERFACE", "KIND", "NAME", "DIRECTION", "PACKETS", "BYTES"
    );
    for (network, interface, kind, name, direction, p, b) in rows {
        let _ = writeln!(
            out,
            "{network:<16} {interface:<12} {kind:<7} {name:<26} {direction:<12} {p:>12} {b:>14}"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use vxdp_common::Action;

    use super::{CONNTRACK_EVENTS, to_prometheus_text};

    #[test]
    fn conntrack_events_are_exactly_the_event_actions() {
        let named: Vec<_> = CONNTRACK_EVENTS.iter().map(|(a, _)| *a).collect();
        let events: Vec<_> = Action::ALL.into_iter().filter(|a| a.is_event()).collect();
        assert_eq!(named, events);
    }

    #[test]
    fn counters_get_their_total_names_in_the_text_format() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total{l=\"v\"} 3\n# HELP b Level.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total{l=\"v\"} 3\n# HELP b Level.\n# TYPE b gauge\nb 1\n"
        );
    }
}

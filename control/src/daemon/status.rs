//! The status page of `vxdp serve`: `GET /` (HTML), `/status.js` and
//! `/status.css` (built into the binary; the page makes no request
//! elsewhere) and `GET /api/status` (JSON): networks with their state,
//! ports, per-interface packet and drop counts, the top drop reasons, and
//! NAT flows. Read-only; a page that shows guest-controlled values (flow
//! addresses and ports) renders them as text only (`textContent`, a
//! `default-src 'self'` content security policy), and lists at most
//! [`MAX_FLOWS`] flows however many a guest opens.

use std::collections::BTreeMap;

use serde::Serialize;
use vxdp_common::{Action, DropReason, network_flags};

use crate::{
    daemon::metrics::MetricsError, daemon::report, dataplane::Maps, dataplane::pinned,
    host::Context,
};

pub const PAGE_HTML: &str = include_str!("status/index.html");
pub const PAGE_JS: &str = include_str!("status/status.js");
pub const PAGE_CSS: &str = include_str!("status/status.css");

/// Flows listed in `/api/status` (the count covers all of them).
pub const MAX_FLOWS: usize = 100;
/// Drop reasons listed per network, most packets first.
pub const TOP_DROPS: usize = 5;

#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub dataplane_loaded: bool,
    pub networks: Vec<NetworkStatus>,
    /// NAT flows (IPv4 and NAT66) in all networks.
    pub flows_total: usize,
    /// The first [`MAX_FLOWS`] of them, by network, guest, remote.
    pub flows: Vec<FlowStatus>,
    /// Port forwards (`<portForward>`), as `vxdp port-forward list`.
    pub forwards: Vec<crate::ops::forwards::ForwardRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct NetworkStatus {
    pub name: String,
    pub mode: String,
    pub up: bool,
    pub bridge: String,
    pub uplink: String,
    pub subnet: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub top_drops: Vec<DropStatus>,
}

#[derive(Debug, Default, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// "port" (a guest's) or "uplink".
    pub role: &'static str,
    pub mac: Option<String>,
    pub ipv4: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

#[derive(Debug, Serialize)]
pub struct DropStatus {
    pub reason: String,
    pub interface: String,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct FlowStatus {
    pub network: String,
    pub proto: &'static str,
    pub guest: String,
    pub remote: String,
    pub nat: String,
    pub state: &'static str,
    pub idle_s: u64,
}

/// Reads the records and the pinned maps (never the state lock, like
/// [`crate::daemon::metrics::render`]).
pub fn collect(ctx: &Context) -> Result<Status, MetricsError> {
    let records = crate::host::state::read_networks(&ctx.state_dir)?;
    let maps = if ctx.pins.is_loaded() {
        Some(Maps::open(&ctx.pins)?)
    } else {
        None
    };
    // (network id, ifindex) → (packets, bytes, drops), and drops by reason.
    let mut per_if: BTreeMap<(u32, u32), (u64, u64, u64)> = BTreeMap::new();
    let mut drops: BTreeMap<(u32, u32, &'static str), u64> = BTreeMap::new();
    let mut status = Status {
        dataplane_loaded: maps.is_some(),
        ..Default::default()
    };
    if let Some(maps) = &maps
        && let Ok(counters) = maps.port_counters()
    {
        for item in counters.iter() {
            let Ok((key, per_cpu)) = item else { continue };
            let (p, b) = per_cpu
                .iter()
                .fold((0u64, 0u64), |(p, b), c| (p + c.packets, b + c.bytes));
            let slot = u32::from(key.slot);
            let id = u32::from(key.network_id);
            if let Some(a) = Action::ALL.iter().find(|a| a.slot() == slot) {
                if a.is_event() {
                    continue;
                }
                let e = per_if.entry((id, key.ifindex)).or_default();
                e.0 += p;
                e.1 += b;
            } else if let Some(r) = DropReason::ALL.iter().find(|r| r.slot() == slot) {
                per_if.entry((id, key.ifindex)).or_default().2 += p;
                if p > 0 {
                    *drops.entry((id, key.ifindex, r.name())).or_default() += p;
                }
            }
        }
    }
    let networks_map = maps.as_ref().map(|m| m.networks()).transpose()?;
    for r in &records {
        let active = networks_map.as_ref().is_some_and(|n| {
            n.get(&r.id, 0)
                .is_ok_and(|c| c.flags & network_flags::ACTIVE != 0)
        });
        let attached = maps.is_some()
            && pinned::link_attached(&ctx.pins.xdp_link(r.uplink_ifindex), r.uplink_ifindex);
        let counts = |ifindex: u32| per_if.get(&(r.id, ifindex)).copied().unwrap_or_default();
        let mut interfaces = Vec::new();
        if !r.uplink.is_empty() {
            let (packets, bytes, drops) = counts(r.uplink_ifindex);
            interfaces.push(InterfaceStatus {
                name: r.uplink.clone(),
                role: "uplink",
                packets,
                bytes,
                drops,
                ..Default::default()
            });
        }
        for p in &r.ports {
            let (packets, bytes, drops) = counts(p.ifindex);
            interfaces.push(InterfaceStatus {
                name: p.dev.clone(),
                role: "port",
                mac: p.mac.clone(),
                ipv4: p.ipv4.map(|a| a.to_string()),
                packets,
                bytes,
                drops,
            });
        }
        let if_name =
            |ifindex: u32| interfaces_name(r, ifindex).unwrap_or_else(|| format!("if{ifindex}"));
        let mut top: Vec<DropStatus> = drops
            .iter()
            .filter(|((id, _, _), _)| *id == r.id)
            .map(|((_, ifindex, reason), n)| DropStatus {
                reason: (*reason).into(),
                interface: if_name(*ifindex),
                packets: *n,
            })
            .collect();
        top.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then_with(|| a.reason.cmp(&b.reason))
        });
        top.truncate(TOP_DROPS);
        status.networks.push(NetworkStatus {
            name: r.name.clone(),
            mode: r.mode.clone(),
            up: active && attached,
            bridge: r.bridge.clone(),
            uplink: r.uplink.clone(),
            subnet: format!("{}/{}", r.subnet, r.prefix),
            interfaces,
            top_drops: top,
        });
    }
    status.forwards = crate::ops::forwards::rows(&records, maps.as_ref(), None)
        .map_err(|e| MetricsError::Forwards(e.to_string()))?;
    if let Some(maps) = &maps {
        let now = crate::dataplane::monotonic_ns();
        let mut rows = report::flow_rows(&maps.conntrack_entries(None)?, &records, now);
        rows.extend(report::flow6_rows(
            &maps.conntrack6_entries(None)?,
            &records,
            now,
        ));
        status.flows_total = rows.len();
        status.flows = rows
            .into_iter()
            .take(MAX_FLOWS)
            .map(|f| FlowStatus {
                network: f.network,
                proto: f.proto,
                guest: f.guest.to_string(),
                remote: f.remote.to_string(),
                nat: f.nat.to_string(),
                state: f.state,
                idle_s: f.idle_s,
            })
            .collect();
    }
    Ok(status)
}

fn interfaces_name(r: &crate::host::state::NetworkRecord, ifindex: u32) -> Option<String> {
    if r.uplink_ifindex == ifindex && !r.uplink.is_empty() {
        return Some(r.uplink.clone());
    }
    r.ports
        .iter()
        .find(|p| p.ifindex == ifindex)
        .map(|p| p.dev.clone())
}

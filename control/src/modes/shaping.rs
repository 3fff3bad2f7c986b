//! A guest port's `<bandwidth>` on the host. vxdp's own programs decide
//! where a guest's frames go, so the shaping has to sit where every path
//! passes:
//! - **outbound** (what the guest sends): a token bucket in
//!   `VXDP_RATE_LIMITS`, charged by the guest-port program before anything
//!   else. libvirt polices the tap's ingress with a tc filter; vxdp's TCX
//!   program runs before such filters and redirects past them.
//! - **inbound** (what the guest receives): an HTB qdisc on the port, as
//!   libvirt does. Every frame to the guest goes through it: the bridge's,
//!   a sibling's redirected by TC, the uplink's redirected by TC. The uplink's
//!   XDP redirect would not (a tap's `ndo_xdp_xmit` has no qdisc), so a
//!   shaped port's endpoint lacks `XDP_FRAMES` (`shared::port_endpoint`).
//!
//! A network's own `<bandwidth>` (libvirt shapes its bridge device: what
//! the host's side sends into the network, what the guests send to the
//! host's bridge interface) becomes two buckets per network
//! (`rate_key`), charged by the programs where those frames pass: the
//! guest-port program for frames to the bridge's MAC, the uplink's
//! deliveries to guests and the bridge's egress program for the rest.
//! Policed at `average` with `burst` (default one second), not queued.

use vxdp_common::rate_key;

use crate::{
    dataplane::{DataplaneError, Maps},
    host::{
        netlink::Netlink,
        state::PortRecord,
        undo::{Step, Undo},
    },
    modes::shared::ModeError,
    xml::{self, NetworkDef},
};

/// Shapes `port` as its record says; undone by `undo` when given.
pub async fn apply(
    nl: &Netlink,
    maps: &Maps,
    port: &PortRecord,
    undo: Option<&mut Undo>,
) -> Result<(), ModeError> {
    let Some(bw) = port.bandwidth else {
        return Ok(());
    };
    if let Some(limit) = bw.outbound_limit() {
        maps.set_rate_limit(port.ifindex, &limit)?;
    }
    if let Some(htb) = bw.inbound_htb() {
        if let Some(u) = undo {
            u.push(Step::ClearQdisc {
                ifindex: port.ifindex,
            });
        }
        nl.set_htb(port.ifindex, &htb).await?;
    }
    Ok(())
}

/// Puts back what of `port`'s shaping is missing: its bucket when the map
/// lacks it, and, when the port came back as another device (`moved`),
/// its qdisc. Returns whether it changed anything.
pub async fn repair(
    nl: &Netlink,
    maps: &Maps,
    port: &PortRecord,
    moved: bool,
) -> Result<bool, ModeError> {
    let Some(bw) = port.bandwidth else {
        return Ok(false);
    };
    let mut changed = false;
    if let Some(limit) = bw.outbound_limit()
        && maps.rate_limit(port.ifindex)?.is_none()
    {
        maps.set_rate_limit(port.ifindex, &limit)?;
        changed = true;
    }
    if moved && let Some(htb) = bw.inbound_htb() {
        nl.set_htb(port.ifindex, &htb).await?;
        changed = true;
    }
    Ok(changed)
}

/// Takes `port`'s shaping away (the device stays; a tap vxdp created goes
/// with its qdisc anyway).
pub async fn clear(nl: &Netlink, maps: &Maps, port: &PortRecord) -> Result<(), ModeError> {
    maps.remove_rate_limit(port.ifindex)?;
    if port.bandwidth.is_some_and(|b| b.inbound.is_some()) {
        nl.clear_root_qdisc(port.ifindex).await?;
    }
    Ok(())
}

/// Writes network `id`'s buckets for its `<bandwidth>` (none: nothing).
/// Before the network's entry whose flags say to charge them.
pub fn apply_network(maps: &Maps, id: u32, def: &NetworkDef) -> Result<(), ModeError> {
    let Some(bw) = xml::network_bandwidth(def) else {
        return Ok(());
    };
    if let Some(limit) = bw.outbound_limit() {
        maps.set_rate_limit(rate_key::network_out(id), &limit)?;
    }
    if let Some(limit) = bw.inbound_limit() {
        maps.set_rate_limit(rate_key::network_in(id), &limit)?;
    }
    Ok(())
}

/// Writes what of network `id`'s buckets is missing; whether it did.
pub fn repair_network(maps: &Maps, id: u32, def: &NetworkDef) -> Result<bool, ModeError> {
    let Some(bw) = xml::network_bandwidth(def) else {
        return Ok(false);
    };
    let mut changed = false;
    for (key, limit) in [
        (rate_key::network_out(id), bw.outbound_limit()),
        (rate_key::network_in(id), bw.inbound_limit()),
    ] {
        if let Some(limit) = limit
            && maps.rate_limit(key)?.is_none()
        {
            maps.set_rate_limit(key, &limit)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Removes network `id`'s buckets (stopped).
pub fn clear_network(maps: &Maps, id: u32) -> Result<(), DataplaneError> {
    maps.remove_network_rate_limits(id)
}

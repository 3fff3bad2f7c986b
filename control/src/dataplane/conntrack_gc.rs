//! Conntrack expiry in userspace: the programs drop a timed-out flow only
//! when a packet hits it, so a flow that simply stops would hold its two
//! entries (and its NAT port) until LRU eviction. `vxdp serve` sweeps the
//! tables (IPv4 and NAT66) periodically and removes flows idle longer than their timeout
//! class allows, with the same rule as the programs: a flow lives while
//! either of its entries does.

use std::collections::BTreeMap;

use vxdp_common::{
    Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, timeout_class,
    timeout_class_of,
};

use crate::dataplane::{DataplaneError, Maps};

/// Timeouts in ns by class, as loaded in `VXDP_TIMEOUTS`.
fn timeouts_ns(maps: &Maps) -> Result<[u64; timeout_class::COUNT as usize], DataplaneError> {
    let arr = maps.timeouts()?;
    let mut out = [0u64; timeout_class::COUNT as usize];
    for (class, slot) in out.iter_mut().enumerate() {
        // The programs' fallback for an unset class: one minute.
        *slot = match arr.get(&(class as u32), 0) {
            Ok(t) if t != 0 => t,
            _ => 60_000_000_000,
        };
    }
    Ok(out)
}

fn alive(timeouts: &[u64], key: &ConntrackKey, e: &ConntrackEntry, now_ns: u64) -> bool {
    now_ns.saturating_sub(e.last_seen_ns) <= timeouts[timeout_class_of(key.proto, e.state) as usize]
}

fn alive6(timeouts: &[u64], key: &Conntrack6Key, e: &Conntrack6Entry, now_ns: u64) -> bool {
    now_ns.saturating_sub(e.last_seen_ns) <= timeouts[timeout_class_of(key.proto, e.state) as usize]
}

/// Removes every expired flow (both entries); returns how many flows, by network id.
pub fn expire(maps: &Maps, now_ns: u64) -> Result<BTreeMap<u32, u64>, DataplaneError> {
    let timeouts = timeouts_ns(maps)?;
    let entries = maps.conntrack_entries(None)?;
    let mut ct = maps.conntrack()?;
    let mut expired = BTreeMap::new();
    for (key, entry) in &entries {
        // Each flow once, from its original entry; an orphaned reply entry
        // (its original was evicted) is judged on its own.
        let peer_key = key.peer(entry);
        let peer = ct.get(&peer_key, 0).ok();
        if entry.direction != DIR_ORIGINAL && peer.is_some() {
            continue;
        }
        if alive(&timeouts, key, entry, now_ns)
            || peer.is_some_and(|p| alive(&timeouts, &peer_key, &p, now_ns))
        {
            continue;
        }
        // Read again right before removing: a packet may just have
        // refreshed it.
        if ct.get(key, 0).is_ok_and(|e| {
            alive(
                &timeouts,
                key,
                &e,
                now_ns.max(crate::dataplane::monotonic_ns()),
            )
        }) {
            continue;
        }
        let _ = ct.remove(&peer_key);
        let _ = ct.remove(key);
        *expired.entry(entry.network_id as u32).or_default() += 1;
    }
    // The NAT66 table, by the same rule.
    let entries = maps.conntrack6_entries(None)?;
    if entries.is_empty() {
        return Ok(expired);
    }
    let mut ct = maps.conntrack6()?;
    for (key, entry) in &entries {
        let peer_key = key.peer(entry);
        let peer = ct.get(&peer_key, 0).ok();
        if entry.direction != DIR_ORIGINAL && peer.is_some() {
            continue;
        }
        if alive6(&timeouts, key, entry, now_ns)
            || peer.is_some_and(|p| alive6(&timeouts, &peer_key, &p, now_ns))
        {
            continue;
        }
        if ct.get(key, 0).is_ok_and(|e| {
            alive6(
                &timeouts,
                key,
                &e,
                now_ns.max(crate::dataplane::monotonic_ns()),
            )
        }) {
            continue;
        }
        let _ = ct.remove(&peer_key);
        let _ = ct.remove(key);
        *expired.entry(entry.network_id as u32).or_default() += 1;
    }
    Ok(expired)
}

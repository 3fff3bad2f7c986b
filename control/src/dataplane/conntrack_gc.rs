//! Conntrack expiry in userspace: the programs drop a timed-out flow only
//! when a packet hits it, so a flow that simply stops would hold its two
//! entries (and its NAT port) until LRU eviction. `vxdp serve` sweeps the
//! tables (IPv4 and NAT66) periodically and removes flows idle longer than
//! their timeout class allows, with the programs' own rule
//! (`vxdp_common::flow_alive`): a flow lives while either of its entries
//! does.

use std::collections::BTreeMap;

use aya::{
    Pod,
    maps::{HashMap, MapData},
};
use vxdp_common::{
    DIR_ORIGINAL, FlowEntry, FlowKey, entry_alive, flow_alive, timeout_class, timeout_or_default,
};

use crate::dataplane::{DataplaneError, Maps};

/// Timeouts in ns by class, as loaded in `VXDP_TIMEOUTS`.
fn timeouts_ns(maps: &Maps) -> Result<[u64; timeout_class::COUNT as usize], DataplaneError> {
    let arr = maps.timeouts()?;
    let mut out = [0u64; timeout_class::COUNT as usize];
    for (class, slot) in out.iter_mut().enumerate() {
        *slot = timeout_or_default(arr.get(&(class as u32), 0).ok());
    }
    Ok(out)
}

/// Removes every expired flow (both entries); returns how many flows, by network id.
pub fn expire(maps: &Maps, now_ns: u64) -> Result<BTreeMap<u32, u64>, DataplaneError> {
    let timeouts = timeouts_ns(maps)?;
    let mut expired = BTreeMap::new();
    let entries = maps.conntrack_entries(None)?;
    if !entries.is_empty() {
        expire_table(
            &mut maps.conntrack()?,
            &entries,
            &timeouts,
            now_ns,
            &mut expired,
        );
    }
    // The NAT66 table (absent from a dataplane that predates NAT66: no entries).
    let entries = maps.conntrack6_entries(None)?;
    if !entries.is_empty() {
        expire_table(
            &mut maps.conntrack6()?,
            &entries,
            &timeouts,
            now_ns,
            &mut expired,
        );
    }
    // Admission control counts what the tables hold now.
    maps.recount_flow_quotas()?;
    Ok(expired)
}

/// [`expire`] on one table, whose `entries` were read before.
fn expire_table<K>(
    ct: &mut HashMap<MapData, K, K::Entry>,
    entries: &[(K, K::Entry)],
    timeouts: &[u64],
    now_ns: u64,
    expired: &mut BTreeMap<u32, u64>,
) where
    K: FlowKey + Pod,
    K::Entry: Pod,
{
    let timeout = |class: u32| timeouts[class as usize];
    for (key, entry) in entries {
        // Each flow once, from its original entry; an orphaned reply entry
        // (its original was evicted) is judged on its own.
        let peer_key = key.peer_key(entry);
        let peer = ct.get(&peer_key, 0).ok();
        if entry.direction() != DIR_ORIGINAL && peer.is_some() {
            continue;
        }
        if flow_alive(key, entry, now_ns, timeout, |_| peer) {
            continue;
        }
        // Read again right before removing: a packet may just have
        // refreshed it.
        let now = now_ns.max(crate::dataplane::monotonic_ns());
        if ct
            .get(key, 0)
            .is_ok_and(|e| entry_alive(key, &e, now, timeout))
        {
            continue;
        }
        let _ = ct.remove(&peer_key);
        let _ = ct.remove(key);
        *expired.entry(entry.network_id()).or_default() += 1;
    }
}

//! Conntrack: lookup with timeouts, state updates, and the two-entry insert
//! of a new NAT flow (reply entry first, so the NAT port is reserved before
//! the flow becomes visible). Written once for both tables: IPv4
//! (`VXDP_CONNTRACK`) and NAT66 (`VXDP_CONNTRACK6`), through [`Table`];
//! the liveness rule and timeouts are `vxdp_common`'s, shared with the
//! control plane's expiry.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, maps::LruHashMap};
use vxdp_common::{
    Action, Conntrack6Key, ConntrackKey, DIR_ORIGINAL, FlowEntry, FlowKey, PROTO_TCP, ct_state,
    timeout_or_default,
};

use super::{quota, sockets::SockTuple};
use crate::base::{
    maps::{VXDP_CONNTRACK, VXDP_CONNTRACK6, VXDP_TIMEOUTS},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats::count_event,
};

/// A conntrack key type and its table (IPv4 `VXDP_CONNTRACK` or NAT66
/// `VXDP_CONNTRACK6`); the keys and entries themselves are
/// `vxdp_common::FlowKey`/`FlowEntry`.
pub trait Table: FlowKey + SockTuple {
    fn map() -> &'static LruHashMap<Self, Self::Entry>;
}

impl Table for ConntrackKey {
    #[inline(always)]
    fn map() -> &'static LruHashMap<Self, Self::Entry> {
        &VXDP_CONNTRACK
    }
}

impl Table for Conntrack6Key {
    #[inline(always)]
    fn map() -> &'static LruHashMap<Self, Self::Entry> {
        &VXDP_CONNTRACK6
    }
}

/// Refresh `last_seen` at most this often: writing a shared LRU value on
/// every packet would bounce its cache line between CPUs.
const REFRESH_NS: u64 = 1_000_000_000;

/// Whether `entry` is due for its periodic refresh (see [`touch`]): the
/// uplink's occasional checks ride on it.
#[inline(always)]
pub fn refresh_due<E: FlowEntry>(entry: &E, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns()) > REFRESH_NS
}

const EEXIST: i64 = 17;

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// A timeout class's timeout, as configured in `VXDP_TIMEOUTS`.
#[inline(always)]
fn timeout_ns(class: u32) -> u64 {
    timeout_or_default(VXDP_TIMEOUTS.get(class).copied())
}

/// The flow-liveness rule (`vxdp_common::flow_alive`) on this table.
#[inline(always)]
fn flow_alive<K: Table>(key: &K, entry: &K::Entry, now: u64) -> bool {
    vxdp_common::flow_alive(key, entry, now, timeout_ns, |peer| unsafe {
        K::map().get(peer)
    })
}

/// Removes both entries of the flow `key` belongs to.
#[inline(always)]
pub fn remove_flow<K: Table>(key: &K, entry: &K::Entry) {
    let peer = key.peer_key(entry);
    let _ = K::map().remove(&peer);
    if K::map().remove(key).is_ok() {
        // Uncounted once, by whoever removed it.
        quota::removed(entry.ifindex(), entry.network_id());
    }
}

/// Looks up a live entry, returning a pointer into the map so the caller can
/// update it in place. A timed-out flow is removed and reported as missing.
#[inline(always)]
pub fn lookup<K: Table>(key: &K, now: u64) -> Option<*mut K::Entry> {
    let entry = K::map().get_ptr_mut(key)?;
    let e = unsafe { &*entry };
    if flow_alive(key, e, now) {
        return Some(entry);
    }
    remove_flow(key, e);
    None
}

/// The state an entry moves to when a packet with `tcp_flags` matches it.
#[inline(always)]
fn next_state(proto: u8, state: u8, tcp_flags: u8, is_reply: bool) -> u8 {
    if proto == PROTO_TCP {
        if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            return ct_state::CLOSING;
        }
        if state == ct_state::CLOSING && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            // The guest reuses the tuple for a new connection.
            return ct_state::NEW;
        }
    }
    if is_reply && state == ct_state::NEW {
        return ct_state::ESTABLISHED;
    }
    state
}

/// Records a packet on `entry`: timestamp (rate-limited) and state. A state
/// change is mirrored onto the other direction's entry so both time out
/// alike. On the original direction's periodic refresh, a reply entry lost
/// to LRU eviction is recreated, or replies would be refused as unsolicited.
#[inline(always)]
pub fn touch<K: Table>(key: &K, entry: *mut K::Entry, tcp_flags: u8, now: u64) {
    let e = unsafe { &mut *entry };
    let is_reply = e.direction() != DIR_ORIGINAL;
    let state = next_state(key.proto(), e.state(), tcp_flags, is_reply);
    let stale = refresh_due(e, now);
    if state == e.state() && !stale {
        return;
    }
    e.set_state(state);
    e.set_last_seen_ns(now);
    let peer_key = key.peer_key(e);
    match K::map().get_ptr_mut(&peer_key) {
        Some(p) => unsafe {
            (*p).set_state(state);
            if (*p).last_seen_ns() < now {
                (*p).set_last_seen_ns(now);
            }
        },
        None => {
            let peer = key.peer_of(e);
            if K::map()
                .insert(&peer_key, &peer, BPF_NOEXIST as u64)
                .is_ok()
            {
                count_event(e.network_id(), Action::ConntrackRepaired);
            }
        }
    }
}

/// Outcome of trying to reserve one candidate reply tuple.
pub enum Reserve {
    Reserved,
    Taken,
    Failed,
}

/// Inserts the reply-direction entry if its key is free. A timed-out flow
/// still holding the key is removed and the insert retried, so expired flows
/// never pin NAT ports.
#[inline(always)]
pub fn reserve_reply<K: Table>(key: &K, entry: &K::Entry, now: u64) -> Reserve {
    match K::map().insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => return Reserve::Reserved,
        Err(e) if e as i64 != -EEXIST => return Reserve::Failed,
        Err(_) => {}
    }
    if let Some(existing) = unsafe { K::map().get(key) } {
        if flow_alive(key, existing, now) {
            return Reserve::Taken;
        }
        remove_flow(key, existing);
        count_event(entry.network_id(), Action::ConntrackExpiredReused);
    }
    match K::map().insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => Reserve::Reserved,
        Err(_) => Reserve::Taken,
    }
}

/// Inserts the original-direction entry after its reply entry was reserved.
/// On failure the reservation is undone. `Err(true)` means another CPU
/// created the same flow first (look it up again).
#[inline(always)]
pub fn commit_original<K: Table>(key: &K, entry: &K::Entry, reply_key: &K) -> Result<(), bool> {
    match K::map().insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = K::map().remove(reply_key);
            Err(e as i64 == -EEXIST)
        }
    }
}

//! Conntrack: lookup with timeouts, the check that a flow's two entries
//! agree, state updates, and the two-entry insert of a new NAT flow (reply
//! entry first, so the NAT port is reserved before the flow becomes
//! visible). Written once for both tables: IPv4 (`VXDP_CONNTRACK`) and
//! NAT66 (`VXDP_CONNTRACK6`), through [`Table`]; the liveness, agreement
//! and TCP rules and the timeouts are `vxdp_common`'s, shared with the
//! control plane and unit-tested on the host.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::LruHashMap};
use vxdp_common::{
    Action, Conntrack6Key, ConntrackKey, DIR_ORIGINAL, FlowEntry, FlowKey, PROTO_TCP,
    entries_agree,
    tcp::{self, Rst, Segment},
    timeout_or_default,
};

use super::{quota, sockets::SockTuple};
use crate::base::{
    maps::{VXDP_CONNTRACK, VXDP_CONNTRACK6, VXDP_TIMEOUTS},
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

/// The dataplane's clock ([`crate::base::clock::now`]).
#[inline(always)]
pub fn now() -> u64 {
    crate::base::clock::now()
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

/// The other direction's entry of a flow, as found for one of its entries.
pub enum Peer<E> {
    /// It exists and agrees (`vxdp_common::entries_agree`).
    Agrees(*mut E),
    /// It is missing (evicted).
    Missing,
    /// Its key is held by an entry of another flow, or by one that maps
    /// elsewhere: the entry it was looked up for is stale.
    Stale,
}

/// Looks up the other direction's entry of `entry` (whose key is `key`),
/// its key written to `peer_key`, and checks that the two agree. Done for
/// every packet before it is translated: a stale entry must not deliver.
#[inline(always)]
pub fn peer<K: Table>(key: &K, entry: *mut K::Entry, peer_key: &mut K) -> Peer<K::Entry> {
    let e = unsafe { &*entry };
    *peer_key = key.peer_key(e);
    match K::map().get_ptr_mut(peer_key) {
        None => Peer::Missing,
        Some(p) if entries_agree(key, e, peer_key, unsafe { &*p }) => Peer::Agrees(p),
        Some(_) => Peer::Stale,
    }
}

/// Removes one entry (the stale side of a flow whose entries disagree; the
/// other side belongs to another flow and stays).
#[inline(always)]
pub fn remove<K: Table>(key: &K) {
    let _ = K::map().remove(key);
}

/// Records a packet on `entry`, whose other direction's entry is `peer`
/// at `peer_key` (from [`peer`]; `None`: missing): TCP's sequence records
/// and state (`vxdp_common::tcp`), the timestamp (rate-limited). A state
/// change is mirrored onto the other entry so both time out alike. A
/// missing other entry (lost to LRU eviction) is recreated (in `spare`, a
/// slot the caller has no further use for: the guest program's stack is
/// nearly full), or that direction's packets would be refused as
/// unsolicited.
#[inline(always)]
pub fn touch<K: Table>(
    key: &K,
    entry: *mut K::Entry,
    (peer, peer_key): (Option<*mut K::Entry>, &K),
    seg: &Segment,
    now: u64,
    spare: &mut K::Entry,
) {
    let e = unsafe { &mut *entry };
    let is_reply = e.direction() != DIR_ORIGINAL;
    let sender = e.tcp();
    let t = tcp::track(
        key.proto() == PROTO_TCP,
        e.state(),
        is_reply,
        seg,
        sender,
        peer.map(|p| unsafe { (*p).tcp() }),
    );
    if t.sender != sender {
        e.set_tcp(&t.sender);
    }
    if t.rst == Rst::Ignored {
        count_event(e.network_id(), Action::TcpRstIgnored);
    }
    let stale = refresh_due(e, now);
    match peer {
        Some(p) => {
            if t.state == e.state() && !stale {
                return;
            }
            e.set_state(t.state);
            e.set_last_seen_ns(now);
            unsafe {
                (*p).set_state(t.state);
                if (*p).last_seen_ns() < now {
                    (*p).set_last_seen_ns(now);
                }
            }
        }
        None => {
            e.set_state(t.state);
            e.set_last_seen_ns(now);
            *spare = key.peer_of(e);
            if K::map().insert(peer_key, spare, BPF_NOEXIST as u64).is_ok() {
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

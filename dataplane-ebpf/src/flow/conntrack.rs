//! Conntrack: lookup with timeouts, state updates, and the two-entry insert
//! of a new NAT flow (reply entry first, so the NAT port is reserved before
//! the flow becomes visible). Written once for both tables: IPv4
//! (`VXDP_CONNTRACK`) and NAT66 (`VXDP_CONNTRACK6`), through [`Table`].

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, maps::LruHashMap};
use vxdp_common::{
    Action, Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, PROTO_TCP,
    ct_state, timeout_class_of,
};

use crate::{
    maps::{VXDP_CONNTRACK, VXDP_CONNTRACK6, VXDP_TIMEOUTS},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats::count_event,
};

/// A conntrack key type and its table: what the code below needs of the
/// IPv4 and IPv6 keys and entries, which have the same fields but for the
/// addresses' width.
pub trait Table: Copy + 'static {
    type Entry: Copy + 'static;
    fn map() -> &'static LruHashMap<Self, Self::Entry>;
    fn proto(&self) -> u8;
    fn peer(&self, entry: &Self::Entry) -> Self;
    fn peer_entry(entry: &Self::Entry, key: &Self) -> Self::Entry;
    fn last_seen(entry: &Self::Entry) -> u64;
    fn set_last_seen(entry: &mut Self::Entry, now: u64);
    fn state(entry: &Self::Entry) -> u8;
    fn set_state(entry: &mut Self::Entry, state: u8);
    fn direction(entry: &Self::Entry) -> u8;
    fn network_id(entry: &Self::Entry) -> u32;
}

macro_rules! table {
    ($key:ty, $entry:ty, $map:expr) => {
        impl Table for $key {
            type Entry = $entry;
            #[inline(always)]
            fn map() -> &'static LruHashMap<Self, Self::Entry> {
                &$map
            }
            #[inline(always)]
            fn proto(&self) -> u8 {
                self.proto
            }
            #[inline(always)]
            fn peer(&self, entry: &Self::Entry) -> Self {
                <$key>::peer(self, entry)
            }
            #[inline(always)]
            fn peer_entry(entry: &Self::Entry, key: &Self) -> Self::Entry {
                entry.peer_entry(key)
            }
            #[inline(always)]
            fn last_seen(entry: &Self::Entry) -> u64 {
                entry.last_seen_ns
            }
            #[inline(always)]
            fn set_last_seen(entry: &mut Self::Entry, now: u64) {
                entry.last_seen_ns = now;
            }
            #[inline(always)]
            fn state(entry: &Self::Entry) -> u8 {
                entry.state
            }
            #[inline(always)]
            fn set_state(entry: &mut Self::Entry, state: u8) {
                entry.state = state;
            }
            #[inline(always)]
            fn direction(entry: &Self::Entry) -> u8 {
                entry.direction
            }
            #[inline(always)]
            fn network_id(entry: &Self::Entry) -> u32 {
                entry.network_id as u32
            }
        }
    };
}

table!(ConntrackKey, ConntrackEntry, VXDP_CONNTRACK);
table!(Conntrack6Key, Conntrack6Entry, VXDP_CONNTRACK6);

/// Refresh `last_seen` at most this often: writing a shared LRU value on
/// every packet would bounce its cache line between CPUs.
const REFRESH_NS: u64 = 1_000_000_000;

const EEXIST: i64 = 17;

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn timeout_ns(proto: u8, state: u8) -> u64 {
    match VXDP_TIMEOUTS.get(timeout_class_of(proto, state)) {
        Some(t) if *t != 0 => *t,
        // Unconfigured table: fall back to a minute rather than "forever".
        _ => 60_000_000_000,
    }
}

#[inline(always)]
fn alive<K: Table>(key: &K, entry: &K::Entry, now: u64) -> bool {
    now.saturating_sub(K::last_seen(entry)) <= timeout_ns(key.proto(), K::state(entry))
}

/// A flow is alive while either of its entries is: a one-way stream of
/// replies keeps the original entry valid too.
#[inline(always)]
fn flow_alive<K: Table>(key: &K, entry: &K::Entry, now: u64) -> bool {
    if alive(key, entry, now) {
        return true;
    }
    let peer = key.peer(entry);
    match unsafe { K::map().get(&peer) } {
        Some(p) => alive(&peer, p, now),
        None => false,
    }
}

/// Removes both entries of the flow `key` belongs to.
#[inline(always)]
fn remove_flow<K: Table>(key: &K, entry: &K::Entry) {
    let peer = key.peer(entry);
    let _ = K::map().remove(&peer);
    let _ = K::map().remove(key);
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
    let is_reply = K::direction(e) != DIR_ORIGINAL;
    let state = next_state(key.proto(), K::state(e), tcp_flags, is_reply);
    let stale = now.saturating_sub(K::last_seen(e)) > REFRESH_NS;
    if state == K::state(e) && !stale {
        return;
    }
    K::set_state(e, state);
    K::set_last_seen(e, now);
    let peer_key = key.peer(e);
    match K::map().get_ptr_mut(&peer_key) {
        Some(p) => unsafe {
            K::set_state(&mut *p, state);
            if K::last_seen(&*p) < now {
                K::set_last_seen(&mut *p, now);
            }
        },
        None => {
            let peer = K::peer_entry(e, key);
            if K::map()
                .insert(&peer_key, &peer, BPF_NOEXIST as u64)
                .is_ok()
            {
                count_event(K::network_id(e), Action::ConntrackRepaired);
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
        count_event(K::network_id(entry), Action::ConntrackExpiredReused);
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

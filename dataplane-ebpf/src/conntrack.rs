//! Conntrack: lookup with timeouts, state updates, and the two-entry insert
//! of a new NAT flow (reply entry first, so the NAT port is reserved before
//! the flow becomes visible).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
};
use vxdp_common::{
    Action, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, PROTO_TCP, ct_state, timeout_class_of,
};

use crate::{
    maps::{VXDP_CONNTRACK, VXDP_TIMEOUTS},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats::count_event,
};

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
fn alive(key: &ConntrackKey, entry: &ConntrackEntry, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns) <= timeout_ns(key.proto, entry.state)
}

/// A flow is alive while either of its entries is: a one-way stream of
/// replies keeps the original entry valid too.
#[inline(always)]
fn flow_alive(key: &ConntrackKey, entry: &ConntrackEntry, now: u64) -> bool {
    if alive(key, entry, now) {
        return true;
    }
    let peer = key.peer(entry);
    match unsafe { VXDP_CONNTRACK.get(&peer) } {
        Some(p) => alive(&peer, p, now),
        None => false,
    }
}

/// Removes both entries of the flow `key` belongs to.
#[inline(always)]
fn remove_flow(key: &ConntrackKey, entry: &ConntrackEntry) {
    let peer = key.peer(entry);
    let _ = VXDP_CONNTRACK.remove(&peer);
    let _ = VXDP_CONNTRACK.remove(key);
}

/// Looks up a live entry, returning a pointer into the map so the caller can
/// update it in place. A timed-out flow is removed and reported as missing.
#[inline(always)]
pub fn lookup(key: &ConntrackKey, now: u64) -> Option<*mut ConntrackEntry> {
    let entry = VXDP_CONNTRACK.get_ptr_mut(key)?;
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
pub fn touch(key: &ConntrackKey, entry: *mut ConntrackEntry, tcp_flags: u8, now: u64) {
    let e = unsafe { &mut *entry };
    let is_reply = e.direction != DIR_ORIGINAL;
    let state = next_state(key.proto, e.state, tcp_flags, is_reply);
    let stale = now.saturating_sub(e.last_seen_ns) > REFRESH_NS;
    if state == e.state && !stale {
        return;
    }
    e.state = state;
    e.last_seen_ns = now;
    let peer_key = key.peer(e);
    match VXDP_CONNTRACK.get_ptr_mut(&peer_key) {
        Some(p) => unsafe {
            (*p).state = state;
            if (*p).last_seen_ns < now {
                (*p).last_seen_ns = now;
            }
        },
        None => {
            let peer = e.peer_entry(key);
            if VXDP_CONNTRACK.insert(&peer_key, &peer, BPF_NOEXIST as u64).is_ok() {
                count_event(e.network_id as u32, Action::ConntrackRepaired);
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
pub fn reserve_reply(key: &ConntrackKey, entry: &ConntrackEntry, now: u64) -> Reserve {
    match VXDP_CONNTRACK.insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => return Reserve::Reserved,
        Err(e) if e as i64 != -EEXIST => return Reserve::Failed,
        Err(_) => {}
    }
    if let Some(existing) = unsafe { VXDP_CONNTRACK.get(key) } {
        if flow_alive(key, existing, now) {
            return Reserve::Taken;
        }
        remove_flow(key, existing);
        count_event(entry.network_id as u32, Action::ConntrackExpiredReused);
    }
    match VXDP_CONNTRACK.insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => Reserve::Reserved,
        Err(_) => Reserve::Taken,
    }
}

/// Inserts the original-direction entry after its reply entry was reserved.
/// On failure the reservation is undone. `Err(true)` means another CPU
/// created the same flow first (look it up again).
#[inline(always)]
pub fn commit_original(
    key: &ConntrackKey,
    entry: &ConntrackEntry,
    reply_key: &ConntrackKey,
) -> Result<(), bool> {
    match VXDP_CONNTRACK.insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = VXDP_CONNTRACK.remove(reply_key);
            Err(e as i64 == -EEXIST)
        }
    }
}

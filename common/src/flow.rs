//! The rules both conntrack tables follow, written once over the address
//! family and compiled into the programs and the control plane alike: how
//! a flow's two entries name each other, and how long a flow lives.
//!
//! [`FlowKey`] and [`FlowEntry`] are implemented for the IPv4 types
//! (`ConntrackKey`, `ConntrackEntry`) and the NAT66 ones (`Conntrack6Key`,
//! `Conntrack6Entry`), which have the same fields but for the addresses'
//! width.

use core::borrow::Borrow;

use crate::{
    Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, DIR_REPLY,
    PROTO_ICMP, PROTO_ICMPV6, timeout_class_of,
};

/// A conntrack key of one address family. The constructors are written
/// field by field (in [`flow_types`]), not through accessors returning
/// addresses by value: the programs would copy IPv6 addresses through
/// `memmove` calls the verifier walks byte by byte.
pub trait FlowKey: Copy + 'static {
    /// An address as it sits in packets (network byte order).
    type Addr: Copy;
    type Entry: FlowEntry<Addr = Self::Addr>;
    /// The family's ICMP protocol number: its echo id stands in for a port,
    /// over the whole 16-bit range.
    const ICMP: u8;

    fn new(src: &Self::Addr, dst: &Self::Addr, src_port: u16, dst_port: u16, proto: u8) -> Self;
    fn proto(&self) -> u8;
    /// Source and destination port (or echo id), as in packets.
    fn src_port(&self) -> u16;
    fn dst_port(&self) -> u16;
    fn set_dst_port(&mut self, port: u16);
    /// The key of the other direction's entry, given this key's entry.
    fn peer_key(&self, entry: &Self::Entry) -> Self;
    /// The other direction's entry of the flow, given this key's entry.
    fn peer_of(&self, entry: &Self::Entry) -> Self::Entry;
    /// A new flow's reply-direction key: from this key's destination to
    /// `nat_addr`, the NAT port still 0.
    fn reply_key(&self, nat_addr: &Self::Addr) -> Self;
    /// A new flow's reply-direction entry: replies are rewritten to this
    /// key's source and delivered to `owner`; state `NEW`, last seen `now`.
    fn reply_entry(&self, now: u64, owner: &FlowOwner) -> Self::Entry;
}

/// A conntrack entry of one address family.
pub trait FlowEntry: Copy + 'static {
    type Addr: Copy;

    /// This entry with another rewrite and direction (the rest kept).
    fn redirected(&self, addr: &Self::Addr, port: u16, direction: u8) -> Self;
    /// The address and port (or echo id) that replace the packet's.
    fn rewrite_addr(&self) -> &Self::Addr;
    fn rewrite_port(&self) -> u16;
    fn direction(&self) -> u8;
    fn last_seen_ns(&self) -> u64;
    fn set_last_seen_ns(&mut self, now: u64);
    fn state(&self) -> u8;
    fn set_state(&mut self, state: u8);
    fn ifindex(&self) -> u32;
    fn network_id(&self) -> u32;
    fn mac(&self) -> &[u8; 6];
}

/// Whose flow it is: where its replies are delivered.
#[derive(Clone, Copy)]
pub struct FlowOwner {
    /// The guest's port.
    pub ifindex: u32,
    pub network_id: u16,
    /// The MAC the guest sends from.
    pub mac: [u8; 6],
}

/// Implements [`FlowKey`] and [`FlowEntry`] for one family's key and entry
/// (the same fields but for the address width), and the inherent `peer`
/// and `peer_entry` the control plane and tests call.
macro_rules! flow_types {
    ($key:ty, $entry:ty, $addr:ty, $icmp:expr $(, $pad:ident)*) => {
        impl FlowKey for $key {
            type Addr = $addr;
            type Entry = $entry;
            const ICMP: u8 = $icmp;
            #[inline(always)]
            fn new(src: &$addr, dst: &$addr, src_port: u16, dst_port: u16, proto: u8) -> Self {
                Self {
                    src_addr: *src,
                    dst_addr: *dst,
                    src_port,
                    dst_port,
                    proto,
                    _pad: [0; 3],
                }
            }
            #[inline(always)]
            fn proto(&self) -> u8 {
                self.proto
            }
            #[inline(always)]
            fn src_port(&self) -> u16 {
                self.src_port
            }
            #[inline(always)]
            fn dst_port(&self) -> u16 {
                self.dst_port
            }
            #[inline(always)]
            fn set_dst_port(&mut self, port: u16) {
                self.dst_port = port;
            }
            // Not forced inline: the IPv6 addresses it copies out of a map
            // value would become `memmove` calls (see the trait).
            fn peer_key(&self, entry: &$entry) -> Self {
                if entry.direction == DIR_ORIGINAL {
                    // Replies come from our destination, to the NAT
                    // address/port.
                    Self {
                        src_addr: self.dst_addr,
                        dst_addr: entry.rewrite_addr,
                        src_port: self.dst_port,
                        dst_port: entry.rewrite_port,
                        proto: self.proto,
                        _pad: [0; 3],
                    }
                } else {
                    Self {
                        src_addr: entry.rewrite_addr,
                        dst_addr: self.src_addr,
                        src_port: entry.rewrite_port,
                        dst_port: self.src_port,
                        proto: self.proto,
                        _pad: [0; 3],
                    }
                }
            }
            // Not forced inline: the IPv6 addresses it copies out of a map
            // value would become `memmove` calls (see the trait).
            fn peer_of(&self, entry: &$entry) -> $entry {
                let (rewrite_addr, rewrite_port) = if entry.direction == DIR_ORIGINAL {
                    (self.src_addr, self.src_port)
                } else {
                    (self.dst_addr, self.dst_port)
                };
                <$entry>::redirected(
                    entry,
                    &rewrite_addr,
                    rewrite_port,
                    if entry.direction == DIR_ORIGINAL {
                        DIR_REPLY
                    } else {
                        DIR_ORIGINAL
                    },
                )
            }
            #[inline(always)]
            fn reply_key(&self, nat_addr: &$addr) -> Self {
                Self {
                    src_addr: self.dst_addr,
                    dst_addr: *nat_addr,
                    src_port: self.dst_port,
                    dst_port: 0,
                    proto: self.proto,
                    _pad: [0; 3],
                }
            }
            #[inline(always)]
            fn reply_entry(&self, now: u64, owner: &FlowOwner) -> $entry {
                Self::Entry {
                    last_seen_ns: now,
                    rewrite_addr: self.src_addr,
                    rewrite_port: self.src_port,
                    direction: DIR_REPLY,
                    state: crate::ct_state::NEW,
                    ifindex: owner.ifindex,
                    network_id: owner.network_id,
                    mac: owner.mac,
                    _pad0: 0,
                    _pad1: [0; 2],
                    $($pad: 0,)*
                }
            }
        }

        impl $key {
            /// The key of the other direction's entry, given this entry's
            /// value ([`FlowKey::peer_key`]).
            #[inline(always)]
            pub fn peer(&self, entry: &$entry) -> Self {
                self.peer_key(entry)
            }
        }

        impl FlowEntry for $entry {
            type Addr = $addr;
            #[inline(always)]
            fn redirected(&self, addr: &$addr, port: u16, direction: u8) -> Self {
                Self {
                    rewrite_addr: *addr,
                    rewrite_port: port,
                    direction,
                    ..*self
                }
            }
            #[inline(always)]
            fn rewrite_addr(&self) -> &$addr {
                &self.rewrite_addr
            }
            #[inline(always)]
            fn rewrite_port(&self) -> u16 {
                self.rewrite_port
            }
            #[inline(always)]
            fn direction(&self) -> u8 {
                self.direction
            }
            #[inline(always)]
            fn last_seen_ns(&self) -> u64 {
                self.last_seen_ns
            }
            #[inline(always)]
            fn set_last_seen_ns(&mut self, now: u64) {
                self.last_seen_ns = now;
            }
            #[inline(always)]
            fn state(&self) -> u8 {
                self.state
            }
            #[inline(always)]
            fn set_state(&mut self, state: u8) {
                self.state = state;
            }
            #[inline(always)]
            fn ifindex(&self) -> u32 {
                self.ifindex
            }
            #[inline(always)]
            fn network_id(&self) -> u32 {
                self.network_id as u32
            }
            #[inline(always)]
            fn mac(&self) -> &[u8; 6] {
                &self.mac
            }
        }

        impl $entry {
            /// The other direction's entry of the same flow, given this
            /// entry's key ([`FlowKey::peer_of`]).
            #[inline(always)]
            pub fn peer_entry(&self, key: &$key) -> Self {
                key.peer_of(self)
            }
        }
    };
}

flow_types!(ConntrackKey, ConntrackEntry, u32, PROTO_ICMP);
flow_types!(
    Conntrack6Key,
    Conntrack6Entry,
    [u8; 16],
    PROTO_ICMPV6,
    _pad2
);

/// The timeout of a class whose `VXDP_TIMEOUTS` slot holds `configured`
/// (nanoseconds; `None` or 0: unset): an unconfigured table falls back to a
/// minute rather than "forever".
#[inline(always)]
pub fn timeout_or_default(configured: Option<u64>) -> u64 {
    match configured {
        Some(t) if t != 0 => t,
        _ => 60_000_000_000,
    }
}

/// Whether one entry is alive at `now`: seen within the timeout of its
/// class (`timeout_ns` gives a class's timeout in nanoseconds).
#[inline(always)]
pub fn entry_alive<K: FlowKey>(
    key: &K,
    entry: &K::Entry,
    now: u64,
    timeout_ns: impl Fn(u32) -> u64,
) -> bool {
    now.saturating_sub(entry.last_seen_ns())
        <= timeout_ns(timeout_class_of(key.proto(), entry.state()))
}

/// Whether a flow is alive at `now`: while either of its entries is, so a
/// one-way stream of replies keeps the original entry valid too. `peer`
/// looks up the other direction's entry, only when this one has expired.
#[inline(always)]
pub fn flow_alive<K: FlowKey, P: Borrow<K::Entry>>(
    key: &K,
    entry: &K::Entry,
    now: u64,
    timeout_ns: impl Fn(u32) -> u64,
    peer: impl FnOnce(&K) -> Option<P>,
) -> bool {
    if entry_alive(key, entry, now, &timeout_ns) {
        return true;
    }
    let peer_key = key.peer_key(entry);
    match peer(&peer_key) {
        Some(p) => entry_alive(&peer_key, p.borrow(), now, &timeout_ns),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_TIMEOUTS_S, PROTO_TCP, PROTO_UDP, ct_state, timeout_class};

    const S: u64 = 1_000_000_000;

    fn owner() -> FlowOwner {
        FlowOwner {
            ifindex: 7,
            network_id: 3,
            mac: [2, 0, 0, 0, 0, 9],
        }
    }

    fn defaults(class: u32) -> u64 {
        DEFAULT_TIMEOUTS_S[class as usize] * S
    }

    /// A guest flow and its reply key/entry as the programs create them.
    fn flow<K: FlowKey>(
        guest: K::Addr,
        remote: K::Addr,
        nat: K::Addr,
        proto: u8,
    ) -> [(K, K::Entry); 2] {
        let original = K::new(&guest, &remote, 1000u16.to_be(), 80u16.to_be(), proto);
        let mut reply = original.reply_key(&nat);
        assert_eq!(reply.dst_port(), 0);
        reply.set_dst_port(2000u16.to_be());
        assert_eq!(reply.src_port(), 80u16.to_be());
        let reply_entry = original.reply_entry(0, &owner());
        assert_eq!(reply_entry.rewrite_port(), 1000u16.to_be());
        assert_eq!(reply_entry.direction(), DIR_REPLY);
        let original_entry = reply_entry.redirected(&nat, 2000u16.to_be(), DIR_ORIGINAL);
        [(original, original_entry), (reply, reply_entry)]
    }

    fn peers_name_each_other<K: FlowKey + PartialEq + core::fmt::Debug>(
        g: K::Addr,
        r: K::Addr,
        n: K::Addr,
    ) where
        K::Entry: PartialEq + core::fmt::Debug,
    {
        let [(ok, oe), (rk, re)] = flow::<K>(g, r, n, PROTO_TCP);
        assert_eq!(ok.peer_key(&oe), rk);
        assert_eq!(rk.peer_key(&re), ok);
        assert_eq!(ok.peer_of(&oe), re);
        assert_eq!(rk.peer_of(&re), oe);
        assert_eq!(re.ifindex(), 7);
        assert_eq!(re.network_id(), 3);
        assert_eq!(re.mac(), &[2, 0, 0, 0, 0, 9]);
        assert_eq!(re.state(), ct_state::NEW);
    }

    #[test]
    fn peers_name_each_other_in_both_families() {
        peers_name_each_other::<ConntrackKey>(0x0a00_0002, 0xc000_0201, 0xcb00_7105);
        let mut g6 = [0u8; 16];
        g6[15] = 2;
        let mut r6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let n6 = r6;
        r6[15] = 9;
        peers_name_each_other::<Conntrack6Key>(g6, r6, n6);
        // The inherent methods the control plane and tests use agree.
        let [(ok, oe), (rk, re)] = flow::<ConntrackKey>(1, 2, 3, PROTO_UDP);
        assert_eq!(ok.peer(&oe), rk);
        assert_eq!(oe.peer_entry(&ok), re);
    }

    #[test]
    fn entry_lives_for_its_class_timeout() {
        let [(k, mut e), _] = flow::<ConntrackKey>(1, 2, 3, PROTO_TCP);
        e.set_last_seen_ns(10 * S);
        let tcp_new = DEFAULT_TIMEOUTS_S[timeout_class::TCP_NEW as usize] * S;
        assert!(entry_alive(&k, &e, 10 * S + tcp_new, defaults));
        assert!(!entry_alive(&k, &e, 10 * S + tcp_new + 1, defaults));
        e.set_state(ct_state::ESTABLISHED);
        assert!(entry_alive(&k, &e, 10 * S + tcp_new + 1, defaults));
        e.set_state(ct_state::CLOSING);
        assert!(!entry_alive(&k, &e, 10 * S + 11 * S, defaults));
        // A clock behind the entry (another CPU refreshed it) is not expiry.
        assert!(entry_alive(&k, &e, 0, defaults));
    }

    #[test]
    fn flow_lives_while_either_entry_does() {
        let [(ok, mut oe), (_, mut re)] =
            flow::<Conntrack6Key>([1; 16], [2; 16], [3; 16], PROTO_UDP);
        let udp_new = DEFAULT_TIMEOUTS_S[timeout_class::UDP_NEW as usize] * S;
        oe.set_last_seen_ns(0);
        re.set_last_seen_ns(100 * S);
        let now = udp_new + 1;
        assert!(!entry_alive(&ok, &oe, now, defaults));
        // The reply entry was refreshed: the flow lives.
        assert!(flow_alive(&ok, &oe, now, defaults, |_| Some(re)));
        // Asked for the right key.
        assert!(flow_alive(&ok, &oe, now, defaults, |k: &Conntrack6Key| {
            (*k == ok.peer_key(&oe)).then_some(&re)
        }));
        // Its peer lost (evicted) or expired too: the flow is dead.
        assert!(!flow_alive(&ok, &oe, now, defaults, |_| None::<
            Conntrack6Entry,
        >));
        assert!(!flow_alive(
            &ok,
            &oe,
            100 * S + udp_new + 1,
            defaults,
            |_| Some(re)
        ));
        // A live entry needs no peer lookup.
        assert!(flow_alive(
            &ok,
            &oe,
            0,
            defaults,
            |_| -> Option<Conntrack6Entry> { panic!("looked up the peer of a live entry") }
        ));
    }

    #[test]
    fn unset_timeouts_fall_back_to_a_minute() {
        assert_eq!(timeout_or_default(None), 60 * S);
        assert_eq!(timeout_or_default(Some(0)), 60 * S);
        assert_eq!(timeout_or_default(Some(5)), 5);
    }

    #[test]
    fn icmp_of_each_family_is_its_own() {
        assert_eq!(ConntrackKey::ICMP, PROTO_ICMP);
        assert_eq!(Conntrack6Key::ICMP, PROTO_ICMPV6);
        assert_eq!(
            timeout_class_of(PROTO_ICMPV6, ct_state::ESTABLISHED),
            timeout_class::ICMP
        );
    }
}

//! The rules both conntrack tables follow, written once over the address
//! family and compiled into the programs and the control plane alike: how
//! a flow's two entries name each other and when they agree, and how long
//! a flow lives. (TCP's states are `tcp`'s.)
//!
//! [`FlowKey`] and [`FlowEntry`] are implemented for the IPv4 types
//! (`ConntrackKey`, `ConntrackEntry`) and the NAT66 ones (`Conntrack6Key`,
//! `Conntrack6Entry`), which have the same fields but for the addresses'
//! width.

use core::borrow::Borrow;

use crate::{
    Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, DIR_REPLY,
    PROTO_ICMP, PROTO_ICMPV6, tcp::Sender, timeout_class_of,
};

/// A conntrack key of one address family. The constructors are written
/// field by field (in [`flow_types`]), not through accessors returning
/// addresses by value, and new flows' keys and entries are written in
/// place: a whole IPv6 key or entry built on the stack and then copied
/// into a map slot is a `memmove` that LLVM expands by loading every word
/// before storing any, spilling them to a stack the NAT66 program does not
/// have to spare (see `dataplane-ebpf/build.rs` for why copies are
/// expanded at all).
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
    /// Whether `entry`, this key's entry, names `other` as its peer key
    /// (`self.peer_key(entry) == *other`, without building that key).
    fn names_peer(&self, entry: &Self::Entry, other: &Self) -> bool;
    /// The other direction's entry of the flow, given this key's entry.
    fn peer_of(&self, entry: &Self::Entry) -> Self::Entry;
    /// Writes a new flow's reply-direction key into `out`: from this key's
    /// destination to `nat_addr`, the NAT port still 0. Field by field, in
    /// place: a whole IPv6 key built on the stack and then copied into a
    /// map slot costs the NAT66 program stack it does not have.
    fn set_reply_key(&self, out: &mut Self, nat_addr: &Self::Addr);
    /// Writes a new flow's reply-direction entry into `out`: replies are
    /// rewritten to this key's source and delivered to `owner`; state
    /// `NEW`, last seen `now`. In place, as [`FlowKey::set_reply_key`].
    fn set_reply_entry(&self, out: &mut Self::Entry, now: u64, owner: &FlowOwner);
    /// [`FlowKey::set_reply_key`], returned.
    fn reply_key(&self, nat_addr: &Self::Addr) -> Self {
        let mut k = *self;
        self.set_reply_key(&mut k, nat_addr);
        k
    }
    /// [`FlowKey::set_reply_entry`], returned.
    fn reply_entry(&self, now: u64, owner: &FlowOwner) -> Self::Entry {
        let mut e = <Self::Entry as bytemuck::Zeroable>::zeroed();
        self.set_reply_entry(&mut e, now, owner);
        e
    }
}

/// A conntrack entry of one address family.
pub trait FlowEntry: Copy + bytemuck::Zeroable + 'static {
    type Addr: Copy;

    /// This entry with another rewrite and direction: the other direction's
    /// entry of the same flow (owner, state and timestamp kept; the TCP
    /// record, which is per direction, empty).
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
    /// What this direction's sender was seen sending (TCP).
    fn tcp(&self) -> Sender;
    fn set_tcp(&mut self, s: &Sender);
}

/// Address equality that compiles to word compares in the programs (an
/// array `==` may become a `bcmp` call, which BPF does not have).
pub trait AddrEq {
    fn addr_eq(&self, other: &Self) -> bool;
}

impl AddrEq for u32 {
    #[inline(always)]
    fn addr_eq(&self, other: &Self) -> bool {
        self == other
    }
}

impl AddrEq for [u8; 16] {
    #[inline(always)]
    fn addr_eq(&self, o: &Self) -> bool {
        let w = |a: &[u8; 16], i: usize| {
            u64::from_ne_bytes([
                a[i],
                a[i + 1],
                a[i + 2],
                a[i + 3],
                a[i + 4],
                a[i + 5],
                a[i + 6],
                a[i + 7],
            ])
        };
        w(self, 0) == w(o, 0) && w(self, 8) == w(o, 8)
    }
}

/// Whether a flow's two entries agree: `peer` (at `peer_key`, the key
/// `entry` names) is the other direction's entry of the same flow — it
/// names `key` back, and delivers to the same guest port and network. They
/// disagree when one of them outlived its flow: the reply entry was
/// evicted and its NAT port taken by another flow, or the original entry
/// was evicted and the guest's flow got another NAT port. Delivering
/// through the stale one would hand a flow's packets to another guest.
#[inline(always)]
pub fn entries_agree<K: FlowKey>(key: &K, entry: &K::Entry, peer_key: &K, peer: &K::Entry) -> bool {
    peer.direction() != entry.direction()
        && peer.ifindex() == entry.ifindex()
        && peer.network_id() == entry.network_id()
        && peer_key.names_peer(peer, key)
}

/// Whose flow it is: where its replies are delivered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
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
            // Not forced inline: LLVM decides (forced, when address copies
            // were byte loops, NAT66 exceeded the verifier's 1M).
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
            #[inline(always)]
            fn names_peer(&self, entry: &$entry, o: &Self) -> bool {
                let (src, dst, src_port, dst_port) = if entry.direction == DIR_ORIGINAL {
                    (&self.dst_addr, &entry.rewrite_addr, self.dst_port, entry.rewrite_port)
                } else {
                    (&entry.rewrite_addr, &self.src_addr, entry.rewrite_port, self.src_port)
                };
                o.proto == self.proto
                    && o.src_port == src_port
                    && o.dst_port == dst_port
                    && o.src_addr.addr_eq(src)
                    && o.dst_addr.addr_eq(dst)
            }
            // Not forced inline: LLVM decides (forced, when address copies
            // were byte loops, NAT66 exceeded the verifier's 1M).
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
            fn set_reply_key(&self, out: &mut Self, nat_addr: &$addr) {
                out.src_addr = self.dst_addr;
                out.dst_addr = *nat_addr;
                out.src_port = self.dst_port;
                out.dst_port = 0;
                out.proto = self.proto;
                out._pad = [0; 3];
            }
            #[inline(always)]
            fn set_reply_entry(&self, e: &mut $entry, now: u64, owner: &FlowOwner) {
                e.last_seen_ns = now;
                e.rewrite_addr = self.src_addr;
                e.rewrite_port = self.src_port;
                e.direction = DIR_REPLY;
                e.state = crate::ct_state::NEW;
                e.ifindex = owner.ifindex;
                e.network_id = owner.network_id;
                e.mac = owner.mac;
                e.tcp_known = 0;
                e._pad0 = 0;
                e._pad1 = [0; 2];
                e.tcp_end = 0;
                e.tcp_ack = 0;
                $(e.$pad = 0;)*
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
                    tcp_known: 0,
                    tcp_end: 0,
                    tcp_ack: 0,
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
            #[inline(always)]
            fn tcp(&self) -> Sender {
                Sender {
                    known: self.tcp_known,
                    end: self.tcp_end,
                    ack: self.tcp_ack,
                }
            }
            #[inline(always)]
            fn set_tcp(&mut self, s: &Sender) {
                self.tcp_known = s.known;
                self.tcp_end = s.end;
                self.tcp_ack = s.ack;
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
        assert!(ok.names_peer(&oe, &rk) && rk.names_peer(&re, &ok));
        assert!(entries_agree(&ok, &oe, &rk, &re));
        assert!(entries_agree(&rk, &re, &ok, &oe));
    }

    /// The leak of issue 15 item 3, in both families: after a reply entry
    /// is evicted another guest's flow takes its key; the first guest's
    /// original entry and the new reply entry must not agree, nor must a
    /// reply entry agree with an original entry that maps elsewhere.
    fn stale_entries_disagree<K: FlowKey>(g: K::Addr, g2: K::Addr, r: K::Addr, n: K::Addr) {
        let [(ok, oe), (rk, re)] = flow::<K>(g, r, n, PROTO_TCP);
        // Guest 2 (another port, another address) owns the reply key now.
        let other = FlowOwner {
            ifindex: 8,
            ..owner()
        };
        let ok2 = K::new(&g2, &r, 1000u16.to_be(), 80u16.to_be(), PROTO_TCP);
        let re2 = ok2.reply_entry(0, &other);
        assert!(
            !entries_agree(&ok, &oe, &rk, &re2),
            "guest 1's flow rides guest 2's reply entry"
        );
        // The same guest address on another port: the port disagrees.
        let re3 = ok.reply_entry(0, &other);
        assert!(!entries_agree(&ok, &oe, &rk, &re3));
        assert!(!entries_agree(&rk, &re3, &ok, &oe));
        // The guest's flow was remapped to another NAT port: the old reply
        // entry's original maps elsewhere.
        let moved = oe.redirected(oe.rewrite_addr(), 2001u16.to_be(), DIR_ORIGINAL);
        assert!(!entries_agree(&rk, &re, &ok, &moved));
        // Two entries of the same direction never agree.
        assert!(!entries_agree(&rk, &re, &ok, &re));
    }

    #[test]
    fn stale_entries_disagree_in_both_families() {
        stale_entries_disagree::<ConntrackKey>(0x0a00_0002, 0x0a00_0003, 0xc000_0201, 0xcb00_7105);
        stale_entries_disagree::<Conntrack6Key>([1; 16], [4; 16], [2; 16], [3; 16]);
        // Addresses differing only in their last byte are told apart.
        let mut a = [7u8; 16];
        let b = a;
        a[15] = 8;
        assert!(!a.addr_eq(&b) && a.addr_eq(&a));
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

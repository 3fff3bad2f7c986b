//! Port forwards (`VXDP_FORWARDS`): the uplink's first packet of a
//! conversation to a forwarded public port (a TCP SYN, any UDP datagram)
//! opens a conntrack flow to the guest. The flow is an ordinary NAT flow
//! seen from the other side: its reply-direction entry is keyed by the
//! outside's tuple and rewrites the destination to the guest, its
//! original-direction entry is keyed by the guest's answer and rewrites the
//! source to the public address and port. From then on the uplink's reply
//! path and the guest's NAT path translate it as any other flow.
//!
//! The uplink program's frame is nearly 512 bytes already: the new flow's
//! keys and entries are built in a per-CPU scratch slot, and nothing here
//! is a subprogram call but the admission check's.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use vxdp_common::{
    Action, Conntrack6Key, ConntrackKey, DIR_ORIGINAL, DropReason, FlowEntry, FlowKey, FlowOwner,
    ForwardKey, PROTO_TCP, PROTO_UDP,
    tcp::{self, Segment},
};

use super::{
    conntrack::{self, Reserve, Table},
    quota,
};
use crate::base::{
    maps::{VXDP_ENDPOINTS, VXDP_FORWARDS, VXDP_FWD_SCRATCH},
    stats::{Drop, count_event},
};

/// A new forwarded flow, built in the scratch slot: the guest's key, both
/// entries, the owner, and the forward's flow counter.
pub struct Slots<K: FlowKey> {
    pub guest_key: *mut K,
    pub reply: *mut K::Entry,
    pub original: *mut K::Entry,
    pub owner: *const FlowOwner,
    pub opened: *mut u64,
}

/// A conntrack table whose flows a port forward can open.
pub trait Forwarded: Table {
    /// For a packet with this (outside → public) key that arrived on
    /// `ingress`: its forward's flow, built in the scratch slot (state
    /// new, the outside's SYN recorded), if a forward has the port.
    fn forwarded(&self, ingress: u32, seg: &Segment, now: u64) -> Option<Slots<Self>>;
}

impl Forwarded for ConntrackKey {
    #[inline(always)]
    fn forwarded(&self, ingress: u32, seg: &Segment, now: u64) -> Option<Slots<Self>> {
        let key = ForwardKey {
            addr: self.dst_addr,
            port: self.dst_port,
            proto: self.proto,
            _pad: 0,
        };
        let f = VXDP_FORWARDS.get_ptr_mut(&key)?;
        let s = VXDP_FWD_SCRATCH.get_ptr_mut(0)?;
        unsafe {
            let v = &*f;
            // Hairpin: a guest's packet, source-NATed by its NAT program,
            // arrives from its port (see `guest::nat4`).
            if v.in_ifindex != 0
                && v.in_ifindex != ingress
                && VXDP_ENDPOINTS.get(&ingress).is_none()
            {
                return None;
            }
            let s = &mut *s;
            s.owner = FlowOwner {
                ifindex: v.ifindex,
                network_id: v.network_id,
                mac: v.mac,
            };
            // The guest's answers go from its address and port to the
            // outside's.
            s.guest_key = ConntrackKey::new(
                &v.guest_addr,
                &self.src_addr,
                v.guest_port,
                self.src_port,
                self.proto,
            );
            s.reply = s.guest_key.reply_entry(now, &s.owner);
            // The outside's SYN: an RST refusing it must acknowledge
            // exactly it.
            s.reply.set_tcp(&tcp::opened(seg));
            s.original = s
                .reply
                .redirected(&self.dst_addr, self.dst_port, DIR_ORIGINAL);
            Some(Slots {
                guest_key: &raw mut s.guest_key,
                reply: &raw mut s.reply,
                original: &raw mut s.original,
                owner: &raw const s.owner,
                opened: &raw mut (*f).opened,
            })
        }
    }
}

/// NAT66 forwards are not implemented: no IPv6 packet opens a flow.
impl Forwarded for Conntrack6Key {
    #[inline(always)]
    fn forwarded(&self, _ingress: u32, _seg: &Segment, _now: u64) -> Option<Slots<Self>> {
        None
    }
}

/// Opens the flow of a forwarded port for the packet whose (untracked)
/// key is `key`; returns its reply-direction entry, as a lookup would.
/// `None`: no forward, or not a conversation's first packet (a TCP
/// segment other than a SYN is left to the host, whose stack answers it).
#[inline(always)]
pub fn open<K: Forwarded>(
    key: &K,
    ingress: u32,
    seg: &Segment,
    now: u64,
) -> Result<Option<*mut K::Entry>, Drop> {
    let proto = key.proto();
    if proto == PROTO_TCP {
        if seg.flags & (tcp::TCP_SYN | tcp::TCP_ACK | tcp::TCP_RST) != tcp::TCP_SYN {
            return Ok(None);
        }
    } else if proto != PROTO_UDP {
        return Ok(None);
    }
    let Some(s) = key.forwarded(ingress, seg, now) else {
        return Ok(None);
    };
    let owner = unsafe { &*s.owner };
    let net_id = owner.network_id as u32;
    match quota::admit(owner) {
        0 => {}
        r if r == DropReason::GuestFlowLimit as u32 => {
            return Err(Drop::new(DropReason::GuestFlowLimit, net_id));
        }
        _ => return Err(Drop::new(DropReason::NetworkFlowLimit, net_id)),
    }
    match conntrack::reserve_reply(key, unsafe { &*s.reply }, now) {
        Reserve::Reserved => {}
        // Another CPU opened it first.
        Reserve::Taken => return Ok(conntrack::lookup(key, now)),
        Reserve::Failed => {
            return Err(Drop::new(DropReason::ConntrackInsertFailed, net_id));
        }
    }
    // Fails when the guest already has a flow from that port to that
    // outside address and port (its own connection): that one stays.
    if conntrack::commit_original(unsafe { &*s.guest_key }, unsafe { &*s.original }, key).is_err() {
        return Err(Drop::new(DropReason::ConntrackInsertFailed, net_id));
    }
    quota::created(owner.ifindex, net_id);
    count_event(net_id, Action::ForwardOpened);
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(s.opened, 1) };
    Ok(conntrack::lookup(key, now))
}

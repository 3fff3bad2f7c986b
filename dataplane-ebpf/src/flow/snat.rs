//! Masquerade NAT, written once over both address families ([`Family`]):
//! a guest's new flow gets a NAT port (the port choice and the two-entry
//! insert), a guest packet is rewritten to the NAT address and port, and a
//! reply from the outside is rewritten back and delivered to its guest.
//! The guest-port programs (`guest::nat4`, `guest::nat6`) route and
//! redirect around [`flow_mapping`] and [`rewrite`]; the uplink calls
//! [`reply`].

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_loop},
};
use vxdp_common::{
    Action, DIR_ORIGINAL, DIR_REPLY, DropReason, FlowEntry, FlowKey, FlowOwner, NetworkConfig,
    PROTO_TCP, PROTO_UDP,
    tcp::{self, Segment},
};

use super::{
    conntrack::{self, Peer, Reserve, Table},
    deliver::{Hook, prepare_for_guest},
    forward::{self, Forwarded},
    frag::Fragments,
    quota,
    sockets::{Owner, host_owns},
};
use crate::base::{
    ctx::{CSUM_FIELD_2, CSUM_FIELD_4, CSUM_PSEUDO, CSUM_UDP, PacketCtx, ptr_at},
    family::Family,
    parse::{self, L4, L4Error},
    stats::{Drop, count_event},
};

/// Candidate NAT ports tried before a new flow is refused as exhausted.
const NAT_PORT_TRIES: u32 = 32;

/// The drop for an L4 header NAT cannot translate.
#[inline(always)]
pub fn l4_error(e: L4Error, network_id: u32) -> Drop {
    let reason = match e {
        L4Error::Truncated => DropReason::Malformed,
        L4Error::UnsupportedProtocol => DropReason::UnsupportedProtocol,
        L4Error::UnsupportedIcmp => DropReason::UnsupportedIcmp,
    };
    Drop::new(reason, network_id)
}

/// What a new flow needs besides its key.
pub struct NewFlow<'a, A> {
    /// The address the guest's packets leave with.
    pub nat_addr: &'a A,
    pub owner: FlowOwner,
    /// The packet's TCP flags and numbers (zero for other protocols); a
    /// reference, not a copy: the guest program's stack is nearly full.
    pub seg: &'a Segment,
    /// The network's NAT port range (host byte order).
    pub port_min: u16,
    pub port_max: u16,
    pub now: u64,
}

impl<'a, A> NewFlow<'a, A> {
    /// A flow of the guest on port `ifindex` of NAT network `net`, sending
    /// from `mac`, to leave with `nat_addr`.
    #[inline(always)]
    pub fn new(
        nat_addr: &'a A,
        net: &NetworkConfig,
        net_id: u32,
        ifindex: u32,
        mac: [u8; 6],
        seg: &'a Segment,
    ) -> Self {
        NewFlow {
            nat_addr,
            owner: FlowOwner {
                ifindex,
                network_id: net_id as u16,
                mac,
            },
            seg,
            port_min: net.nat_port_min,
            port_max: net.nat_port_max,
            now: conntrack::now(),
        }
    }
}

/// Where the flow being looked up or created is kept: `key` in, the
/// original-direction entry (how to rewrite the packet) out in `mapping`.
/// IPv4 keeps them on the stack, NAT66 in a per-CPU map slot (its keys do
/// not all fit the stack next to the route lookup's parameters).
pub struct FlowSlots<'a, K: FlowKey> {
    pub key: &'a K,
    pub reply_key: &'a mut K,
    pub reply: &'a mut K::Entry,
    pub mapping: &'a mut K::Entry,
}

/// The mapping of the flow `s.key` belongs to, into `s.mapping`: its
/// conntrack entry, refreshed, or a new flow's. An entry whose reply entry
/// now belongs to another flow is stale (its NAT port was taken after the
/// reply entry was evicted): it is removed and the packet dropped, so the
/// guest's packets never leave with a port whose replies go elsewhere; the
/// guest's next packet (a retransmission) creates the flow anew, with a
/// new NAT port. (Not remapped within this packet: a second way into the
/// port choice doubles what the verifier walks.) `ctx` is the program's
/// context pointer (`EbpfContext::as_ptr`), for the host-socket lookups of
/// [`create_flow`].
#[inline(always)]
pub fn flow_mapping<K: Table>(
    s: FlowSlots<K>,
    f: &NewFlow<K::Addr>,
    ctx: *mut c_void,
) -> Result<(), DropReason> {
    if let Some(entry) = conntrack::lookup(s.key, f.now) {
        // A flow belongs to the port that created it: another port
        // sending its 5-tuple spoofs that guest's source.
        if unsafe { (*entry).ifindex() } != f.owner.ifindex {
            return Err(DropReason::FlowOfAnotherPort);
        }
        // The reply key is looked up in the slot a new flow would use.
        let peer = match conntrack::peer(s.key, entry, s.reply_key) {
            Peer::Agrees(p) => Some(p),
            Peer::Missing => None,
            Peer::Stale => {
                conntrack::remove(s.key);
                return Err(DropReason::ConntrackMismatch);
            }
        };
        conntrack::touch(s.key, entry, (peer, s.reply_key), f.seg, f.now, s.reply);
        *s.mapping = unsafe { *entry };
        return Ok(());
    }
    create_flow(s, f, ctx)
}

/// The NAT port search of [`create_flow`], run by `bpf_loop`: the verifier
/// checks [`try_port`] once instead of once per candidate, which leaves
/// room for a host-socket lookup per candidate.
#[repr(C)]
struct PortSearch<K: Table> {
    ctx: *mut c_void,
    reply_key: *mut K,
    reply: *const K::Entry,
    /// Candidate `i` > 0 is `min + (start + i) % span`; candidate 0 is
    /// `first`. (Small: this frame and the callback's share the NAT
    /// program's 512 bytes of stack.)
    span: u32,
    start: u32,
    min: u16,
    first: u16,
    outcome: u32,
}

const SEARCHING: u32 = 0;
const RESERVED: u32 = 1;
const FAILED: u32 = 2;

/// One candidate NAT port: taken when no host socket would receive the
/// remote's packets for it and vxdp's table has it free. Returns 1 (stop)
/// once reserved or on a table error, 0 to try the next one.
extern "C" fn try_port<K: Table>(i: u64, data: *mut c_void) -> i64 {
    let s = unsafe { &mut *(data as *mut PortSearch<K>) };
    let port = if i == 0 {
        s.first as u32
    } else {
        // checked_rem: a `%` would leave a divide-by-zero panic path the
        // verifier refuses.
        s.min as u32
            + (s.start.wrapping_add(i as u32))
                .checked_rem(s.span)
                .unwrap_or(0)
    };
    let reply_key = unsafe { &mut *s.reply_key };
    reply_key.set_dst_port((port as u16).to_be());
    if host_owns(s.ctx, reply_key, Owner::Any) {
        return 0;
    }
    match conntrack::reserve_reply(reply_key, unsafe { &*s.reply }, conntrack::now()) {
        Reserve::Reserved => {
            s.outcome = RESERVED;
            1
        }
        Reserve::Taken => 0,
        Reserve::Failed => {
            s.outcome = FAILED;
            1
        }
    }
}

/// Creates both conntrack entries of a new flow, the original one into
/// `s.mapping`, choosing the NAT port: the guest's own port when it is in
/// range and free (as Linux masquerade does), otherwise a bounded number of
/// pseudo-random candidates. A port is free when vxdp's table does not use
/// it for that remote and no host socket would take the remote's packets
/// to it (a guest must not take over the host's connections, nor its
/// listeners' inbound connections from that remote port).
#[inline(always)]
fn create_flow<K: Table>(
    s: FlowSlots<K>,
    f: &NewFlow<K::Addr>,
    ctx: *mut c_void,
) -> Result<(), DropReason> {
    let proto = s.key.proto();
    if proto == PROTO_TCP && f.seg.flags & parse::TCP_RST != 0 {
        // A reset for a flow we do not know: nothing to set up a mapping for.
        return Err(DropReason::UnsolicitedInbound);
    }
    match quota::admit(&f.owner) {
        0 => {}
        r if r == DropReason::GuestFlowLimit as u32 => return Err(DropReason::GuestFlowLimit),
        _ => return Err(DropReason::NetworkFlowLimit),
    }
    let (min, max) = if proto == K::ICMP {
        (0u32, 65535u32)
    } else {
        (f.port_min as u32, f.port_max as u32)
    };
    let span = if max >= min { max - min + 1 } else { 1 };
    let own = u16::from_be(s.key.src_port()) as u32;
    let start = unsafe { bpf_get_prandom_u32() }
        .checked_rem(span)
        .unwrap_or(0);

    s.key.set_reply_entry(s.reply, f.now, &f.owner);
    s.key.set_reply_key(s.reply_key, f.nat_addr);
    let mut search = PortSearch::<K> {
        ctx,
        reply_key: s.reply_key as *mut K,
        reply: s.reply as *const K::Entry,
        span,
        start,
        min: min as u16,
        first: if own >= min && own <= max {
            own as u16
        } else {
            (min + start) as u16
        },
        outcome: SEARCHING,
    };
    unsafe {
        bpf_loop(
            NAT_PORT_TRIES,
            try_port::<K> as *mut c_void,
            &mut search as *mut PortSearch<K> as *mut c_void,
            0,
        )
    };
    match search.outcome {
        RESERVED => {}
        FAILED => return Err(DropReason::ConntrackInsertFailed),
        _ => return Err(DropReason::NatPortExhausted),
    }
    *s.mapping = s
        .reply
        .redirected(f.nat_addr, s.reply_key.dst_port(), DIR_ORIGINAL);
    // The guest's SYN: an RST refusing it must acknowledge exactly it.
    s.mapping.set_tcp(&tcp::opened(f.seg));
    match conntrack::commit_original(s.key, s.mapping, s.reply_key) {
        Ok(()) => {
            quota::created(f.owner.ifindex, f.owner.network_id as u32);
            count_event(f.owner.network_id as u32, Action::ConntrackCreated);
            Ok(())
        }
        // Another CPU set the flow up first: use its mapping.
        Err(true) => match conntrack::lookup(s.key, f.now) {
            Some(e) => {
                *s.mapping = unsafe { *e };
                Ok(())
            }
            None => Err(DropReason::ConntrackInsertFailed),
        },
        Err(false) => Err(DropReason::ConntrackInsertFailed),
    }
}

/// Which side of a packet NAT rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Guest → outside: the source becomes the NAT address and port.
    Source,
    /// A reply: the destination becomes the guest's.
    Destination,
}

/// Rewrites one side's address and port (ICMP: echo id), decrements the TTL
/// (hop limit) and fixes the checksums: IPv4's header checksum, and the L4
/// checksum for the port and, where it covers the pseudo-header, for each
/// changed address word. All direct writes happen before the checksum
/// updates (TC's helpers invalidate packet pointers).
#[inline(always)]
pub fn rewrite<C: PacketCtx, F: Family>(
    ctx: &C,
    ip: &F,
    l4: &L4,
    side: Side,
    new_addr: &F::Addr,
    new_port: u16,
) -> Result<(), ()> {
    let (addr_off, old_addr, port_off) = match side {
        Side::Source => (F::SRC_OFF, ip.src(), l4.src_port_off),
        Side::Destination => (F::DST_OFF, ip.dst(), l4.dst_port_off),
    };
    let port_field = ptr_at::<C, [u8; 2]>(ctx, port_off)?;
    let old_port = u16::from_ne_bytes(unsafe { *port_field });
    unsafe { *port_field = new_port.to_ne_bytes() };
    F::write_addr(ctx, addr_off, new_addr)?;
    let ttl_word = ip.write_ttl(ctx)?;

    F::header_csum_addr(ctx, old_addr, new_addr)?;
    F::header_csum_ttl(ctx, ttl_word)?;
    // UDP: a 0 checksum (IPv4: none) stays 0, a computed 0 becomes 0xffff.
    let udp = if ip.proto() == PROTO_UDP { CSUM_UDP } else { 0 };
    if F::pseudo_header(ip.proto()) {
        for i in 0..F::WORDS {
            let (from, to) = (F::word(old_addr, i), F::word(new_addr, i));
            if F::WORDS == 1 || from != to {
                ctx.l4_csum_replace(l4.csum_off, from, to, CSUM_PSEUDO | udp | CSUM_FIELD_4)?;
            }
        }
    }
    ctx.l4_csum_replace(
        l4.csum_off,
        old_port as u32,
        new_port as u32,
        udp | CSUM_FIELD_2,
    )
}

/// What the uplink's [`reply`] did with a packet.
pub enum Reply<V> {
    /// A tracked flow's reply, translated and sent to its guest.
    Delivered(V),
    /// No L4 header NAT could key on (maybe an ICMP error about a flow).
    NoPorts,
    /// Not a reply of a tracked flow.
    Untracked,
}

/// The uplink: a reply of a tracked NAT flow is reverse-NATed and
/// redirected to its guest; so is the first packet to a forwarded port,
/// which opens its flow (`forward::open`).
#[inline(always)]
pub fn reply<C: Hook, F: Fragments>(ctx: &C, ip: &F) -> Result<Reply<C::Verdict>, Drop>
where
    F::Key: Forwarded,
{
    if !ip.whole_l4() {
        return Ok(Reply::Untracked);
    }
    let Ok(l4) = ip.l4(ctx) else {
        return Ok(Reply::NoPorts);
    };
    let key = ip.flow_key(&l4);
    let now = conntrack::now();
    let entry = match conntrack::lookup(&key, now) {
        Some(e) => e,
        None => match forward::open(&key, ctx.ingress_ifindex(), &l4.tcp, now)? {
            Some(e) => e,
            None => return Ok(Reply::Untracked),
        },
    };
    if unsafe { (*entry).direction() } != DIR_REPLY {
        return Ok(Reply::Untracked);
    }
    let mut peer_key = key;
    let peer = match conntrack::peer(&key, entry, &mut peer_key) {
        Peer::Agrees(p) => Some(p),
        Peer::Missing => None,
        // The guest's flow maps to another NAT port now (or the entry at
        // its key is another port's): this reply entry outlived its flow.
        Peer::Stale => {
            let net_id = unsafe { (*entry).network_id() };
            conntrack::remove(&key);
            return Err(Drop::new(DropReason::ConntrackMismatch, net_id));
        }
    };
    if !ctx.deliverable(unsafe { (*entry).ifindex() }) {
        return Ok(Reply::Delivered(ctx.defer()));
    }
    // A host socket that took this conversation's tuple after the guest's
    // flow was set up owns its packets: the guest's flow goes (its next
    // packet gets another NAT port). Checked once a second per flow, with
    // the refresh, so the fast path pays nothing.
    if conntrack::refresh_due(unsafe { &*entry }, now)
        && host_owns(ctx.as_ptr(), &key, Owner::Conversation)
    {
        conntrack::remove_flow(&key, unsafe { &*entry });
        count_event(unsafe { (*entry).network_id() }, Action::FlowYieldedToHost);
        return Ok(Reply::Untracked);
    }
    let mut spare = unsafe { *entry };
    conntrack::touch(&key, entry, (peer, &peer_key), &l4.tcp, now, &mut spare);
    let e = unsafe { *entry };
    let net_id = e.network_id();
    prepare_for_guest(ctx, net_id, ip.ttl(), e.mac())?;
    rewrite(
        ctx,
        ip,
        &l4,
        Side::Destination,
        e.rewrite_addr(),
        e.rewrite_port(),
    )
    .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    // A first fragment: the rest of its datagram follows.
    ip.remember(true, e.rewrite_addr(), e.ifindex(), net_id, e.mac());
    ctx.to_port(e.ifindex(), net_id, Action::DnatForwarded)
        .map(Reply::Delivered)
}

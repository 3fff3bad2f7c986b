//! Port forwards used from the host itself: cgroup socket-address programs
//! (`vxdp_host_*`, attached to the root cgroup v2). A host process
//! connecting to a forward's public address and port never sends a packet
//! through the uplink (the address is its own), so the uplink programs
//! never see it; instead its socket's destination is rewritten before the
//! kernel routes it, as socket-level load balancers do. The socket then
//! talks to the guest directly over the network's bridge (the guest sees
//! the host's address on the bridge), and the reverse programs show the
//! public address again where the process reads its peer: the source of a
//! received UDP datagram and `getpeername`.
//!
//! The programs run for every socket of the machine: they act only for
//! sockets of the namespace their dataplane serves (its netns cookie in
//! `VXDP_HOST_CONFIG`; guests — VMs or namespaces — never match) and only
//! on a TCP or UDP destination `VXDP_FORWARDS` has. They never refuse a
//! call (always return 1): anything else goes on unchanged.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::read_volatile,
};

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use vxdp_common::{Action, ForwardKey, HostReverse, HostReverseKey, PROTO_TCP, PROTO_UDP};

use crate::base::{
    maps::{VXDP_FORWARDS, VXDP_HOST_CONFIG, VXDP_HOST_REVERSE},
    stats::count_event,
};

/// What a socket-address program returns to let the call go on.
const PROCEED: i32 = 1;

/// The socket's protocol when it is one a forward can have.
#[inline(always)]
fn forwardable_proto(ctx: &SockAddrContext) -> Option<u8> {
    let proto = unsafe { read_volatile(&(*ctx.sock_addr).protocol) };
    (proto == PROTO_TCP as u32 || proto == PROTO_UDP as u32).then_some(proto as u8)
}

/// The port of the context's address (network byte order). Read whole:
/// the verifier accepts 4-byte loads of the field.
#[inline(always)]
unsafe fn user_port(sa: *mut bpf_sock_addr) -> u16 {
    unsafe { read_volatile(&(*sa).user_port) as u16 }
}

/// Whether the socket lives in the namespace this dataplane serves.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(config) = VXDP_HOST_CONFIG.get(0) else {
        return false;
    };
    let wanted = config.netns_cookie;
    wanted != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == wanted
}

/// `connect4` (TCP and UDP) and `sendmsg4` (unconnected UDP): a
/// destination that is a forward's public address and port becomes the
/// guest's address and port; the socket's record lets the reverse programs
/// show the public address again.
#[inline(always)]
pub fn to_forward(ctx: &SockAddrContext) -> i32 {
    let Some(proto) = forwardable_proto(ctx) else {
        return PROCEED;
    };
    let sa = ctx.sock_addr;
    let (addr, port) = unsafe { (read_volatile(&(*sa).user_ip4), user_port(sa)) };
    let key = ForwardKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // The namespace check after the lookup: most sockets of the machine
    // miss the (small) forward table, and the lookup is the cheaper test.
    let Some(f) = VXDP_FORWARDS.get_ptr_mut(&key) else {
        return PROCEED;
    };
    if !ours(ctx) {
        return PROCEED;
    }
    let (guest_addr, guest_port, network_id) =
        unsafe { ((*f).guest_addr, (*f).guest_port, (*f).network_id) };
    let reverse_key = HostReverseKey {
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        guest_addr,
        guest_port,
        proto,
        _pad: 0,
    };
    let reverse = HostReverse {
        public_addr: addr,
        public_port: port,
        _pad: 0,
    };
    // Without its record the socket still reaches the guest; it would see
    // the guest's address as its peer.
    let _ = VXDP_HOST_REVERSE.insert(&reverse_key, &reverse, 0);
    unsafe {
        (*sa).user_ip4 = guest_addr;
        (*sa).user_port = guest_port as u32;
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*f).opened, 1);
    }
    count_event(network_id as u32, Action::HostForwarded);
    PROCEED
}

/// `recvmsg4` (the source of a UDP datagram) and `getpeername4`: a guest
/// address and port a forward put in this socket's place reads as the
/// public address and port it asked for.
#[inline(always)]
pub fn from_forward(ctx: &SockAddrContext) -> i32 {
    let Some(proto) = forwardable_proto(ctx) else {
        return PROCEED;
    };
    let sa = ctx.sock_addr;
    let key = HostReverseKey {
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        guest_addr: unsafe { read_volatile(&(*sa).user_ip4) },
        guest_port: unsafe { user_port(sa) },
        proto,
        _pad: 0,
    };
    // Records exist only for sockets `to_forward` found in this
    // dataplane's namespace (socket cookies are never reused).
    if let Some(r) = unsafe { VXDP_HOST_REVERSE.get(&key) } {
        unsafe {
            (*sa).user_ip4 = r.public_addr;
            (*sa).user_port = r.public_port as u32;
        }
    }
    PROCEED
}

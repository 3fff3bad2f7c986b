//! The host's own sockets, which vxdp's tables never see: a NAT port must
//! not be one a host socket uses for the same remote (or listens on), or
//! the remote's packets for the host would be translated to a guest; and a
//! flow whose tuple a host socket took after the flow was created goes to
//! the host.

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple},
    cty::c_void,
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
};
use vxdp_common::{Conntrack6Key, ConntrackKey, FlowKey, PROTO_TCP, PROTO_UDP, SockTupleScratch};

use crate::base::maps::VXDP_SOCK_SCRATCH;

/// A conntrack key as the tuple a socket lookup takes.
pub trait SockTuple: FlowKey {
    /// Writes `self`, read as a packet arriving at the host (its source the
    /// remote, its destination the host's address and port), as a
    /// `struct bpf_sock_tuple`; returns how many of its bytes are used.
    fn fill_tuple(&self, t: &mut SockTupleScratch) -> u32;
}

/// The ports word of a tuple: source then destination port, each as in
/// packets.
#[inline(always)]
fn ports(src: u16, dst: u16) -> u32 {
    let (s, d) = (src.to_ne_bytes(), dst.to_ne_bytes());
    u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
}

impl SockTuple for ConntrackKey {
    #[inline(always)]
    fn fill_tuple(&self, t: &mut SockTupleScratch) -> u32 {
        t.words[0] = self.src_addr;
        t.words[1] = self.dst_addr;
        t.words[2] = ports(self.src_port, self.dst_port);
        12
    }
}

impl SockTuple for Conntrack6Key {
    #[inline(always)]
    fn fill_tuple(&self, t: &mut SockTupleScratch) -> u32 {
        let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        for i in 0..4 {
            t.words[i] = w(&self.src_addr, 4 * i);
            t.words[4 + i] = w(&self.dst_addr, 4 * i);
        }
        t.words[8] = ports(self.src_port, self.dst_port);
        36
    }
}

/// Which host sockets count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Any socket that would receive the packet: an established or
    /// time-wait TCP socket with the 4-tuple, a TCP listener on the port, a
    /// connected or bound UDP socket. Used when choosing a NAT port.
    Any,
    /// Only a socket bound to this very conversation: a TCP socket that is
    /// not a listener, a connected UDP socket. Used for an existing flow
    /// (as Linux's conntrack does, an existing flow keeps its replies from
    /// a listener or an unconnected socket opened later).
    Conversation,
}

const TCP_ESTABLISHED: u32 = 1;
const TCP_LISTEN: u32 = 10;

/// Whether a host socket of the program's namespace owns a packet with the
/// tuple `key` (see [`SockTuple::sock_tuple`]). `ctx` is the program's
/// context pointer (`EbpfContext::as_ptr`).
#[inline(always)]
pub fn host_owns<K: SockTuple>(ctx: *mut c_void, key: &K, owner: Owner) -> bool {
    let proto = key.proto();
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return false;
    }
    // Off the stack: see `SockTupleScratch`. Without it the lookup cannot
    // be made, and the port is treated as the host's (refused) only when
    // choosing one; an existing flow is left alone.
    let Some(scratch) = VXDP_SOCK_SCRATCH.get_ptr_mut(0) else {
        return owner == Owner::Any;
    };
    let size = key.fill_tuple(unsafe { &mut *scratch });
    let tuple = scratch as *mut bpf_sock_tuple;
    let netns = BPF_F_CURRENT_NETNS as u64;
    let sk: *mut bpf_sock = unsafe {
        if proto == PROTO_TCP {
            bpf_skc_lookup_tcp(ctx, tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx, tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    let owns = match owner {
        Owner::Any => true,
        Owner::Conversation => {
            let state = unsafe { (*sk).state };
            if proto == PROTO_TCP {
                state != TCP_LISTEN
            } else {
                state == TCP_ESTABLISHED
            }
        }
    };
    unsafe { bpf_sk_release(sk as *mut _) };
    owns
}

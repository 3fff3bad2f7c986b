//! The host's own sockets, which vxdp's tables never see: a NAT port must
//! not be one a host socket uses for the same remote (or listens on), or
//! the remote's packets for the host would be translated to a guest.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple},
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
};
use vxdp_common::{PROTO_TCP, PROTO_UDP};

/// Whether a host socket of the program's namespace would receive a packet
/// from `remote:remote_port` to `local:local_port` (addresses and ports as
/// in packets; `ports` = remote port | local port << 16, five arguments
/// being a BPF function's most): an established or time-wait TCP socket
/// with that 4-tuple, a TCP listener on the local port, a connected or
/// bound UDP socket.
// A BPF subprogram: inlined into each of the port loop's candidates it
// multiplies the states the verifier walks past its limit.
#[inline(never)]
pub fn host_owns_v4<C: EbpfContext>(
    ctx: &C,
    proto: u8,
    remote: u32,
    local: u32,
    ports: u32,
) -> bool {
    let (remote_port, local_port) = (ports as u16, (ports >> 16) as u16);
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return false;
    }
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // Writing a union field is safe; only reading one needs `unsafe`.
    tuple.__bindgen_anon_1.ipv4.saddr = remote;
    tuple.__bindgen_anon_1.ipv4.daddr = local;
    tuple.__bindgen_anon_1.ipv4.sport = remote_port;
    tuple.__bindgen_anon_1.ipv4.dport = local_port;
    // The IPv4 part of the tuple: two addresses and two ports.
    let size = 12u32;
    let netns = BPF_F_CURRENT_NETNS as u64;
    let sk = unsafe {
        if proto == PROTO_TCP {
            bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.as_ptr(), &mut tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    unsafe { bpf_sk_release(sk as *mut _) };
    true
}

//! Next hop and redirect: `bpf_fib_lookup` on the kernel's routing and
//! neighbour tables, then a redirect out of the chosen interface (TC).

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_REDIRECT, bpf_fib_lookup as FibLookupRaw, bpf_redir_neigh},
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `struct bpf_fib_lookup` as the kernel lays it out (64 bytes), with the
/// unions flattened to the IPv4 members vxdp uses.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FibParams {
    pub family: u8,
    pub l4_protocol: u8,
    pub sport: u16,
    pub dport: u16,
    /// In: packet length for the MTU check (0: skip). Out: the MTU.
    pub tot_len: u16,
    /// In: the input interface. Out: the egress interface.
    pub ifindex: u32,
    pub tos: u32,
    pub src: [u32; 4],
    /// In: destination. Out: the next hop (gateway or destination).
    pub dst: [u32; 4],
    pub vlan_proto: u16,
    pub vlan_tci: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}
const _: () = assert!(size_of::<FibParams>() == 64);
const _: () = assert!(size_of::<FibParams>() == size_of::<FibLookupRaw>());

/// What the routing decision means for a packet.
pub enum Route {
    /// Next hop known: egress interface and MACs filled in.
    Forward(FibParams),
    /// Egress known, next hop's MAC not resolved yet.
    NoNeighbour(FibParams),
    /// Addressed to this host.
    Local,
    /// No route / blackhole / prohibit: the kernel will answer with ICMP.
    Unreachable,
    ForwardingDisabled,
    /// Larger than the egress MTU.
    FragNeeded,
    /// Anything else the fast path does not handle.
    Unsupported,
}

/// Looks up the route for an IPv4 packet as if it arrived on `in_ifindex`.
#[inline(always)]
pub fn route_v4<C: EbpfContext>(
    ctx: &C,
    in_ifindex: u32,
    src: u32,
    dst: u32,
    proto: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
) -> Route {
    let mut p = FibParams::default();
    let rc = fib_lookup_v4(
        ctx,
        &mut p,
        in_ifindex,
        src,
        dst,
        proto,
        (sport, dport),
        tot_len,
    );
    classify(rc, p)
}

/// [`route_v4`] into `p` (e.g. a per-CPU slot: the route's 64 bytes off a
/// full stack), returning the helper's code (`FIB_*`). `ports`: source
/// and destination port, as in packets.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn fib_lookup_v4<C: EbpfContext>(
    ctx: &C,
    p: &mut FibParams,
    in_ifindex: u32,
    src: u32,
    dst: u32,
    proto: u8,
    (sport, dport): (u16, u16),
    tot_len: u16,
) -> i64 {
    *p = FibParams {
        family: AF_INET,
        l4_protocol: proto,
        sport,
        dport,
        tot_len,
        ifindex: in_ifindex,
        ..FibParams::default()
    };
    p.src[0] = src;
    p.dst[0] = dst;
    lookup(ctx, p)
}

/// Looks up the route for an IPv6 packet as if it arrived on `in_ifindex`.
#[inline(always)]
pub fn route_v6<C: EbpfContext>(
    ctx: &C,
    in_ifindex: u32,
    src: &[u8; 16],
    dst: &[u8; 16],
    next_header: u8,
    tot_len: u16,
) -> Route {
    let mut p = FibParams::default();
    let rc = fib_lookup_v6(ctx, &mut p, in_ifindex, src, dst, next_header, tot_len);
    classify(rc, p)
}

/// `bpf_fib_lookup` return codes (`BPF_FIB_LKUP_RET_*`).
pub const FIB_SUCCESS: i64 = 0;
pub const FIB_BLACKHOLE: i64 = 1;
pub const FIB_PROHIBIT: i64 = 3;
pub const FIB_NOT_FWDED: i64 = 4;
pub const FIB_FWD_DISABLED: i64 = 5;
pub const FIB_NO_NEIGH: i64 = 7;
pub const FIB_FRAG_NEEDED: i64 = 8;

/// [`route_v6`] with the parameters in caller-provided memory (e.g. a
/// per-CPU map slot, where the stack is short): fills `p`, looks the
/// route up and returns the helper's code; `p` then holds the answer.
#[inline(always)]
pub fn fib_lookup_v6<C: EbpfContext>(
    ctx: &C,
    p: &mut FibParams,
    in_ifindex: u32,
    src: &[u8; 16],
    dst: &[u8; 16],
    next_header: u8,
    tot_len: u16,
) -> i64 {
    *p = FibParams {
        family: AF_INET6,
        l4_protocol: next_header,
        tot_len,
        ifindex: in_ifindex,
        ..FibParams::default()
    };
    for i in 0..4 {
        p.src[i] = u32::from_ne_bytes([src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]]);
        p.dst[i] = u32::from_ne_bytes([dst[4 * i], dst[4 * i + 1], dst[4 * i + 2], dst[4 * i + 3]]);
    }
    lookup(ctx, p)
}

#[inline(always)]
fn lookup<C: EbpfContext>(ctx: &C, p: &mut FibParams) -> i64 {
    unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            p as *mut FibParams as *mut FibLookupRaw,
            size_of::<FibParams>() as i32,
            0,
        )
    }
}

#[inline(always)]
fn classify(rc: i64, p: FibParams) -> Route {
    match rc {
        0 => Route::Forward(p),
        7 => Route::NoNeighbour(p),
        4 => Route::Local,
        1..=3 => Route::Unreachable,
        5 => Route::ForwardingDisabled,
        8 => Route::FragNeeded,
        _ => Route::Unsupported,
    }
}

/// TC: sends the packet out along a lookup's answer `p`. Without a
/// resolved neighbour the kernel resolves it and queues the packet
/// (`bpf_redirect_neigh`), so no packet has to take the slow path
/// un-translated. `resolved` when the next
/// hop's MAC was found (FIB_SUCCESS), else the kernel resolves it.
#[inline(always)]
pub fn tc_redirect_fib(p: &FibParams, resolved: bool) -> Result<i32, ()> {
    let rc = if resolved {
        unsafe { bpf_redirect(p.ifindex, 0) }
    } else {
        let mut nh = bpf_redir_neigh {
            nh_family: p.family as u32,
            ..unsafe { core::mem::zeroed() }
        };
        // The union holds the IPv4 next hop in its first word, the IPv6
        // one in all four.
        unsafe {
            *(&mut nh.__bindgen_anon_1 as *mut _ as *mut [u32; 4]) = p.dst;
            bpf_redirect_neigh(p.ifindex, &mut nh, size_of::<bpf_redir_neigh>() as i32, 0)
        }
    };
    if rc as i32 == TC_ACT_REDIRECT {
        Ok(TC_ACT_REDIRECT)
    } else {
        Err(())
    }
}

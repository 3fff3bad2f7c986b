//! vxdp's eBPF programs. Entry points only: each one calls its module's
//! function and turns an error into a counted drop, so no verdict is silent.
//!
//! Imports go one way: the programs here → the modes (`guest`, `uplink`,
//! `direct`) → `flow` (conntrack, NAT, delivery) → `base` (context,
//! parsing, maps, counters, policy predicates).
#![no_std]
#![no_main]
// `atomic_xadd` (flow::quota): the BPF target has no atomic types in core.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod base;
mod direct;
mod flow;
mod guest;
mod host;
mod uplink;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{cgroup_sock_addr, classifier, tracepoint, xdp},
    programs::{SockAddrContext, TcContext, TracePointContext, XdpContext},
};
use base::stats;

/// TC ingress on every guest port: anti-spoofing, then the network's mode
/// (NAT, route/open forwarding, isolation).
#[classifier]
pub fn vxdp_guest_in(ctx: TcContext) -> i32 {
    // Judged (and counted) by the port's XDP program already.
    if flow::deliver::judged_by_xdp(&ctx) {
        return TC_ACT_OK;
    }
    match guest::ingress::guest_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_in`: NAT (SNAT, route, redirect).
#[classifier]
pub fn vxdp_guest_nat(ctx: TcContext) -> i32 {
    match guest::nat4::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_in`: routing without NAT (route/open, IPv6).
#[classifier]
pub fn vxdp_guest_route(ctx: TcContext) -> i32 {
    match guest::route::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_in`: direct (macvtap-like) networks.
#[classifier]
pub fn vxdp_guest_direct(ctx: TcContext) -> i32 {
    match direct::guest_entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// TC ingress on a direct network's NIC: broadcast/multicast from the wire
/// cloned to the guest ports.
#[classifier]
pub fn vxdp_nic_in(ctx: TcContext) -> i32 {
    match direct::nic_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// TC egress on a direct network's NIC: the host → its guests.
#[classifier]
pub fn vxdp_nic_out(ctx: TcContext) -> i32 {
    match direct::nic_egress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// TC egress on the bridges vxdp creates: what the host forwards into a
/// network from any interface meets the uplink's inbound refusals.
#[classifier]
pub fn vxdp_bridge_out(ctx: TcContext) -> i32 {
    match uplink::forwarded::bridge_egress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_in`: NAT66 (a NAT network's IPv6 with
/// `<nat ipv6='yes'>`).
#[classifier]
pub fn vxdp_guest_nat6(ctx: TcContext) -> i32 {
    match guest::nat6::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// XDP on a tap guest port (`--guest-xdp`): `vxdp_guest_in`'s code on the
/// frames it can finish, the rest left to it (see `guest::xdp`).
#[xdp]
pub fn vxdp_guest_xdp(ctx: XdpContext) -> u32 {
    match guest::xdp::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_xdp(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_xdp`: NAT (SNAT, route, redirect).
#[xdp]
pub fn vxdp_guest_xdp_nat(ctx: XdpContext) -> u32 {
    match guest::nat4::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_xdp(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_xdp`: routing without NAT.
#[xdp]
pub fn vxdp_guest_xdp_route(ctx: XdpContext) -> u32 {
    match guest::route::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_xdp(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_xdp`: NAT66.
#[xdp]
pub fn vxdp_guest_xdp_nat6(ctx: XdpContext) -> u32 {
    match guest::nat6::entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_xdp(&ctx, drop),
    }
}

/// XDP on the uplink: outside → guest (reverse NAT of replies, inbound
/// policy of every network's mode).
#[xdp]
pub fn vxdp_uplink_in(ctx: XdpContext) -> u32 {
    match uplink::ingress::uplink_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_xdp(&ctx, drop),
    }
}

/// TC ingress on every interface with `vxdp_uplink_in`: the same uplink
/// logic for the frames XDP left to the socket-buffer path (see
/// `flow::deliver`).
#[classifier]
pub fn vxdp_uplink_tc(ctx: TcContext) -> i32 {
    match uplink::ingress::tc(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// `xdp:xdp_devmap_xmit`: the kernel sent or dropped a batch of frames an
/// XDP program redirected to one device (see `refused`).
#[tracepoint]
pub fn vxdp_xdp_xmit(ctx: TracePointContext) -> u32 {
    uplink::refused::devmap_xmit(&ctx);
    0
}

/// `xdp:xdp_redirect_err`: an XDP redirect the kernel could not carry out
/// (one frame, dropped).
#[tracepoint]
pub fn vxdp_xdp_redirect_err(ctx: TracePointContext) -> u32 {
    uplink::refused::redirect_err(&ctx);
    0
}

/// `cgroup/connect4` on the root cgroup: a host socket of the dataplane's
/// namespace connecting to a port forward reaches the guest (see `host`).
#[cgroup_sock_addr(connect4)]
pub fn vxdp_host_connect4(ctx: SockAddrContext) -> i32 {
    host::to_forward(&ctx)
}

/// `cgroup/sendmsg4`: the same for an unconnected UDP socket's datagram.
#[cgroup_sock_addr(sendmsg4)]
pub fn vxdp_host_sendmsg4(ctx: SockAddrContext) -> i32 {
    host::to_forward(&ctx)
}

/// `cgroup/recvmsg4`: a UDP answer from the guest reads as coming from
/// the forward's public address and port.
#[cgroup_sock_addr(recvmsg4)]
pub fn vxdp_host_recvmsg4(ctx: SockAddrContext) -> i32 {
    host::from_forward(&ctx)
}

/// `cgroup/getpeername4`: a rewritten socket's peer reads as the public
/// address and port it connected to.
#[cgroup_sock_addr(getpeername4)]
pub fn vxdp_host_getpeername4(ctx: SockAddrContext) -> i32 {
    host::from_forward(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

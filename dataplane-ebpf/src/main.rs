//! vxdp's eBPF programs. Entry points only: each one calls its `try_` function
//! and turns an error into a counted drop, so no verdict is silent.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod ctx;
mod direct;
mod forward;
mod hook;
mod icmp_error;
mod maps;
mod nat;
mod nat6;
mod parse;
mod policy;
mod port;
mod port_stats;
mod refused;
mod route;
mod route_in;
mod sockets;
mod stats;
mod uplink;

use aya_ebpf::{
    macros::{classifier, tracepoint, xdp},
    programs::{TcContext, TracePointContext, XdpContext},
};

/// TC ingress on every guest port: anti-spoofing, then the network's mode
/// (NAT, route/open forwarding, isolation).
#[classifier]
pub fn vxdp_guest_in(ctx: TcContext) -> i32 {
    match port::guest_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_in`: NAT (SNAT, route, redirect).
#[classifier]
pub fn vxdp_guest_nat(ctx: TcContext) -> i32 {
    match port::nat_entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// Tail-called by `vxdp_guest_in`: routing without NAT (route/open, IPv6).
#[classifier]
pub fn vxdp_guest_route(ctx: TcContext) -> i32 {
    match port::route_entry(&ctx) {
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

/// Tail-called by `vxdp_guest_in`: NAT66 (a NAT network's IPv6 with
/// `<nat ipv6='yes'>`).
#[classifier]
pub fn vxdp_guest_nat6(ctx: TcContext) -> i32 {
    match port::nat6_entry(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// XDP on the uplink: outside → guest (reverse NAT of replies, inbound
/// policy of every network's mode).
#[xdp]
pub fn vxdp_uplink_in(ctx: XdpContext) -> u32 {
    match uplink::uplink_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_xdp(&ctx, drop),
    }
}

/// TC ingress on every interface with `vxdp_uplink_in`: the same uplink
/// logic for the frames XDP left to the socket-buffer path (see `hook`).
#[classifier]
pub fn vxdp_uplink_tc(ctx: TcContext) -> i32 {
    if hook::judged_by_xdp(&ctx) {
        return aya_ebpf::bindings::TC_ACT_UNSPEC;
    }
    // A GRO'd or paged socket buffer may keep headers out of the linear
    // area that direct packet access sees.
    let len = ctx.len();
    let want = if len < nat::HEADERS_MAX {
        len
    } else {
        nat::HEADERS_MAX
    };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    match uplink::uplink_ingress(&ctx) {
        Ok(verdict) => verdict,
        Err(drop) => stats::count_and_drop_tc(&ctx, drop),
    }
}

/// `xdp:xdp_devmap_xmit`: the kernel sent or dropped a batch of frames an
/// XDP program redirected to one device (see `refused`).
#[tracepoint]
pub fn vxdp_xdp_xmit(ctx: TracePointContext) -> u32 {
    // Offsets from the event's format: from_ifindex 8, to_ifindex 16,
    // drops 20, sent 24.
    let read = |off| unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0);
    let (from, to, drops, sent) = (read(8), read(16), read(20), read(24));
    if to > 0 && (sent > 0 || drops > 0) {
        refused::settle(
            from as u32,
            to as u32,
            sent.max(0) as u32,
            drops.max(0) as u32,
        );
    }
    0
}

/// `xdp:xdp_redirect_err`: an XDP redirect the kernel could not carry out
/// (one frame, dropped).
#[tracepoint]
pub fn vxdp_xdp_redirect_err(ctx: TracePointContext) -> u32 {
    // Offsets from the event's format: ifindex 16, to_ifindex 24.
    let read = |off| unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0);
    let (from, to) = (read(16), read(24));
    if to > 0 {
        refused::settle(from as u32, to as u32, 0, 1);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

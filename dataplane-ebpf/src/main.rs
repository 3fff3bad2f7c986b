//! vxdp's eBPF programs. Entry points only: each one calls its `try_` function
//! and turns an error into a counted drop, so no verdict is silent.
#![no_std]
#![no_main]

mod conntrack;
mod ctx;
mod direct;
mod forward;
mod icmp_error;
mod maps;
mod nat;
mod nat6;
mod parse;
mod policy;
mod port;
mod route;
mod route_in;
mod sockets;
mod port_stats;
mod stats;
mod uplink;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

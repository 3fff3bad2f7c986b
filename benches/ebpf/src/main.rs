//! The benchmark harness's eBPF programs (not part of vxdp's dataplane):
//!
//! - `bench_sink`: XDP on the receiving interface; counts IPv4 UDP frames
//!   per CPU and drops them, passes everything else.
//! - `bench_ceiling_xdp` / `bench_ceiling_tc`: the least a forwarder can do,
//!   rewrite both MACs and redirect to the uplink; the "ceiling" vxdp is
//!   compared with.
//! - `bench_empty_xdp`: returns `XDP_PASS`; the fixed cost of a timed test run.
#![no_std]
#![no_main]

#[path = "../../src/wire.rs"]
#[allow(dead_code)]
mod wire;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action},
    helpers::bpf_redirect,
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use wire::CeilingConfig;

/// Per-CPU count of frames the sink dropped.
#[map]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static CEILING_CONFIG: Array<CeilingConfig> = Array::with_max_entries(1, 0);

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 24 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    let (ethertype, proto) = unsafe { ([*p.add(12), *p.add(13)], *p.add(23)) };
    if ethertype != [0x08, 0x00] || proto != 17 {
        return xdp_action::XDP_PASS;
    }
    if let Some(c) = SINK_COUNT.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

#[inline(always)]
fn rewrite_macs(start: usize, end: usize) -> Option<u32> {
    let cfg = CEILING_CONFIG.get(0)?;
    if start + 14 > end {
        return None;
    }
    unsafe {
        core::ptr::write_unaligned(start as *mut [u8; 6], cfg.dst_mac);
        core::ptr::write_unaligned((start + 6) as *mut [u8; 6], cfg.src_mac);
    }
    Some(cfg.ifindex)
}

#[xdp]
pub fn bench_ceiling_xdp(ctx: XdpContext) -> u32 {
    match rewrite_macs(ctx.data(), ctx.data_end()) {
        Some(ifindex) => unsafe { bpf_redirect(ifindex, 0) as u32 },
        None => xdp_action::XDP_ABORTED,
    }
}

#[classifier]
pub fn bench_ceiling_tc(ctx: TcContext) -> i32 {
    match rewrite_macs(ctx.data(), ctx.data_end()) {
        Some(ifindex) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        None => TC_ACT_SHOT,
    }
}

#[xdp]
pub fn bench_empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

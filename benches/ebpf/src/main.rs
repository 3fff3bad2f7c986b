//! The benchmark harness's eBPF programs (not part of vxdp's dataplane):
//!
//! - `bench_gen`: run with `BPF_PROG_TEST_RUN` in live-frames mode, writes a
//!   complete 64-byte UDP frame of the next flow into the (recycled) frame
//!   and sends it out of the ingress interface (`XDP_TX`).
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
use wire::{
    CeilingConfig, FRAME_LEN, GenConfig, OFF_IP_CSUM, OFF_IP_DST, OFF_UDP_CSUM, OFF_UDP_DPORT,
    OFF_UDP_SPORT, VARY_DST_PORT,
};

#[map]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// Per-CPU packet sequence of the generator.
#[map]
static GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU count of frames the sink dropped.
#[map]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static CEILING_CONFIG: Array<CeilingConfig> = Array::with_max_entries(1, 0);

#[inline(always)]
fn be16(b: &[u8; 64], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// One's-complement sum folded to 16 bits.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 incremental update: checksum `check` after 16-bit words
/// `old[i]` became `new[i]`.
#[inline(always)]
fn csum_replace(check: u16, old: [u16; 3], new: [u16; 3]) -> u16 {
    let mut sum = (!check) as u32;
    let mut i = 0;
    while i < 3 {
        sum += (!old[i]) as u32 + new[i] as u32;
        i += 1;
    }
    !fold(sum)
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    try_gen(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn try_gen(ctx: &XdpContext) -> Result<u32, ()> {
    let cfg = GEN_CONFIG.get(0).ok_or(())?;
    let seq = GEN_SEQ.get_ptr_mut(0).ok_or(())?;
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    let flow = (n % cfg.flows.max(1) as u64) as u32;
    let ppd = cfg.ports_per_dst.max(1);
    let port_step = (flow % ppd) as u16;
    let dst_step = flow / ppd;

    let start = ctx.data();
    if start + FRAME_LEN > ctx.data_end() {
        return Err(());
    }
    // Live frames are recycled as the forwarder left them: write everything.
    let pkt = start as *mut u8;
    unsafe {
        let src = cfg.frame.as_ptr() as *const u64;
        let dst = pkt as *mut u64;
        let mut i = 0;
        while i < FRAME_LEN / 8 {
            core::ptr::write_unaligned(dst.add(i), *src.add(i));
            i += 1;
        }
        core::ptr::write_unaligned(
            pkt.add(56) as *mut u32,
            core::ptr::read_unaligned(cfg.frame.as_ptr().add(56) as *const u32),
        );
    }

    let t = &cfg.frame;
    let port_off = if cfg.vary == VARY_DST_PORT {
        OFF_UDP_DPORT
    } else {
        OFF_UDP_SPORT
    };
    let old_port = be16(t, port_off);
    let new_port = old_port.wrapping_add(port_step);
    let old_dst = [be16(t, OFF_IP_DST), be16(t, OFF_IP_DST + 2)];
    let dst = (u32::from(old_dst[0]) << 16 | u32::from(old_dst[1])).wrapping_add(dst_step);
    let new_dst = [(dst >> 16) as u16, dst as u16];

    let ip_csum = csum_replace(
        be16(t, OFF_IP_CSUM),
        [old_dst[0], old_dst[1], 0],
        [new_dst[0], new_dst[1], 0],
    );
    let mut udp_csum = csum_replace(
        be16(t, OFF_UDP_CSUM),
        [old_dst[0], old_dst[1], old_port],
        [new_dst[0], new_dst[1], new_port],
    );
    if udp_csum == 0 {
        udp_csum = 0xffff;
    }
    unsafe {
        let put = |off: usize, v: u16| {
            core::ptr::write_unaligned(pkt.add(off) as *mut [u8; 2], v.to_be_bytes())
        };
        put(port_off, new_port);
        put(OFF_IP_DST, new_dst[0]);
        put(OFF_IP_DST + 2, new_dst[1]);
        put(OFF_IP_CSUM, ip_csum);
        put(OFF_UDP_CSUM, udp_csum);
    }
    Ok(cfg.verdict)
}

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

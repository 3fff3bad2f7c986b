//! `--only tap` (not part of the default sections yet): a guest writing
//! into a tap as QEMU's tap backend does (non-blocking fd, virtio-net
//! header, one frame per write; testkit's `TapWriter`), 64-byte UDP to the
//! outside through the kernel path libvirt builds (bridge, its iptables
//! rules, conntrack) and through a vxdp NAT network, with the guest port's
//! TC program only and with the guest XDP program too (`--port-xdp on`), each with
//! finished checksums and with NEEDS_CSUM (what a Linux virtio guest with
//! checksum offload writes). Interleaved, one topology per variant
//! (testkit's `NatTopology`, GRO on the outside's veth end so the uplink
//! takes XDP frames). The writer is pinned to the benchmark CPU; the rate
//! is what reached the outside host's interface (its rx counter) over the
//! writer's wall time, which includes the kernel's work for each write.
//!
//! Not measured here yet: outside → guest into the tap. Bulk GSO TCP
//! both ways through the same topology: `taptcp`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, OUTSIDE_HOST, WAN_ADDR,
    packet::{Mac, Packet, sock},
    tap_writer::{TapWriter, with_vnet_hdr},
};

use crate::{
    report::Report,
    topo::{iptables_restore, libvirt_rules},
};

pub(crate) const TAP: &str = "btap0";
pub(crate) const GUEST_MAC: &str = "52:54:00:62:74:01";
pub(crate) const GUEST_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 122, 50);

pub(crate) struct Variant {
    pub id: &'static str,
    pub label: &'static str,
    /// `None`: the kernel path libvirt builds (bridge, its iptables rules,
    /// conntrack); `Some(xdp)`: vxdp, with the guest XDP program or not.
    pub vxdp: Option<bool>,
}

pub(crate) const VARIANTS: [Variant; 3] = [
    Variant {
        id: "kernel",
        label: "kernel NAT (libvirt's bridge and rules)",
        vxdp: None,
    },
    Variant {
        id: "tc",
        label: "vxdp NAT, TC on the tap",
        vxdp: Some(false),
    },
    Variant {
        id: "xdp",
        label: "vxdp NAT, XDP on the tap (+TC)",
        vxdp: Some(true),
    },
];

fn mac(text: &str) -> Result<Mac> {
    let mut m = [0u8; 6];
    for (i, b) in text.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(b, 16)?;
    }
    Ok(m)
}

fn bridge_mac(topo: &NatTopology) -> Result<Mac> {
    let out = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", "virbr0"])?.stdout)?;
    let text = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("virbr0 has no MAC")?
        .to_string();
    mac(&text)
}

fn wan_rx(topo: &NatTopology) -> Result<u64> {
    let out = topo
        .wan
        .exec("cat", &["/sys/class/net/wan0/statistics/rx_packets"])?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn setup(v: &Variant) -> Result<(NatTopology, TapWriter)> {
    setup_with(&format!("bt{}", v.id), v.vxdp, |hyp| {
        TapWriter::open(hyp, TAP)
    })
}

/// The tap topology this section and `taptcp` measure: testkit's
/// `NatTopology` (GRO on the outside's veth end so the uplink takes XDP
/// frames), the tap `TAP` made by `open` in the hypervisor namespace,
/// plugged into libvirt's bridge with its rules (`vxdp` `None`) or into a
/// vxdp NAT network for `GUEST_MAC`/`GUEST_ADDR` with the guest XDP
/// program or not; the hypervisor's next hop resolved.
pub(crate) fn setup_with<T>(
    tag: &str,
    vxdp: Option<bool>,
    open: impl FnOnce(&vxdp_testkit::Netns) -> Result<T>,
) -> Result<(NatTopology, T)> {
    let mut topo = NatTopology::new(tag, 0)?;
    // The uplink takes XDP frames only while its peer has GRO (or XDP).
    topo.wan.exec("ethtool", &["-K", "wan0", "gro", "on"])?;
    let Some(xdp) = vxdp else {
        let hyp = &topo.hyp;
        hyp.ip(&["link", "add", "virbr0", "type", "bridge"])?;
        hyp.ip(&["addr", "add", "192.168.122.1/24", "dev", "virbr0"])?;
        let tap = open(hyp)?;
        hyp.ip(&["link", "set", TAP, "master", "virbr0"])?;
        hyp.ip(&["link", "set", "virbr0", "up"])?;
        hyp.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        iptables_restore(hyp, &libvirt_rules(true))?;
        topo.hyp.exec("ping", &["-c", "1", "-W", "10", WAN_ADDR])?;
        return Ok((topo, tap));
    };
    topo.create(DEFAULT_XML)?;
    let tap = open(&topo.hyp)?;
    let addr = GUEST_ADDR.to_string();
    topo.vxdp(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        TAP,
        "--mac",
        GUEST_MAC,
        "--ip",
        &addr,
        "--port-xdp",
        if xdp { "on" } else { "off" },
    ])?;
    topo.hyp.exec("ping", &["-c", "1", "-W", "10", WAN_ADDR])?;
    Ok((topo, tap))
}

pub(crate) fn pin(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Writes `packets` frames; returns (delivered per second, delivered).
fn one_run(topo: &NatTopology, tap: &TapWriter, frame: &[u8], packets: u32) -> Result<(f64, u64)> {
    let rx0 = wan_rx(topo)?;
    let start = Instant::now();
    let mut refused = 0u64;
    for _ in 0..packets {
        if !tap.write(frame) {
            refused += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // What is queued still arrives (the counter stops moving).
    let mut rx1 = wan_rx(topo)?;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = wan_rx(topo)?;
        if now == rx1 {
            break;
        }
        rx1 = now;
    }
    let delivered = rx1 - rx0;
    ensure!(
        delivered > 0,
        "nothing reached the outside host ({refused} writes refused)"
    );
    Ok((delivered as f64 / elapsed, delivered))
}

pub fn run(reps: usize, packets: u32, cpu: usize, r: &mut Report) -> Result<()> {
    let mut topos = Vec::new();
    for v in &VARIANTS {
        topos.push(setup(v)?);
    }
    pin(cpu);
    for rep in 0..reps {
        for (partial, csum) in [(false, "finished"), (true, "needs_csum")] {
            for (v, (topo, tap)) in VARIANTS.iter().zip(&topos) {
                let frame = Packet::udp(sock(GUEST_ADDR, 5000), sock(OUTSIDE_HOST.parse()?, 9))
                    .payload(&[0u8; 18])
                    .macs(mac(GUEST_MAC)?, bridge_mac(topo)?)
                    .build();
                let frame = with_vnet_hdr(&frame, partial);
                let (rate, delivered) = one_run(topo, tap, &frame, packets)?;
                println!(
                    "[bench] tap rep {rep}: {} {csum}: {:.3} Mpps ({delivered} of {packets} delivered)",
                    v.id,
                    rate / 1e6
                );
                r.sample(
                    &format!("tap.nat.{csum}.{}", v.id),
                    &format!(
                        "guest -> outside via a tap, 64 B UDP, {csum} checksum: {}",
                        v.label
                    ),
                    "pps",
                    rate,
                );
            }
        }
    }
    Ok(())
}

//! `taptcp`: bulk TCP through a tap, both directions, with the guest's
//! offloads on, as QEMU with a Linux virtio-net guest runs it.
//!
//! The guest is a real Linux TCP stack in its own namespace on a second
//! tap (`tapg0`, `IFF_VNET_HDR`, `TUNSETOFFLOAD` CSUM|TSO4|TSO6: the
//! virtio-net features such a guest negotiates), so its kernel hands out
//! GSO super-frames and NEEDS_CSUM frames with a virtio-net header;
//! `IFF_NAPI` makes what is written to it go through NAPI and GRO, as a
//! virtio-net driver receives. A relay stands in for QEMU: it copies every
//! frame, header included, between that tap's fd and the fd of the
//! hypervisor's tap (`btap0`, `IFF_VNET_HDR` with the same offloads, so
//! frames for the guest are handed over as GSO/partial frames too, as QEMU
//! asks for a guest with those features; both taps keep tun's default
//! 10-byte header, so the bytes need no translation). The hypervisor side
//! is `tap::setup_with`'s topology: the kernel path libvirt builds (bridge,
//! its iptables rules, conntrack), a vxdp NAT network with the guest
//! port's TC program only, and the same with the guest XDP program too
//! (`--port-xdp on`).
//!
//! iperf3 runs between the guest and the outside host: `out` is guest →
//! outside, `in` is outside → guest (`-R`, the guest still connects),
//! each variant and direction in turn within every repetition. The iperf3
//! client and server and both relay threads are pinned to the benchmark
//! CPU, as every other section's work is: the figure is what one CPU
//! carries through the whole path (both stacks, the relay's two copies,
//! the forwarding, which for guest → outside runs in the relay's `write`),
//! the relay's share is the same for every variant, and other tenants of
//! the machine's remaining CPUs do not enter it.
//!
//! The relay counts what it reads. Every guest → outside run must carry
//! GSO frames (`gso_type` set in the header read from `tapg0`; the run
//! fails otherwise, the guest's offloads would not be in effect); measured
//! 2026-12-07, over 99% of those frames are GSO, ~64 KB each, on every
//! variant. Outside → guest, the kernel path hands the relay GSO frames
//! (~64 KB: the outside host's veth sends TSO frames, which the bridge
//! forwards whole), but vxdp's hands it 1514-byte frames: an XDP program
//! on a veth (vxdp's uplink program on `up0`) clears software GSO from its
//! peer (`veth_xdp_set`, drivers/net/veth.c), so the outside host sends
//! MTU-sized segments, and with GRO off on `up0` (the veth default)
//! nothing coalesces them on their way into the tap. So outside → guest is
//! also measured with a NIC-like uplink (`in.nic`, the kernel path and
//! vxdp TC; [`setup`]'s `nic`): TSO and TX checksum offload off on `wan0`
//! (segments off a wire) and GRO on on `up0`, as a NIC has it; there vxdp's
//! uplink XDP program leaves bulk TCP segments to GRO and its TC program
//! (`flow::deliver`), and they reach the tap as GSO frames. The guest takes
//! frames one write (one NAPI run, no GRO batch) at a time:
//! tun gives a `write` no way to say more is coming (only vhost-net's
//! `sendmsg` does), where a virtio guest's NAPI poll could coalesce what
//! queued up. The progress line shows both directions' GSO count and bytes
//! per frame; `frame_bytes` records the latter.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{
    NatTopology, Netns, OUTSIDE_HOST,
    tap_writer::{TapWriter, VNET_HDR},
};

use crate::{
    report::Report,
    tap::{self, GUEST_ADDR, GUEST_MAC, VARIANTS, Variant},
    tcp,
};

/// The guest's side of the relay, in the guest namespace.
const GUEST_TAP: &str = "tapg0";
/// What QEMU asks of a tap for a guest with checksum offload and TSO.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
/// Room for the largest GSO frame tun hands out (64 KiB) and its header.
const FRAME_BUF: usize = 65_536 + 2 * VNET_HDR + 256;

/// Directions: index into [`Relay`]'s counters.
const OUT: usize = 0;
const IN: usize = 1;

/// What one direction of the relay did.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    gso: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    frames: u64,
    gso: u64,
    bytes: u64,
    refused: u64,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            frames: self.frames.load(Relaxed),
            gso: self.gso.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}

impl std::ops::Sub for Snapshot {
    type Output = Snapshot;
    fn sub(self, o: Snapshot) -> Snapshot {
        Snapshot {
            frames: self.frames - o.frames,
            gso: self.gso - o.gso,
            bytes: self.bytes - o.bytes,
            refused: self.refused - o.refused,
        }
    }
}

/// QEMU's part: two threads, each copying whole frames (virtio-net header
/// included) from one tap's fd to the other's. Stopped and joined on drop.
struct Relay {
    stop: Arc<AtomicBool>,
    counters: Arc<[Counters; 2]>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    fn start(guest: TapWriter, hyp: TapWriter, cpu: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counters: Arc<[Counters; 2]> = Arc::default();
        let (guest, hyp) = (Arc::new(guest), Arc::new(hyp));
        let threads = [(OUT, &guest, &hyp), (IN, &hyp, &guest)]
            .into_iter()
            .map(|(dir, from, to)| {
                let (stop, counters) = (stop.clone(), counters.clone());
                let (from, to) = (from.clone(), to.clone());
                std::thread::spawn(move || {
                    // Best effort: a relay off the CPU still relays.
                    let _ = crate::progs::pin_to_cpu(cpu);
                    copy(&from, &to, &counters[dir], &stop);
                })
            })
            .collect();
        Self {
            stop,
            counters,
            threads,
        }
    }

    fn snapshot(&self) -> [Snapshot; 2] {
        [self.counters[OUT].snapshot(), self.counters[IN].snapshot()]
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Copies frames from `from` to `to` until `stop`: waits in `poll` (up to
/// 100 ms, to see `stop`), then reads until nothing is queued.
fn copy(from: &TapWriter, to: &TapWriter, c: &Counters, stop: &AtomicBool) {
    let mut buf = vec![0u8; FRAME_BUF];
    while !stop.load(Relaxed) {
        let mut pfd = libc::pollfd {
            fd: from.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        while let Some(n) = from.read(&mut buf) {
            if n <= VNET_HDR {
                continue;
            }
            c.frames.fetch_add(1, Relaxed);
            c.bytes.fetch_add((n - VNET_HDR) as u64, Relaxed);
            // virtio_net_hdr.gso_type, without the ECN bit.
            if buf[1] & 0x7f != 0 {
                c.gso.fetch_add(1, Relaxed);
            }
            if !to.write(&buf[..n]) {
                c.refused.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One variant's topology: the relay goes first on drop (closing both
/// taps), then the guest namespace, then the rest.
struct Bench {
    relay: Relay,
    guest: Netns,
    topo: NatTopology,
}

/// `nic`: the uplink as a NIC has it instead of the veth defaults: the
/// outside host's segments arrive MTU-sized with finished checksums (TSO
/// and TX checksum offload off on `wan0`, as frames off a wire) and GRO is
/// on on `up0` (a NIC's default; a veth's is off).
fn setup(v: &Variant, cpu: usize, nic: bool) -> Result<Bench> {
    let tag = format!("tt{}{}", v.id, if nic { "n" } else { "" });
    let (topo, hyp_tap) = tap::setup_with(&tag, v.vxdp, |hyp| {
        TapWriter::open_offloaded(hyp, tap::TAP, OFFLOADS, false)
    })?;
    if nic {
        topo.wan
            .exec("ethtool", &["-K", "wan0", "tx", "off", "tso", "off"])?;
        topo.hyp.exec("ethtool", &["-K", "up0", "gro", "on"])?;
    }
    let guest = Netns::new(format!("{}-g", topo.prefix))?;
    let guest_tap = TapWriter::open_offloaded(&guest, GUEST_TAP, OFFLOADS, true)?;
    guest.ip(&["link", "set", GUEST_TAP, "address", GUEST_MAC])?;
    guest.ip(&["addr", "add", &format!("{GUEST_ADDR}/24"), "dev", GUEST_TAP])?;
    guest.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    let relay = Relay::start(guest_tap, hyp_tap, cpu);
    let bench = Bench { relay, guest, topo };
    // Progress-based: the first answer, however long the machine takes.
    let start = Instant::now();
    loop {
        let out = bench
            .guest
            .exec_status("ping", &["-c", "1", "-W", "1", OUTSIDE_HOST])?;
        if out.status.success() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "taptcp {}: the guest cannot ping {OUTSIDE_HOST} through the relay within 60 s \
                 (relay: {:?})",
                v.id,
                bench.relay.snapshot()
            );
        }
    }
    Ok(bench)
}

pub fn run(reps: usize, secs: u32, cpu: usize, r: &mut Report) -> Result<()> {
    let mut benches = Vec::new();
    for v in &VARIANTS {
        benches.push(setup(v, cpu, false).with_context(|| format!("taptcp {}", v.id))?);
    }
    // Outside -> guest with a NIC-like uplink: the kernel path and vxdp TC.
    let nic_variants = [&VARIANTS[0], &VARIANTS[1]];
    let mut nic = Vec::new();
    for v in nic_variants {
        nic.push(
            setup(v, cpu, true).with_context(|| format!("taptcp {} (NIC-like uplink)", v.id))?,
        );
    }
    let mut port = 5301u16;
    for rep in 0..reps {
        for (dir, name, what, on_nic) in [
            (OUT, "out", "guest -> outside", false),
            (IN, "in", "outside -> guest", false),
            (IN, "in.nic", "outside -> guest, NIC-like uplink", true),
        ] {
            let runs: Vec<(&Variant, &Bench)> = if on_nic {
                nic_variants.into_iter().zip(&nic).collect()
            } else {
                VARIANTS.iter().zip(&benches).collect()
            };
            for (v, b) in runs {
                let before = b.relay.snapshot()[dir];
                let gbps = tcp::iperf_ns(
                    &b.guest.name,
                    &b.topo.wan.name,
                    OUTSIDE_HOST,
                    &tcp::Run {
                        secs,
                        cpu,
                        port,
                        reverse: dir == IN,
                    },
                )
                .with_context(|| format!("taptcp {name} {}", v.id))?;
                port += 1;
                let d = b.relay.snapshot()[dir] - before;
                ensure!(
                    dir == IN || d.gso > 0,
                    "taptcp {name} {}: the relay read no GSO frame from the guest's tap \
                     ({} frames): the guest's offloads are not in effect",
                    v.id,
                    d.frames
                );
                let avg = d.bytes as f64 / d.frames.max(1) as f64;
                println!(
                    "[bench] taptcp rep {rep}: {name} {}: {gbps:.2} Gbit/s (relay: {} frames, \
                     {} GSO, {avg:.0} B per frame, {} refused)",
                    v.id, d.frames, d.gso, d.refused
                );
                r.sample(
                    &format!("taptcp.nat.{name}.{}.gbps", v.id),
                    &format!("bulk TCP {what} via a tap (guest offloads on): {}", v.label),
                    "Gbit/s",
                    gbps,
                );
                r.sample(
                    &format!("taptcp.nat.{name}.{}.frame_bytes", v.id),
                    &format!(
                        "bulk TCP {what} via a tap: bytes per frame the relay carried, {}",
                        v.label
                    ),
                    "B",
                    avg,
                );
            }
        }
    }
    Ok(())
}

/// The targets: vxdp at least the kernel's rate, per direction and
/// variant; XDP over TC for information.
pub fn targets(r: &mut Report) {
    for dir in ["out", "in"] {
        for v in ["tc", "xdp"] {
            r.compare(
                &format!("tap bulk TCP {dir}: vxdp {v} / kernel"),
                &format!("taptcp.nat.{dir}.{v}.gbps"),
                &format!("taptcp.nat.{dir}.kernel.gbps"),
                Some(1.0),
                None,
            );
        }
        r.compare(
            &format!("tap bulk TCP {dir}: vxdp xdp / tc"),
            &format!("taptcp.nat.{dir}.xdp.gbps"),
            &format!("taptcp.nat.{dir}.tc.gbps"),
            None,
            None,
        );
    }
    r.compare(
        "tap bulk TCP in, NIC-like uplink: vxdp tc / kernel",
        "taptcp.nat.in.nic.tc.gbps",
        "taptcp.nat.in.nic.kernel.gbps",
        Some(1.0),
        None,
    );
}

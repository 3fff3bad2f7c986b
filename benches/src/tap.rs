//! `--only tap` (a default section): a guest writing into a tap as QEMU's
//! tap backend does without vhost-net (non-blocking fd, virtio-net header,
//! one frame per `write`; testkit's `TapWriter`), through the kernel path
//! libvirt builds (bridge, its iptables rules, conntrack) and through a
//! vxdp NAT network, with the guest port's TC program only and with the
//! guest XDP program too (`--port-xdp on`). Interleaved, one topology per
//! variant (testkit's `NatTopology`, GRO on the outside's veth end so the
//! uplink can hand it XDP frames); the guest's neighbour entry and bridge
//! port are static on the kernel path, as vxdp's port is.
//!
//! - **Guest → outside** (`tap.nat.{finished,needs_csum}.{kernel,tc,xdp}`
//!   with one flow, `tap.nat.finished.10kflows.{kernel,tc,xdp}`): 64-byte
//!   UDP with finished checksums and with NEEDS_CSUM (what a Linux virtio
//!   guest with checksum offload writes), one flow; 10,000 flows (source
//!   ports) with finished checksums. Every flow is opened before the timed
//!   run. The writer is pinned to the benchmark CPU; the rate is what
//!   reached the outside host's interface (its rx counter) per CPU-second
//!   of the writer (`progs::CpuClock`: its thread, which runs the kernel's
//!   work for each write, and its CPU's softirq thread), and per wall-clock
//!   second (`.wall_pps`). The same frames also go through the tap ceiling
//!   (`tap.nat.*.ceiling`, [`ceiling_setup`]): what any forwarder on the
//!   tap could reach.
//! - **Outside → guest, NAT replies** (`tap.reply.{1flow,10kflows}.{kernel,
//!   vxdp}`): the guest first opens the flows (frames written into the
//!   tap, every one checked to have reached the outside), then the
//!   benchmark's generator socket on the outside host's `wan0` (AF_XDP copy
//!   mode by default, pinned to the benchmark CPU) sends 64-byte UDP replies
//!   to the NAT address and ports. vxdp's uplink XDP program reverse-NATs
//!   them and redirects them into the tap (tun's `ndo_xdp_xmit` queues XDP
//!   frames on the tap's ring); the kernel routes them through conntrack
//!   and the bridge into the tap's queue. A reader on another CPU drains
//!   the tap one frame per `read` (as QEMU's backend does) and counts the
//!   replies addressed to the guest; a frame the tap's queue dropped was
//!   not delivered. The rate is the replies read per CPU-second of the
//!   sender (its thread and its CPU's softirq thread, where the forwarding
//!   runs) and per wall-clock second. The ceiling topology measures the
//!   replies' ceiling too (`tap.reply.*.ceiling`): the ceiling program on
//!   the uplink redirects every frame into the tap, untranslated. The guest XDP program plays no part in this direction (tun runs
//!   it on frames the guest writes), so vxdp is measured once, on the
//!   TC-only topology.
//!
//! **Batched writes.** QEMU without vhost-net writes one frame per
//! `write()`/`writev()`, and that is the only way userspace can hand a tap
//! frames: the tap fd's `write_iter` calls `tun_get_user` with `more` false,
//! and `tun_build_skb` runs the tap's XDP program for that one frame and
//! calls `xdp_do_flush()` right after a redirect. tun batches XDP frames
//! (one flush per batch, `tun_xdp_one` in a loop) only in `tun_sendmsg`
//! with a `TUN_MSG_PTR` control message, whose payload is an array of
//! kernel `xdp_buff`s: that socket is reached only through
//! `tun_get_socket()`, which vhost-net calls (`vhost_tx_batch`); the fd
//! userspace holds is a character device, not a socket (no `sendmsg`,
//! `sendmmsg` or io_uring `SENDMSG` on it), and `writev` of several iovecs
//! is still one frame. The `MSG_MORE` batching of socket buffers
//! (`tun_rx_batched`, `ethtool -C rx-frames`) is likewise reachable only
//! through that socket. (Checked in drivers/net/tun.c, `tun_chr_write_iter`,
//! `tun_build_skb`, `tun_sendmsg`, `tun_xdp_one`.) This machine has no
//! vhost-net (`/dev/vhost-net` absent, no loadable modules), so batched
//! writes cannot be measured here.
//!
//! Bulk GSO TCP both ways through the same topology: `taptcp`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR, WAN_ADDR,
    packet::Mac,
    tap_writer::{TapWriter, VNET_HDR, with_vnet_hdr},
    vxdp::stats_counter,
};

use crate::{
    forward::{DST_PORT, FIRST_PORT},
    generator::{self, Socket},
    progs::{BenchProgs, CpuClock, PROG_CEILING_XDP, Traffic, in_netns, pin_to_cpu},
    report::Report,
    topo::{iptables_restore, libvirt_rules},
    wire::{CeilingConfig, FRAME_LEN},
};

pub(crate) const TAP: &str = "btap0";
pub(crate) const GUEST_MAC: &str = "52:54:00:62:74:01";
pub(crate) const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 50);

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

/// The MAC of `dev` in `ns`.
fn link_mac(ns: &vxdp_testkit::netns::Netns, dev: &str) -> Result<Mac> {
    let out = String::from_utf8(ns.ip(&["-o", "link", "show", dev])?.stdout)?;
    let text = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("{dev} has no MAC"))?
        .to_string();
    mac(&text)
}

fn bridge_mac(topo: &NatTopology) -> Result<Mac> {
    link_mac(&topo.hyp, "virbr0")
}

fn wan_rx(topo: &NatTopology) -> Result<u64> {
    let out = topo
        .wan
        .exec("cat", &["/sys/class/net/wan0/statistics/rx_packets"])?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Frames the outside host received since its counter read `rx0`, once
/// `want` have arrived or none has for `idle` (what is queued still
/// arrives; a loaded machine defers softirqs, so the wait is
/// progress-based).
fn wan_rx_reaches(topo: &NatTopology, rx0: u64, want: u64, idle: Duration) -> Result<u64> {
    let (mut reached, mut last) = (wan_rx(topo)? - rx0, Instant::now());
    while reached < want && last.elapsed() < idle {
        std::thread::sleep(Duration::from_millis(20));
        let now = wan_rx(topo)? - rx0;
        if now > reached {
            (reached, last) = (now, Instant::now());
        }
    }
    Ok(reached)
}

/// Frames the tap dropped on the way to its reader (tun counts a full
/// queue as a transmit drop).
fn tap_tx_dropped(topo: &NatTopology) -> Result<u64> {
    let out = topo.hyp.exec(
        "cat",
        &[&format!("/sys/class/net/{TAP}/statistics/tx_dropped")],
    )?;
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
        // Static, as vxdp's port is (and as the veth topologies have it):
        // no figure depends on ARP or on the bridge learning the guest.
        hyp.ip(&[
            "neigh",
            "replace",
            &GUEST_ADDR.to_string(),
            "lladdr",
            GUEST_MAC,
            "dev",
            "virbr0",
            "nud",
            "permanent",
        ])?;
        hyp.exec(
            "bridge",
            &["fdb", "replace", GUEST_MAC, "dev", TAP, "master", "static"],
        )?;
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

/// A run's delivery rate: per CPU-second (the sending thread's CPU time
/// plus its CPU's softirq thread's, `progs::CpuClock`: what the forwarding
/// cost, whatever else ran on the shared CPU) and per wall-clock second.
#[derive(Clone, Copy, Debug)]
struct Rates {
    cpu: f64,
    wall: f64,
}

impl Rates {
    fn of(delivered: u64, cpu: Duration, wall: Duration) -> Result<Self> {
        ensure!(
            cpu > Duration::ZERO && wall > Duration::ZERO,
            "no time elapsed"
        );
        Ok(Self {
            cpu: delivered as f64 / cpu.as_secs_f64(),
            wall: delivered as f64 / wall.as_secs_f64(),
        })
    }

    /// Records figure `id` (per CPU-second) and `id.wall_pps`.
    fn record(self, r: &mut Report, id: &str, label: &str) {
        r.sample(id, label, "pps", self.cpu);
        r.sample(
            &format!("{id}.wall_pps"),
            &format!("{label} [wall clock]"),
            "pps",
            self.wall,
        );
    }
}

/// Writes `packets` frames from this thread (pinned to `cpu`), cycling
/// through `frames` (one per flow, the flows opened already); returns the
/// rates at which they reached the outside host, and how many did. The
/// CPU time is the writes' (each runs the kernel's or vxdp's forwarding in
/// the writer's context) up to the last write.
fn one_run(
    topo: &NatTopology,
    tap: &TapWriter,
    frames: &[Vec<u8>],
    packets: u32,
    cpu: usize,
) -> Result<(Rates, u64)> {
    let rx0 = wan_rx(topo)?;
    let clock = CpuClock::start(cpu);
    let start = Instant::now();
    let mut refused = 0u64;
    for frame in frames.iter().cycle().take(packets as usize) {
        if !tap.write(frame) {
            refused += 1;
        }
    }
    let (wall, cpu_time) = (start.elapsed(), clock.elapsed());
    let written = u64::from(packets) - refused;
    let delivered = wan_rx_reaches(topo, rx0, written, Duration::from_secs(2))?;
    ensure!(
        delivered > 0,
        "nothing reached the outside host ({refused} writes refused)"
    );
    Ok((Rates::of(delivered, cpu_time, wall)?, delivered))
}

/// First source port of the guest -> outside runs' flows (apart from the
/// reply flows').
const NAT_PORT: u16 = 20000;

/// `flows` flows of the guest: 192.168.122.50, source ports from
/// `first_port`, to the outside host's [`DST_PORT`].
fn guest_flows(topo: &NatTopology, first_port: u16, flows: u32) -> Result<Traffic> {
    // The ceiling's topology has no bridge, and its program rewrites the
    // MACs: any unicast destination does.
    let gateway = if topo.prefix.starts_with(&format!("vx{CEILING_TAG}")) {
        link_mac(&topo.hyp, TAP)?
    } else {
        bridge_mac(topo)?
    };
    Ok(Traffic {
        eth_src: mac(GUEST_MAC)?,
        eth_dst: gateway,
        src: SocketAddrV4::new(GUEST_ADDR, first_port),
        dst: SocketAddrV4::new(OUTSIDE_HOST.parse()?, DST_PORT),
        flows,
        ports_per_dst: 64512,
        vary_dst_port: false,
    })
}

/// The outside host's replies to [`guest_flows`] from [`FIRST_PORT`]: to the uplink's address
/// and the flows' ports (both NATs keep a free source port).
fn reply_flows(topo: &NatTopology, flows: u32) -> Result<Traffic> {
    Ok(Traffic {
        eth_src: link_mac(&topo.wan, "wan0")?,
        eth_dst: link_mac(&topo.hyp, "up0")?,
        src: SocketAddrV4::new(OUTSIDE_HOST.parse()?, DST_PORT),
        dst: SocketAddrV4::new(UPLINK_ADDR.parse()?, FIRST_PORT),
        flows,
        ports_per_dst: 64512,
        vary_dst_port: true,
    })
}

/// Whether `frame` (as read from the tap: virtio-net header first) is a
/// reply of [`reply_flows`] delivered to the guest's MAC: IPv4 UDP from
/// the outside host's [`DST_PORT`] to `to` (the guest's address once
/// translated back; the uplink's for the ceiling, which translates
/// nothing).
fn is_reply(frame: &[u8], guest_mac: &Mac, outside: Ipv4Addr, to: Ipv4Addr) -> bool {
    let Some(f) = frame.get(VNET_HDR..) else {
        return false;
    };
    f.len() >= 14 + 20 + 8
        && f[..6] == guest_mac[..]
        && f[12..14] == [0x08, 0x00]
        && f[14] == 0x45
        && f[23] == 17
        && f[26..30] == outside.octets()
        && f[30..34] == to.octets()
        && f[34..36] == DST_PORT.to_be_bytes()
}

/// Waits up to `ms` for the tap to have a frame to read.
fn readable(tap: &TapWriter, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: tap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, ms) > 0 && p.revents & libc::POLLIN != 0 }
}

/// One frame from the tap (non-blocking): its length, or `None` when the
/// queue is empty.
fn read_frame(tap: &TapWriter, buf: &mut [u8]) -> Result<Option<usize>> {
    let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(e).with_context(|| format!("reading {}", tap.name)),
    }
}

/// What a reader of the tap got: replies to the guest, anything else.
#[derive(Default, Debug)]
struct Drained {
    replies: u64,
    other: u64,
}

/// Reads the tap until `done` is set and nothing more arrives for 200 ms
/// (whatever the kernel queued has been read by then).
fn drain(
    tap: &TapWriter,
    guest_mac: &Mac,
    (outside, to): (Ipv4Addr, Ipv4Addr),
    done: &AtomicBool,
) -> Result<Drained> {
    let mut buf = vec![0u8; 65536];
    let mut d = Drained::default();
    loop {
        match read_frame(tap, &mut buf)? {
            Some(n) if is_reply(&buf[..n], guest_mac, outside, to) => d.replies += 1,
            Some(_) => d.other += 1,
            None => {
                // Checked before waiting: a frame that arrives after the
                // flag is set wakes the poll.
                let finished = done.load(Ordering::Acquire);
                if !readable(tap, 200) && finished {
                    return Ok(d);
                }
            }
        }
    }
}

/// Every flow's frame of `t`, with the virtio-net header (NEEDS_CSUM with
/// `partial`), built before any timed run.
fn tap_frames(t: &Traffic, partial: bool) -> Vec<Vec<u8>> {
    let frames = t.frames();
    let mut buf = [0u8; FRAME_LEN];
    (0..frames.flows)
        .map(|i| {
            frames.write(i, &mut buf);
            with_vnet_hdr(&buf, partial)
        })
        .collect()
}

/// The guest opens the flows of `frames` (each written twice); every
/// frame must reach the outside host, so that no timed run sets a flow up
/// and every reply finds its flow.
fn open_flows(topo: &NatTopology, tap: &TapWriter, frames: &[Vec<u8>]) -> Result<()> {
    let rx0 = wan_rx(topo)?;
    for f in frames.iter().chain(frames) {
        tap.write_all(f)?;
    }
    let written = frames.len() as u64 * 2;
    let reached = wan_rx_reaches(topo, rx0, written, Duration::from_secs(10))?;
    ensure!(
        reached >= written,
        "{}: {reached} of the guest's {written} frames opening {} flows reached the outside host",
        topo.prefix,
        frames.len()
    );
    Ok(())
}

/// vxdp's `dnat_forwarded` counter (replies it translated and redirected).
fn dnat_forwarded(topo: &NatTopology) -> Result<u64> {
    let out = String::from_utf8(topo.vxdp(&["stats", "--all"])?.stdout)?;
    Ok(stats_counter(&out, "default", "dnat_forwarded")?.0)
}

/// Replies from the outside host to `flows` flows the guest has just
/// opened: (replies read from the tap per second of the sender's wall
/// time, replies read, other frames read, tap drops). On vxdp every reply
/// read must have been forwarded by vxdp (its counter), not by the kernel.
/// Who carries the replies into the tap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReplyPath {
    Kernel,
    Vxdp,
    /// The ceiling topology's program on the uplink: MAC rewrite and
    /// redirect into the tap, no translation.
    Ceiling,
}

fn reply_run(
    topo: &NatTopology,
    tap: &TapWriter,
    socket: &mut Socket,
    flows: u32,
    packets: u32,
    cpus: (usize, usize),
    path: ReplyPath,
) -> Result<(Rates, Drained, u64)> {
    let vxdp = path == ReplyPath::Vxdp;
    let to = if path == ReplyPath::Ceiling {
        UPLINK_ADDR.parse()?
    } else {
        GUEST_ADDR
    };
    open_flows(
        topo,
        tap,
        &tap_frames(&guest_flows(topo, FIRST_PORT, flows)?, false),
    )?;
    let dnat0 = if vxdp { dnat_forwarded(topo)? } else { 0 };
    let outside: Ipv4Addr = OUTSIDE_HOST.parse()?;
    let guest_mac = mac(GUEST_MAC)?;
    // What the opening left in the queue (the outside host's port
    // unreachable errors) is not a reply.
    let never = AtomicBool::new(true);
    drain(tap, &guest_mac, (outside, to), &never)?;
    let frames = reply_flows(topo, flows)?.frames();
    let dropped0 = tap_tx_dropped(topo)?;
    let done = AtomicBool::new(false);
    let (times, drained) = std::thread::scope(|s| -> Result<((Duration, Duration), Drained)> {
        let reader = s.spawn(|| {
            // Off the sender's CPU, as QEMU's I/O thread would be.
            pin_to_cpu(cpus.1)?;
            drain(tap, &guest_mac, (outside, to), &done)
        });
        let sent = in_netns(&topo.wan.name, Some(cpus.0), || {
            let clock = CpuClock::start(cpus.0);
            let started = Instant::now();
            let sent = socket.send(&frames, 0, u64::from(packets))?;
            Ok(((started.elapsed(), clock.elapsed()), sent.frames))
        });
        done.store(true, Ordering::Release);
        let drained = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the tap reader panicked"))??;
        let (times, sent) = sent?;
        ensure!(
            sent == u64::from(packets),
            "the generator sent {sent} of {packets} replies"
        );
        Ok((times, drained))
    })?;
    let dropped = tap_tx_dropped(topo)? - dropped0;
    if vxdp {
        let dnat = dnat_forwarded(topo)? - dnat0;
        ensure!(
            dnat >= drained.replies,
            "{}: the guest read {} replies, vxdp forwarded {dnat}",
            topo.prefix,
            drained.replies
        );
    }
    ensure!(
        drained.replies > 0,
        "{}: no reply reached the guest ({} other frames read, {dropped} dropped by the tap)",
        topo.prefix,
        drained.other
    );
    let (wall, cpu) = times;
    Ok((Rates::of(drained.replies, cpu, wall)?, drained, dropped))
}

/// The ceiling topology's tag (its namespaces' prefix starts with
/// `vx<tag>`).
const CEILING_TAG: &str = "btceil";

/// The ceiling on a tap (id, label): the least a forwarder can do.
const CEILING: (&str, &str) = (
    "ceiling",
    "ceiling (XDP on the tap: MAC rewrite + redirect to the uplink)",
);

/// The ceiling's topology: the same namespaces and tap, no bridge, no
/// rules, no vxdp; the benchmark's ceiling program (native XDP on the tap,
/// in the writer's context) rewrites both MACs and redirects every frame
/// to the uplink, as the veth ceiling does. The programs are kept with it.
fn ceiling_setup(
    generator: generator::Kind,
) -> Result<(NatTopology, TapWriter, BenchProgs, BenchProgs)> {
    let topo = NatTopology::new(CEILING_TAG, 0)?;
    // The uplink takes XDP frames only while its peer has GRO (or XDP).
    topo.wan.exec("ethtool", &["-K", "wan0", "gro", "on"])?;
    let tap = TapWriter::open(&topo.hyp, TAP)?;
    let mut progs = BenchProgs::load(generator)?;
    let up = in_netns(&topo.hyp.name, None, || crate::progs::ifindex("up0"))?;
    progs.set_ceiling(CeilingConfig {
        dst_mac: link_mac(&topo.wan, "wan0")?,
        src_mac: link_mac(&topo.hyp, "up0")?,
        ifindex: up,
    })?;
    progs.attach(PROG_CEILING_XDP, &topo.hyp.name, TAP)?;
    // Replies: a second instance (its own configuration) on the uplink
    // redirects whatever the outside host sends into the tap, to the
    // guest's MAC.
    let mut inbound = BenchProgs::load(generator)?;
    let tap_index = in_netns(&topo.hyp.name, None, || crate::progs::ifindex(TAP))?;
    inbound.set_ceiling(CeilingConfig {
        dst_mac: mac(GUEST_MAC)?,
        src_mac: link_mac(&topo.hyp, TAP)?,
        ifindex: tap_index,
    })?;
    inbound.attach(PROG_CEILING_XDP, &topo.hyp.name, "up0")?;
    Ok((topo, tap, progs, inbound))
}

pub fn run(
    reps: usize,
    packets: u32,
    cpu: usize,
    generator: generator::Kind,
    r: &mut Report,
) -> Result<()> {
    // A tap run moves about 100,000 frames a second here: 100,000 frames
    // make a run of about a second, and keep the full section (13 runs per
    // repetition) to about two minutes.
    let packets = packets.min(100_000);
    r.meta("tap_frames_per_run", packets);
    println!("[bench] tap: {packets} frames per run");
    let mut topos = Vec::new();
    for v in &VARIANTS {
        topos.push(setup(v)?);
    }
    // The reply sender's socket on each topology's outside host, opened
    // once and kept (as the forward section's generator is).
    let mut sockets = Vec::new();
    for (topo, _) in &topos[..2] {
        let s = in_netns(&topo.wan.name, None, || {
            generator::open(generator, crate::progs::ifindex("wan0")?)
        })
        .with_context(|| format!("opening the {} generator on wan0", generator.name()))?;
        sockets.push(s);
    }
    let ceiling = ceiling_setup(generator)?;
    let mut ceiling_socket = in_netns(&ceiling.0.wan.name, None, || {
        generator::open(generator, crate::progs::ifindex("wan0")?)
    })
    .with_context(|| format!("opening the {} generator on wan0", generator.name()))?;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let reader_cpu = if ncpu > 1 && cpu == 0 { 1 } else { 0 };
    pin_to_cpu(cpu)?;
    for rep in 0..reps {
        // One flow with both checksum kinds (ids without a flow count);
        // 10,000 flows with finished checksums, as the veth figures.
        for (partial, csum, flows, fl) in [
            (false, "finished", 1u32, ""),
            (true, "needs_csum", 1, ""),
            (false, "finished", 10_000, "10kflows."),
        ] {
            let ceiling_topo = (&ceiling.0, &ceiling.1);
            for (id, label, (topo, tap)) in VARIANTS
                .iter()
                .zip(&topos)
                .map(|(v, (t, w))| (v.id, v.label, (t, w)))
                .chain([(CEILING.0, CEILING.1, ceiling_topo)])
            {
                let frames = tap_frames(&guest_flows(topo, NAT_PORT, flows)?, partial);
                open_flows(topo, tap, &frames)?;
                let (rates, delivered) = one_run(topo, tap, &frames, packets, cpu)?;
                println!(
                    "[bench] tap rep {rep}: {id} {csum} {flows} flow(s): {:.3} Mpps per CPU-second, {:.3} wall ({delivered} of {packets} delivered)",
                    rates.cpu / 1e6,
                    rates.wall / 1e6
                );
                rates.record(
                    r,
                    &format!("tap.nat.{csum}.{fl}{id}"),
                    &format!(
                        "guest -> outside via a tap, 64 B UDP, {csum} checksum, {flows} flow(s): {label}"
                    ),
                );
            }
        }
        // Replies: the kernel path and vxdp (the TC-only topology; the
        // guest XDP program does not see this direction).
        for (flows, fl) in [(1u32, "1flow"), (10_000, "10kflows")] {
            let runs = VARIANTS
                .iter()
                .zip(&topos)
                .zip(&mut sockets)
                .map(|((v, (t, w)), s)| {
                    let path = if v.vxdp.is_some() {
                        ReplyPath::Vxdp
                    } else {
                        ReplyPath::Kernel
                    };
                    (path, t, w, s)
                })
                .chain([(
                    ReplyPath::Ceiling,
                    &ceiling.0,
                    &ceiling.1,
                    &mut ceiling_socket,
                )]);
            for (path, topo, tap, socket) in runs {
                let (who, label) = match path {
                    ReplyPath::Kernel => ("kernel", VARIANTS[0].label),
                    ReplyPath::Vxdp => ("vxdp", "vxdp NAT (uplink XDP redirects into the tap)"),
                    ReplyPath::Ceiling => (
                        "ceiling",
                        "ceiling (XDP on the uplink: MAC rewrite + redirect into the tap)",
                    ),
                };
                let (rates, drained, dropped) =
                    reply_run(topo, tap, socket, flows, packets, (cpu, reader_cpu), path)?;
                println!(
                    "[bench] tap rep {rep}: reply {fl} {who}: {:.3} Mpps per CPU-second, {:.3} wall ({} of {packets} read by the guest, {dropped} dropped by the tap, {} other frames)",
                    rates.cpu / 1e6,
                    rates.wall / 1e6,
                    drained.replies,
                    drained.other
                );
                rates.record(
                    r,
                    &format!("tap.reply.{fl}.{who}"),
                    &format!(
                        "outside -> guest NAT replies into a tap, 64 B UDP, {flows} flow(s): {label}"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// The tap section's targets (issue 19: ≥ 6× the kernel path on taps too).
pub fn targets(r: &mut Report) {
    for (what, id) in [
        ("finished 1flow", "finished."),
        ("needs_csum 1flow", "needs_csum."),
        ("finished 10kflows", "finished.10kflows."),
    ] {
        for (who, label) in [("tc", "vxdp TC"), ("xdp", "vxdp XDP+TC")] {
            r.compare(
                &format!("tap NAT guest->outside {what}: {label} / kernel"),
                &format!("tap.nat.{id}{who}"),
                &format!("tap.nat.{id}kernel"),
                Some(6.0),
                None,
            );
        }
        r.compare(
            &format!("tap NAT guest->outside {what}: vxdp XDP+TC / TC"),
            &format!("tap.nat.{id}xdp"),
            &format!("tap.nat.{id}tc"),
            None,
            None,
        );
        // What any forwarder on the tap could reach over the kernel: the
        // 6x targets above cannot be met when this ratio is below 6.
        r.compare(
            &format!("tap guest->outside {what}: ceiling / kernel (the ratio's ceiling)"),
            &format!("tap.nat.{id}ceiling"),
            &format!("tap.nat.{id}kernel"),
            None,
            None,
        );
        for (who, label) in [("tc", "vxdp TC"), ("xdp", "vxdp XDP+TC")] {
            r.compare(
                &format!("tap NAT guest->outside {what}: {label} / ceiling"),
                &format!("tap.nat.{id}{who}"),
                &format!("tap.nat.{id}ceiling"),
                Some(0.7),
                None,
            );
        }
    }
    for fl in ["1flow", "10kflows"] {
        r.compare(
            &format!("tap NAT replies {fl}: vxdp / kernel"),
            &format!("tap.reply.{fl}.vxdp"),
            &format!("tap.reply.{fl}.kernel"),
            Some(6.0),
            None,
        );
        r.compare(
            &format!("tap replies {fl}: ceiling / kernel (the ratio's ceiling)"),
            &format!("tap.reply.{fl}.ceiling"),
            &format!("tap.reply.{fl}.kernel"),
            None,
            None,
        );
        r.compare(
            &format!("tap NAT replies {fl}: vxdp / ceiling"),
            &format!("tap.reply.{fl}.vxdp"),
            &format!("tap.reply.{fl}.ceiling"),
            Some(0.7),
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use vxdp_testkit::packet::{Packet, sock};

    use super::*;

    fn reply(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
        let f = Packet::udp(
            sock("203.0.113.10".parse().unwrap(), sport),
            sock(dst, 10000),
        )
        .payload(&[0u8; 18])
        .macs([2, 0, 0, 0, 0, 1], mac(GUEST_MAC).unwrap())
        .build();
        with_vnet_hdr(&f, false)
    }

    #[test]
    fn only_translated_replies_to_the_guest_count() {
        let (g, outside) = (mac(GUEST_MAC).unwrap(), "203.0.113.10".parse().unwrap());
        let uplink: Ipv4Addr = UPLINK_ADDR.parse().unwrap();
        assert!(is_reply(
            &reply(GUEST_ADDR, DST_PORT),
            &g,
            outside,
            GUEST_ADDR
        ));
        // Not translated back (still to the uplink's address), another
        // source port, another guest MAC, cut short: not replies.
        let untranslated = reply(uplink, DST_PORT);
        assert!(!is_reply(&untranslated, &g, outside, GUEST_ADDR));
        assert!(!is_reply(&reply(GUEST_ADDR, 53), &g, outside, GUEST_ADDR));
        assert!(!is_reply(
            &reply(GUEST_ADDR, DST_PORT),
            &[2, 0, 0, 0, 0, 9],
            outside,
            GUEST_ADDR
        ));
        assert!(!is_reply(
            &reply(GUEST_ADDR, DST_PORT)[..40],
            &g,
            outside,
            GUEST_ADDR
        ));
        assert!(!is_reply(&[], &g, outside, GUEST_ADDR));
        // The ceiling translates nothing: its frames count when addressed
        // to the uplink, and a translated one does not.
        assert!(is_reply(&untranslated, &g, outside, uplink));
        assert!(!is_reply(&reply(GUEST_ADDR, DST_PORT), &g, outside, uplink));
    }
}

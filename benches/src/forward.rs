//! Forwarding rate: 64-byte UDP sent by the generator's socket on the
//! guest's eth0 (or the outside host's wan0 for replies and inbound),
//! counted by the sink on the other side; everything runs on one pinned CPU.

use std::net::SocketAddrV4;

use anyhow::{Result, ensure};

use crate::{
    progs::{RunTime, Traffic},
    topo::{
        FLOOR_TX, GUEST_ADDR, GUEST_MAC, OUTSIDE, Path, Topology, UPLINK_ADDR, UPLINK_MAC, WAN_MAC,
    },
};

/// First source port of generated flows (kept as the NAT port by both
/// vxdp and masquerade, so replies can be addressed to it).
pub const FIRST_PORT: u16 = 10000;
pub const DST_PORT: u16 = 9;

/// One rate measurement.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub sent: u64,
    pub delivered: u64,
    /// CPU time spent (see [`crate::progs::RunTime`]).
    pub secs: f64,
    pub wall_secs: f64,
}

impl Rate {
    pub(crate) fn new(sent: u32, delivered: u64, t: RunTime) -> Self {
        Self {
            sent: sent as u64,
            delivered,
            secs: t.cpu.as_secs_f64(),
            wall_secs: t.wall.as_secs_f64(),
        }
    }

    /// Packets per second of CPU time on the pinned CPU, in millions: the
    /// rate one dedicated CPU sustains.
    pub fn mpps(&self) -> f64 {
        self.delivered as f64 / self.secs / 1e6
    }

    pub fn ns_per_pkt(&self) -> f64 {
        self.secs * 1e9 / self.delivered as f64
    }

    /// Delivered packets per wall-clock second (includes time other tasks
    /// on the shared CPU took).
    pub fn wall_mpps(&self) -> f64 {
        self.delivered as f64 / self.wall_secs / 1e6
    }
}

pub fn guest_traffic(topo: &Topology, flows: u32) -> Traffic {
    Traffic {
        eth_src: GUEST_MAC,
        eth_dst: topo.bridge_mac,
        src: SocketAddrV4::new(GUEST_ADDR.parse().unwrap(), FIRST_PORT),
        dst: SocketAddrV4::new(OUTSIDE.parse().unwrap(), DST_PORT),
        flows,
        ports_per_dst: 64512,
        vary_dst_port: false,
    }
}

/// Replies from the outside host to the NAT address and ports of
/// [`guest_traffic`]'s flows.
pub fn reply_traffic(flows: u32) -> Traffic {
    Traffic {
        eth_src: WAN_MAC,
        eth_dst: UPLINK_MAC,
        src: SocketAddrV4::new(OUTSIDE.parse().unwrap(), DST_PORT),
        dst: SocketAddrV4::new(UPLINK_ADDR.parse().unwrap(), FIRST_PORT),
        flows,
        ports_per_dst: 64512,
        vary_dst_port: true,
    }
}

/// The outside host to the guest's own address (route mode: no NAT, the
/// uplink routes it into the network).
pub fn inbound_traffic(flows: u32) -> Traffic {
    Traffic {
        eth_src: WAN_MAC,
        eth_dst: UPLINK_MAC,
        src: SocketAddrV4::new(OUTSIDE.parse().unwrap(), DST_PORT),
        dst: SocketAddrV4::new(GUEST_ADDR.parse().unwrap(), FIRST_PORT),
        flows,
        ports_per_dst: 64512,
        vary_dst_port: true,
    }
}

/// Routed paths: outside → guest (generated on wan0, counted on the
/// guest's eth0).
pub fn run_inbound(topo: &mut Topology, flows: u32, count: u32, cpu: usize) -> Result<Rate> {
    ensure!(
        !topo.path.is_nat(),
        "outside->guest is measured for routed paths only"
    );
    measure(topo, &inbound_traffic(flows), true, count, cpu)
}

/// Sends `count` frames of `traffic` from the guest (or, `reply`, from the
/// outside host) and counts what the sink on the far side received.
pub(crate) fn measure(
    topo: &mut Topology,
    traffic: &Traffic,
    reply: bool,
    count: u32,
    cpu: usize,
) -> Result<Rate> {
    topo.progs.set_traffic(traffic);
    let before = topo.progs.sink_count()?;
    let (ns, iface) = if reply {
        (topo.wan.name.clone(), "wan0")
    } else {
        (topo.guest.name.clone(), "eth0")
    };
    let time = topo.progs.generate(&ns, iface, count, cpu)?;
    let delivered = topo.progs.sink_count()? - before;
    if delivered == 0 {
        eprintln!(
            "[bench] {}: nothing delivered; interface counters:\n{}",
            topo.path.name(),
            topo.diagnostics()
        );
    }
    Ok(Rate::new(count, delivered, time))
}

/// The floor: the generator's frames sent on the guest namespace's
/// `floor0` and dropped by the sink on its veth peer `floor1`, with nothing
/// in between. Every forwarding figure contains this cost.
pub fn floor(topo: &mut Topology, count: u32, cpu: usize) -> Result<Rate> {
    let traffic = guest_traffic(topo, 1);
    topo.progs.set_traffic(&traffic);
    let before = topo.progs.sink_count()?;
    let ns = topo.guest.name.clone();
    let time = topo.progs.generate(&ns, FLOOR_TX, count, cpu)?;
    let delivered = topo.progs.sink_count()? - before;
    Ok(Rate::new(count, delivered, time))
}

/// Primes the flows, then measures one direction: every flow is set up
/// before the timed run (replies need them; guest->outside would otherwise
/// time its flows' setup too, one packet in five of a quick 10,000-flow
/// run), so the figures are the cost of forwarding established flows.
pub fn run_one(
    topo: &mut Topology,
    flows: u32,
    reply: bool,
    count: u32,
    cpu: usize,
) -> Result<Rate> {
    let forward = guest_traffic(topo, flows);
    if !reply {
        // At least 64 frames: one lost frame must not fail a 1-flow run.
        let primed = measure(topo, &forward, false, flows.max(64), cpu)?;
        ensure!(
            primed.delivered > 0,
            "{}: no guest packet reached the outside host while priming {flows} flows",
            topo.path.name()
        );
    }
    if reply {
        ensure!(topo.path.is_nat(), "replies are measured for NAT only");
        // Every flow seen once from the guest, so both tables hold them.
        let primed = measure(topo, &forward, false, flows.max(1) * 2, cpu)?;
        ensure!(
            primed.delivered > 0,
            "{}: no guest packet reached the outside host while priming {flows} flows",
            topo.path.name()
        );
        return measure(topo, &reply_traffic(flows), true, count, cpu);
    }
    measure(topo, &forward, false, count, cpu)
}

pub fn label(path: Path) -> &'static str {
    match path {
        Path::KernelNat => "kernel (bridge+iptables-nft masquerade+conntrack)",
        Path::KernelRoute => "kernel routed (bridge+iptables-nft)",
        Path::VxdpNat => "vxdp NAT",
        Path::VxdpRoute => "vxdp routed",
        Path::Ceiling => "ceiling (XDP MAC rewrite+redirect)",
        Path::CeilingTc => "ceiling at TC (MAC rewrite+redirect)",
    }
}

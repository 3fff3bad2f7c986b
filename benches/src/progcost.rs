//! Per-program cost: vxdp's programs and the ceiling, each path timed by
//! `BPF_PROG_TEST_RUN` (the kernel's own clock around the program).
//!
//! NAT rewrites the packet in place and a repeated run (`repeat` > 1) would
//! see the translated packet (a NAT hit becomes a spoofed-source drop on the
//! second round), so every path is timed with repeat = 1 on a fresh copy of
//! the frame, the median of many calls; the ceiling and an empty program are
//! timed the same way, and the empty program's figure is the fixed overhead
//! of a timed run (~100 ns: the kernel's clock reads, a cold frame); the
//! `.net` figures subtract it and are what the targets compare. Paths whose
//! packet is unchanged by the program are also timed with a large repeat
//! count.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    maps::HashMap,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use vxdp_common::{ConntrackEntry, ConntrackKey, SubnetOwner, mode, names};
use vxdp_testkit::packet::{Packet, fmt_mac};
use vxdp_tests::progtest::{
    BRIDGE, BRIDGE_MAC, NEXT_HOP_MAC, OUTSIDE, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK_ADDR,
    UPLINK_MAC, World, XDP_DROP, XDP_PASS, XDP_REDIRECT, with_nat_world,
};

use crate::{
    progs::{BenchProgs, PROG_CEILING_TC, PROG_CEILING_XDP, PROG_EMPTY_XDP, pin_to_cpu},
    report::{Report, median},
    wire::CeilingConfig,
};

const HIT_PORT: u16 = 40000;

/// A route network beside the world's NAT one, on the same bridge: its
/// id, subnet (the host's address on the bridge is .1) and one guest,
/// resolved and in the MAC table, for the routed inbound case.
const ROUTED_NET: u32 = 2;
const ROUTED_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 0);
const ROUTED_GUEST: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);

/// Adds [`ROUTED_NET`] with guest 1 of the world as its resolved guest.
fn add_routed_network(world: &mut World) -> Result<()> {
    let g = world.guests[1];
    let mut cfg = world.network();
    cfg.mode = mode::ROUTE;
    cfg.subnet = u32::from_ne_bytes(ROUTED_SUBNET.octets());
    cfg.gateway = u32::from_ne_bytes(Ipv4Addr::new(10, 9, 0, 1).octets());
    world.set_network(ROUTED_NET, &cfg);
    world.set_subnet(
        cfg.subnet,
        24,
        &SubnetOwner {
            network_id: ROUTED_NET,
            mode: mode::ROUTE,
        },
    );
    world.set_mac(ROUTED_NET, g.mac, g.port_ifindex);
    world.ip(&format!("addr add 10.9.0.1/24 dev {BRIDGE}"))?;
    world.ip(&format!(
        "neigh replace {ROUTED_GUEST} lladdr {} dev {BRIDGE} nud permanent",
        fmt_mac(&g.mac)
    ))?;
    Ok(())
}

fn tc_run(p: &SchedClassifier, frame: &[u8], ifindex: u32, repeat: u32) -> Result<(u32, f64)> {
    // struct __sk_buff: `ifindex` (offset 40) picks skb->dev.
    let mut ctx = [0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 512];
    let r = p.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat,
        ..TestRunOptions::new()
    })?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

fn xdp_run(p: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let mut out = vec![0u8; frame.len() + 512];
    let r = p.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..TestRunOptions::new()
    })?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

/// One timed path: how to run it once (the call number is given so a path
/// can vary its packet), and the verdict it must return.
struct Case {
    id: &'static str,
    label: &'static str,
    expect: u32,
    /// The packet is unchanged by the program: also time with repeat.
    idempotent: bool,
}

const CASES: [Case; 10] = [
    Case {
        id: "guest_tc.nat_hit",
        label: "guest port (TC): NAT hit, SNAT+redirect",
        expect: TC_ACT_REDIRECT,
        idempotent: false,
    },
    Case {
        id: "guest_tc.nat_create",
        label: "guest port (TC): NAT miss, new flow",
        expect: TC_ACT_REDIRECT,
        idempotent: false,
    },
    Case {
        id: "guest_tc.drop_spoofed",
        label: "guest port (TC): drop, spoofed source",
        expect: TC_ACT_SHOT,
        idempotent: true,
    },
    Case {
        id: "uplink_xdp.reverse_nat_hit",
        label: "uplink (XDP): reverse NAT hit+redirect",
        expect: XDP_REDIRECT,
        idempotent: false,
    },
    Case {
        id: "uplink_xdp.route_in_redirect",
        label: "uplink (XDP): routed inbound, fib lookup+redirect",
        expect: XDP_REDIRECT,
        idempotent: false,
    },
    Case {
        id: "uplink_xdp.miss_to_host",
        label: "uplink (XDP): miss, to the host",
        expect: XDP_PASS,
        idempotent: true,
    },
    Case {
        id: "uplink_xdp.drop_unsolicited",
        label: "uplink (XDP): drop, unsolicited inbound",
        expect: XDP_DROP,
        idempotent: true,
    },
    Case {
        id: "ceiling_xdp",
        label: "ceiling (XDP): MAC rewrite+redirect",
        expect: XDP_REDIRECT,
        idempotent: true,
    },
    Case {
        id: "ceiling_tc",
        label: "ceiling (TC): MAC rewrite+redirect",
        expect: TC_ACT_REDIRECT,
        idempotent: true,
    },
    Case {
        id: "empty_xdp",
        label: "empty XDP program (test-run overhead)",
        expect: XDP_PASS,
        idempotent: true,
    },
];

fn sock(a: Ipv4Addr, p: u16) -> SocketAddrV4 {
    SocketAddrV4::new(a, p)
}

struct Bench<'a> {
    progs: &'a BenchProgs,
    guest_port: u32,
    guest_mac: [u8; 6],
    guest_addr: Ipv4Addr,
}

impl Bench<'_> {
    fn frame(&self, case: &Case, call: u32) -> Vec<u8> {
        let from_guest = |src: SocketAddrV4, dst: SocketAddrV4| {
            Packet::udp(src, dst)
                .macs(self.guest_mac, BRIDGE_MAC)
                .payload(&[0; 18])
                .build()
        };
        let from_outside = |src: SocketAddrV4, dst: SocketAddrV4| {
            Packet::udp(src, dst)
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .payload(&[0; 18])
                .build()
        };
        match case.id {
            "guest_tc.nat_hit" => from_guest(sock(self.guest_addr, HIT_PORT), sock(OUTSIDE, 9)),
            // A new 5-tuple every call.
            "guest_tc.nat_create" => from_guest(
                sock(self.guest_addr, 1024 + (call % 30000) as u16),
                sock(Ipv4Addr::from(u32::from(OUTSIDE) + 1 + call / 30000), 9),
            ),
            "guest_tc.drop_spoofed" => {
                from_guest(sock(Ipv4Addr::new(10, 9, 9, 9), HIT_PORT), sock(OUTSIDE, 9))
            }
            "uplink_xdp.reverse_nat_hit" => {
                from_outside(sock(OUTSIDE, 9), sock(UPLINK_ADDR, HIT_PORT))
            }
            "uplink_xdp.route_in_redirect" => from_outside(sock(OUTSIDE, 9), sock(ROUTED_GUEST, 9)),
            "uplink_xdp.miss_to_host" => from_outside(sock(OUTSIDE, 9), sock(UPLINK_ADDR, 7)),
            "uplink_xdp.drop_unsolicited" => {
                from_outside(sock(OUTSIDE, 9), sock(self.guest_addr, 80))
            }
            _ => from_guest(sock(self.guest_addr, HIT_PORT), sock(OUTSIDE, 9)),
        }
    }

    fn run(&self, world: &World, case: &Case, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let guest = || -> Result<&SchedClassifier> {
            Ok(world
                .ebpf
                .program(names::PROG_GUEST_INGRESS)
                .context("guest program")?
                .try_into()?)
        };
        let uplink = || -> Result<&Xdp> {
            Ok(world
                .ebpf
                .program(names::PROG_UPLINK_INGRESS)
                .context("uplink program")?
                .try_into()?)
        };
        let (verdict, ns) = match case.id {
            id if id.starts_with("guest_tc.") => tc_run(guest()?, frame, self.guest_port, repeat)?,
            id if id.starts_with("uplink_xdp.") => xdp_run(uplink()?, frame, repeat)?,
            "ceiling_xdp" => xdp_run(self.progs.xdp(PROG_CEILING_XDP)?, frame, repeat)?,
            "ceiling_tc" => tc_run(
                self.progs.tc(PROG_CEILING_TC)?,
                frame,
                self.guest_port,
                repeat,
            )?,
            "empty_xdp" => xdp_run(self.progs.xdp(PROG_EMPTY_XDP)?, frame, repeat)?,
            other => bail!("unknown case {other}"),
        };
        ensure!(
            verdict == case.expect,
            "{}: verdict {verdict}, expected {}",
            case.label,
            case.expect
        );
        Ok((verdict, ns))
    }
}

/// Removes every conntrack entry (new-flow runs must not fill the small
/// test table and measure LRU eviction instead).
fn flush(world: &mut World) -> Result<()> {
    let keys: Vec<ConntrackKey> = world.conntrack().into_iter().map(|(k, _)| k).collect();
    let mut map: HashMap<_, ConntrackKey, ConntrackEntry> = HashMap::try_from(
        world
            .ebpf
            .map_mut(names::MAP_CONNTRACK)
            .context("conntrack map")?,
    )?;
    for k in keys {
        let _ = map.remove(&k);
    }
    Ok(())
}

/// Times every case `calls` times per repetition, `reps` repetitions
/// interleaved, on `cpu`; adds the figures to `report`.
pub fn run(calls: u32, repeat: u32, reps: usize, cpu: usize, report: &mut Report) -> Result<()> {
    let mut results: Vec<(String, String, f64)> = Vec::new();
    let mut error: Option<anyhow::Error> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_nat_world(|world| {
            if let Err(e) = measure(world, calls, repeat, reps, cpu, &mut results) {
                error = Some(e);
            }
        })
    }));
    if outcome.is_err() {
        bail!("the program-cost world panicked (see the message above)");
    }
    if let Some(e) = error {
        return Err(e);
    }
    for (id, label, v) in results {
        report.sample(&id, &label, "ns", v);
    }
    Ok(())
}

fn measure(
    world: &mut World,
    calls: u32,
    repeat: u32,
    reps: usize,
    cpu: usize,
    out: &mut Vec<(String, String, f64)>,
) -> Result<()> {
    pin_to_cpu(cpu)?;
    add_routed_network(world)?;
    let mut progs = BenchProgs::load(crate::generator::Kind::AfXdp)?;
    progs.set_ceiling(CeilingConfig {
        dst_mac: NEXT_HOP_MAC,
        src_mac: UPLINK_MAC,
        ifindex: world.uplink_ifindex,
    })?;
    let g = world.guests[0];
    let b = Bench {
        progs: &progs,
        guest_port: g.port_ifindex,
        guest_mac: g.mac,
        guest_addr: g.addr,
    };
    let mut create_call = 0u32;
    let mut rep_values: Vec<(&Case, f64)> = Vec::new();
    for _ in 0..reps {
        for case in &CASES {
            let mut samples = Vec::with_capacity(calls as usize);
            if case.id == "guest_tc.nat_create" {
                flush(world)?;
                for i in 0..calls {
                    if i > 0 && i % 1000 == 0 {
                        flush(world)?;
                    }
                    let frame = b.frame(case, create_call);
                    create_call += 1;
                    samples.push(b.run(world, case, &frame, 1)?.1);
                }
            } else {
                if case.id.ends_with("nat_hit") {
                    // The measured flow exists: a first guest packet made it.
                    let first = b.frame(&CASES[0], 0);
                    b.run(world, &CASES[0], &first, 1)?;
                }
                let frame = b.frame(case, 0);
                for _ in 0..calls {
                    samples.push(b.run(world, case, &frame, 1)?.1);
                }
                if case.idempotent {
                    let (_, ns) = b.run(world, case, &frame, repeat)?;
                    out.push((
                        format!("program.{}.repeat", case.id),
                        format!("{} [repeat {repeat}]", case.label),
                        ns,
                    ));
                }
            }
            out.push((
                format!("program.{}", case.id),
                case.label.into(),
                median(&samples).unwrap_or(f64::NAN),
            ));
            rep_values.push((case, median(&samples).unwrap_or(f64::NAN)));
        }
        // Net of the fixed cost of a timed run (the empty program, same rep).
        let empty = rep_values
            .iter()
            .find(|(c, _)| c.id == "empty_xdp")
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN);
        for (case, v) in rep_values.drain(..).filter(|(c, _)| c.id != "empty_xdp") {
            out.push((
                format!("program.{}.net", case.id),
                format!("{} [net of empty]", case.label),
                v - empty,
            ));
        }
    }
    Ok(())
}

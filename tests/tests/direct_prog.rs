//! Program tests of the direct (macvtap-like) modes with `BPF_PROG_TEST_RUN`:
//! the real eBPF object in a throwaway namespace, network 1 re-seeded as a
//! direct network on the uplink `up0` (the NIC) with the two guest ports,
//! as the control plane starts it. Frames in; verdicts and counters out, for
//! the guest port (`vxdp_guest_in` → `vxdp_guest_direct`), the NIC's XDP
//! (`vxdp_uplink_in`) and its TC ingress/egress (`vxdp_nic_in`,
//! `vxdp_nic_out`).
//!
//! Needs root (network namespaces, BPF).

use std::net::Ipv4Addr;

use aya::{
    maps::HashMap,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use vxdp_common::{
    Action, DIRECT_MAX_PORTS, DirectNic, DirectPort, DropReason, Endpoint, endpoint_flags, mode,
    names,
};
use vxdp_testkit::packet::{self, BROADCAST, Frame, Mac, Packet, TCP_SYN, be, sock};
use vxdp_tests::progtest::{
    Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE, Slot, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    TC_ACT_UNSPEC, UPLINK_ADDR, UPLINK_MAC, World, XDP_DROP, XDP_PASS, XDP_REDIRECT,
    assert_counters_moved, dropped, once, with_nat_world,
};

const MODES: [(u32, &str); 4] = [
    (mode::DIRECT_BRIDGE, "bridge"),
    (mode::DIRECT_VEPA, "vepa"),
    (mode::DIRECT_PRIVATE, "private"),
    (mode::DIRECT_PASSTHROUGH, "passthrough"),
];

/// Left to the kernel by the uplink program (network 0).
fn uplink_passed() -> (u32, Slot, u64) {
    (0, Slot::Action(Action::UplinkPassed), 1)
}

/// Re-seeds network [`NET_ID`] as direct mode `m` on the uplink, with the
/// guests `ports` on it (their IPv4 addresses known, as with `--ip`), and
/// loads the NIC programs.
fn seed_direct(w: &mut World, m: u32, ports: usize) {
    let mut cfg = w.network();
    cfg.mode = m;
    cfg.bridge_ifindex = 0;
    cfg.bridge_mac = UPLINK_MAC;
    w.set_network(NET_ID, &cfg);
    let mut nic = DirectNic {
        network_id: NET_ID,
        mode: m,
        mac: UPLINK_MAC,
        ..DirectNic::default()
    };
    let guests: Vec<Guest> = w.guests.iter().take(ports).copied().collect();
    for g in &guests {
        nic.ports[nic.port_count as usize] = g.port_ifindex;
        nic.port_count += 1;
        w.set_endpoint(
            g.port_ifindex,
            &Endpoint {
                network_id: NET_ID,
                // Taps: the NIC's XDP program may redirect to them.
                flags: endpoint_flags::MAC_KNOWN
                    | endpoint_flags::IPV4_KNOWN
                    | endpoint_flags::XDP_FRAMES,
                mac: g.mac,
                ipv4: be(g.addr),
                ..Endpoint::default()
            },
        );
        w.set_mac(NET_ID, g.mac, g.port_ifindex);
    }
    assert!(nic.port_count as usize <= DIRECT_MAX_PORTS);
    let uplink = w.uplink_ifindex;
    {
        let mut nics: HashMap<_, u32, DirectNic> = HashMap::try_from(
            w.ebpf
                .map_mut(names::MAP_DIRECT_NICS)
                .expect("VXDP_DIRECT_NICS"),
        )
        .expect("hash map");
        nics.insert(&uplink, &nic, 0)
            .expect("writing VXDP_DIRECT_NICS");
    }
    {
        let mut ports: HashMap<_, u32, DirectPort> = HashMap::try_from(
            w.ebpf
                .map_mut(names::MAP_DIRECT_PORTS)
                .expect("VXDP_DIRECT_PORTS"),
        )
        .expect("hash map");
        for g in &guests {
            ports
                .insert(
                    &g.port_ifindex,
                    &DirectPort {
                        nic_ifindex: uplink,
                        _pad0: 0,
                    },
                    0,
                )
                .expect("writing VXDP_DIRECT_PORTS");
        }
    }
    for name in [names::PROG_NIC_INGRESS, names::PROG_NIC_EGRESS] {
        let p: &mut SchedClassifier = w
            .ebpf
            .program_mut(name)
            .expect("NIC program")
            .try_into()
            .expect("classifier");
        if p.fd().is_err() {
            p.load()
                .unwrap_or_else(|e| panic!("loading {name} (verifier): {e}"));
        }
    }
}

/// Runs TC program `name` on `frame` as if on interface `ifindex`.
fn run_tc(w: &World, name: &str, ifindex: u32, frame: &[u8]) -> u32 {
    let p: &SchedClassifier = w
        .ebpf
        .program(name)
        .expect("program")
        .try_into()
        .expect("classifier");
    let mut ctx = [0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 512];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name}: {e}"));
    r.return_value
}

/// Runs the uplink's XDP program on `frame` arriving on interface `ifindex`.
fn run_xdp(w: &World, ifindex: u32, frame: &[u8]) -> u32 {
    let p: &Xdp = w
        .ebpf
        .program(names::PROG_UPLINK_INGRESS)
        .expect("uplink program")
        .try_into()
        .expect("XDP");
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 512];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN of vxdp_uplink_in");
    r.return_value
}

#[track_caller]
fn check(
    w: &World,
    verdict: u32,
    want: u32,
    before: &vxdp_tests::progtest::Counters,
    moved: &[(u32, Slot, u64)],
    what: &str,
) {
    assert_eq!(verdict, want, "{what}: verdict {verdict} instead of {want}");
    assert_counters_moved(before, &w.counters(), moved, what);
}

#[track_caller]
fn guest(
    w: &World,
    g: &Guest,
    frame: &[u8],
    want: u32,
    moved: &[(u32, Slot, u64)],
    what: &str,
) -> Vec<u8> {
    let before = w.counters();
    let run = w.run_guest(g.port_ifindex, frame);
    check(w, run.verdict, want, &before, moved, what);
    run.data
}

#[track_caller]
fn xdp(w: &World, frame: &[u8], want: u32, moved: &[(u32, Slot, u64)], what: &str) {
    let before = w.counters();
    let v = run_xdp(w, w.uplink_ifindex, frame);
    check(w, v, want, &before, moved, what);
}

#[track_caller]
fn tc(w: &World, prog: &str, frame: &[u8], want: u32, moved: &[(u32, Slot, u64)], what: &str) {
    let before = w.counters();
    let v = run_tc(w, prog, w.uplink_ifindex, frame);
    check(w, v, want, &before, moved, what);
}

/// An ARP request (broadcast) with the given Ethernet and sender fields.
fn arp(eth_src: Mac, sender_mac: Mac, sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    packet::arp(
        1,
        eth_src,
        BROADCAST,
        (sender_mac, sender_ip),
        ([0; 6], target),
    )
}

#[test]
fn direct_guest_port_steers_by_mac_in_every_mode() {
    for (m, name) in MODES {
        with_nat_world(|w| {
            let ports = if m == mode::DIRECT_PASSTHROUGH { 1 } else { 2 };
            seed_direct(w, m, ports);
            let g = w.guests[0];
            let h = w.guests[1];

            // Guest → sibling.
            if m != mode::DIRECT_PASSTHROUGH {
                let p = Packet::tcp(sock(g.addr, 40000), sock(h.addr, 22), TCP_SYN)
                    .macs(g.mac, h.mac)
                    .build();
                let what = format!("{name}: guest → sibling");
                match m {
                    mode::DIRECT_BRIDGE => guest(
                        w,
                        &g,
                        &p,
                        TC_ACT_REDIRECT,
                        &[once(Action::DirectToGuest)],
                        &what,
                    ),
                    mode::DIRECT_VEPA => guest(
                        w,
                        &g,
                        &p,
                        TC_ACT_REDIRECT,
                        &[once(Action::DirectToWire)],
                        &what,
                    ),
                    _ => guest(
                        w,
                        &g,
                        &p,
                        TC_ACT_SHOT,
                        &[dropped(DropReason::DirectPrivate)],
                        &what,
                    ),
                };
            }
            // Guest → host: the NIC's MAC, delivered as if received on it.
            let p = Packet::tcp(sock(g.addr, 40000), sock(UPLINK_ADDR, 22), TCP_SYN)
                .macs(g.mac, UPLINK_MAC)
                .build();
            guest(
                w,
                &g,
                &p,
                TC_ACT_REDIRECT,
                &[once(Action::DirectToHost)],
                &format!("{name}: guest → host"),
            );
            // Guest → outside: out of the NIC, untouched (own addresses).
            let p = Packet::tcp(sock(g.addr, 40000), sock(OUTSIDE, 80), TCP_SYN)
                .macs(g.mac, NEXT_HOP_MAC);
            let out = guest(
                w,
                &g,
                &p.build(),
                TC_ACT_REDIRECT,
                &[once(Action::DirectToWire)],
                &format!("{name}: guest → outside"),
            );
            let f = Frame(&out);
            assert_eq!(
                (f.src(), f.dst(), f.ttl()),
                (g.addr, OUTSIDE, p.ttl),
                "{name}: guest → outside must leave unchanged"
            );
            // Broadcast (ARP for the gateway): to the wire; bridge mode also
            // clones it to the other guests (counted once).
            let a = arp(g.mac, g.mac, g.addr, Ipv4Addr::new(192, 168, 122, 1));
            let moved: Vec<_> = if m == mode::DIRECT_BRIDGE {
                vec![once(Action::DirectFlooded), once(Action::DirectToWire)]
            } else {
                vec![once(Action::DirectToWire)]
            };
            guest(
                w,
                &g,
                &a,
                TC_ACT_REDIRECT,
                &moved,
                &format!("{name}: guest ARP broadcast"),
            );
            // Anti-spoofing: MAC, IPv4 source, ARP sender.
            let p = Packet::tcp(sock(g.addr, 40000), sock(OUTSIDE, 80), TCP_SYN)
                .macs([0x02, 0, 0, 0, 0x66, 0x66], NEXT_HOP_MAC)
                .build();
            guest(
                w,
                &g,
                &p,
                TC_ACT_SHOT,
                &[dropped(DropReason::SpoofedMac)],
                &format!("{name}: spoofed MAC"),
            );
            let p = Packet::tcp(
                sock(Ipv4Addr::new(192, 168, 122, 99), 40000),
                sock(OUTSIDE, 80),
                TCP_SYN,
            )
            .macs(g.mac, NEXT_HOP_MAC)
            .build();
            guest(
                w,
                &g,
                &p,
                TC_ACT_SHOT,
                &[dropped(DropReason::SpoofedSource)],
                &format!("{name}: spoofed IPv4 source"),
            );
            let a = arp(
                g.mac,
                g.mac,
                Ipv4Addr::new(192, 168, 122, 99),
                Ipv4Addr::new(192, 168, 122, 1),
            );
            guest(
                w,
                &g,
                &a,
                TC_ACT_SHOT,
                &[dropped(DropReason::SpoofedSource)],
                &format!("{name}: ARP for a foreign address"),
            );
            let a = arp(
                g.mac,
                [0x02, 0, 0, 0, 0x66, 0x66],
                g.addr,
                Ipv4Addr::new(192, 168, 122, 1),
            );
            guest(
                w,
                &g,
                &a,
                TC_ACT_SHOT,
                &[dropped(DropReason::SpoofedMac)],
                &format!("{name}: ARP with a foreign sender MAC"),
            );
        });
    }
}

#[test]
fn direct_nic_steers_frames_from_the_wire_and_the_host() {
    for (m, name) in MODES {
        with_nat_world(|w| {
            let ports = if m == mode::DIRECT_PASSTHROUGH { 1 } else { 2 };
            seed_direct(w, m, ports);
            let g = w.guests[0];
            let h = w.guests[1];
            let outside_mac = NEXT_HOP_MAC;

            // Wire → guest, by destination MAC: XDP redirect to its port.
            let p = Packet::tcp(sock(OUTSIDE, 80), sock(g.addr, 22), TCP_SYN)
                .macs(outside_mac, g.mac)
                .build();
            xdp(
                w,
                &p,
                XDP_REDIRECT,
                &[once(Action::DirectFromWire)],
                &format!("{name}: wire → guest"),
            );
            // Wire → host: the kernel's.
            let p = Packet::tcp(sock(OUTSIDE, 80), sock(UPLINK_ADDR, 22), TCP_SYN)
                .macs(outside_mac, UPLINK_MAC)
                .build();
            xdp(
                w,
                &p,
                XDP_PASS,
                &[uplink_passed()],
                &format!("{name}: wire → host"),
            );
            // Broadcast from the wire: XDP passes it, TC ingress clones it
            // to the guests.
            let a = arp(
                outside_mac,
                outside_mac,
                Ipv4Addr::new(192, 168, 122, 1),
                g.addr,
            );
            xdp(
                w,
                &a,
                XDP_PASS,
                &[uplink_passed()],
                &format!("{name}: wire broadcast at XDP"),
            );
            tc(
                w,
                names::PROG_NIC_INGRESS,
                &a,
                TC_ACT_UNSPEC,
                &[once(Action::DirectFlooded)],
                &format!("{name}: wire broadcast at TC ingress"),
            );
            tc(
                w,
                names::PROG_NIC_INGRESS,
                &p,
                TC_ACT_UNSPEC,
                &[],
                &format!("{name}: wire unicast at TC ingress"),
            );

            // A guest's frame reflected by a hairpinning switch.
            let reflected = Packet::tcp(sock(g.addr, 40000), sock(h.addr, 22), TCP_SYN)
                .macs(g.mac, h.mac)
                .build();
            let what = format!("{name}: guest frame reflected back from the wire");
            match m {
                mode::DIRECT_VEPA => xdp(
                    w,
                    &reflected,
                    XDP_REDIRECT,
                    &[once(Action::DirectFromWire)],
                    &what,
                ),
                mode::DIRECT_PRIVATE => xdp(
                    w,
                    &reflected,
                    XDP_DROP,
                    &[dropped(DropReason::DirectPrivate)],
                    &what,
                ),
                _ => xdp(
                    w,
                    &reflected,
                    XDP_DROP,
                    &[dropped(DropReason::DirectReflected)],
                    &what,
                ),
            }
            let reflected_arp = arp(g.mac, g.mac, g.addr, h.addr);
            if m == mode::DIRECT_VEPA {
                // The sender is skipped, its sibling gets the copy.
                tc(
                    w,
                    names::PROG_NIC_INGRESS,
                    &reflected_arp,
                    TC_ACT_UNSPEC,
                    &[once(Action::DirectFlooded)],
                    &format!("{name}: reflected broadcast at TC ingress"),
                );
            } else {
                // Only the host's local copy of a guest's broadcast gets
                // here: the guest program gave the others theirs.
                tc(
                    w,
                    names::PROG_NIC_INGRESS,
                    &reflected_arp,
                    TC_ACT_UNSPEC,
                    &[],
                    &format!("{name}: a guest's broadcast at TC ingress"),
                );
            }

            if m == mode::DIRECT_PASSTHROUGH {
                // The guest owns the NIC: unicast to any MAC but the host's.
                let p = Packet::tcp(sock(OUTSIDE, 80), sock(g.addr, 22), TCP_SYN)
                    .macs(outside_mac, [0x02, 0, 0, 0, 0x77, 0x77])
                    .build();
                xdp(
                    w,
                    &p,
                    XDP_REDIRECT,
                    &[once(Action::DirectFromWire)],
                    "passthrough: unknown unicast → the guest",
                );
            }

            // Host → guest (TC egress on the NIC).
            let p = Packet::tcp(sock(UPLINK_ADDR, 22), sock(g.addr, 40000), TCP_SYN)
                .macs(UPLINK_MAC, g.mac)
                .build();
            tc(
                w,
                names::PROG_NIC_EGRESS,
                &p,
                TC_ACT_REDIRECT,
                &[once(Action::DirectFromHost)],
                &format!("{name}: host → guest"),
            );
            let a = arp(UPLINK_MAC, UPLINK_MAC, UPLINK_ADDR, g.addr);
            tc(
                w,
                names::PROG_NIC_EGRESS,
                &a,
                TC_ACT_OK,
                &[once(Action::DirectFlooded)],
                &format!("{name}: host broadcast"),
            );
            let p = Packet::tcp(sock(UPLINK_ADDR, 22), sock(OUTSIDE, 80), TCP_SYN)
                .macs(UPLINK_MAC, outside_mac)
                .build();
            tc(
                w,
                names::PROG_NIC_EGRESS,
                &p,
                TC_ACT_OK,
                &[],
                &format!("{name}: host → outside"),
            );
            // A guest's frame on its way out is not the host's: untouched.
            let p = Packet::tcp(sock(g.addr, 40000), sock(OUTSIDE, 80), TCP_SYN)
                .macs(g.mac, outside_mac)
                .build();
            tc(
                w,
                names::PROG_NIC_EGRESS,
                &p,
                TC_ACT_OK,
                &[],
                &format!("{name}: guest frame leaving"),
            );

            // Another interface is no direct network's NIC: nothing happens.
            let before = w.counters();
            let v = run_tc(w, names::PROG_NIC_EGRESS, w.bridge_ifindex, &a);
            check(
                w,
                v,
                TC_ACT_OK,
                &before,
                &[],
                &format!("{name}: NIC program on a non-direct interface"),
            );
        });
    }
}

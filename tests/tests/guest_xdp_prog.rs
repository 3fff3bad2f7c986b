//! The guest port's XDP program (`vxdp_guest_xdp`, `--guest-xdp` on taps)
//! with `BPF_PROG_TEST_RUN`: the same anti-spoofing, NAT and route code as
//! the TC program, and what it must leave to the TC program untouched
//! (XDP_PASS, not one byte changed, no "judged" mark, nothing counted or
//! charged): frames whose L4 checksum the guest left to the host (a
//! virtio-net header with NEEDS_CSUM: the field holds the pseudo-header
//! sum), frames larger than the port's MTU (GSO frames reach XDP in generic
//! mode), rate-limited ports, and routes whose egress takes no XDP frames
//! (not in `VXDP_PORTS`). What it judged and passes to the kernel carries
//! the mark, so TC does not judge or count it twice.
//!
//! Hostile guests: spoofed MACs and sources are dropped and counted by XDP
//! as by TC; an unfinished checksum cannot make XDP rewrite a frame.
//!
//! Needs root (network namespaces, BPF).

use std::net::Ipv4Addr;

use aya::maps::DevMapHash;
use vxdp_common::{
    Action, DropReason, Endpoint, XDP_META_JUDGED, endpoint_flags, mode, names, network_flags,
};
use vxdp_testkit::{
    packet::{Frame, Packet, be, sock},
    tap_writer::unfinished,
};
use vxdp_tests::progtest::{
    BRIDGE_MAC, GATEWAY, Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE, Run, UPLINK_ADDR, UPLINK_MAC, World,
    XDP_DROP, XDP_PASS, XDP_REDIRECT, assert_counters_moved, dropped, once, with_nat_world,
};

fn tcp_out(g: &Guest, sport: u16) -> Packet {
    Packet::tcp(sock(g.addr, sport), sock(OUTSIDE, 80), 0x02).macs(g.mac, BRIDGE_MAC)
}

/// Lets XDP redirect out of the uplink (control does so for an uplink that
/// takes XDP frames).
fn uplink_takes_xdp(w: &mut World) {
    let up = w.uplink_ifindex;
    let mut ports: DevMapHash<_> =
        DevMapHash::try_from(w.ebpf.map_mut(names::MAP_PORTS).expect("VXDP_PORTS")).unwrap();
    ports.insert(up, up, None, 0).expect("uplink in VXDP_PORTS");
}

/// Runs `frame` through guest `g`'s XDP program and asserts it was left
/// to the TC program as it came.
#[track_caller]
fn left_to_tc(w: &World, g: &Guest, frame: &[u8], what: &str) {
    let before = w.counters();
    let run = w.run_guest_xdp(g.port_ifindex, frame);
    assert_eq!(
        run.verdict, XDP_PASS,
        "{what}: XDP verdict {} instead of XDP_PASS (left to TC)",
        run.verdict
    );
    assert_eq!(run.data, frame, "{what}: XDP changed a frame it left to TC");
    assert!(
        run.meta.is_empty(),
        "{what}: XDP marked the frame judged ({:02x?}): TC would let it through unchecked",
        run.meta
    );
    assert_counters_moved(&before, &w.counters(), &[], what);
}

#[track_caller]
fn xdp_verdict(
    w: &World,
    g: &Guest,
    frame: &[u8],
    verdict: u32,
    moved: &[(u32, vxdp_tests::progtest::Slot, u64)],
    what: &str,
) -> Run {
    let before = w.counters();
    let run = w.run_guest_xdp(g.port_ifindex, frame);
    assert_eq!(
        run.verdict, verdict,
        "{what}: XDP verdict {} instead of {verdict}",
        run.verdict
    );
    assert_counters_moved(&before, &w.counters(), moved, what);
    run
}

#[test]
fn spoofing_guests_are_dropped_and_counted_by_xdp() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let other = w.guests[1];
        // The guest's address is known (a lease or --ip): its only source.
        let known = Endpoint {
            network_id: NET_ID,
            flags: endpoint_flags::MAC_KNOWN
                | endpoint_flags::IPV4_KNOWN
                | endpoint_flags::XDP_FRAMES,
            mac: g.mac,
            _pad0: [0; 2],
            ipv4: be(g.addr),
            _pad1: 0,
            ipv6: [0; 16],
        };
        w.set_endpoint(g.port_ifindex, &known);
        // Another guest's source address.
        let spoofed_ip = Packet::tcp(sock(other.addr, 4000), sock(OUTSIDE, 80), 0x02)
            .macs(g.mac, BRIDGE_MAC)
            .build();
        xdp_verdict(
            w,
            &g,
            &spoofed_ip,
            XDP_DROP,
            &[dropped(DropReason::SpoofedSource)],
            "a guest sending from another guest's address",
        );
        // An address from outside the network.
        let outside_src = Packet::udp(sock(Ipv4Addr::new(203, 0, 113, 99), 53), sock(OUTSIDE, 53))
            .macs(g.mac, BRIDGE_MAC)
            .build();
        xdp_verdict(
            w,
            &g,
            &outside_src,
            XDP_DROP,
            &[dropped(DropReason::SpoofedSource)],
            "a guest sending from an outside address",
        );
        // Another guest's MAC.
        let spoofed_mac = tcp_out(&g, 4001).macs(other.mac, BRIDGE_MAC).build();
        xdp_verdict(
            w,
            &g,
            &spoofed_mac,
            XDP_DROP,
            &[dropped(DropReason::SpoofedMac)],
            "a guest sending from another guest's MAC",
        );
        // The gateway's address: claiming the host.
        let gateway = Packet::udp(sock(GATEWAY, 53), sock(OUTSIDE, 53))
            .macs(g.mac, BRIDGE_MAC)
            .build();
        xdp_verdict(
            w,
            &g,
            &gateway,
            XDP_DROP,
            &[dropped(DropReason::SpoofedSource)],
            "a guest sending from the gateway's address",
        );
        // The same spoofed frame with an unfinished checksum is TC's to
        // drop: XDP does not touch it (TC drops it, as
        // guest_security_prog shows for the TC program).
        left_to_tc(
            w,
            &g,
            &unfinished(&spoofed_ip),
            "a spoofed frame with an unfinished checksum",
        );
    });
}

#[test]
fn nat_in_xdp_masquerades_and_redirects_out_of_an_uplink_that_takes_xdp_frames() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let sent = tcp_out(&g, 40000);
        let frame = sent.build();
        // The uplink not in VXDP_PORTS (a veth whose peer has no NAPI, say):
        // the TC program NATs it; XDP records no flow.
        left_to_tc(w, &g, &frame, "NAT with an uplink that takes no XDP frames");
        assert!(
            w.conntrack().is_empty(),
            "XDP recorded a flow for a frame it left to TC"
        );

        uplink_takes_xdp(w);
        // Unfinished checksum: TC's, even though the uplink takes XDP.
        left_to_tc(w, &g, &unfinished(&frame), "NAT of an unfinished checksum");
        // Larger than the port's MTU (a GSO frame in generic mode): TC's.
        let big = Packet::udp(sock(g.addr, 5000), sock(OUTSIDE, 53))
            .payload(&[7u8; 1600])
            .macs(g.mac, BRIDGE_MAC)
            .build();
        left_to_tc(w, &g, &big, "a frame larger than the port's MTU");
        assert!(
            w.conntrack().is_empty(),
            "XDP recorded a flow for a frame it left to TC"
        );

        let run = xdp_verdict(
            w,
            &g,
            &frame,
            XDP_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "NAT with an uplink that takes XDP frames",
        );
        let f = Frame(&run.data);
        assert_eq!(f.src(), UPLINK_ADDR, "source not masqueraded by XDP");
        assert_eq!(f.dst(), OUTSIDE, "destination changed");
        assert_eq!(f.ttl(), sent.ttl - 1, "TTL not decremented");
        assert_eq!(f.eth_src(), UPLINK_MAC, "source MAC is not the uplink's");
        assert_eq!(
            f.eth_dst(),
            NEXT_HOP_MAC,
            "destination MAC is not the next hop's"
        );
        f.assert_checksums("NAT in XDP", false);
        assert!(
            !w.conntrack().is_empty(),
            "XDP NATed a frame without recording its flow: the reply could not be translated"
        );
        assert!(run.meta.is_empty(), "a redirected frame carries metadata");
    });
}

#[test]
fn route_in_xdp_forwards_and_host_traffic_is_passed_judged() {
    with_nat_world(|w| {
        let g = w.guests[0];
        // The host (DNS on the gateway): judged, counted once, marked.
        let dns = Packet::udp(sock(g.addr, 5353), sock(GATEWAY, 53))
            .macs(g.mac, BRIDGE_MAC)
            .build();
        let run = xdp_verdict(
            w,
            &g,
            &dns,
            XDP_PASS,
            &[once(Action::GuestPassed)],
            "DNS to the host",
        );
        assert_eq!(run.data, dns, "a frame to the host changed");
        assert_eq!(
            run.meta,
            XDP_META_JUDGED.to_ne_bytes(),
            "XDP did not mark the frame it judged: TC would count it again"
        );

        w.set_mode(mode::ROUTE, network_flags::HOST_ADDRESS);
        let sent = tcp_out(&g, 40001);
        let frame = sent.build();
        left_to_tc(
            w,
            &g,
            &frame,
            "route with an uplink that takes no XDP frames",
        );
        uplink_takes_xdp(w);
        let run = xdp_verdict(
            w,
            &g,
            &frame,
            XDP_REDIRECT,
            &[once(Action::RouteForwarded)],
            "route with an uplink that takes XDP frames",
        );
        let f = Frame(&run.data);
        assert_eq!(f.src(), g.addr, "a routed source changed");
        assert_eq!(f.ttl(), sent.ttl - 1, "TTL not decremented");
        assert_eq!(
            f.eth_dst(),
            NEXT_HOP_MAC,
            "destination MAC is not the next hop's"
        );
        f.assert_checksums("route in XDP", false);
    });
}

#[test]
fn rate_limited_ports_are_left_to_tc() {
    with_nat_world(|w| {
        let g = w.guests[0];
        uplink_takes_xdp(w);
        let limited = Endpoint {
            network_id: NET_ID,
            flags: endpoint_flags::MAC_KNOWN
                | endpoint_flags::XDP_FRAMES
                | endpoint_flags::RATE_LIMITED,
            mac: g.mac,
            _pad0: [0; 2],
            ipv4: be(g.addr),
            _pad1: 0,
            ipv6: [0; 16],
        };
        w.set_endpoint(g.port_ifindex, &limited);
        left_to_tc(
            w,
            &g,
            &tcp_out(&g, 40002).build(),
            "a rate-limited port's frame",
        );
    });
}

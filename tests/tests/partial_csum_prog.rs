//! The uplink's XDP program and unfinished checksums (BPF_PROG_TEST_RUN).
//! A frame from a local sender with checksum offload carries TCP/UDP whose
//! checksum field holds only the folded pseudo-header sum
//! (CHECKSUM_PARTIAL). XDP cannot see that state and a redirect would hand
//! the unfinished field to the guest, so the XDP program must leave such a
//! frame to the uplink's TC program untouched: XDP_PASS, not one byte
//! changed, no "judged" mark in front of it, nothing counted. The same
//! frame with a finished checksum goes straight to the guest's port with a
//! valid checksum. TCP and UDP, IPv4 and IPv6, through the route-mode
//! inbound path; and a port that cannot take XDP frames (a veth) gets
//! nothing from XDP either.
//!
//! The TC program's own handling of CHECKSUM_PARTIAL cannot be shown here
//! (a test run's socket buffer is never CHECKSUM_PARTIAL); the end-to-end
//! tests show it with default-settings veths, verified at the receiving
//! socket.
//!
//! Needs root (BPF, network namespaces).

use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};

use vxdp_common::{Action, Endpoint, XDP_META_JUDGED, endpoint_flags, mode, network_flags};
use vxdp_testkit::{
    packet::{Frame, Packet, be, fmt_mac},
    packet6::Packet6,
    tap_writer::{fold, unfinished},
};
use vxdp_tests::progtest::{
    BRIDGE, BRIDGE_MAC, Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE, OUTSIDE6, Slot, UPLINK_MAC, XDP_PASS,
    XDP_REDIRECT, assert_counters_moved, guest6, with_nat_world,
};

/// The frames of the test: what, the frame with a finished checksum.
fn frames(g: &Guest) -> Vec<(&'static str, Vec<u8>)> {
    let out4 = |p: u16| SocketAddrV4::new(OUTSIDE, p);
    let in4 = |p: u16| SocketAddrV4::new(g.addr, p);
    let out6 = |p: u16| SocketAddrV6::new(OUTSIDE6, p, 0, 0);
    let in6 = |p: u16| SocketAddrV6::new(guest6(10), p, 0, 0);
    let payload: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
    vec![
        (
            "IPv4 TCP",
            // Below 512 bytes of TCP payload: bulk segments are left to
            // GRO and TC whatever their checksum (`bulk_tcp_prog`).
            Packet::tcp(out4(80), in4(40000), 0x18)
                .payload(&payload[..100])
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .build(),
        ),
        (
            "IPv4 UDP",
            Packet::udp(out4(53), in4(40001))
                .payload(&payload)
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .build(),
        ),
        (
            "IPv6 TCP",
            Packet6::tcp(out6(80), in6(40000), 0x18)
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .build(),
        ),
        (
            "IPv6 UDP",
            Packet6::udp(out6(53), in6(40001))
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .build(),
        ),
    ]
}

#[test]
fn unfinished_checksums_are_left_to_tc_and_finished_ones_redirected_valid() {
    with_nat_world(|w| {
        let g = w.guests[0];
        w.set_mode(mode::ROUTE, network_flags::HOST_ADDRESS);
        w.set_mac(NET_ID, g.mac, g.port_ifindex);
        w.ip(&format!(
            "neigh replace {} lladdr {} dev {BRIDGE} nud permanent",
            g.addr,
            fmt_mac(&g.mac)
        ))
        .unwrap();
        w.ip(&format!(
            "-6 neigh replace {} lladdr {} dev {BRIDGE} nud permanent",
            guest6(10),
            fmt_mac(&g.mac)
        ))
        .unwrap();
        let fwd = (NET_ID, Slot::Action(Action::RouteInboundForwarded), 1);

        for (what, frame) in frames(&g) {
            // Finished: straight to the port, checksum still valid.
            let before = w.counters();
            let run = w.run_uplink_from(w.uplink_ifindex, &frame);
            assert_eq!(
                run.verdict, XDP_REDIRECT,
                "{what}, finished checksum: verdict {}",
                run.verdict
            );
            assert_counters_moved(&before, &w.counters(), &[fwd], what);
            assert_eq!(
                &run.data[0..6],
                &g.mac,
                "{what}: not addressed to the guest"
            );
            assert_eq!(&run.data[6..12], &BRIDGE_MAC, "{what}: not from the bridge");
            if what.starts_with("IPv4") {
                Frame(&run.data).assert_checksums(what, false);
            } else {
                let pseudo_ok = {
                    let d = &run.data;
                    let mut p = d[22..54].to_vec();
                    p.extend_from_slice(&[0, 0, d[18], d[19], 0, 0, 0, d[20]]);
                    p.extend_from_slice(&d[54..]);
                    fold(&p) == 0xffff
                };
                assert!(pseudo_ok, "{what}: delivered with an invalid L4 checksum");
            }

            // Unfinished: left to TC, untouched.
            let partial = unfinished(&frame);
            assert_ne!(partial, frame, "{what}: the test frame did not change");
            w.assert_uplink_left_to_tc(&partial, &format!("{what}, unfinished checksum"));
        }

        // UDP without a checksum (0) has nothing to finish: XDP delivers it.
        let no_csum = Packet::udp(
            SocketAddrV4::new(OUTSIDE, 53),
            SocketAddrV4::new(g.addr, 40002),
        )
        .udp_no_checksum()
        .macs(NEXT_HOP_MAC, UPLINK_MAC)
        .build();
        let run = w.run_uplink_from(w.uplink_ifindex, &no_csum);
        assert_eq!(
            run.verdict, XDP_REDIRECT,
            "IPv4 UDP without checksum: verdict {}",
            run.verdict
        );

        // A port that cannot take XDP frames (a veth): even finished
        // frames are the TC program's.
        let veth = Endpoint {
            network_id: NET_ID,
            flags: endpoint_flags::MAC_KNOWN,
            mac: g.mac,
            _pad0: [0; 2],
            ipv4: be(g.addr),
            _pad1: 0,
            ipv6: [0; 16],
        };
        w.set_endpoint(g.port_ifindex, &veth);
        for (what, frame) in frames(&g) {
            w.assert_uplink_left_to_tc(&frame, &format!("{what} to a port without XDP_FRAMES"));
        }

        // What XDP passes after judging it carries the mark, so TC leaves
        // it alone: here a frame to the host itself.
        let to_host = Packet::tcp(
            SocketAddrV4::new(OUTSIDE, 80),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 22),
            0x02,
        )
        .macs(NEXT_HOP_MAC, UPLINK_MAC)
        .build();
        let run = w.run_uplink_from(w.uplink_ifindex, &to_host);
        assert_eq!(
            run.verdict, XDP_PASS,
            "frame to the host: verdict {}",
            run.verdict
        );
        assert_eq!(run.data, to_host, "frame to the host changed");
        assert_eq!(
            run.meta,
            XDP_META_JUDGED.to_ne_bytes(),
            "frame to the host: XDP did not mark it judged"
        );
    });
}

//! The uplink's XDP program and bulk TCP (BPF_PROG_TEST_RUN). XDP
//! redirects a reply into a guest's port frame by frame, past the
//! interface's GRO, so an outside → guest bulk stream would reach a tap
//! one MTU frame per read. A reply segment carrying at least 512 bytes of
//! TCP payload (`flow::deliver::BULK_TCP_PAYLOAD`) is therefore left to the
//! uplink's TC program as it came (XDP_PASS, not one byte changed, no
//! "judged" mark, nothing counted), after GRO; pure ACKs and small
//! segments (511 bytes and below) are still reverse-NATed and redirected by
//! XDP. The TC program then delivers what XDP left: redirected to the
//! guest's port, translated, checksums valid, counted once. IPv4 NAT and
//! NAT66, to a port that takes XDP frames (a tap).
//!
//! Hostile outside: a segment whose IP length claims a bulk payload it does
//! not carry is only left to TC, which checks what XDP would.
//!
//! GRO itself cannot run in a test run; `vxdp-bench --only taptcp` shows
//! the coalesced frames reaching the tap (docs/performance.md).
//!
//! Needs root (BPF, network namespaces).

use vxdp_common::{Action, Nat6Config, mode, names, nat6_flags, network_flags};
use vxdp_testkit::{
    packet::{Frame, Packet, TCP_ACK, TCP_SYN, checksum, sock},
    packet6::{Frame6, Packet6, sock6},
};
use vxdp_tests::progtest::{
    BRIDGE_MAC, Counters, Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE, OUTSIDE6, TC_ACT_REDIRECT,
    UPLINK_ADDR, UPLINK_ADDR6, UPLINK_MAC, World, XDP_REDIRECT, assert_counters_moved, guest6,
    once, set_nat6, with_nat_world,
};

const GUEST_PORT: u16 = 40000;
const TCP_PSH: u8 = 0x08;

/// The payload of a segment: `len` bytes of a pattern.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 7) as u8).collect()
}

/// A delivery to `g` (by XDP or TC): counted once as `DnatForwarded`
/// since `before`, with the guest's and the bridge's MACs; returns `data`.
#[track_caller]
fn counted_once_to(w: &World, before: &Counters, g: &Guest, data: Vec<u8>, what: &str) -> Vec<u8> {
    assert_counters_moved(before, &w.counters(), &[once(Action::DnatForwarded)], what);
    assert_eq!(
        (&data[0..6], &data[6..12]),
        (&g.mac[..], &BRIDGE_MAC[..]),
        "{what}: MACs not the guest's / the bridge's"
    );
    data
}

/// XDP reverse-NATed the frame and redirected it to `g`'s port, counted
/// once; returns the frame as delivered.
#[track_caller]
fn redirected_by_xdp(w: &World, g: &Guest, frame: &[u8], what: &str) -> Vec<u8> {
    let before = w.counters();
    let run = w.run_uplink_from(w.uplink_ifindex, frame);
    assert_eq!(
        run.verdict, XDP_REDIRECT,
        "{what}: XDP verdict {} instead of XDP_REDIRECT (the fast path)",
        run.verdict
    );
    counted_once_to(w, &before, g, run.data, what)
}

/// The uplink's TC program (the frame received on the uplink) redirected
/// the frame to its guest, counted once; returns the frame as delivered.
#[track_caller]
fn delivered_by_tc(w: &World, g: &Guest, frame: &[u8], what: &str) -> Vec<u8> {
    let before = w.counters();
    let run = w
        .try_run_tc_received(
            names::PROG_UPLINK_TC,
            w.uplink_ifindex,
            w.uplink_ifindex,
            frame,
        )
        .unwrap_or_else(|e| panic!("{what}: BPF_PROG_TEST_RUN of vxdp_uplink_tc failed: {e}"));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "{what}: TC verdict {} instead of TC_ACT_REDIRECT: the guest never gets the segment",
        run.verdict
    );
    counted_once_to(w, &before, g, run.data, what)
}

#[test]
fn bulk_tcp_replies_are_left_to_tc_small_ones_redirected_by_xdp() {
    with_nat_world(|w| {
        let g = w.guests[0];
        // The guest opens a connection; the NAT port is the guest's own.
        let syn = Packet::tcp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, 80), TCP_SYN)
            .seq_ack(0x0102_0304, 0)
            .macs(g.mac, BRIDGE_MAC);
        let out = w.run_guest(g.port_ifindex, &syn.build());
        assert_eq!(
            out.verdict, TC_ACT_REDIRECT,
            "the guest's SYN was not NATed"
        );
        let nat_port = Frame(&out.data).src_port();
        let reply = |flags: u8, len: usize| {
            Packet::tcp(sock(OUTSIDE, 80), sock(UPLINK_ADDR, nat_port), flags)
                .seq_ack(0x5000_0001, 0x0102_0305)
                .payload(&payload(len))
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
        };
        let synack = reply(TCP_SYN | TCP_ACK, 0).build();
        redirected_by_xdp(w, &g, &synack, "IPv4 SYN/ACK");

        // Small segments keep the XDP fast path, translated and valid.
        for (what, flags, len) in [
            ("IPv4 pure ACK", TCP_ACK, 0),
            ("IPv4 1-byte response", TCP_ACK | TCP_PSH, 1),
            ("IPv4 511-byte response", TCP_ACK | TCP_PSH, 511),
        ] {
            let sent = reply(flags, len);
            let data = redirected_by_xdp(w, &g, &sent.build(), what);
            let f = Frame(&data);
            assert_eq!(
                f.sock_dst(),
                sock(g.addr, GUEST_PORT),
                "{what}: not reverse-NATed to the guest"
            );
            assert_eq!(f.payload(), &payload(len)[..], "{what}: payload changed");
            f.assert_checksums(what, false);
        }

        // Bulk segments: left to TC as they came, then TC delivers them.
        for (what, len) in [
            ("IPv4 512-byte segment", 512),
            ("IPv4 1448-byte segment", 1448),
        ] {
            let sent = reply(TCP_ACK, len).build();
            w.assert_uplink_left_to_tc(&sent, what);
            let data = delivered_by_tc(w, &g, &sent, &format!("{what}, TC"));
            let f = Frame(&data);
            assert_eq!(
                f.sock_dst(),
                sock(g.addr, GUEST_PORT),
                "{what}: TC did not reverse-NAT it to the guest"
            );
            assert_eq!(f.src(), OUTSIDE, "{what}: source changed");
            assert_eq!(f.ttl(), 63, "{what}: TTL not decremented");
            assert_eq!(f.payload(), &payload(len)[..], "{what}: payload changed");
            f.assert_checksums(what, false);
        }

        // A hostile outside: a 1-byte segment whose IP total length claims
        // a bulk payload. XDP only leaves it to TC, which checks it as it
        // checks every frame.
        let mut liar = reply(TCP_ACK | TCP_PSH, 1).build();
        liar[16..18].copy_from_slice(&(20u16 + 20 + 1400).to_be_bytes());
        liar[24..26].copy_from_slice(&[0, 0]);
        let csum = checksum(&liar[14..34]);
        liar[24..26].copy_from_slice(&csum.to_be_bytes());
        w.assert_uplink_left_to_tc(&liar, "IPv4 segment claiming a bulk payload it lacks");
    });
}

#[test]
fn bulk_nat66_replies_are_left_to_tc_small_ones_redirected_by_xdp() {
    with_nat_world(|w| {
        w.set_mode(mode::NAT, network_flags::HOST_ADDRESS);
        set_nat6(
            w,
            NET_ID,
            &Nat6Config {
                flags: nat6_flags::IPV6 | nat6_flags::MASQUERADE,
                _pad0: 0,
                addr: UPLINK_ADDR6.octets(),
            },
        );
        let g = w.guests[0];
        let syn = Packet6::tcp(sock6(guest6(10), GUEST_PORT), sock6(OUTSIDE6, 443), TCP_SYN)
            .macs(g.mac, BRIDGE_MAC);
        let out = w.run_guest(g.port_ifindex, &syn.build());
        assert_eq!(
            out.verdict, TC_ACT_REDIRECT,
            "the guest's IPv6 SYN was not NATed"
        );
        let nat_port = Frame6(&out.data).src_port();
        let reply = |flags: u8, len: usize| {
            let mut p = Packet6::tcp(sock6(OUTSIDE6, 443), sock6(UPLINK_ADDR6, nat_port), flags)
                .macs(NEXT_HOP_MAC, UPLINK_MAC);
            p.payload = payload(len);
            p
        };
        redirected_by_xdp(w, &g, &reply(TCP_SYN | TCP_ACK, 0).build(), "IPv6 SYN/ACK");

        for (what, flags, len) in [
            ("IPv6 pure ACK", TCP_ACK, 0),
            ("IPv6 1-byte response", TCP_ACK | TCP_PSH, 1),
            ("IPv6 511-byte response", TCP_ACK | TCP_PSH, 511),
        ] {
            let data = redirected_by_xdp(w, &g, &reply(flags, len).build(), what);
            let f = Frame6(&data);
            assert_eq!(
                (f.dst(), f.dst_port()),
                (guest6(10), GUEST_PORT),
                "{what}: not reverse-NATed to the guest"
            );
            assert_eq!(f.payload(), &payload(len)[..], "{what}: payload changed");
            f.assert_checksum(what);
        }

        for (what, len) in [
            ("IPv6 512-byte segment", 512),
            ("IPv6 1440-byte segment", 1440),
        ] {
            let sent = reply(TCP_ACK, len).build();
            w.assert_uplink_left_to_tc(&sent, what);
            let data = delivered_by_tc(w, &g, &sent, &format!("{what}, TC"));
            let f = Frame6(&data);
            assert_eq!(
                (f.dst(), f.dst_port()),
                (guest6(10), GUEST_PORT),
                "{what}: TC did not reverse-NAT it to the guest"
            );
            assert_eq!(f.src(), OUTSIDE6, "{what}: source changed");
            assert_eq!(f.hop_limit(), 63, "{what}: hop limit not decremented");
            assert_eq!(f.payload(), &payload(len)[..], "{what}: payload changed");
            f.assert_checksum(what);
        }

        let mut liar = reply(TCP_ACK | TCP_PSH, 1).build();
        liar[18..20].copy_from_slice(&(20u16 + 1400).to_be_bytes());
        w.assert_uplink_left_to_tc(&liar, "IPv6 segment claiming a bulk payload it lacks");
    });
}

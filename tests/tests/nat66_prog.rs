//! Program tests of IPv6 in NAT networks with `BPF_PROG_TEST_RUN`: NAT66
//! (`<nat ipv6='yes'>`) source NAT of TCP, UDP and ICMPv6 echo at the guest
//! port, reverse NAT of replies at the uplink, port collisions and
//! exhaustion, unsolicited inbound IPv6 refused, untranslatable packets
//! dropped by reason; and a NAT network's IPv6 routed without NAT when
//! NAT66 is off (as libvirt does). Checksums are recomputed from scratch.
//!
//! Needs root (network namespaces, BPF).

use std::net::Ipv6Addr;

use vxdp_common::{Action, DropReason, Nat6Config, mode, nat6_flags, network_flags};
use vxdp_testkit::{
    packet::TCP_SYN,
    packet6::{Frame6, Packet6, sock6},
};
use vxdp_tests::progtest::{
    BRIDGE_MAC, Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE6, Slot, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, UPLINK_ADDR6, UPLINK_MAC, World, XDP_DROP, XDP_PASS, XDP_REDIRECT,
    assert_counters_moved, conntrack6, dropped, guest6, once, set_nat6, with_nat_world,
};

const TCP_ACK: u8 = 0x10;

/// Network 1 as `net-start` leaves a NAT network with an IPv6 `<ip>`
/// (2001:db8:122::/64): masquerading its IPv6 to the uplink's address when
/// `nat66`, routing it otherwise.
fn seed(w: &mut World, nat66: bool) {
    w.set_mode(mode::NAT, network_flags::HOST_ADDRESS);
    let flags = nat6_flags::IPV6 | if nat66 { nat6_flags::MASQUERADE } else { 0 };
    set_nat6(
        w,
        NET_ID,
        &Nat6Config {
            flags,
            _pad0: 0,
            addr: UPLINK_ADDR6.octets(),
        },
    );
}

#[track_caller]
fn guest_run(
    w: &World,
    g: &Guest,
    p: &Packet6,
    verdict: u32,
    moved: &[(u32, Slot, u64)],
    what: &str,
) -> Vec<u8> {
    let before = w.counters();
    let run = w.run_guest(g.port_ifindex, &p.build());
    assert_eq!(
        run.verdict, verdict,
        "{what}: TC verdict {} instead of {verdict}",
        run.verdict
    );
    assert_counters_moved(&before, &w.counters(), moved, what);
    run.data
}

/// The outside host's answer to `out` (a frame the guest port sent out):
/// addresses and ports swapped, arriving at the uplink.
fn answer(out: &Frame6, kind: &str) -> Packet6 {
    let (from, to) = (
        sock6(out.dst(), out.dst_port()),
        sock6(out.src(), out.src_port()),
    );
    match kind {
        "tcp" => Packet6::tcp(from, to, TCP_SYN | TCP_ACK),
        "udp" => Packet6::udp(from, to),
        _ => Packet6::echo_reply(out.dst(), out.src(), out.src_port(), 1),
    }
    .macs(NEXT_HOP_MAC, UPLINK_MAC)
}

fn request(kind: &str, src: Ipv6Addr, port: u16) -> Packet6 {
    match kind {
        "tcp" => Packet6::tcp(sock6(src, port), sock6(OUTSIDE6, 443), TCP_SYN),
        "udp" => Packet6::udp(sock6(src, port), sock6(OUTSIDE6, 53)),
        _ => Packet6::echo_request(src, OUTSIDE6, port, 1),
    }
}

#[test]
fn nat66_masquerades_tcp_udp_and_echo_and_reverses_replies() {
    with_nat_world(|w| {
        seed(w, true);
        let g = w.guests[0];
        for kind in ["tcp", "udp", "icmpv6"] {
            let sent = request(kind, guest6(10), 40000).macs(g.mac, BRIDGE_MAC);
            let what = format!("NAT66 {kind} guest → outside");
            let out = guest_run(
                w,
                &g,
                &sent,
                TC_ACT_REDIRECT,
                &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
                &what,
            );
            let f = Frame6(&out);
            assert_eq!(
                f.src(),
                UPLINK_ADDR6,
                "{what}: source not masqueraded to the uplink's IPv6 address"
            );
            assert_eq!(f.dst(), OUTSIDE6, "{what}: destination changed");
            assert_eq!(
                f.src_port(),
                40000,
                "{what}: the guest's own port/id is free and should be kept"
            );
            assert_eq!(f.hop_limit(), 63, "{what}: hop limit not decremented");
            assert_eq!(
                (f.eth_dst(), f.eth_src()),
                (NEXT_HOP_MAC, UPLINK_MAC),
                "{what}: MACs not the next hop's / uplink's"
            );
            assert_eq!(f.payload(), b"vxdp nat66", "{what}: payload changed");
            f.assert_checksum(&what);

            let reply = answer(&f, kind);
            let what = format!("NAT66 {kind} reply");
            let back = w.uplink_verdict(
                &reply.build(),
                XDP_REDIRECT,
                &[once(Action::DnatForwarded)],
                &what,
            );
            let b = Frame6(&back);
            assert_eq!(
                b.dst(),
                guest6(10),
                "{what}: destination not reverse-NATed to the guest"
            );
            assert_eq!(b.src(), OUTSIDE6, "{what}: source changed");
            assert_eq!(b.dst_port(), 40000, "{what}: port/id not restored");
            assert_eq!(b.hop_limit(), 63, "{what}: hop limit not decremented");
            assert_eq!(
                (b.eth_dst(), b.eth_src()),
                (g.mac, BRIDGE_MAC),
                "{what}: MACs not the guest's / bridge's"
            );
            b.assert_checksum(&what);
        }
        let ct = conntrack6(w);
        assert_eq!(
            ct.len(),
            6,
            "two VXDP_CONNTRACK6 entries per flow expected: {ct:#?}"
        );
        assert!(
            ct.iter()
                .all(|(_, e)| e.network_id as u32 == NET_ID && e.ifindex == g.port_ifindex),
            "entries must name the network and the guest's port: {ct:#?}"
        );
    });
}

#[test]
fn nat66_remaps_colliding_ports_and_counts_exhaustion() {
    with_nat_world(|w| {
        seed(w, true);
        let [a, b] = w.guests;
        // Both guests use source port 40000 towards the same server.
        let first = guest_run(
            w,
            &a,
            &request("udp", guest6(10), 40000).macs(a.mac, BRIDGE_MAC),
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "first guest's flow",
        );
        let second = guest_run(
            w,
            &b,
            &request("udp", guest6(11), 40000).macs(b.mac, BRIDGE_MAC),
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "second guest's flow, same port",
        );
        let (f1, f2) = (Frame6(&first), Frame6(&second));
        assert_eq!(f1.src_port(), 40000);
        assert_ne!(
            f2.src_port(),
            40000,
            "the colliding flow must get another NAT port"
        );
        assert!(
            (1024..=65535).contains(&f2.src_port()),
            "NAT port {} outside 1024-65535",
            f2.src_port()
        );
        f2.assert_checksum("remapped flow");
        // Each reply reaches its own guest.
        for (f, g, addr) in [(&f1, a, guest6(10)), (&f2, b, guest6(11))] {
            let back = w.uplink_verdict(
                &answer(f, "udp").build(),
                XDP_REDIRECT,
                &[once(Action::DnatForwarded)],
                "reply to a remapped flow",
            );
            let r = Frame6(&back);
            assert_eq!(
                (r.dst(), r.dst_port(), r.eth_dst()),
                (addr, 40000, g.mac),
                "reply delivered to the wrong guest"
            );
            r.assert_checksum("reply to a remapped flow");
        }

        // A one-port range held by a live flow: a new flow is refused.
        let mut cfg = w.network();
        cfg.nat_port_min = 40000;
        cfg.nat_port_max = 40000;
        w.set_network(NET_ID, &cfg);
        guest_run(
            w,
            &b,
            &request("udp", guest6(11), 40001).macs(b.mac, BRIDGE_MAC),
            TC_ACT_SHOT,
            &[dropped(DropReason::NatPortExhausted)],
            "NAT66 port range exhausted",
        );
    });
}

#[test]
fn nat66_refuses_unsolicited_inbound_and_untranslatable_packets() {
    with_nat_world(|w| {
        seed(w, true);
        let g = w.guests[0];
        // The outside host, even with a route to the guests' prefix, cannot
        // open a connection to a guest.
        let syn = Packet6::tcp(sock6(OUTSIDE6, 40000), sock6(guest6(10), 22), TCP_SYN)
            .macs(NEXT_HOP_MAC, UPLINK_MAC);
        w.uplink_verdict(
            &syn.build(),
            XDP_DROP,
            &[dropped(DropReason::UnsolicitedInbound)],
            "unsolicited TCP to a NAT66 guest",
        );
        let ping = Packet6::echo_request(OUTSIDE6, guest6(10), 7, 1).macs(NEXT_HOP_MAC, UPLINK_MAC);
        w.uplink_verdict(
            &ping.build(),
            XDP_DROP,
            &[dropped(DropReason::UnsolicitedInbound)],
            "unsolicited ping to a NAT66 guest",
        );
        // To the uplink's own address without a flow: the host's business.
        let to_host = Packet6::tcp(sock6(OUTSIDE6, 40000), sock6(UPLINK_ADDR6, 22), TCP_SYN)
            .macs(NEXT_HOP_MAC, UPLINK_MAC);
        w.uplink_verdict(
            &to_host.build(),
            XDP_PASS,
            &[(0, Slot::Action(Action::UplinkPassed), 1)],
            "TCP to the uplink's address",
        );

        let from = |p: Packet6| p.macs(g.mac, BRIDGE_MAC);
        let cases = [
            (
                from(Packet6::raw(
                    guest6(10),
                    OUTSIDE6,
                    0,
                    &[17, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                )),
                DropReason::Ipv6ExtensionHeaders,
                "hop-by-hop options header",
            ),
            (
                from(Packet6::raw(
                    guest6(10),
                    OUTSIDE6,
                    44,
                    &[17, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                )),
                DropReason::Fragment,
                "IPv6 fragment",
            ),
            (
                from(Packet6::raw(guest6(10), OUTSIDE6, 132, &[0; 16])),
                DropReason::UnsupportedProtocol,
                "SCTP-Lite",
            ),
            (
                from(Packet6::raw(
                    guest6(10),
                    OUTSIDE6,
                    58,
                    &[1, 4, 0, 0, 0, 0, 0, 0],
                )),
                DropReason::UnsupportedIcmp,
                "ICMPv6 other than echo",
            ),
            (
                from(request("udp", "2001:db8:9::10".parse().unwrap(), 40000)),
                DropReason::SourceNotInSubnet,
                "source outside the network's prefix",
            ),
        ];
        for (p, reason, what) in cases {
            guest_run(w, &g, &p, TC_ACT_SHOT, &[dropped(reason)], what);
        }
        // An expiring hop limit is left to the kernel (it answers "time
        // exceeded"); link-local traffic stays on the bridge.
        guest_run(
            w,
            &g,
            &from(request("udp", guest6(10), 40000)).hop_limit(1),
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "hop limit 1",
        );
        let ll = from(Packet6::udp(
            sock6("fe80::5054:ff:fe00:a".parse().unwrap(), 546),
            sock6("fe80::1".parse().unwrap(), 547),
        ));
        guest_run(
            w,
            &g,
            &ll,
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "link-local IPv6",
        );
        assert!(
            conntrack6(w).is_empty(),
            "refused packets must create no flow"
        );
    });
}

#[test]
fn nat_network_ipv6_is_routed_without_nat66() {
    with_nat_world(|w| {
        seed(w, false);
        let g = w.guests[0];
        let sent = request("tcp", guest6(10), 40000).macs(g.mac, BRIDGE_MAC);
        let out = guest_run(
            w,
            &g,
            &sent,
            TC_ACT_REDIRECT,
            &[once(Action::RouteForwarded)],
            "NAT network IPv6 without NAT66",
        );
        let f = Frame6(&out);
        assert_eq!(
            (f.src(), f.dst(), f.src_port()),
            (guest6(10), OUTSIDE6, 40000),
            "IPv6 of a NAT network without ipv6='yes' must not be translated"
        );
        assert_eq!(f.hop_limit(), 63, "hop limit not decremented");
        assert_eq!(
            (f.eth_dst(), f.eth_src()),
            (NEXT_HOP_MAC, UPLINK_MAC),
            "MACs not the next hop's / uplink's"
        );
        f.assert_checksum("routed IPv6");
        // Inbound is routed as well (libvirt's routing rules for the prefix).
        let syn = Packet6::tcp(sock6(OUTSIDE6, 40000), sock6(guest6(10), 22), TCP_SYN)
            .macs(NEXT_HOP_MAC, UPLINK_MAC);
        w.uplink_verdict(
            &syn.build(),
            XDP_PASS,
            &[once(Action::RouteInbound)],
            "outside IPv6 to a guest of a NAT network without NAT66",
        );
        // Only the network's own prefix is routed.
        let foreign =
            request("udp", "2001:db8:9::10".parse().unwrap(), 40000).macs(g.mac, BRIDGE_MAC);
        guest_run(
            w,
            &g,
            &foreign,
            TC_ACT_SHOT,
            &[dropped(DropReason::SourceNotInSubnet)],
            "IPv6 source outside the prefix",
        );
        assert!(conntrack6(w).is_empty(), "routed IPv6 must not be tracked");
    });
}

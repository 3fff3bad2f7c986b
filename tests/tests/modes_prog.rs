//! Program tests of every mode's verdicts with `BPF_PROG_TEST_RUN`: the real
//! eBPF object in a throwaway namespace, network 1 re-seeded as route, open,
//! isolated or very isolated (as the control plane starts them), crafted
//! IPv4, IPv6 and ARP frames in, verdicts, rewritten bytes and counters out.
//!
//! Needs root (network namespaces, BPF).

use std::net::{Ipv4Addr, Ipv6Addr};

use vxdp_common::{Action, DropReason, Endpoint, SubnetOwner, endpoint_flags, mode, network_flags};
use vxdp_testkit::packet::{
    self, BROADCAST, Frame, Mac, Packet, TCP_SYN, be, bootp, fmt_mac, sock,
};
use vxdp_tests::progtest::{
    BRIDGE, BRIDGE_MAC, Case, EVERY_MODE, GATEWAY, Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE, OUTSIDE6,
    TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK, UPLINK_MAC, UPLINK_PEER, World, XDP_DROP,
    XDP_PASS, XDP_REDIRECT, assert_counters_moved, dropped, guest6, once, with_nat_world,
};

const HOST_ADDRESS: u32 = network_flags::HOST_ADDRESS;

fn syn_out(g: &Guest) -> Packet {
    Packet::tcp(sock(g.addr, 40000), sock(OUTSIDE, 80), TCP_SYN).macs(g.mac, BRIDGE_MAC)
}

fn syn_in(g: &Guest) -> Packet {
    Packet::tcp(sock(OUTSIDE, 80), sock(g.addr, 22), TCP_SYN).macs(NEXT_HOP_MAC, UPLINK_MAC)
}

/// Makes `g`'s address known (as `--ip` or a lease does), so anti-spoofing
/// enforces it.
fn enforce_known_ipv4(w: &mut World, g: &Guest) {
    let ep = Endpoint {
        network_id: NET_ID,
        flags: endpoint_flags::MAC_KNOWN | endpoint_flags::IPV4_KNOWN,
        mac: g.mac,
        _pad0: [0; 2],
        ipv4: be(g.addr),
        _pad1: 0,
        ipv6: [0; 16],
    };
    w.set_endpoint(g.port_ifindex, &ep);
}

/// Asserts `out` is `sent` routed without NAT: addresses and ports kept,
/// TTL one less, MACs of the uplink and its next hop, checksums right.
#[track_caller]
fn assert_routed(sent: &Packet, out: &[u8], what: &str) {
    let f = Frame(out);
    assert_eq!(
        (f.src(), f.dst()),
        (sent.src, sent.dst),
        "{what}: addresses changed (no NAT in this mode)"
    );
    assert_eq!(f.sock_src().port(), 40000, "{what}: source port changed");
    assert_eq!(f.ttl(), sent.ttl - 1, "{what}: TTL not decremented");
    assert_eq!(
        f.eth_src(),
        UPLINK_MAC,
        "{what}: source MAC {}",
        fmt_mac(&f.eth_src())
    );
    assert_eq!(
        f.eth_dst(),
        NEXT_HOP_MAC,
        "{what}: destination MAC {}",
        fmt_mac(&f.eth_dst())
    );
    f.assert_checksums(what, false);
}

#[test]
fn route_mode_forwards_both_ways_without_nat_only_for_its_subnet() {
    with_nat_world(|w| {
        w.set_mode(mode::ROUTE, HOST_ADDRESS);
        let g = w.guests[0];
        let p = syn_out(&g);
        let out = w.guest_verdict(
            &g,
            &p.build(),
            TC_ACT_REDIRECT,
            &[once(Action::RouteForwarded)],
            "route: guest SYN to the outside",
        );
        assert_routed(&p, &out, "route: guest SYN to the outside");
        assert!(
            w.conntrack().is_empty(),
            "route mode must not create NAT flows"
        );

        let ping = Packet::icmp_echo_request(g.addr, OUTSIDE, 7, 1).macs(g.mac, BRIDGE_MAC);
        w.guest_verdict(
            &g,
            &ping.build(),
            TC_ACT_REDIRECT,
            &[once(Action::RouteForwarded)],
            "route: guest ping to the outside",
        );

        // Inbound to the network's subnet: accepted, the kernel routes it.
        w.uplink_verdict(
            &syn_in(&g).build(),
            XDP_PASS,
            &[once(Action::RouteInbound)],
            "route: outside SYN to a guest",
        );

        // Only the network's subnet is routed: another source is refused.
        let mut foreign = syn_out(&g);
        foreign.src = Ipv4Addr::new(10, 1, 2, 3);
        w.guest_verdict(
            &g,
            &foreign.build(),
            TC_ACT_SHOT,
            &[dropped(DropReason::SourceNotInSubnet)],
            "route: source outside the subnet",
        );

        // To the host and to other guests: the bridge decides.
        let to_host =
            Packet::tcp(sock(g.addr, 40000), sock(GATEWAY, 22), TCP_SYN).macs(g.mac, BRIDGE_MAC);
        w.guest_verdict(
            &g,
            &to_host.build(),
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "route: guest to the host",
        );
        let h = w.guests[1];
        let to_guest =
            Packet::tcp(sock(g.addr, 40000), sock(h.addr, 22), TCP_SYN).macs(g.mac, h.mac);
        w.guest_verdict(
            &g,
            &to_guest.build(),
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "route: guest to guest",
        );
    });
}

#[test]
fn open_mode_forwards_without_filtering() {
    with_nat_world(|w| {
        w.set_mode(mode::OPEN, HOST_ADDRESS);
        let g = w.guests[0];
        let p = syn_out(&g);
        let out = w.guest_verdict(
            &g,
            &p.build(),
            TC_ACT_REDIRECT,
            &[once(Action::RouteForwarded)],
            "open: guest SYN to the outside",
        );
        assert_routed(&p, &out, "open: guest SYN to the outside");
        // No subnet filter in open mode (the port has no static address).
        let mut other = syn_out(&g);
        other.src = Ipv4Addr::new(10, 1, 2, 3);
        w.guest_verdict(
            &g,
            &other.build(),
            TC_ACT_REDIRECT,
            &[once(Action::RouteForwarded)],
            "open: source outside the subnet",
        );
        w.uplink_verdict(
            &syn_in(&g).build(),
            XDP_PASS,
            &[once(Action::RouteInbound)],
            "open: outside SYN to a guest",
        );
    });
}

#[test]
fn isolated_modes_keep_traffic_inside_the_network() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let h = w.guests[1];
        let to_host = Packet::udp(sock(g.addr, 40000), sock(GATEWAY, 53)).macs(g.mac, BRIDGE_MAC);
        let to_guest =
            Packet::tcp(sock(g.addr, 40000), sock(h.addr, 22), TCP_SYN).macs(g.mac, h.mac);
        let v6_out = ipv6_udp(g.mac, BRIDGE_MAC, guest6(10), OUTSIDE6, 64);
        let passed = &[once(Action::GuestPassed)];
        let isolated = &[dropped(DropReason::IsolatedNetwork)];
        let no_host = &[dropped(DropReason::HostNotReachable)];

        w.set_mode(mode::ISOLATED, HOST_ADDRESS);
        #[rustfmt::skip]
        w.guest_cases(&g, "isolated", &[
            ("guest to the outside", syn_out(&g).build(), TC_ACT_SHOT, isolated),
            ("guest DNS query to the host", to_host.build(), TC_ACT_OK, passed),
            ("guest to guest", to_guest.build(), TC_ACT_OK, passed),
            ("IPv6 to the outside", v6_out, TC_ACT_SHOT, isolated),
        ]);
        w.uplink_verdict(
            &syn_in(&g).build(),
            XDP_DROP,
            isolated,
            "isolated: outside to a guest",
        );

        // Very isolated: no <ip>, the host has no address on the bridge.
        let mut cfg = w.network();
        cfg.mode = mode::ISOLATED;
        cfg.flags = network_flags::ACTIVE;
        cfg.subnet = 0;
        cfg.netmask = 0;
        cfg.gateway = 0;
        w.set_network(NET_ID, &cfg);
        #[rustfmt::skip]
        w.guest_cases(&g, "very isolated", &[
            ("guest to the host", to_host.build(), TC_ACT_SHOT, no_host),
            ("guest to the outside", syn_out(&g).build(), TC_ACT_SHOT, no_host),
            ("guest to guest", to_guest.build(), TC_ACT_OK, passed),
        ]);
    });
}

#[test]
fn spoofed_mac_and_ip_are_dropped_in_every_mode() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let h = w.guests[1];
        enforce_known_ipv4(w, &g);
        let (foreign_ip, foreign_mac) = (
            Ipv4Addr::new(192, 168, 122, 99),
            [0x02, 0, 0, 0, 0x66, 0x66],
        );
        let to_guest =
            Packet::tcp(sock(g.addr, 40000), sock(h.addr, 22), TCP_SYN).macs(g.mac, h.mac);
        let spoofed_mac = to_guest.clone().macs(foreign_mac, h.mac);
        let mut spoofed_ip = to_guest.clone();
        spoofed_ip.src = foreign_ip;
        // DHCP before the guest has its address: from 0.0.0.0.
        let dhcp = Packet::udp(
            sock(Ipv4Addr::UNSPECIFIED, 68),
            sock(Ipv4Addr::BROADCAST, 67),
        )
        .payload(&bootp(1, g.mac))
        .macs(g.mac, [0xff; 6]);
        let passed = &[once(Action::GuestPassed)];
        let bad_mac = &[dropped(DropReason::SpoofedMac)];
        let bad_src = &[dropped(DropReason::SpoofedSource)];
        #[rustfmt::skip]
        let cases: [Case; 7] = [
            ("own MAC and address", to_guest.build(), TC_ACT_OK, passed),
            ("spoofed MAC", spoofed_mac.build(), TC_ACT_SHOT, bad_mac),
            ("spoofed IPv4 source", spoofed_ip.build(), TC_ACT_SHOT, bad_src),
            // ARP claiming another address, or from another MAC.
            ("ARP for a foreign address", arp(g.mac, g.mac, foreign_ip), TC_ACT_SHOT, bad_src),
            ("ARP with a foreign sender MAC", arp(g.mac, foreign_mac, g.addr), TC_ACT_SHOT, bad_mac),
            ("honest ARP", arp(g.mac, g.mac, g.addr), TC_ACT_OK, passed),
            ("DHCP discover from 0.0.0.0", dhcp.build(), TC_ACT_OK, passed),
        ];
        for (m, name) in EVERY_MODE {
            w.set_mode(m, HOST_ADDRESS);
            w.guest_cases(&g, name, &cases);
        }
    });
}

#[test]
fn a_known_ipv6_address_is_the_only_global_source_in_every_mode() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let h = w.guests[1];
        let mut ep = w_endpoint(&g);
        ep.flags |= endpoint_flags::IPV6_KNOWN;
        ep.ipv6 = guest6(10).octets();
        w.set_endpoint(g.port_ifindex, &ep);
        let link_local: Ipv6Addr = "fe80::5054:ff:fe00:10".parse().unwrap();
        let dad = ipv6_udp(
            g.mac,
            [0x33, 0x33, 0xff, 0, 0, 0x10],
            Ipv6Addr::UNSPECIFIED,
            "ff02::1:ff00:10".parse().unwrap(),
            255,
        );
        // To the other guest's MAC: the bridge (or the port-to-port path)
        // would carry it; only the source decides here.
        let passed = &[once(Action::GuestPassed)];
        let bad_src = &[dropped(DropReason::SpoofedSource)];
        let from = |src| ipv6_udp(g.mac, h.mac, src, guest6(11), 64);
        #[rustfmt::skip]
        let cases: [Case; 4] = [
            ("own IPv6 source", from(guest6(10)), TC_ACT_OK, passed),
            ("spoofed IPv6 source", from(guest6(99)), TC_ACT_SHOT, bad_src),
            ("link-local IPv6 source", from(link_local), TC_ACT_OK, passed),
            ("unspecified source (DAD)", dad, TC_ACT_OK, passed),
        ];
        for (m, name) in EVERY_MODE {
            w.set_mode(m, HOST_ADDRESS);
            w.guest_cases(&g, name, &cases);
        }
    });
}

/// Guest `g`'s endpoint as the world seeds it (MAC known).
fn w_endpoint(g: &Guest) -> Endpoint {
    Endpoint {
        network_id: NET_ID,
        flags: endpoint_flags::MAC_KNOWN,
        mac: g.mac,
        ..Endpoint::default()
    }
}

#[test]
fn ipv6_is_routed_in_route_and_open_modes_and_refused_by_nat() {
    with_nat_world(|w| {
        let g = w.guests[0];
        for (m, name) in [(mode::ROUTE, "route"), (mode::OPEN, "open")] {
            w.set_mode(m, HOST_ADDRESS);
            let sent = ipv6_udp(g.mac, BRIDGE_MAC, guest6(10), OUTSIDE6, 64);
            let out = w.guest_verdict(
                &g,
                &sent,
                TC_ACT_REDIRECT,
                &[once(Action::RouteForwarded)],
                &format!("{name}: IPv6 to the outside"),
            );
            assert_eq!(out.len(), sent.len(), "{name}: IPv6 frame changed length");
            assert_eq!(
                &out[0..6],
                &NEXT_HOP_MAC,
                "{name}: IPv6 destination MAC is not the next hop's"
            );
            assert_eq!(
                &out[6..12],
                &UPLINK_MAC,
                "{name}: IPv6 source MAC is not the uplink's"
            );
            assert_eq!(out[21], 63, "{name}: hop limit not decremented");
            assert_eq!(
                &out[22..],
                &sent[22..],
                "{name}: IPv6 addresses or payload changed"
            );

            let inbound = ipv6_udp(NEXT_HOP_MAC, UPLINK_MAC, OUTSIDE6, guest6(10), 64);
            w.uplink_verdict(
                &inbound,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: outside IPv6 to a guest"),
            );

            // Link-local and neighbour discovery stay on the bridge.
            let ll = ipv6_udp(
                g.mac,
                BRIDGE_MAC,
                "fe80::5054:ff:fe00:a".parse().unwrap(),
                "fe80::1".parse().unwrap(),
                255,
            );
            w.guest_verdict(
                &g,
                &ll,
                TC_ACT_OK,
                &[once(Action::GuestPassed)],
                &format!("{name}: link-local IPv6"),
            );
        }
        w.set_mode(mode::ROUTE, HOST_ADDRESS);
        let foreign = ipv6_udp(
            g.mac,
            BRIDGE_MAC,
            "2001:db8:9::10".parse().unwrap(),
            OUTSIDE6,
            64,
        );
        w.guest_verdict(
            &g,
            &foreign,
            TC_ACT_SHOT,
            &[dropped(DropReason::SourceNotInSubnet)],
            "route: IPv6 source outside the prefix",
        );

        // A NAT network without an IPv6 <ip> (no VXDP_NAT6 entry) sends its
        // IPv6 nowhere but to the host (nat66_prog.rs covers the others).
        w.set_mode(mode::NAT, HOST_ADDRESS);
        let sent = ipv6_udp(g.mac, BRIDGE_MAC, guest6(10), OUTSIDE6, 64);
        w.guest_verdict(
            &g,
            &sent,
            TC_ACT_SHOT,
            &[dropped(DropReason::Ipv6NotForwarded)],
            "nat: IPv6 to the outside",
        );
    });
}

#[test]
fn guests_of_other_networks_are_refused_unless_both_route() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let other = Ipv4Addr::new(10, 9, 0, 5);
        let mut cfg = w.network();
        cfg.subnet = be(Ipv4Addr::new(10, 9, 0, 0));
        cfg.gateway = be(Ipv4Addr::new(10, 9, 0, 1));
        let to_other =
            Packet::tcp(sock(g.addr, 40000), sock(other, 22), TCP_SYN).macs(g.mac, BRIDGE_MAC);
        for (mine, theirs, refused) in [
            (mode::NAT, mode::NAT, true),
            (mode::NAT, mode::ROUTE, true),
            (mode::ROUTE, mode::ISOLATED, true),
            (mode::ROUTE, mode::NAT, true),
            (mode::ROUTE, mode::ROUTE, false),
            (mode::OPEN, mode::ROUTE, false),
        ] {
            w.set_mode(mine, HOST_ADDRESS);
            cfg.mode = theirs;
            w.set_network(2, &cfg);
            w.set_subnet(
                be(Ipv4Addr::new(10, 9, 0, 0)),
                24,
                &SubnetOwner {
                    network_id: 2,
                    mode: theirs,
                },
            );
            let before = w.counters();
            let run = w.run_guest(g.port_ifindex, &to_other.build());
            let moved = w.counters().moved_since(&before);
            let what = format!("mode {mine} guest to a guest of a mode {theirs} network");
            if refused {
                assert_eq!(run.verdict, TC_ACT_SHOT, "{what}: not refused");
                assert_counters_moved(
                    &before,
                    &w.counters(),
                    &[dropped(DropReason::OtherNetwork)],
                    &what,
                );
            } else {
                // Routed (in this namespace network 2 has no bridge, so
                // the default route carries it).
                assert_eq!(
                    run.verdict, TC_ACT_REDIRECT,
                    "{what}: verdict {} (moved {moved:?})",
                    run.verdict
                );
                assert_counters_moved(
                    &before,
                    &w.counters(),
                    &[once(Action::RouteForwarded)],
                    &what,
                );
            }
        }
    });
}

#[test]
fn guests_of_one_network_go_port_to_port_once_their_macs_are_known() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let h = w.guests[1];
        let to_guest =
            Packet::tcp(sock(g.addr, 40000), sock(h.addr, 22), TCP_SYN).macs(g.mac, h.mac);
        let v6_to_guest = ipv6_udp(g.mac, h.mac, guest6(10), guest6(11), 64);
        enforce_known_ipv4(w, &g);
        // The MAC is known in another network only: the bridge decides.
        w.set_mac(NET_ID + 1, h.mac, h.port_ifindex);
        w.guest_verdict(
            &g,
            &to_guest.build(),
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "guest to a MAC of another network's table",
        );
        w.set_mac(NET_ID, h.mac, h.port_ifindex);
        for (m, flags, name) in [
            (mode::NAT, HOST_ADDRESS, "nat"),
            (mode::ROUTE, HOST_ADDRESS, "route"),
            (mode::OPEN, HOST_ADDRESS, "open"),
            (mode::ISOLATED, HOST_ADDRESS, "isolated"),
            (mode::BRIDGE, 0, "host bridge"),
        ] {
            w.set_mode(m, flags);
            let out = w.guest_verdict(
                &g,
                &to_guest.build(),
                TC_ACT_REDIRECT,
                &[once(Action::PortForwarded)],
                &format!("{name}: guest to guest"),
            );
            assert_eq!(
                out,
                to_guest.build(),
                "{name}: a frame between guests must not change"
            );
            w.guest_verdict(
                &g,
                &v6_to_guest,
                TC_ACT_REDIRECT,
                &[once(Action::PortForwarded)],
                &format!("{name}: IPv6 guest to guest"),
            );
            // Anti-spoofing still comes first.
            let spoofed = Packet::tcp(
                sock(Ipv4Addr::new(192, 168, 122, 99), 40000),
                sock(h.addr, 22),
                TCP_SYN,
            )
            .macs(g.mac, h.mac);
            w.guest_verdict(
                &g,
                &spoofed.build(),
                TC_ACT_SHOT,
                &[dropped(DropReason::SpoofedSource)],
                &format!("{name}: spoofed source to guest"),
            );
            // A bridge that filters (VLANs, netfilter) keeps guest frames.
            let mut cfg = w.network();
            cfg.flags |= network_flags::BRIDGE_FILTERS;
            w.set_network(NET_ID, &cfg);
            w.guest_verdict(
                &g,
                &to_guest.build(),
                TC_ACT_OK,
                &[once(Action::GuestPassed)],
                &format!("{name}: guest to guest on a filtering bridge"),
            );
            w.set_mode(m, flags);
            // Broadcast and frames to the host stay on the bridge.
            let bcast = Packet::udp(sock(g.addr, 68), sock(Ipv4Addr::BROADCAST, 67))
                .payload(&bootp(1, g.mac))
                .macs(g.mac, [0xff; 6]);
            w.guest_verdict(
                &g,
                &bcast.build(),
                TC_ACT_OK,
                &[once(Action::GuestPassed)],
                &format!("{name}: broadcast"),
            );
        }
    });
}

/// Asserts `out` is the inbound IPv4 frame `sent` delivered to guest `g`:
/// MACs bridge → guest, TTL one less, header checksum right, every other
/// byte unchanged.
#[track_caller]
fn assert_delivered_v4(g: &Guest, sent: &[u8], out: &[u8], what: &str) {
    let f = Frame(out);
    assert_eq!(out.len(), sent.len(), "{what}: frame length changed");
    assert_eq!(
        f.eth_dst(),
        g.mac,
        "{what}: destination MAC {} is not the guest's",
        fmt_mac(&f.eth_dst())
    );
    assert_eq!(
        f.eth_src(),
        BRIDGE_MAC,
        "{what}: source MAC {} is not the bridge's",
        fmt_mac(&f.eth_src())
    );
    assert_eq!(
        f.ttl(),
        Frame(sent).ttl() - 1,
        "{what}: TTL not decremented"
    );
    f.assert_checksums(what, false);
    let unchanged = |b: &[u8]| {
        let mut v = b[12..].to_vec();
        v[22 - 12] = 0; // TTL
        v[24 - 12] = 0; // header checksum
        v[25 - 12] = 0;
        v
    };
    assert_eq!(
        unchanged(out),
        unchanged(sent),
        "{what}: bytes other than MACs, TTL and header checksum changed"
    );
}

/// Asserts `out` is the inbound IPv6 frame `sent` delivered to guest `g`.
#[track_caller]
fn assert_delivered_v6(g: &Guest, sent: &[u8], out: &[u8], what: &str) {
    assert_eq!(out.len(), sent.len(), "{what}: frame length changed");
    assert_eq!(
        &out[0..6],
        &g.mac,
        "{what}: destination MAC {} is not the guest's",
        fmt_mac(&out[0..6].try_into().unwrap())
    );
    assert_eq!(
        &out[6..12],
        &BRIDGE_MAC,
        "{what}: source MAC {} is not the bridge's",
        fmt_mac(&out[6..12].try_into().unwrap())
    );
    assert_eq!(out[21], sent[21] - 1, "{what}: hop limit not decremented");
    assert_eq!(&out[12..21], &sent[12..21], "{what}: IPv6 header changed");
    assert_eq!(
        &out[22..],
        &sent[22..],
        "{what}: IPv6 addresses or payload changed"
    );
}

/// Outside → guest in route and open modes: once the kernel has resolved
/// the guest's neighbour on the bridge and the guest's MAC is in
/// `VXDP_MACS`, the uplink program redirects IPv4 and IPv6 straight into
/// the guest's port (MACs rewritten, TTL/hop limit decremented); everything
/// else is still routed by the kernel. NAT and isolated networks are
/// unchanged, and a route network with `<forward dev>` accepts inbound
/// traffic only from that device (as libvirt's rules do).
#[test]
fn route_and_open_inbound_go_straight_to_the_guest_port() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let up = w.uplink_ifindex;
        let g6 = guest6(10);
        let syn = syn_in(&g).build();
        let udp = Packet::udp(sock(OUTSIDE, 53), sock(g.addr, 40000))
            .macs(NEXT_HOP_MAC, UPLINK_MAC)
            .build();
        let ping = Packet::icmp_echo_request(OUTSIDE, g.addr, 9, 1)
            .macs(NEXT_HOP_MAC, UPLINK_MAC)
            .build();
        let v6 = ipv6_udp(NEXT_HOP_MAC, UPLINK_MAC, OUTSIDE6, g6, 64);
        let modes = [(mode::ROUTE, "route"), (mode::OPEN, "open")];

        // The kernel has not resolved the guest yet: it routes the packet
        // (and resolves the neighbour on the way).
        w.set_mac(NET_ID, g.mac, g.port_ifindex);
        for (m, name) in modes {
            w.set_mode(m, HOST_ADDRESS);
            w.uplink_verdict_from(
                up,
                &syn,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: unresolved neighbour"),
            );
            w.uplink_verdict_from(
                up,
                &v6,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: unresolved IPv6 neighbour"),
            );
        }

        // Resolved, but to a MAC no port of this network has: the kernel.
        let stranger = [0x52, 0x54, 0x00, 0x00, 0x00, 0x99];
        w.ip(&format!(
            "neigh replace {} lladdr {} dev {BRIDGE} nud permanent",
            g.addr,
            fmt_mac(&stranger)
        ))
        .unwrap();
        w.ip(&format!(
            "-6 neigh replace {g6} lladdr {} dev {BRIDGE} nud permanent",
            fmt_mac(&stranger)
        ))
        .unwrap();
        for (m, name) in modes {
            w.set_mode(m, HOST_ADDRESS);
            w.uplink_verdict_from(
                up,
                &syn,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: neighbour MAC of no guest"),
            );
            w.uplink_verdict_from(
                up,
                &v6,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: IPv6 neighbour MAC of no guest"),
            );
        }

        w.ip(&format!(
            "neigh replace {} lladdr {} dev {BRIDGE} nud permanent",
            g.addr,
            fmt_mac(&g.mac)
        ))
        .unwrap();
        w.ip(&format!(
            "-6 neigh replace {g6} lladdr {} dev {BRIDGE} nud permanent",
            fmt_mac(&g.mac)
        ))
        .unwrap();
        let fwd = once(Action::RouteInboundForwarded);
        for (m, name) in modes {
            w.set_mode(m, HOST_ADDRESS);
            for (frame, what) in [(&syn, "TCP SYN"), (&udp, "UDP"), (&ping, "ping")] {
                let what = format!("{name}: outside {what} to a resolved guest");
                let out = w.uplink_verdict_from(up, frame, XDP_REDIRECT, &[fwd], &what);
                assert_delivered_v4(&g, frame, &out, &what);
            }
            let what = format!("{name}: outside IPv6 to a resolved guest");
            let out = w.uplink_verdict_from(up, &v6, XDP_REDIRECT, &[fwd], &what);
            assert_delivered_v6(&g, &v6, &out, &what);

            // Expiring TTLs, the host's own address: the kernel answers.
            let last_hop = Packet::tcp(sock(OUTSIDE, 80), sock(g.addr, 22), TCP_SYN)
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .ttl(1)
                .build();
            w.uplink_verdict_from(
                up,
                &last_hop,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: TTL 1"),
            );
            let v6_last_hop = ipv6_udp(NEXT_HOP_MAC, UPLINK_MAC, OUTSIDE6, g6, 1);
            w.uplink_verdict_from(
                up,
                &v6_last_hop,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: hop limit 1"),
            );
            let to_host = Packet::tcp(sock(OUTSIDE, 80), sock(GATEWAY, 22), TCP_SYN)
                .macs(NEXT_HOP_MAC, UPLINK_MAC)
                .build();
            w.uplink_verdict_from(
                up,
                &to_host,
                XDP_PASS,
                &[once(Action::RouteInbound)],
                &format!("{name}: to the host's bridge address"),
            );
        }

        // <forward dev>: route mode takes inbound traffic only from that
        // device; open mode filters nothing.
        let elsewhere = w.ifindex(UPLINK_PEER);
        assert_ne!(elsewhere, w.ifindex(UPLINK));
        w.set_mode(mode::ROUTE, HOST_ADDRESS | network_flags::FORWARD_DEV);
        w.uplink_verdict_from(
            elsewhere,
            &syn,
            XDP_DROP,
            &[dropped(DropReason::InboundNotViaForwardDev)],
            "route, forward dev: inbound from another interface",
        );
        w.uplink_verdict_from(
            elsewhere,
            &v6,
            XDP_DROP,
            &[dropped(DropReason::InboundNotViaForwardDev)],
            "route, forward dev: IPv6 from another interface",
        );
        let out = w.uplink_verdict_from(
            up,
            &syn,
            XDP_REDIRECT,
            &[fwd],
            "route, forward dev: inbound from it",
        );
        assert_delivered_v4(&g, &syn, &out, "route, forward dev: inbound from it");
        w.set_mode(mode::OPEN, HOST_ADDRESS | network_flags::FORWARD_DEV);
        let out = w.uplink_verdict_from(
            elsewhere,
            &syn,
            XDP_REDIRECT,
            &[fwd],
            "open, forward dev: inbound from another interface",
        );
        assert_delivered_v4(
            &g,
            &syn,
            &out,
            "open, forward dev: inbound from another interface",
        );

        // The guest's port has no redirect slot: the kernel, not a drop.
        // NAT and isolated networks are not routed into, resolved guest or
        // not; a NAT network's IPv6 without NAT66 is routed as libvirt does
        // (here to the kernel: the port has no redirect slot).
        w.remove_port(g.port_ifindex);
        let inbound = &[once(Action::RouteInbound)];
        let unsolicited = &[dropped(DropReason::UnsolicitedInbound)];
        let isolated = &[dropped(DropReason::IsolatedNetwork)];
        #[rustfmt::skip]
        let cases: [(u32, Case); 6] = [
            (mode::ROUTE, ("route: guest port without a redirect slot", syn.clone(), XDP_PASS, inbound)),
            (mode::ROUTE, ("route: IPv6 to a guest port without a redirect slot", v6.clone(), XDP_PASS, inbound)),
            (mode::NAT, ("nat: unsolicited SYN to a resolved guest", syn.clone(), XDP_DROP, unsolicited)),
            (mode::NAT, ("nat: routed IPv6 to a resolved guest", v6.clone(), XDP_PASS, inbound)),
            (mode::ISOLATED, ("isolated: SYN to a resolved guest", syn.clone(), XDP_DROP, isolated)),
            (mode::ISOLATED, ("isolated: IPv6 to a resolved guest", v6.clone(), XDP_DROP, isolated)),
        ];
        for (m, (what, frame, verdict, moved)) in cases {
            w.set_mode(m, HOST_ADDRESS);
            w.uplink_verdict_from(up, &frame, verdict, moved, what);
        }
    });
}

/// An Ethernet/IPv6 UDP datagram (the checksum is not looked at).
fn ipv6_udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hop: u8) -> Vec<u8> {
    let payload = b"vxdp";
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.push(17);
    f.push(hop);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(payload);
    f
}

/// An ARP request (broadcast) with the given Ethernet and sender fields.
fn arp(eth_src: Mac, sender_mac: Mac, sender_ip: Ipv4Addr) -> Vec<u8> {
    packet::arp(
        1,
        eth_src,
        BROADCAST,
        (sender_mac, sender_ip),
        ([0; 6], GATEWAY),
    )
}

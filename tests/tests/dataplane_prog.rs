//! Program tests of the NAT dataplane with `BPF_PROG_TEST_RUN`: the real
//! eBPF object, loaded in a throwaway network namespace (for
//! `bpf_fib_lookup`), maps seeded as the control plane would for libvirt's
//! default network, crafted frames in, verdicts, bytes, checksums,
//! conntrack entries and counters checked.
//!
//! Needs root (network namespaces, BPF).

use std::net::{Ipv4Addr, SocketAddrV4};

use vxdp_common::{
    Action, ConntrackEntry, ConntrackKey, DIR_ORIGINAL, DIR_REPLY, DropReason, ct_state,
    timeout_class, timeout_class_of,
};
use vxdp_testkit::packet::{
    Frame, L4Spec, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    be, checksum, fmt_mac, sock,
};
use vxdp_tests::progtest::{
    BRIDGE_MAC, Guest, NAT_PORT_MAX, NAT_PORT_MIN, NET_ID, NEXT_HOP, NEXT_HOP_MAC, OUTSIDE, Run,
    Slot, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK, UPLINK_ADDR, UPLINK_MAC, World,
    XDP_DROP, XDP_PASS, XDP_REDIRECT, assert_counters_moved, dropped, once, with_nat_world,
};

const GUEST_PORT: u16 = 40000;
const OUTSIDE_PORT: u16 = 80;
const ICMP_ID: u16 = 0x4242;

/// A frame as guest `g` sends it to the outside (to the bridge's MAC, its
/// default gateway).
fn from_guest(g: &Guest, p: Packet) -> Packet {
    p.macs(g.mac, BRIDGE_MAC)
}

/// A frame as the next hop delivers it to the uplink.
fn from_outside(p: Packet) -> Packet {
    p.macs(NEXT_HOP_MAC, UPLINK_MAC)
}

fn tcp_syn(g: &Guest, sport: u16) -> Packet {
    from_guest(
        g,
        Packet::tcp(sock(g.addr, sport), sock(OUTSIDE, OUTSIDE_PORT), TCP_SYN),
    )
}

fn udp(g: &Guest, sport: u16) -> Packet {
    from_guest(g, Packet::udp(sock(g.addr, sport), sock(OUTSIDE, 53)))
}

fn ping(g: &Guest, id: u16) -> Packet {
    from_guest(g, Packet::icmp_echo_request(g.addr, OUTSIDE, id, 1))
}

/// The checksum fields zeroed, so two frames can be compared apart from them
/// (they are checked separately, from scratch).
fn without_checksums(frame: &[u8]) -> Vec<u8> {
    let mut v = frame.to_vec();
    if v.len() >= 34 {
        v[24] = 0;
        v[25] = 0;
        let l4 = 14 + (v[14] & 0x0f) as usize * 4;
        let off = match v[23] {
            PROTO_TCP => l4 + 16,
            PROTO_UDP => l4 + 6,
            _ => l4 + 2,
        };
        if v.len() >= off + 2 {
            v[off] = 0;
            v[off + 1] = 0;
        }
    }
    v
}

/// `p` with another source address and port (ICMP echo: id).
fn with_src(mut p: Packet, a: Ipv4Addr, port: u16) -> Packet {
    p.src = a;
    match &mut p.l4 {
        L4Spec::Tcp { src_port, .. } | L4Spec::Udp { src_port, .. } => *src_port = port,
        L4Spec::IcmpEcho { id, .. } => *id = port,
    }
    p
}

/// `p` with another destination address and port (ICMP echo: id).
fn with_dst(mut p: Packet, a: Ipv4Addr, port: u16) -> Packet {
    p.dst = a;
    match &mut p.l4 {
        L4Spec::Tcp { dst_port, .. } | L4Spec::Udp { dst_port, .. } => *dst_port = port,
        L4Spec::IcmpEcho { id, .. } => *id = port,
    }
    p
}

/// Asserts that `run` is `sent` source-NATed to the uplink address with
/// source port `port`, TTL decremented, MACs from the route, redirected.
/// Returns the NATed frame.
#[track_caller]
fn assert_snat(sent: &Packet, run: &Run, port: u16, what: &str) -> Vec<u8> {
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "{what}: guest packet to the outside was not redirected to the uplink (TC verdict {}, want TC_ACT_REDIRECT): it would go through the kernel un-NATed or be dropped",
        run.verdict
    );
    let f = Frame(&run.data);
    assert_eq!(
        run.data.len(),
        sent.build().len(),
        "{what}: NATed frame changed length"
    );
    assert_eq!(
        f.src(),
        UPLINK_ADDR,
        "{what}: source address not masqueraded: the outside host would see {} instead of the uplink's {UPLINK_ADDR}",
        f.src()
    );
    assert_eq!(
        f.dst(),
        sent.dst,
        "{what}: destination address changed by SNAT"
    );
    assert_eq!(
        f.src_port(),
        port,
        "{what}: NAT source port/ICMP id is {}, expected {port}",
        f.src_port()
    );
    assert_eq!(
        f.ttl(),
        sent.ttl - 1,
        "{what}: TTL not decremented by one when forwarding"
    );
    assert_eq!(
        f.eth_src(),
        UPLINK_MAC,
        "{what}: source MAC {} is not the uplink's {}: the next hop would see a foreign MAC",
        fmt_mac(&f.eth_src()),
        fmt_mac(&UPLINK_MAC)
    );
    assert_eq!(
        f.eth_dst(),
        NEXT_HOP_MAC,
        "{what}: destination MAC {} is not the next hop's {}: the gateway would ignore the frame",
        fmt_mac(&f.eth_dst()),
        fmt_mac(&NEXT_HOP_MAC)
    );
    f.assert_checksums(what, false);
    let expected = with_src(sent.clone(), UPLINK_ADDR, port)
        .ttl(sent.ttl - 1)
        .macs(UPLINK_MAC, NEXT_HOP_MAC)
        .build();
    assert_eq!(
        without_checksums(&run.data),
        without_checksums(&expected),
        "{what}: bytes other than MACs, source address/port, TTL and checksums changed"
    );
    run.data.clone()
}

/// Asserts that `run` is the reply `sent` destination-NATed back to guest
/// `g` (address `to`), MACs set for delivery on the bridge, redirected.
#[track_caller]
fn assert_dnat(sent: &Packet, run: &Run, g: &Guest, to: SocketAddrV4, what: &str) {
    assert_eq!(
        run.verdict, XDP_REDIRECT,
        "{what}: reply was not redirected to the guest's port (XDP verdict {}, want XDP_REDIRECT): the guest never gets its answer",
        run.verdict
    );
    let f = Frame(&run.data);
    assert_eq!(
        f.sock_dst(),
        to,
        "{what}: reply delivered to {} instead of the guest's {to}",
        f.sock_dst()
    );
    assert_eq!(
        f.src(),
        sent.src,
        "{what}: reply's source address changed by DNAT"
    );
    assert_eq!(
        f.ttl(),
        sent.ttl - 1,
        "{what}: TTL not decremented by one when forwarding"
    );
    assert_eq!(
        f.eth_dst(),
        g.mac,
        "{what}: destination MAC {} is not guest {}'s {}",
        fmt_mac(&f.eth_dst()),
        g.addr,
        fmt_mac(&g.mac)
    );
    assert_eq!(
        f.eth_src(),
        BRIDGE_MAC,
        "{what}: source MAC {} is not the bridge's {}",
        fmt_mac(&f.eth_src()),
        fmt_mac(&BRIDGE_MAC)
    );
    f.assert_checksums(what, false);
    let expected = with_dst(sent.clone(), *to.ip(), to.port())
        .ttl(sent.ttl - 1)
        .macs(BRIDGE_MAC, g.mac)
        .build();
    assert_eq!(
        without_checksums(&run.data),
        without_checksums(&expected),
        "{what}: bytes other than MACs, destination address/port, TTL and checksums changed"
    );
}

// --------------------------------------------------------------------------
// SNAT, guest → outside (TC on the guest port)

#[test]
fn snat_tcp_syn_masquerades_to_uplink_address_keeping_free_port() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let before = w.counters();
        let p = tcp_syn(&g, GUEST_PORT);
        let run = w.run_guest(g.port_ifindex, &p.build());
        assert_snat(
            &p,
            &run,
            GUEST_PORT,
            "TCP SYN 192.168.122.10:40000 -> 203.0.113.10:80",
        );
        let after = w.counters();
        assert_counters_moved(
            &before,
            &after,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "one new TCP flow",
        );
        assert_eq!(
            after.get(NET_ID, Slot::Action(Action::SnatForwarded)).bytes,
            p.build().len() as u64,
            "snat_forwarded bytes do not match the frame length"
        );
    });
}

#[test]
fn snat_udp_masquerades_to_uplink_address_keeping_free_port() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let before = w.counters();
        let p = udp(&g, GUEST_PORT);
        let run = w.run_guest(g.port_ifindex, &p.build());
        assert_snat(
            &p,
            &run,
            GUEST_PORT,
            "UDP 192.168.122.10:40000 -> 203.0.113.10:53",
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "one new UDP flow",
        );
    });
}

#[test]
fn snat_udp_without_checksum_keeps_checksum_zero() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let p = udp(&g, GUEST_PORT).udp_no_checksum();
        let run = w.run_guest(g.port_ifindex, &p.build());
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "UDP without checksum was not NATed and redirected"
        );
        let f = Frame(&run.data);
        assert_eq!(
            f.l4_checksum(),
            0,
            "UDP sent without checksum (0) left with checksum {:#06x}: a receiver would now verify a checksum that was never computed and drop the datagram",
            f.l4_checksum()
        );
        f.assert_checksums("UDP without checksum, NATed", true);
        assert_eq!(
            f.src(),
            UPLINK_ADDR,
            "UDP without checksum: source not masqueraded"
        );
        assert_eq!(
            f.src_port(),
            GUEST_PORT,
            "UDP without checksum: free source port not kept"
        );
    });
}

#[test]
fn snat_icmp_echo_masquerades_to_uplink_address_keeping_free_id() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let before = w.counters();
        let p = ping(&g, ICMP_ID);
        let run = w.run_guest(g.port_ifindex, &p.build());
        assert_snat(
            &p,
            &run,
            ICMP_ID,
            "ICMP echo request 192.168.122.10 -> 203.0.113.10",
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "one new ICMP echo flow",
        );
    });
}

// --------------------------------------------------------------------------
// Reverse NAT, outside → guest (XDP on the uplink)

/// Sends `out` from guest `g`, then `reply` (built from the NATed frame) on
/// the uplink; asserts both translations and the counters.
fn roundtrip(
    w: &World,
    g: &Guest,
    out: Packet,
    own_port: u16,
    reply: impl Fn(&Frame) -> Packet,
    what: &str,
) {
    let natted = w.run_guest(g.port_ifindex, &out.build());
    let natted = assert_snat(&out, &natted, own_port, &format!("{what}, outbound"));
    let answer = from_outside(reply(&Frame(&natted)));
    let before = w.counters();
    let run = w.run_uplink(&answer.build());
    assert_dnat(
        &answer,
        &run,
        g,
        sock(g.addr, own_port),
        &format!("{what}, reply"),
    );
    assert_counters_moved(
        &before,
        &w.counters(),
        &[(NET_ID, Slot::Action(Action::DnatForwarded), 1)],
        &format!("{what}, reply"),
    );
}

#[test]
fn reply_tcp_is_translated_back_to_guest() {
    with_nat_world(|w| {
        let g = w.guests[0];
        roundtrip(
            w,
            &g,
            tcp_syn(&g, GUEST_PORT),
            GUEST_PORT,
            // Acknowledging the guest's SYN (sequence number 0x01020304).
            |f| {
                Packet::tcp(f.sock_dst(), f.sock_src(), TCP_SYN | TCP_ACK)
                    .seq_ack(0x5000_0000, 0x0102_0305)
                    .ttl(57)
            },
            "TCP SYN/ACK from 203.0.113.10:80",
        );
        // The reply marks both entries established.
        for (k, e) in w.conntrack() {
            assert_eq!(
                e.state,
                ct_state::ESTABLISHED,
                "conntrack entry {k:?} still NEW after a reply: the flow would time out after the short SYN timeout"
            );
        }
    });
}

#[test]
fn reply_udp_is_translated_back_to_guest() {
    with_nat_world(|w| {
        let g = w.guests[0];
        roundtrip(
            w,
            &g,
            udp(&g, GUEST_PORT),
            GUEST_PORT,
            |f| {
                Packet::udp(f.sock_dst(), f.sock_src())
                    .payload(b"an answer of another, odd, length")
            },
            "UDP reply from 203.0.113.10:53",
        );
    });
}

#[test]
fn reply_udp_without_checksum_keeps_checksum_zero() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let out = udp(&g, GUEST_PORT);
        let natted = w.run_guest(g.port_ifindex, &out.build());
        assert_eq!(
            natted.verdict, TC_ACT_REDIRECT,
            "UDP to the outside was not NATed"
        );
        let f = Frame(&natted.data);
        let answer = from_outside(Packet::udp(f.sock_dst(), f.sock_src()).udp_no_checksum());
        let run = w.run_uplink(&answer.build());
        assert_eq!(
            run.verdict, XDP_REDIRECT,
            "UDP reply without checksum not delivered to the guest"
        );
        let r = Frame(&run.data);
        assert_eq!(
            r.sock_dst(),
            sock(g.addr, GUEST_PORT),
            "UDP reply without checksum: wrong guest address"
        );
        assert_eq!(
            r.l4_checksum(),
            0,
            "UDP reply sent without checksum (0) reached the guest with checksum {:#06x}: the guest would drop it",
            r.l4_checksum()
        );
        r.assert_checksums("UDP reply without checksum", true);
    });
}

#[test]
fn reply_icmp_echo_is_translated_back_to_guest() {
    with_nat_world(|w| {
        let g = w.guests[0];
        roundtrip(
            w,
            &g,
            ping(&g, ICMP_ID),
            ICMP_ID,
            |f| Packet::icmp_echo_reply(f.dst(), f.src(), f.icmp_id(), 1),
            "ICMP echo reply from 203.0.113.10",
        );
    });
}

#[test]
fn reply_for_a_guest_whose_port_is_gone_is_one_counted_drop() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let out = tcp_syn(&g, GUEST_PORT);
        let natted = w.run_guest(g.port_ifindex, &out.build());
        assert_eq!(
            natted.verdict, TC_ACT_REDIRECT,
            "TCP SYN to the outside was not NATed"
        );
        let f = Frame(&natted.data);
        // The VM went away: its port left VXDP_PORTS, its flows did not.
        w.remove_port(g.port_ifindex);
        let answer = from_outside(Packet::tcp(f.sock_dst(), f.sock_src(), TCP_SYN | TCP_ACK));
        let before = w.counters();
        let run = w.run_uplink(&answer.build());
        assert_eq!(
            run.verdict, XDP_DROP,
            "reply for a guest whose port is gone got XDP verdict {} instead of XDP_DROP",
            run.verdict
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(NET_ID, Slot::Drop(DropReason::RedirectFailed), 1)],
            "a reply that cannot be delivered (its guest's port left VXDP_PORTS) must count once, as a \
             redirect_failed drop, never also as dnat_forwarded",
        );
    });
}

#[test]
fn first_packet_to_an_unresolved_next_hop_is_still_natted() {
    with_nat_world(|w| {
        // No neighbour entry for the gateway: bpf_fib_lookup answers
        // NO_NEIGH; the packet must still leave NATed (bpf_redirect_neigh
        // resolves the MAC), never un-NATed through the kernel.
        w.ip(&format!("neigh del {NEXT_HOP} dev {UPLINK}"))
            .expect("removing the next hop's neighbour entry");
        let g = w.guests[0];
        let p = tcp_syn(&g, GUEST_PORT);
        let frame = p.build();
        let before = w.counters();
        let run = w.run_guest(g.port_ifindex, &frame);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "guest packet with the next hop's MAC unresolved got TC verdict {} instead of TC_ACT_REDIRECT (bpf_redirect_neigh)",
            run.verdict
        );
        let f = Frame(&run.data);
        assert_eq!(
            (f.eth_src(), f.eth_dst()),
            (g.mac, BRIDGE_MAC),
            "test setup: the MACs were rewritten, so bpf_fib_lookup did find a neighbour and the NO_NEIGH path was not exercised"
        );
        assert_eq!(
            f.sock_src(),
            sock(UPLINK_ADDR, GUEST_PORT),
            "unresolved next hop: source not masqueraded"
        );
        assert_eq!(
            f.ttl(),
            p.ttl - 1,
            "unresolved next hop: TTL not decremented"
        );
        f.assert_checksums("TCP SYN via an unresolved next hop", false);
        assert_counters_moved(
            &before,
            &w.counters(),
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "TCP SYN via an unresolved next hop",
        );
    });
}

// --------------------------------------------------------------------------
// Port allocation and conntrack contents

#[test]
fn two_guests_with_same_source_port_get_distinct_nat_ports() {
    with_nat_world(|w| {
        let [a, b] = w.guests;
        let pa = tcp_syn(&a, GUEST_PORT);
        let pb = tcp_syn(&b, GUEST_PORT);
        let ra = w.run_guest(a.port_ifindex, &pa.build());
        let rb = w.run_guest(b.port_ifindex, &pb.build());
        assert_snat(
            &pa,
            &ra,
            GUEST_PORT,
            "first guest 192.168.122.10:40000 -> 203.0.113.10:80",
        );
        assert_eq!(
            rb.verdict, TC_ACT_REDIRECT,
            "second guest's packet was not NATed and redirected"
        );
        let port_b = Frame(&rb.data).src_port();
        assert_ne!(
            port_b, GUEST_PORT,
            "both guests were mapped to {UPLINK_ADDR}:{GUEST_PORT} towards the same destination: replies cannot tell them apart"
        );
        assert!(
            (NAT_PORT_MIN..=NAT_PORT_MAX).contains(&port_b),
            "second guest's NAT port {port_b} outside the configured range {NAT_PORT_MIN}-{NAT_PORT_MAX}"
        );
        assert_snat(
            &pb,
            &rb,
            port_b,
            "second guest 192.168.122.11:40000 -> 203.0.113.10:80",
        );

        // Each reply reaches its own guest.
        for (g, port) in [(a, GUEST_PORT), (b, port_b)] {
            let reply = from_outside(Packet::tcp(
                sock(OUTSIDE, OUTSIDE_PORT),
                sock(UPLINK_ADDR, port),
                TCP_SYN | TCP_ACK,
            ));
            let run = w.run_uplink(&reply.build());
            assert_dnat(
                &reply,
                &run,
                &g,
                sock(g.addr, GUEST_PORT),
                &format!("reply to {UPLINK_ADDR}:{port} (guest {})", g.addr),
            );
        }
        for (k, e) in w.conntrack() {
            let g = if e.mac == a.mac { a } else { b };
            assert_eq!(
                e.ifindex, g.port_ifindex,
                "conntrack entry {k:?} would deliver replies of guest {} to port {} instead of its own port {} ({})",
                g.addr, e.ifindex, g.port_ifindex, g.port
            );
        }
    });
}

#[test]
fn conntrack_holds_both_directions_of_a_new_flow() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let p = tcp_syn(&g, GUEST_PORT);
        let run = w.run_guest(g.port_ifindex, &p.build());
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "TCP SYN was not NATed");
        let port = Frame(&run.data).src_port();

        let mut ct = w.conntrack();
        ct.sort_by_key(|(_, e)| e.direction);
        assert_eq!(
            ct.len(),
            2,
            "a NATed flow must have exactly two conntrack entries, found {ct:#?}"
        );
        let (ok, oe) = ct[0];
        let (rk, re) = ct[1];

        let original_key = ConntrackKey {
            src_addr: be(g.addr),
            dst_addr: be(OUTSIDE),
            src_port: GUEST_PORT.to_be(),
            dst_port: OUTSIDE_PORT.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let reply_key = reply_key(port);
        assert_eq!(
            ok, original_key,
            "original-direction key is not the tuple the guest sent"
        );
        assert_eq!(
            rk, reply_key,
            "reply-direction key is not the tuple the outside host answers with"
        );

        let expect = |dir, rewrite_addr, rewrite_port: u16, e: &ConntrackEntry| ConntrackEntry {
            last_seen_ns: e.last_seen_ns,
            rewrite_addr,
            rewrite_port: rewrite_port.to_be(),
            direction: dir,
            state: ct_state::NEW,
            ifindex: g.port_ifindex,
            network_id: NET_ID as u16,
            tcp_known: e.tcp_known,
            _pad0: 0,
            mac: g.mac,
            _pad1: [0; 2],
            tcp_end: e.tcp_end,
            tcp_ack: e.tcp_ack,
        };
        assert_eq!(
            oe,
            expect(DIR_ORIGINAL, be(UPLINK_ADDR), port, &oe),
            "original-direction entry must rewrite the source to {UPLINK_ADDR}:{port}"
        );
        assert_eq!(
            re,
            expect(DIR_REPLY, be(g.addr), GUEST_PORT, &re),
            "reply-direction entry must rewrite the destination to {}:{GUEST_PORT}",
            g.addr
        );
        assert!(
            oe.last_seen_ns != 0 && re.last_seen_ns != 0,
            "conntrack entries carry no timestamp"
        );
        // The shared helpers agree with what the program wrote.
        assert_eq!(
            ok.peer(&oe),
            rk,
            "ConntrackKey::peer of the original entry does not find the reply entry"
        );
        assert_eq!(
            rk.peer(&re),
            ok,
            "ConntrackKey::peer of the reply entry does not find the original entry"
        );
    });
}

// --------------------------------------------------------------------------
// Traffic that must not be NATed

#[test]
fn multicast_from_guest_is_not_natted() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let p = from_guest(
            &g,
            Packet::udp(
                sock(g.addr, 5353),
                sock(Ipv4Addr::new(224, 0, 0, 251), 5353),
            )
            .ttl(255),
        )
        .macs(g.mac, [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        let before = w.counters();
        let frame = p.build();
        let run = w.run_guest(g.port_ifindex, &frame);
        assert_eq!(
            run.verdict, TC_ACT_OK,
            "mDNS to 224.0.0.251 got TC verdict {} instead of TC_ACT_OK: it must stay on the bridge",
            run.verdict
        );
        assert_eq!(
            run.data, frame,
            "mDNS to 224.0.0.251 was rewritten: libvirt never NATs 224.0.0.0/24"
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(NET_ID, Slot::Action(Action::GuestPassed), 1)],
            "mDNS left to the bridge",
        );
        assert!(
            w.conntrack().is_empty(),
            "a conntrack entry was created for multicast"
        );
    });
}

// --------------------------------------------------------------------------
// Malformed frames: a counted drop or pass, never a rewrite

/// A TCP SYN whose IPv4 header says IHL = 4 (16 bytes, invalid); the
/// header checksum is recomputed so only the IHL is wrong.
fn ihl_below_five(p: &Packet) -> Vec<u8> {
    let mut f = p.build();
    f[14] = 0x44;
    f[24] = 0;
    f[25] = 0;
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// IPv4 + the first 10 bytes of a TCP header (total length adjusted).
fn truncated_tcp(p: &Packet) -> Vec<u8> {
    let mut f = p.build()[..14 + 20 + 10].to_vec();
    f[16..18].copy_from_slice(&30u16.to_be_bytes());
    f[24] = 0;
    f[25] = 0;
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[track_caller]
fn assert_guest_drop_malformed(w: &World, frame: &[u8], what: &str) {
    let g = w.guests[0];
    let before = w.counters();
    let run = w.run_guest(g.port_ifindex, frame);
    assert_eq!(
        run.verdict, TC_ACT_SHOT,
        "{what}: TC verdict {} instead of TC_ACT_SHOT: a malformed guest frame would reach the kernel",
        run.verdict
    );
    assert_eq!(run.data, frame, "{what}: the malformed frame was rewritten");
    assert_counters_moved(
        &before,
        &w.counters(),
        &[(NET_ID, Slot::Drop(DropReason::Malformed), 1)],
        what,
    );
    assert!(
        w.conntrack().is_empty(),
        "{what}: a conntrack entry was created for a malformed frame"
    );
}

#[test]
fn guest_ethernet_header_only_is_passed_or_dropped_never_rewritten() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let syn = tcp_syn(&g, GUEST_PORT).build();

        // A bare Ethernet header typed IPv4 cannot reach the TC program:
        // BPF_PROG_TEST_RUN refuses (EINVAL) IPv4-typed frames shorter than
        // an IPv4 header. The uplink XDP test covers the bare header, and the
        // IPv4-header-only case below covers the TC parser's bounds check.

        // Type LLDP, nothing after the header: an EtherType vxdp does not
        // check, refused (guests' frames go nowhere unchecked).
        let mut lldp_only = syn[..14].to_vec();
        lldp_only[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        let before = w.counters();
        let run = w.run_guest(g.port_ifindex, &lldp_only);
        assert_eq!(
            run.verdict, TC_ACT_SHOT,
            "bare Ethernet header typed LLDP: TC verdict {} instead of TC_ACT_SHOT (unchecked EtherType)",
            run.verdict
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(NET_ID, Slot::Drop(DropReason::UncheckedEtherType), 1)],
            "bare Ethernet header typed LLDP",
        );

        // Type ARP, nothing after the header: ARP is checked for spoofed
        // senders, so a truncated one is a counted malformed drop.
        let mut arp_only = syn[..14].to_vec();
        arp_only[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let before = w.counters();
        let run = w.run_guest(g.port_ifindex, &arp_only);
        assert_eq!(
            run.verdict, TC_ACT_SHOT,
            "bare Ethernet header typed ARP: verdict {}",
            run.verdict
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(NET_ID, Slot::Drop(DropReason::Malformed), 1)],
            "bare Ethernet header typed ARP",
        );
        assert!(
            w.conntrack().is_empty(),
            "a conntrack entry was created for a bare Ethernet header"
        );
    });
}

#[test]
fn guest_ipv4_header_without_tcp_header_is_a_counted_drop() {
    with_nat_world(|w| {
        let mut f = tcp_syn(&w.guests[0], GUEST_PORT).build()[..34].to_vec();
        f[16..18].copy_from_slice(&20u16.to_be_bytes());
        f[24] = 0;
        f[25] = 0;
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_guest_drop_malformed(
            w,
            &f,
            "guest IPv4 packet (protocol TCP) ending after the IPv4 header",
        );
    });
}

#[test]
fn guest_ipv4_ihl_below_five_is_a_counted_drop() {
    with_nat_world(|w| {
        let f = ihl_below_five(&tcp_syn(&w.guests[0], GUEST_PORT));
        assert_guest_drop_malformed(w, &f, "guest IPv4 packet with IHL 4");
    });
}

#[test]
fn guest_truncated_tcp_header_is_a_counted_drop() {
    with_nat_world(|w| {
        let f = truncated_tcp(&tcp_syn(&w.guests[0], GUEST_PORT));
        assert_guest_drop_malformed(w, &f, "guest TCP segment cut after 10 header bytes");
    });
}

#[test]
fn uplink_malformed_frames_are_passed_untouched_and_counted() {
    with_nat_world(|w| {
        let to_host = from_outside(Packet::tcp(
            sock(OUTSIDE, OUTSIDE_PORT),
            sock(UPLINK_ADDR, GUEST_PORT),
            TCP_SYN | TCP_ACK,
        ));
        let cases = [
            (
                to_host.build()[..14].to_vec(),
                "uplink frame with only an Ethernet header",
            ),
            (ihl_below_five(&to_host), "uplink IPv4 packet with IHL 4"),
            (
                truncated_tcp(&to_host),
                "uplink TCP segment cut after 10 header bytes",
            ),
        ];
        for (frame, what) in cases {
            let before = w.counters();
            let run = w.run_uplink(&frame);
            assert_eq!(
                run.verdict, XDP_PASS,
                "{what}: XDP verdict {} instead of XDP_PASS (malformed, addressed to the host: the kernel decides)",
                run.verdict
            );
            assert_eq!(run.data, frame, "{what}: the malformed frame was rewritten");
            assert_counters_moved(
                &before,
                &w.counters(),
                &[(0, Slot::Action(Action::UplinkPassed), 1)],
                what,
            );
        }
    });
}

// --------------------------------------------------------------------------
// Inbound policy

#[test]
fn unsolicited_tcp_syn_to_guest_is_dropped_and_counted() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let p = from_outside(Packet::tcp(sock(OUTSIDE, 51000), sock(g.addr, 22), TCP_SYN));
        let frame = p.build();
        let before = w.counters();
        let run = w.run_uplink(&frame);
        assert_eq!(
            run.verdict, XDP_DROP,
            "unsolicited SYN 203.0.113.10 -> 192.168.122.10:22 got XDP verdict {} instead of XDP_DROP: the outside could open connections into the NAT network",
            run.verdict
        );
        assert_eq!(run.data, frame, "the refused SYN was rewritten");
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(NET_ID, Slot::Drop(DropReason::UnsolicitedInbound), 1)],
            "unsolicited inbound SYN",
        );
        assert!(
            w.conntrack().is_empty(),
            "refusing an inbound SYN created conntrack state"
        );
    });
}

#[test]
fn inbound_to_uplink_address_without_flow_is_left_to_the_host() {
    with_nat_world(|w| {
        let p = from_outside(Packet::tcp(
            sock(OUTSIDE, 51000),
            sock(UPLINK_ADDR, 22),
            TCP_SYN,
        ));
        let frame = p.build();
        let before = w.counters();
        let run = w.run_uplink(&frame);
        assert_eq!(
            run.verdict, XDP_PASS,
            "SYN to the host's own uplink address got XDP verdict {} instead of XDP_PASS: the host's services would be unreachable",
            run.verdict
        );
        assert_eq!(run.data, frame, "a packet for the host was rewritten");
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(0, Slot::Action(Action::UplinkPassed), 1)],
            "SYN to the host",
        );
    });
}

// --------------------------------------------------------------------------
// TCP state: FIN per direction, RST only at the exact sequence number

const GUEST_ISN: u32 = 0x0102_0304;
const REMOTE_ISN: u32 = 0x5000_0000;

/// A TCP segment from guest `g`'s port `sport` to the outside.
fn guest_tcp(g: &Guest, sport: u16, flags: u8, seq: u32, ack: u32) -> Packet {
    from_guest(
        g,
        Packet::tcp(sock(g.addr, sport), sock(OUTSIDE, OUTSIDE_PORT), flags).seq_ack(seq, ack),
    )
}

/// A TCP segment from the outside to NAT port `nat_port`.
fn outside_tcp(nat_port: u16, flags: u8, seq: u32, ack: u32) -> Packet {
    from_outside(
        Packet::tcp(
            sock(OUTSIDE, OUTSIDE_PORT),
            sock(UPLINK_ADDR, nat_port),
            flags,
        )
        .seq_ack(seq, ack),
    )
}

/// Guest `g` opens a connection from `sport` and the remote accepts:
/// SYN, SYN/ACK, ACK. Returns the NAT port.
fn handshake(w: &World, g: &Guest, sport: u16) -> u16 {
    let syn = w.run_guest(
        g.port_ifindex,
        &guest_tcp(g, sport, TCP_SYN, GUEST_ISN, 0).build(),
    );
    assert_eq!(
        syn.verdict, TC_ACT_REDIRECT,
        "the guest's SYN was not NATed"
    );
    let nat_port = Frame(&syn.data).src_port();
    let synack = outside_tcp(nat_port, TCP_SYN | TCP_ACK, REMOTE_ISN, GUEST_ISN + 1);
    let run = w.run_uplink(&synack.build());
    assert_eq!(run.verdict, XDP_REDIRECT, "the SYN/ACK was not delivered");
    let ack = guest_tcp(g, sport, TCP_ACK, GUEST_ISN + 1, REMOTE_ISN + 1);
    let run = w.run_guest(g.port_ifindex, &ack.build());
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the guest's ACK was not NATed"
    );
    flow_states(w, "after the handshake", ct_state::ESTABLISHED);
    nat_port
}

/// Asserts that both entries of the only flow are in `state`.
#[track_caller]
fn flow_states(w: &World, when: &str, state: u8) {
    let ct = w.conntrack();
    assert_eq!(
        ct.len(),
        2,
        "{when}: expected one flow's two entries, found {ct:#?}"
    );
    for (k, e) in ct {
        assert_eq!(
            e.state, state,
            "{when}: entry {k:?} is in state {} (expected {state}; 1 established, 2 closing, 3 half-closed by the guest, 4 by the remote)",
            e.state
        );
    }
}

#[test]
fn outside_rst_closes_a_flow_only_at_the_exact_sequence_number() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let nat_port = handshake(w, &g, GUEST_PORT);
        // An off-path attacker who guessed the NAT port, spraying RSTs: the
        // guest expects REMOTE_ISN + 1 next.
        for seq in [
            0,
            REMOTE_ISN,
            REMOTE_ISN + 2,
            REMOTE_ISN + 1000,
            REMOTE_ISN.wrapping_add(0x8000_0000),
            GUEST_ISN + 1,
        ] {
            for flags in [TCP_RST, TCP_RST | TCP_ACK] {
                let before = w.counters();
                let rst = outside_tcp(nat_port, flags, seq, GUEST_ISN + 1);
                let run = w.run_uplink(&rst.build());
                // Forwarded all the same: the guest's stack judges it.
                assert_eq!(
                    run.verdict, XDP_REDIRECT,
                    "RST at {seq:#x} was not forwarded"
                );
                assert_counters_moved(
                    &before,
                    &w.counters(),
                    &[once(Action::DnatForwarded), once(Action::TcpRstIgnored)],
                    &format!("RST (flags {flags:#x}) at sequence number {seq:#x}"),
                );
                flow_states(
                    w,
                    &format!(
                        "after an RST at {seq:#x}, not the guest's next expected {:#x}",
                        REMOTE_ISN + 1
                    ),
                    ct_state::ESTABLISHED,
                );
            }
        }
        // The guest still talks through the flow with the same NAT port.
        let data =
            guest_tcp(&g, GUEST_PORT, TCP_ACK, GUEST_ISN + 1, REMOTE_ISN + 1).payload(b"hello");
        let run = w.run_guest(g.port_ifindex, &data.build());
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        assert_eq!(Frame(&run.data).src_port(), nat_port);
        // The remote's real reset, at exactly the guest's next expected
        // number, closes the flow.
        let rst = outside_tcp(nat_port, TCP_RST, REMOTE_ISN + 1, 0);
        assert_eq!(w.run_uplink(&rst.build()).verdict, XDP_REDIRECT);
        flow_states(w, "after the exact RST", ct_state::CLOSING);
    });
}

#[test]
fn a_fin_from_one_side_keeps_the_established_timeout() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let nat_port = handshake(w, &g, GUEST_PORT);
        // The guest shuts down its write side.
        let fin = guest_tcp(
            &g,
            GUEST_PORT,
            TCP_FIN | TCP_ACK,
            GUEST_ISN + 1,
            REMOTE_ISN + 1,
        );
        assert_eq!(
            w.run_guest(g.port_ifindex, &fin.build()).verdict,
            TC_ACT_REDIRECT
        );
        flow_states(w, "after the guest's FIN", ct_state::FIN_ORIGINAL);
        for (_, e) in w.conntrack() {
            assert_eq!(
                timeout_class_of(PROTO_TCP, e.state),
                timeout_class::TCP_ESTABLISHED,
                "a half-closed flow must keep the established timeout"
            );
        }
        // A blind FIN from outside does not close the other half.
        let blind = outside_tcp(
            nat_port,
            TCP_FIN | TCP_ACK,
            REMOTE_ISN + 5000,
            GUEST_ISN + 2,
        );
        assert_eq!(w.run_uplink(&blind.build()).verdict, XDP_REDIRECT);
        flow_states(
            w,
            "after a FIN at a wrong sequence number",
            ct_state::FIN_ORIGINAL,
        );
        // The remote keeps sending; the guest acknowledges.
        let mut seq = REMOTE_ISN + 1;
        for _ in 0..3 {
            let data = outside_tcp(nat_port, TCP_ACK, seq, GUEST_ISN + 2).payload(&[7; 100]);
            assert_eq!(w.run_uplink(&data.build()).verdict, XDP_REDIRECT);
            seq += 100;
            let ack = guest_tcp(&g, GUEST_PORT, TCP_ACK, GUEST_ISN + 2, seq);
            assert_eq!(
                w.run_guest(g.port_ifindex, &ack.build()).verdict,
                TC_ACT_REDIRECT
            );
        }
        flow_states(w, "after data on the open half", ct_state::FIN_ORIGINAL);
        // The remote's own FIN closes the flow.
        let fin = outside_tcp(nat_port, TCP_FIN | TCP_ACK, seq, GUEST_ISN + 2);
        assert_eq!(w.run_uplink(&fin.build()).verdict, XDP_REDIRECT);
        flow_states(w, "after FINs both ways", ct_state::CLOSING);
    });
}

// --------------------------------------------------------------------------
// A flow's two entries must agree (issue 15, item 3)

/// The reply key of guest traffic to OUTSIDE:OUTSIDE_PORT at NAT port `port`.
fn reply_key(port: u16) -> ConntrackKey {
    ConntrackKey {
        src_addr: be(OUTSIDE),
        dst_addr: be(UPLINK_ADDR),
        src_port: OUTSIDE_PORT.to_be(),
        dst_port: port.to_be(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// Which guest a reply to NAT port `port` reaches (`None`: not delivered).
fn reply_reaches(w: &World, port: u16) -> Option<std::net::Ipv4Addr> {
    let reply = outside_tcp(port, TCP_ACK, REMOTE_ISN + 1, GUEST_ISN + 1).payload(b"secret");
    let run = w.run_uplink(&reply.build());
    (run.verdict == XDP_REDIRECT).then(|| Frame(&run.data).dst())
}

#[test]
fn an_evicted_reply_entry_cannot_leak_a_flow_to_another_guest() {
    with_nat_world(|w| {
        let (a, b) = (w.guests[0], w.guests[1]);
        let syn = guest_tcp(&a, GUEST_PORT, TCP_SYN, GUEST_ISN, 0);
        let run = w.run_guest(a.port_ifindex, &syn.build());
        assert_eq!(
            Frame(&run.data).src_port(),
            GUEST_PORT,
            "guest A keeps its own port"
        );
        // LRU eviction takes A's reply entry; A's original entry stays.
        w.remove_conntrack(&reply_key(GUEST_PORT));
        // Guest B, same source port and remote: the NAT port looks free.
        let run = w.run_guest(
            b.port_ifindex,
            &guest_tcp(&b, GUEST_PORT, TCP_SYN, 77, 0).build(),
        );
        assert_eq!(run.verdict, TC_ACT_REDIRECT);
        assert_eq!(
            Frame(&run.data).src_port(),
            GUEST_PORT,
            "guest B took the freed NAT port"
        );
        assert_eq!(reply_reaches(w, GUEST_PORT), Some(b.addr));

        // A's next packet must not leave with B's NAT port.
        let before = w.counters();
        let next = guest_tcp(&a, GUEST_PORT, TCP_SYN, GUEST_ISN, 0);
        let run = w.run_guest(a.port_ifindex, &next.build());
        assert!(
            !(run.verdict == TC_ACT_REDIRECT && Frame(&run.data).src_port() == GUEST_PORT),
            "guest A's packet left with NAT port {GUEST_PORT}, whose replies go to guest B"
        );
        assert_eq!(run.verdict, TC_ACT_SHOT);
        assert_counters_moved(
            &before,
            &w.counters(),
            &[dropped(DropReason::ConntrackMismatch)],
            "guest A's packet through its stale original entry",
        );
        // A's retransmission gets a new NAT port whose replies reach A;
        // B's flow is untouched.
        let run = w.run_guest(a.port_ifindex, &next.build());
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "A's retransmission was not NATed"
        );
        let port = Frame(&run.data).src_port();
        assert_ne!(port, GUEST_PORT);
        assert_eq!(reply_reaches(w, port), Some(a.addr));
        assert_eq!(reply_reaches(w, GUEST_PORT), Some(b.addr));
        assert_eq!(w.conntrack().len(), 4, "two flows, two entries each");
    });
}

#[test]
fn a_reply_entry_that_outlived_its_flow_does_not_deliver() {
    with_nat_world(|w| {
        let a = w.guests[0];
        let syn = guest_tcp(&a, GUEST_PORT, TCP_SYN, GUEST_ISN, 0);
        let run = w.run_guest(a.port_ifindex, &syn.build());
        assert_eq!(Frame(&run.data).src_port(), GUEST_PORT);
        // LRU eviction takes A's original entry; A opens again from the
        // same port and gets another NAT port (the old reply entry holds
        // its own).
        let original = w
            .conntrack()
            .into_iter()
            .find(|(_, e)| e.direction == DIR_ORIGINAL)
            .expect("the original entry")
            .0;
        w.remove_conntrack(&original);
        let run = w.run_guest(a.port_ifindex, &syn.build());
        let port = Frame(&run.data).src_port();
        assert_ne!(port, GUEST_PORT);
        // A reply to the old NAT port is dropped, its entry removed.
        let before = w.counters();
        assert_eq!(reply_reaches(w, GUEST_PORT), None);
        assert_counters_moved(
            &before,
            &w.counters(),
            &[dropped(DropReason::ConntrackMismatch)],
            "a reply through a reply entry whose flow maps elsewhere",
        );
        assert!(
            !w.conntrack()
                .iter()
                .any(|(k, _)| *k == reply_key(GUEST_PORT)),
            "the stale reply entry was kept"
        );
        assert_eq!(reply_reaches(w, port), Some(a.addr));
    });
}

// --------------------------------------------------------------------------
// Counters over a short exchange

#[test]
fn forwarded_counters_count_each_packet_of_a_flow() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let before = w.counters();
        let mut out_bytes = 0;
        let mut in_bytes = 0;
        let mut mapped = None;
        for i in 0..3u32 {
            let flags = if i == 0 { TCP_SYN } else { TCP_ACK };
            let mut p = from_guest(
                &g,
                Packet::tcp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, OUTSIDE_PORT), flags),
            );
            if let L4Spec::Tcp { seq, .. } = &mut p.l4 {
                *seq += i;
            }
            let frame = p.build();
            out_bytes += frame.len() as u64;
            let run = w.run_guest(g.port_ifindex, &frame);
            let port = *mapped.get_or_insert(Frame(&run.data).src_port());
            assert_snat(&p, &run, port, &format!("outbound packet {}", i + 1));
        }
        let port = mapped.unwrap();
        for i in 0..2u32 {
            let flags = if i == 0 { TCP_SYN | TCP_ACK } else { TCP_ACK };
            let p = from_outside(Packet::tcp(
                sock(OUTSIDE, OUTSIDE_PORT),
                sock(UPLINK_ADDR, port),
                flags,
            ))
            .payload(&vec![0xab; 100 * (i as usize + 1)]);
            let frame = p.build();
            in_bytes += frame.len() as u64;
            let run = w.run_uplink(&frame);
            assert_dnat(
                &p,
                &run,
                &g,
                sock(g.addr, GUEST_PORT),
                &format!("reply {}", i + 1),
            );
        }
        let after = w.counters();
        assert_counters_moved(
            &before,
            &after,
            &[
                (NET_ID, Slot::Action(Action::SnatForwarded), 3),
                (NET_ID, Slot::Action(Action::DnatForwarded), 2),
                (NET_ID, Slot::Action(Action::ConntrackCreated), 1),
            ],
            "3 packets out, 2 replies in, one flow",
        );
        assert_eq!(
            after.get(NET_ID, Slot::Action(Action::SnatForwarded)).bytes,
            out_bytes,
            "snat_forwarded bytes do not add up to the frames sent"
        );
        assert_eq!(
            after.get(NET_ID, Slot::Action(Action::DnatForwarded)).bytes,
            in_bytes,
            "dnat_forwarded bytes do not add up to the replies received"
        );
        assert_eq!(
            w.conntrack().len(),
            2,
            "one flow must stay two conntrack entries"
        );
    });
}

// --------------------------------------------------------------------------
// The helpers themselves (no namespace, no BPF)

#[test]
fn helper_checksums_match_known_values_and_catch_corruption() {
    assert_eq!(PROTO_ICMP, vxdp_common::PROTO_ICMP);
    assert_eq!(PROTO_TCP, vxdp_common::PROTO_TCP);
    assert_eq!(PROTO_UDP, vxdp_common::PROTO_UDP);
    // A textbook IPv4 header (checksum field zeroed) whose checksum is 0xb861.
    let hdr = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(
        checksum(&hdr),
        0xb861,
        "test helper computes IPv4 header checksums wrongly"
    );
    let g = Guest {
        port: "x",
        port_ifindex: 0,
        mac: [2, 0, 0, 0, 0, 1],
        addr: Ipv4Addr::new(192, 168, 122, 10),
    };
    for p in [
        tcp_syn(&g, GUEST_PORT),
        udp(&g, GUEST_PORT),
        ping(&g, ICMP_ID),
    ] {
        let frame = p.build();
        Frame(&frame).assert_checksums("helper self-test", false);
        // Every single-byte change past the MACs must be caught.
        for i in 14..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(
                Frame(&bad).check_checksums(false).is_err(),
                "test helper missed a corrupted byte at offset {i} of a {:?} frame",
                p.l4
            );
        }
    }
}

// --------------------------------------------------------------------------
// Port forwards (VXDP_FORWARDS): the uplink opens a forwarded port's flow

const PUBLIC_PORT: u16 = 2022;
const SERVICE_PORT: u16 = 22;
const CLIENT_PORT: u16 = 51000;

/// Forwards `proto` `UPLINK_ADDR:PUBLIC_PORT` to guest `g`'s
/// `SERVICE_PORT`, for packets arriving on `in_ifindex` (0: any), as the
/// control plane writes it.
fn set_forward(w: &mut World, g: &Guest, proto: u8, in_ifindex: u32) {
    use aya::maps::HashMap;
    use vxdp_common::{Forward, ForwardKey, names};
    let mut m: HashMap<_, ForwardKey, Forward> =
        HashMap::try_from(w.ebpf.map_mut(names::MAP_FORWARDS).expect("VXDP_FORWARDS"))
            .expect("VXDP_FORWARDS is a hash map");
    let key = ForwardKey {
        addr: u32::from_ne_bytes(UPLINK_ADDR.octets()),
        port: PUBLIC_PORT.to_be(),
        proto,
        _pad: 0,
    };
    let value = Forward {
        guest_addr: u32::from_ne_bytes(g.addr.octets()),
        guest_port: SERVICE_PORT.to_be(),
        network_id: NET_ID as u16,
        ifindex: g.port_ifindex,
        in_ifindex,
        mac: g.mac,
        ..Forward::default()
    };
    m.insert(&key, &value, 0).expect("writing VXDP_FORWARDS");
}

fn outside_to_forward(flags: u8) -> Packet {
    from_outside(Packet::tcp(
        sock(OUTSIDE, CLIENT_PORT),
        sock(UPLINK_ADDR, PUBLIC_PORT),
        flags,
    ))
}

#[test]
fn a_forwarded_tcp_port_opens_a_flow_both_ways() {
    with_nat_world(|w| {
        let g = w.guests[0];
        set_forward(w, &g, PROTO_TCP, 0);
        let syn = outside_to_forward(TCP_SYN);
        let before = w.counters();
        let run = w.run_uplink(&syn.build());
        assert_dnat(
            &syn,
            &run,
            &g,
            SocketAddrV4::new(g.addr, SERVICE_PORT),
            "SYN to the forwarded port",
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[once(Action::DnatForwarded), once(Action::ForwardOpened)],
            "a forwarded SYN",
        );
        let ct = w.conntrack();
        assert_eq!(ct.len(), 2, "a forwarded flow has two entries: {ct:?}");
        let reply = ct
            .iter()
            .find(|(_, e)| e.direction == DIR_REPLY)
            .expect("reply entry");
        assert_eq!(
            (reply.0.src_port, reply.0.dst_port),
            (CLIENT_PORT.to_be(), PUBLIC_PORT.to_be()),
            "the reply entry is keyed by the outside's tuple"
        );
        assert_eq!(reply.1.ifindex, g.port_ifindex);

        // The guest's SYN/ACK leaves from the public address and port.
        let synack = from_guest(
            &g,
            Packet::tcp(
                sock(g.addr, SERVICE_PORT),
                sock(OUTSIDE, CLIENT_PORT),
                TCP_SYN | TCP_ACK,
            ),
        );
        let before = w.counters();
        let run = w.run_guest(g.port_ifindex, &synack.build());
        assert_snat(&synack, &run, PUBLIC_PORT, "the guest's SYN/ACK");
        assert_counters_moved(
            &before,
            &w.counters(),
            &[once(Action::SnatForwarded)],
            "the guest's answer on a forwarded flow",
        );
        // The forward counted the flow it opened.
        use aya::maps::HashMap;
        use vxdp_common::{Forward, ForwardKey, names};
        let m: HashMap<_, ForwardKey, Forward> =
            HashMap::try_from(w.ebpf.map(names::MAP_FORWARDS).expect("VXDP_FORWARDS")).unwrap();
        let opened: u64 = m.iter().map(|r| r.unwrap().1.opened).sum();
        assert_eq!(opened, 1, "the forward's flow counter");
    });
}

#[test]
fn a_forwarded_udp_port_opens_a_flow() {
    with_nat_world(|w| {
        let g = w.guests[1];
        set_forward(w, &g, PROTO_UDP, 0);
        let p = from_outside(Packet::udp(
            sock(OUTSIDE, CLIENT_PORT),
            sock(UPLINK_ADDR, PUBLIC_PORT),
        ));
        let run = w.run_uplink(&p.build());
        assert_dnat(
            &p,
            &run,
            &g,
            SocketAddrV4::new(g.addr, SERVICE_PORT),
            "UDP to the forwarded port",
        );
        // TCP to the same port is not forwarded (the forward is UDP's).
        let syn = outside_to_forward(TCP_SYN);
        let run = w.run_uplink(&syn.build());
        assert_eq!(run.verdict, XDP_PASS, "TCP took a UDP forward");
    });
}

#[test]
fn a_forward_opens_nothing_but_its_own_conversations() {
    with_nat_world(|w| {
        let g = w.guests[0];
        // Only what arrives on the uplink: this run arrives on loopback.
        set_forward(w, &g, PROTO_TCP, w.uplink_ifindex);
        let syn = outside_to_forward(TCP_SYN);
        let run = w.run_uplink(&syn.build());
        assert_eq!(
            run.verdict, XDP_PASS,
            "a forward restricted to the uplink took a packet from another interface"
        );
        assert!(w.conntrack().is_empty(), "a flow was opened");
        set_forward(w, &g, PROTO_TCP, 0);
        // Not a conversation's first packet: an ACK, an RST, a SYN/ACK are
        // left to the host (its stack answers them); no flow.
        for flags in [TCP_ACK, TCP_RST, TCP_RST | TCP_ACK, TCP_SYN | TCP_ACK] {
            let p = outside_to_forward(flags);
            let frame = p.build();
            let run = w.run_uplink(&frame);
            assert_eq!(run.verdict, XDP_PASS, "flags {flags:#x} opened a forward");
            assert_eq!(
                run.data, frame,
                "flags {flags:#x}: a frame for the host was rewritten"
            );
            assert!(w.conntrack().is_empty(), "flags {flags:#x} opened a flow");
        }
        // The other guest cannot answer in the forwarded flow's name: its
        // tuple belongs to guest 0's port (the world's guests have no known
        // address, so anti-spoofing lets the source through and the flow's
        // owner check refuses it).
        let syn = outside_to_forward(TCP_SYN);
        assert_eq!(w.run_uplink(&syn.build()).verdict, XDP_REDIRECT);
        let other = w.guests[1];
        let spoofed = from_guest(
            &other,
            Packet::tcp(
                sock(g.addr, SERVICE_PORT),
                sock(OUTSIDE, CLIENT_PORT),
                TCP_SYN | TCP_ACK,
            ),
        );
        let before = w.counters();
        let run = w.run_guest(other.port_ifindex, &spoofed.build());
        assert_eq!(
            run.verdict, TC_ACT_SHOT,
            "guest 1 sent into guest 0's forwarded flow"
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[dropped(DropReason::FlowOfAnotherPort)],
            "guest 1 sending guest 0's forwarded flow",
        );
    });
}

#[test]
fn a_guest_reaches_a_forward_through_the_public_address() {
    with_nat_world(|w| {
        let (target, client) = (w.guests[0], w.guests[1]);
        set_forward(w, &target, PROTO_TCP, w.uplink_ifindex);
        // Guest 1 → the public address and port (local to the host).
        let syn = from_guest(
            &client,
            Packet::tcp(
                sock(client.addr, GUEST_PORT),
                sock(UPLINK_ADDR, PUBLIC_PORT),
                TCP_SYN,
            ),
        );
        let before = w.counters();
        let run = w.run_guest(client.port_ifindex, &syn.build());
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "hairpin SYN not redirected to the target's port"
        );
        let f = Frame(&run.data);
        assert_eq!(
            (f.src(), f.src_port()),
            (UPLINK_ADDR, GUEST_PORT),
            "the target must see the network's NAT address (its answer comes back through vxdp)"
        );
        assert_eq!(f.sock_dst(), SocketAddrV4::new(target.addr, SERVICE_PORT));
        assert_eq!((f.eth_src(), f.eth_dst()), (BRIDGE_MAC, target.mac));
        f.assert_checksums("hairpin SYN", false);
        assert_counters_moved(
            &before,
            &w.counters(),
            &[
                once(Action::ConntrackCreated),
                once(Action::ForwardOpened),
                once(Action::DnatForwarded),
            ],
            "a hairpin SYN: the client's flow, the forward's flow, one delivery",
        );
        assert_eq!(w.conntrack().len(), 4, "two flows, two entries each");

        // The target's SYN/ACK to the NAT address comes back to guest 1
        // from the public address and port.
        let synack = from_guest(
            &target,
            Packet::tcp(
                sock(target.addr, SERVICE_PORT),
                sock(UPLINK_ADDR, GUEST_PORT),
                TCP_SYN | TCP_ACK,
            ),
        );
        let run = w.run_guest(target.port_ifindex, &synack.build());
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "hairpin SYN/ACK not redirected"
        );
        let f = Frame(&run.data);
        assert_eq!(
            (f.src(), f.src_port()),
            (UPLINK_ADDR, PUBLIC_PORT),
            "the client must see the public address and port it connected to"
        );
        assert_eq!(f.sock_dst(), SocketAddrV4::new(client.addr, GUEST_PORT));
        assert_eq!(f.eth_dst(), client.mac);
        f.assert_checksums("hairpin SYN/ACK", false);

        // A local port no forward has stays the host's: passed un-NATed.
        let other = from_guest(
            &client,
            Packet::tcp(
                sock(client.addr, GUEST_PORT + 1),
                sock(UPLINK_ADDR, PUBLIC_PORT + 1),
                TCP_SYN,
            ),
        );
        let frame = other.build();
        let run = w.run_guest(client.port_ifindex, &frame);
        assert_eq!(
            run.verdict, TC_ACT_OK,
            "a packet for the host was not passed"
        );
        assert_eq!(run.data, frame, "a packet for the host was rewritten");
    });
}

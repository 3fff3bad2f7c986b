//! Program tests (`BPF_PROG_TEST_RUN`) of inbound ICMP errors about NAT
//! flows: a router or the outside host answers a packet vxdp sent after SNAT
//! with an ICMP error quoting it; XDP on the uplink translates the error back
//! to the guest (outer destination, quoted source address and port or echo
//! id, every checksum) and redirects it to the guest's port, without
//! touching the flow's conntrack state.
//!
//! Every rewritten byte is checked against the packet the guest itself sent
//! (TTL one lower: it was forwarded), and every checksum is recomputed from
//! scratch. Needs root (network namespaces, BPF).

use std::net::Ipv4Addr;

use vxdp_common::{Action, ConntrackEntry, ConntrackKey, ct_state};
use vxdp_testkit::packet::{Frame, PROTO_ICMP, Packet, TCP_SYN, checksum, fmt_mac, sock};
use vxdp_tests::progtest::{
    BRIDGE_MAC, Guest, NET_ID, NEXT_HOP, NEXT_HOP_MAC, OUTSIDE, Slot, TC_ACT_REDIRECT, UPLINK_ADDR,
    UPLINK_MAC, World, XDP_PASS, XDP_REDIRECT, assert_counters_moved, with_nat_world,
};

const GUEST_PORT: u16 = 40000;
const ICMP_ID: u16 = 0x4242;

const DEST_UNREACHABLE: u8 = 3;
const PORT_UNREACHABLE: u8 = 3;
const FRAG_NEEDED: u8 = 4;
const TIME_EXCEEDED: u8 = 11;

/// Ethernet + outer IPv4 (20) + ICMP header (8): where the quote starts.
const QUOTE_OFF: usize = 14 + 20 + 8;

fn from_guest(g: &Guest, p: Packet) -> Packet {
    p.macs(g.mac, BRIDGE_MAC)
}

/// An ICMP error from `from` to the uplink address, as the next hop delivers
/// it: type, code, the 4 type-specific bytes, then `quote` (the start of the
/// offending IPv4 packet). All checksums correct.
fn icmp_error(from: Ipv4Addr, icmp_type: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());

    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0, 0]); // id, no DF: errors are not PMTU-probed
    ip.extend_from_slice(&[64, PROTO_ICMP, 0, 0]);
    ip.extend_from_slice(&from.octets());
    ip.extend_from_slice(&UPLINK_ADDR.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::new();
    f.extend_from_slice(&UPLINK_MAC);
    f.extend_from_slice(&NEXT_HOP_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// The IPv4 packet of frame `f` (Ethernet header stripped), its first `len`
/// bytes at most.
fn ip_part(f: &[u8], len: usize) -> Vec<u8> {
    f[14..f.len().min(14 + len)].to_vec()
}

/// The conntrack table, sorted, for before/after comparisons.
fn conntrack(w: &World) -> Vec<(ConntrackKey, ConntrackEntry)> {
    let mut ct = w.conntrack();
    ct.sort_by_key(|(k, _)| (k.src_addr, k.dst_addr, k.src_port, k.dst_port, k.proto));
    ct
}

/// 0x0000 and 0xffff are the same one's complement number.
fn csum_same(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Offset of the L4 checksum in the quoted packet (from its IPv4 header).
fn quoted_l4_csum_off(proto: u8) -> usize {
    20 + match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    }
}

/// Guest `g` sends `out`; it must be NATed. Returns the NATed frame.
fn send(w: &World, g: &Guest, out: &Packet, what: &str) -> Vec<u8> {
    let run = w.run_guest(g.port_ifindex, &out.build());
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "{what}: the guest's packet was not NATed to the uplink (TC verdict {})",
        run.verdict
    );
    assert_eq!(
        Frame(&run.data).src(),
        UPLINK_ADDR,
        "{what}: the guest's packet was not masqueraded"
    );
    run.data
}

/// Runs `error` (quoting the first `quote_len` bytes of the NATed packet) on
/// the uplink and asserts it reaches guest `g` translated: outer destination
/// the guest, the quote exactly what the guest sent (TTL one lower) up to
/// the checksums, and every checksum as a receiver recomputes it. Also that
/// exactly `icmp_error_translated` counted it and conntrack did not change.
#[track_caller]
fn assert_translated(
    w: &World,
    g: &Guest,
    sent: &Packet,
    error: &[u8],
    quote_len: usize,
    what: &str,
) {
    let ct_before = conntrack(w);
    let before = w.counters();
    let run = w.run_uplink(error);
    assert_eq!(
        run.verdict, XDP_REDIRECT,
        "{what}: the ICMP error was not redirected to the guest's port (XDP verdict {}, want XDP_REDIRECT): the guest never learns of the error",
        run.verdict
    );
    assert_eq!(
        run.data.len(),
        error.len(),
        "{what}: the translated error changed length"
    );
    let out = Frame(&run.data);
    let orig = Frame(error);
    assert_eq!(
        out.eth_dst(),
        g.mac,
        "{what}: destination MAC {} is not the guest's {}",
        fmt_mac(&out.eth_dst()),
        fmt_mac(&g.mac)
    );
    assert_eq!(
        out.eth_src(),
        BRIDGE_MAC,
        "{what}: source MAC {} is not the bridge's",
        fmt_mac(&out.eth_src())
    );
    assert_eq!(
        out.dst(),
        g.addr,
        "{what}: outer destination {} is not the guest's {}",
        out.dst(),
        g.addr
    );
    assert_eq!(
        out.src(),
        orig.src(),
        "{what}: the error's source (the router) changed"
    );
    assert_eq!(
        out.ttl(),
        orig.ttl() - 1,
        "{what}: outer TTL not decremented by one when forwarding"
    );
    assert_eq!(
        run.data[34..36],
        error[34..36],
        "{what}: ICMP type or code changed"
    );
    assert_eq!(
        run.data[38..QUOTE_OFF],
        error[38..QUOTE_OFF],
        "{what}: the ICMP type-specific bytes (e.g. the next-hop MTU) changed"
    );
    // Outer IPv4 header checksum and the ICMP checksum over the whole
    // message (quote included), both from scratch.
    out.assert_checksums(&format!("{what}, outer header/ICMP message"), false);

    // The quote: what the guest sent, as the guest's kernel will match it
    // against its socket (its own address and port, TTL as forwarded).
    let quote = &run.data[QUOTE_OFF..];
    assert_eq!(
        quote.len(),
        quote_len,
        "{what}: test built a different quote length"
    );
    let expected = ip_part(
        &from_guest(g, sent.clone()).ttl(sent.ttl - 1).build(),
        quote_len,
    );
    let proto = quote[9];
    let l4_csum = quoted_l4_csum_off(proto);
    let mask = |b: &[u8]| {
        let mut v = b.to_vec();
        v[10] = 0;
        v[11] = 0;
        if v.len() >= l4_csum + 2 {
            v[l4_csum] = 0;
            v[l4_csum + 1] = 0;
        }
        v
    };
    assert_eq!(
        mask(quote),
        mask(&expected),
        "{what}: the quoted packet is not what the guest sent (source address/port or echo id not translated back, or other bytes changed)"
    );
    // Quoted IPv4 header checksum, from scratch.
    let mut hdr = quote[..20].to_vec();
    hdr[10] = 0;
    hdr[11] = 0;
    let want = checksum(&hdr);
    assert!(
        csum_same(u16_at(quote, 10), want),
        "{what}: quoted IPv4 header checksum is {:#06x}, recomputed {want:#06x}",
        u16_at(quote, 10)
    );
    // Quoted L4 checksum, when quoted: equal to the one the guest computed
    // over its own address and port.
    if quote.len() >= l4_csum + 2 {
        assert!(
            csum_same(u16_at(quote, l4_csum), u16_at(&expected, l4_csum)),
            "{what}: quoted L4 checksum is {:#06x}, the guest's packet had {:#06x}",
            u16_at(quote, l4_csum),
            u16_at(&expected, l4_csum)
        );
    }
    // A whole quoted packet: all its checksums recomputed from scratch.
    let total = u16_at(quote, 2) as usize;
    if quote.len() >= total {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(quote);
        Frame(&f).assert_checksums(&format!("{what}, quoted packet"), false);
    }

    assert_counters_moved(
        &before,
        &w.counters(),
        &[(NET_ID, Slot::Action(Action::IcmpErrorTranslated), 1)],
        what,
    );
    let ct_after = conntrack(w);
    assert_eq!(
        ct_after, ct_before,
        "{what}: an ICMP error changed the flow's conntrack entries (it is not a reply: it must neither establish nor refresh the flow)"
    );
    for (k, e) in &ct_after {
        assert_eq!(
            e.state,
            ct_state::NEW,
            "{what}: entry {k:?} left NEW after only an ICMP error"
        );
    }
}

#[test]
fn frag_needed_for_a_tcp_flow_reaches_the_guest_translated() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let syn =
            Packet::tcp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, 80), TCP_SYN).payload(&[0x5a; 101]);
        let natted = send(w, &g, &from_guest(&g, syn.clone()), "TCP SYN");
        // A router on the path: fragmentation needed, next-hop MTU 1280,
        // quoting the whole packet (as Linux does up to 576 bytes).
        let len = natted.len() - 14;
        let err = icmp_error(
            NEXT_HOP,
            DEST_UNREACHABLE,
            FRAG_NEEDED,
            [0, 0, 0x05, 0x00],
            &ip_part(&natted, len),
        );
        assert_translated(
            w,
            &g,
            &syn,
            &err,
            len,
            "frag needed for TCP, whole packet quoted",
        );
        // RFC 792's minimum quote: header + 8 bytes; TCP's checksum is not
        // in it and must be left alone.
        let err = icmp_error(
            NEXT_HOP,
            DEST_UNREACHABLE,
            FRAG_NEEDED,
            [0, 0, 0x05, 0x00],
            &ip_part(&natted, 28),
        );
        assert_translated(
            w,
            &g,
            &syn,
            &err,
            28,
            "frag needed for TCP, 8 bytes of TCP quoted",
        );
    });
}

#[test]
fn port_unreachable_for_a_udp_flow_reaches_the_guest_translated() {
    with_nat_world(|w| {
        let g = w.guests[1];
        let dgram = Packet::udp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, 9));
        let natted = send(w, &g, &from_guest(&g, dgram.clone()), "UDP");
        let len = natted.len() - 14;
        let err = icmp_error(
            OUTSIDE,
            DEST_UNREACHABLE,
            PORT_UNREACHABLE,
            [0; 4],
            &ip_part(&natted, len),
        );
        assert_translated(
            w,
            &g,
            &dgram,
            &err,
            len,
            "port unreachable for UDP, whole datagram quoted",
        );
        // Minimum quote: UDP's checksum is in the 8 bytes.
        let err = icmp_error(
            OUTSIDE,
            DEST_UNREACHABLE,
            PORT_UNREACHABLE,
            [0; 4],
            &ip_part(&natted, 28),
        );
        assert_translated(
            w,
            &g,
            &dgram,
            &err,
            28,
            "port unreachable for UDP, 8 bytes quoted",
        );
    });
}

#[test]
fn port_unreachable_for_udp_without_checksum_keeps_it_zero() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let dgram = Packet::udp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, 9)).udp_no_checksum();
        let natted = send(
            w,
            &g,
            &from_guest(&g, dgram.clone()),
            "UDP without checksum",
        );
        let len = natted.len() - 14;
        let err = icmp_error(
            OUTSIDE,
            DEST_UNREACHABLE,
            PORT_UNREACHABLE,
            [0; 4],
            &ip_part(&natted, len),
        );
        let run = w.run_uplink(&err);
        assert_eq!(
            run.verdict, XDP_REDIRECT,
            "port unreachable about a checksum-less UDP flow not delivered"
        );
        assert_eq!(
            u16_at(&run.data, QUOTE_OFF + 26),
            0,
            "the quoted UDP checksum 0 (\"none\") was changed"
        );
        Frame(&run.data).assert_checksums("port unreachable for checksum-less UDP", false);
    });
}

#[test]
fn time_exceeded_for_an_icmp_echo_flow_reaches_the_guest_translated() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let ping = Packet::icmp_echo_request(g.addr, OUTSIDE, ICMP_ID, 7);
        let natted = send(w, &g, &from_guest(&g, ping.clone()), "echo request");
        let len = natted.len() - 14;
        let err = icmp_error(NEXT_HOP, TIME_EXCEEDED, 0, [0; 4], &ip_part(&natted, len));
        assert_translated(
            w,
            &g,
            &ping,
            &err,
            len,
            "time exceeded for ICMP echo, whole request quoted",
        );
    });
}

#[test]
fn icmp_error_about_no_flow_is_left_to_the_host_untouched() {
    with_nat_world(|w| {
        let g = w.guests[0];
        // A flow exists, but the error quotes another port (the host's own
        // connection from the uplink address, say).
        let dgram = Packet::udp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, 9));
        let natted = send(w, &g, &from_guest(&g, dgram), "UDP");
        let mut quote = ip_part(&natted, natted.len() - 14);
        quote[20..22].copy_from_slice(&(GUEST_PORT + 1).to_be_bytes());
        let err = icmp_error(OUTSIDE, DEST_UNREACHABLE, PORT_UNREACHABLE, [0; 4], &quote);
        let ct_before = conntrack(w);
        let before = w.counters();
        let run = w.run_uplink(&err);
        assert_eq!(
            run.verdict, XDP_PASS,
            "an ICMP error about no NAT flow got XDP verdict {} instead of XDP_PASS: the host's own errors would be lost",
            run.verdict
        );
        assert_eq!(
            run.data, err,
            "an ICMP error about no NAT flow was rewritten"
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(0, Slot::Action(Action::UplinkPassed), 1)],
            "ICMP error about no flow",
        );
        assert_eq!(
            conntrack(w),
            ct_before,
            "an ICMP error about no flow changed conntrack"
        );
    });
}

/// An error whose IPv4 total length ends before the quoted L4 bytes carries
/// the rest as link padding, which a receiver does not checksum: translating
/// it would hand the guest an ICMP checksum that is wrong over the datagram
/// (the fuzzer found this). It is left to the host untouched.
#[test]
fn icmp_error_whose_quote_lies_in_link_padding_is_not_translated() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let dgram = Packet::udp(sock(g.addr, GUEST_PORT), sock(OUTSIDE, 9));
        let natted = send(w, &g, &from_guest(&g, dgram), "UDP");
        let mut err = icmp_error(
            OUTSIDE,
            DEST_UNREACHABLE,
            PORT_UNREACHABLE,
            [0; 4],
            &ip_part(&natted, 28),
        );
        // Total length: outer header + ICMP header + 20 bytes of the quote
        // (the quoted IPv4 header, not its ports); checksums made right for
        // that length.
        let total = 20 + 8 + 20;
        err[16..18].copy_from_slice(&(total as u16).to_be_bytes());
        err[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&err[14..34]);
        err[24..26].copy_from_slice(&c.to_be_bytes());
        err[36..38].copy_from_slice(&[0, 0]);
        let c = checksum(&err[34..14 + total]);
        err[36..38].copy_from_slice(&c.to_be_bytes());
        let before = w.counters();
        let run = w.run_uplink(&err);
        assert_eq!(
            run.verdict, XDP_PASS,
            "an ICMP error whose quoted ports lie past its total length got XDP verdict {} instead of XDP_PASS",
            run.verdict
        );
        assert_eq!(
            run.data, err,
            "an ICMP error whose quote lies in link padding was rewritten"
        );
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(0, Slot::Action(Action::UplinkPassed), 1)],
            "ICMP error with its quote in padding",
        );
    });
}

// --------------------------------------------------------------------------
// NAT66: ICMPv6 errors about NAT66 flows

mod nat66 {
    use std::net::Ipv6Addr;

    use vxdp_common::{
        Action, Conntrack6Entry, Conntrack6Key, Nat6Config, mode, nat6_flags, network_flags,
    };
    use vxdp_testkit::{
        packet::{TCP_SYN, fmt_mac},
        packet6::{Frame6, Packet6, sock6},
    };
    use vxdp_tests::progtest::{
        BRIDGE_MAC, Guest, NET_ID, NEXT_HOP_MAC, NEXT_HOP6, OUTSIDE6, Slot, TC_ACT_REDIRECT,
        UPLINK_ADDR6, UPLINK_MAC, World, XDP_PASS, XDP_REDIRECT, assert_counters_moved, conntrack6,
        guest6, set_nat6, with_nat_world,
    };

    use super::{GUEST_PORT, ICMP_ID, u16_at};

    const PROTO_ICMPV6: u8 = 58;
    const DEST_UNREACHABLE6: u8 = 1;
    const PACKET_TOO_BIG: u8 = 2;
    const TIME_EXCEEDED6: u8 = 3;
    /// Ethernet + outer IPv6 (40) + ICMPv6 header (8).
    const QUOTE6_OFF: usize = 14 + 40 + 8;

    /// Network 1 as a NAT network with `<nat ipv6='yes'>`.
    fn seed(w: &mut World) {
        w.set_mode(mode::NAT, network_flags::HOST_ADDRESS);
        let flags = nat6_flags::IPV6 | nat6_flags::MASQUERADE;
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

    fn conntrack(w: &World) -> Vec<(Conntrack6Key, Conntrack6Entry)> {
        let mut ct = conntrack6(w);
        ct.sort_by_key(|(k, _)| (k.src_addr, k.dst_addr, k.src_port, k.dst_port, k.proto));
        ct
    }

    fn send(w: &World, g: &Guest, p: &Packet6, what: &str) -> Vec<u8> {
        let run = w.run_guest(g.port_ifindex, &p.build());
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "{what}: the guest's IPv6 was not NAT66ed (TC verdict {})",
            run.verdict
        );
        assert_eq!(
            Frame6(&run.data).src(),
            UPLINK_ADDR6,
            "{what}: not masqueraded"
        );
        run.data
    }

    fn icmp6_error(
        from: Ipv6Addr,
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
        quote: &[u8],
    ) -> Vec<u8> {
        let mut msg = vec![icmp_type, code, 0, 0];
        msg.extend_from_slice(&rest);
        msg.extend_from_slice(quote);
        Packet6::raw(from, UPLINK_ADDR6, PROTO_ICMPV6, &msg)
            .macs(NEXT_HOP_MAC, UPLINK_MAC)
            .build()
    }

    fn csum_off6(proto: u8) -> usize {
        40 + match proto {
            6 => 16,
            17 => 6,
            _ => 2,
        }
    }

    #[track_caller]
    fn assert_translated6(
        w: &World,
        g: &Guest,
        sent: &Packet6,
        error: &[u8],
        quote_len: usize,
        what: &str,
    ) {
        let ct_before = conntrack(w);
        let before = w.counters();
        let run = w.run_uplink(error);
        assert_eq!(
            run.verdict, XDP_REDIRECT,
            "{what}: the ICMPv6 error was not redirected to the guest's port (XDP verdict {})",
            run.verdict
        );
        assert_eq!(run.data.len(), error.len(), "{what}: length changed");
        let out = Frame6(&run.data);
        let orig = Frame6(error);
        assert_eq!(
            out.eth_dst(),
            g.mac,
            "{what}: destination MAC {} is not the guest's",
            fmt_mac(&out.eth_dst())
        );
        assert_eq!(
            out.eth_src(),
            BRIDGE_MAC,
            "{what}: source MAC is not the bridge's"
        );
        assert_eq!(
            out.dst(),
            guest6(10),
            "{what}: outer destination {} is not the guest's",
            out.dst()
        );
        assert_eq!(out.src(), orig.src(), "{what}: the error's source changed");
        assert_eq!(
            out.hop_limit(),
            orig.hop_limit() - 1,
            "{what}: hop limit not decremented"
        );
        assert_eq!(
            run.data[54..56],
            error[54..56],
            "{what}: ICMPv6 type or code changed"
        );
        assert_eq!(
            run.data[58..QUOTE6_OFF],
            error[58..QUOTE6_OFF],
            "{what}: the type-specific bytes (e.g. the MTU) changed"
        );
        // The ICMPv6 checksum over pseudo-header and whole message, from
        // scratch.
        out.assert_checksum(&format!("{what}, ICMPv6 message"));

        let quote = &run.data[QUOTE6_OFF..];
        assert_eq!(
            quote.len(),
            quote_len,
            "{what}: test built a different quote length"
        );
        let full = sent
            .clone()
            .macs(g.mac, BRIDGE_MAC)
            .hop_limit(sent.hop_limit - 1)
            .build();
        let expected = &full[14..(14 + quote_len).min(full.len())];
        let l4_csum = csum_off6(quote[6]);
        let mask = |b: &[u8]| {
            let mut v = b.to_vec();
            if v.len() >= l4_csum + 2 {
                v[l4_csum] = 0;
                v[l4_csum + 1] = 0;
            }
            v
        };
        assert_eq!(
            mask(quote),
            mask(expected),
            "{what}: the quoted packet is not what the guest sent"
        );
        if quote.len() >= l4_csum + 2 {
            assert_eq!(
                u16_at(quote, l4_csum),
                u16_at(expected, l4_csum),
                "{what}: quoted L4 checksum is not the guest's"
            );
        }
        if quote.len() == full.len() - 14 {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(quote);
            Frame6(&f).assert_checksum(&format!("{what}, quoted packet"));
        }
        assert_counters_moved(
            &before,
            &w.counters(),
            &[(NET_ID, Slot::Action(Action::IcmpErrorTranslated), 1)],
            what,
        );
        assert_eq!(
            conntrack(w),
            ct_before,
            "{what}: an ICMPv6 error changed the flow's conntrack entries"
        );
    }

    #[test]
    fn nat66_icmpv6_errors_reach_the_guest_translated() {
        with_nat_world(|w| {
            seed(w);
            let g = w.guests[0];
            // (packet, error source, ICMPv6 type, code, type-specific word, what).
            #[allow(clippy::type_complexity)]
            let cases: [(Packet6, Ipv6Addr, u8, u8, [u8; 4], &str); 3] = [
                (
                    Packet6::tcp(sock6(guest6(10), GUEST_PORT), sock6(OUTSIDE6, 443), TCP_SYN),
                    NEXT_HOP6,
                    PACKET_TOO_BIG,
                    0,
                    1280u32.to_be_bytes(),
                    "packet too big for TCP",
                ),
                (
                    Packet6::udp(sock6(guest6(10), GUEST_PORT), sock6(OUTSIDE6, 9)),
                    OUTSIDE6,
                    DEST_UNREACHABLE6,
                    4,
                    [0; 4],
                    "port unreachable for UDP",
                ),
                (
                    Packet6::echo_request(guest6(10), OUTSIDE6, ICMP_ID, 3),
                    NEXT_HOP6,
                    TIME_EXCEEDED6,
                    0,
                    [0; 4],
                    "time exceeded for echo",
                ),
            ];
            for (sent, from, t, code, rest, what) in cases {
                let natted = send(w, &g, &sent.clone().macs(g.mac, BRIDGE_MAC), what);
                let whole = natted.len() - 14;
                let err = icmp6_error(from, t, code, rest, &natted[14..]);
                assert_translated6(
                    w,
                    &g,
                    &sent,
                    &err,
                    whole,
                    &format!("{what}, whole packet quoted"),
                );
                // Only the header and 8 bytes of L4 (TCP's checksum not in it).
                let err = icmp6_error(from, t, code, rest, &natted[14..14 + 48]);
                assert_translated6(w, &g, &sent, &err, 48, &format!("{what}, 8 bytes quoted"));
            }
        });
    }

    #[test]
    fn nat66_icmpv6_error_about_no_flow_is_left_to_the_host() {
        with_nat_world(|w| {
            seed(w);
            let g = w.guests[0];
            let sent = Packet6::udp(sock6(guest6(10), GUEST_PORT), sock6(OUTSIDE6, 9))
                .macs(g.mac, BRIDGE_MAC);
            let natted = send(w, &g, &sent, "UDP");
            let mut quote = natted[14..].to_vec();
            quote[40..42].copy_from_slice(&(GUEST_PORT + 1).to_be_bytes());
            let err = icmp6_error(OUTSIDE6, DEST_UNREACHABLE6, 4, [0; 4], &quote);
            let ct_before = conntrack(w);
            let before = w.counters();
            let run = w.run_uplink(&err);
            assert_eq!(
                run.verdict, XDP_PASS,
                "an ICMPv6 error about no flow got XDP verdict {} instead of XDP_PASS",
                run.verdict
            );
            assert_eq!(run.data, err, "an ICMPv6 error about no flow was rewritten");
            assert_counters_moved(
                &before,
                &w.counters(),
                &[(0, Slot::Action(Action::UplinkPassed), 1)],
                "ICMPv6 error about no flow",
            );
            assert_eq!(
                conntrack(w),
                ct_before,
                "an ICMPv6 error about no flow changed conntrack"
            );
        });
    }
}

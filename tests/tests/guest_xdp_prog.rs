//! The guest port's XDP program (`vxdp_guest_xdp`, `--guest-xdp` on taps)
//! with `BPF_PROG_TEST_RUN`: the same anti-spoofing, NAT and route code as
//! the TC program, and what it must leave to the TC program untouched
//! (XDP_PASS, not one byte changed, no "judged" mark, nothing counted or
//! charged): frames larger than the port's MTU (GSO frames reach XDP in
//! generic mode), rate-limited ports, routes whose egress takes no XDP
//! frames (not in `VXDP_PORTS`), and unfinished checksums it cannot finish
//! (an L4 header or IP length beyond the frame). What it judged and passes
//! to the kernel carries the mark, so TC does not judge or count it twice.
//!
//! Unfinished checksums (a virtio-net header with NEEDS_CSUM: the TCP or
//! UDP field holds the pseudo-header sum) are finished by XDP before it
//! NATs or routes the frame: TCP and UDP, IPv4 and IPv6 (NAT, route,
//! NAT66, routed IPv6), payloads of 0, 1, odd, even, chunk-sized and
//! near-MTU lengths leave with the checksum a receiver computes from
//! scratch.
//!
//! Hostile guests: spoofed MACs and sources are dropped and counted by XDP
//! as by TC, unfinished checksum or not; a bogus checksum stays bogus (XDP
//! never makes a "valid" one of it); bytes after the IP payload are not
//! summed; a truncated L4 header or an IP length beyond the frame leaves
//! the frame to TC untouched.
//!
//! Needs root (network namespaces, BPF).

use std::net::Ipv4Addr;

use aya::maps::DevMapHash;
use vxdp_common::{
    Action, DropReason, Endpoint, Nat6Config, XDP_META_JUDGED, endpoint_flags, mode, names,
    nat6_flags, network_flags,
};
use vxdp_testkit::{
    packet::{Frame, Packet, be, checksum, sock},
    packet6::{Frame6, Packet6, sock6},
    tap_writer::{fold, unfinished},
};
use vxdp_tests::progtest::{
    BRIDGE_MAC, GATEWAY, Guest, NET_ID, NEXT_HOP_MAC, OUTSIDE, OUTSIDE6, Run, UPLINK_ADDR,
    UPLINK_ADDR6, UPLINK_MAC, World, XDP_DROP, XDP_PASS, XDP_REDIRECT, assert_counters_moved,
    dropped, guest6, once, set_nat6, with_nat_world,
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
        // The same spoofed frame with an unfinished checksum: dropped by
        // XDP all the same (anti-spoofing comes before any finishing).
        let run = xdp_verdict(
            w,
            &g,
            &unfinished(&spoofed_ip),
            XDP_DROP,
            &[dropped(DropReason::SpoofedSource)],
            "a spoofed frame with an unfinished checksum",
        );
        assert!(run.meta.is_empty(), "a dropped frame carries metadata");
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
        // With an unfinished checksum: passed as it came, the pseudo-header
        // sum kept for the socket buffer's CHECKSUM_PARTIAL.
        let partial = unfinished(&dns);
        let run = xdp_verdict(
            w,
            &g,
            &partial,
            XDP_PASS,
            &[once(Action::GuestPassed)],
            "DNS to the host, NEEDS_CSUM",
        );
        assert_eq!(
            run.data, partial,
            "XDP changed an unfinished frame it passed to the kernel"
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

/// Payload lengths the finishing must get right: none, one byte (an odd
/// tail alone), odd and even, around the 512-byte chunk the program sums
/// at a time, several chunks, and the largest that fits a 1500-byte MTU
/// (UDP over IPv4; TCP's header is 12 bytes longer, IPv6's 20).
const LENGTHS: [usize; 10] = [0, 1, 2, 3, 97, 511, 512, 513, 1025, 1472];

/// `n` payload bytes, different for every length.
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + n * 13 + 1) as u8).collect()
}

/// The largest payload of `proto` over IPv4 (`v6`: IPv6) in a 1500-byte MTU.
fn fits(n: usize, tcp: bool, v6: bool) -> usize {
    n.min(1500 - 20 - if tcp { 20 } else { 8 } - if v6 { 20 } else { 0 })
}

fn packet(g: &Guest, tcp: bool, sport: u16, n: usize) -> Packet {
    let p = if tcp {
        Packet::tcp(sock(g.addr, sport), sock(OUTSIDE, 80), 0x02)
    } else {
        Packet::udp(sock(g.addr, sport), sock(OUTSIDE, 53))
    };
    p.payload(&bytes(fits(n, tcp, false)))
        .macs(g.mac, BRIDGE_MAC)
}

fn packet6(g: &Guest, tcp: bool, sport: u16, n: usize) -> Packet6 {
    let src = sock6(guest6(10), sport);
    let mut p = if tcp {
        Packet6::tcp(src, sock6(OUTSIDE6, 443), 0x02)
    } else {
        Packet6::udp(src, sock6(OUTSIDE6, 53))
    };
    p.payload = bytes(fits(n, tcp, true));
    p.macs(g.mac, BRIDGE_MAC)
}

/// The L4 checksum field of an Ethernet frame (IPv4 or IPv6, TCP or UDP).
fn csum_field(f: &[u8]) -> usize {
    let (l4, proto) = if f[12..14] == [0x86, 0xdd] {
        (54, f[20])
    } else {
        (14 + (f[14] & 0x0f) as usize * 4, f[23])
    };
    l4 + if proto == 6 { 16 } else { 6 }
}

fn u16_at(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

/// One's complement addition of 16-bit words.
fn oc_add(a: u16, b: u16) -> u16 {
    let s = a as u32 + b as u32;
    ((s & 0xffff) + (s >> 16)) as u16
}

#[test]
fn unfinished_ipv4_checksums_are_finished_by_xdp_for_nat_and_route() {
    with_nat_world(|w| {
        let g = w.guests[0];
        uplink_takes_xdp(w);
        for (net_mode, action) in [
            (mode::NAT, Action::SnatForwarded),
            (mode::ROUTE, Action::RouteForwarded),
        ] {
            w.set_mode(net_mode, network_flags::HOST_ADDRESS);
            for tcp in [true, false] {
                for (i, n) in LENGTHS.into_iter().enumerate() {
                    let sport = 41000 + i as u16 + if tcp { 100 } else { 0 };
                    let sent = packet(&g, tcp, sport, n);
                    let finished = sent.build();
                    let partial = unfinished(&finished);
                    let what = format!(
                        "mode {net_mode}, {} with {} payload bytes, NEEDS_CSUM",
                        if tcp { "TCP" } else { "UDP" },
                        sent.payload.len()
                    );
                    assert_ne!(
                        partial, finished,
                        "{what}: the builder left the checksum finished"
                    );
                    let moved: &[_] = if net_mode == mode::NAT {
                        &[once(action), once(Action::ConntrackCreated)]
                    } else {
                        &[once(action)]
                    };
                    let run = xdp_verdict(w, &g, &partial, XDP_REDIRECT, moved, &what);
                    let f = Frame(&run.data);
                    assert_eq!(f.payload(), &sent.payload[..], "{what}: payload changed");
                    f.assert_checksums(&what, false);
                    if net_mode == mode::ROUTE {
                        // Routing leaves the segment alone: the guest's
                        // checksum, finished, is the one it would have sent.
                        assert_eq!(
                            f.l4_checksum(),
                            u16_at(&finished, csum_field(&finished)),
                            "{what}: not the checksum the finished frame carries"
                        );
                    } else {
                        assert_eq!(f.src(), UPLINK_ADDR, "{what}: source not masqueraded");
                    }
                }
            }
        }
    });
}

#[test]
fn unfinished_ipv6_checksums_are_finished_by_xdp_for_nat66_and_routed_ipv6() {
    with_nat_world(|w| {
        let g = w.guests[0];
        uplink_takes_xdp(w);
        w.set_mode(mode::NAT, network_flags::HOST_ADDRESS);
        for (nat66, action) in [
            (true, Action::SnatForwarded),
            (false, Action::RouteForwarded),
        ] {
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
            for tcp in [true, false] {
                for (i, n) in LENGTHS.into_iter().enumerate() {
                    let sport = 42000 + i as u16 + if tcp { 100 } else { 0 };
                    let sent = packet6(&g, tcp, sport, n);
                    let finished = sent.build();
                    let partial = unfinished(&finished);
                    let what = format!(
                        "IPv6 {}, {} with {} payload bytes, NEEDS_CSUM",
                        if nat66 { "NAT66" } else { "routed" },
                        if tcp { "TCP" } else { "UDP" },
                        sent.payload.len()
                    );
                    assert_ne!(
                        partial, finished,
                        "{what}: the builder left the checksum finished"
                    );
                    let moved: &[_] = if nat66 {
                        &[once(action), once(Action::ConntrackCreated)]
                    } else {
                        &[once(action)]
                    };
                    let run = xdp_verdict(w, &g, &partial, XDP_REDIRECT, moved, &what);
                    let f = Frame6(&run.data);
                    assert_eq!(f.payload(), &sent.payload[..], "{what}: payload changed");
                    f.assert_checksum(&what);
                    let want_src = if nat66 { UPLINK_ADDR6 } else { guest6(10) };
                    assert_eq!(f.src(), want_src, "{what}: source");
                }
            }
        }
    });
}

/// Two edge cases of finishing, where the segment is left as it is
/// (route mode): a UDP checksum that comes out 0 is sent as 0xffff (0 means
/// "none"), and a finished checksum that happens to equal the pseudo-header
/// sum (XDP takes it for unfinished) is finished again to the same value:
/// the field holds the pseudo-header sum either way, so the sum over the
/// segment is the same, and it is the sum that made the checksum.
#[test]
fn finishing_writes_0xffff_for_a_udp_zero_and_keeps_a_finished_checksum_equal_to_the_pseudo_sum() {
    with_nat_world(|w| {
        let g = w.guests[0];
        uplink_takes_xdp(w);
        w.set_mode(mode::ROUTE, network_flags::HOST_ADDRESS);
        let with_word = |x: u16| {
            Packet::udp(sock(g.addr, 43000), sock(OUTSIDE, 53))
                .payload(&[(x >> 8) as u8, x as u8, 0x5a, 0xa5, 0x01])
                .macs(g.mac, BRIDGE_MAC)
                .build()
        };
        let base = with_word(0);
        let field = csum_field(&base);

        // The word that makes the sum 0xffff: the checksum with it as 0.
        let zero = with_word(u16_at(&base, field));
        assert_eq!(
            u16_at(&zero, field),
            0xffff,
            "the crafted datagram's checksum is not the UDP zero"
        );
        let run = xdp_verdict(
            w,
            &g,
            &unfinished(&zero),
            XDP_REDIRECT,
            &[once(Action::RouteForwarded)],
            "UDP whose checksum comes out 0",
        );
        assert_eq!(
            u16_at(&run.data, field),
            0xffff,
            "UDP checksum finished to 0 (\"none\") instead of 0xffff"
        );

        // The word that makes the finished checksum equal the pseudo-header
        // sum P: ~(P + D0 + x) = P, so x = ~P + ~P + ~D0.
        let p = u16_at(&unfinished(&base), field);
        let mut seg = base[34..].to_vec();
        seg[6] = 0;
        seg[7] = 0;
        let d0 = fold(&seg);
        let x = oc_add(oc_add(!p, !p), !d0);
        let equal = with_word(x);
        assert_eq!(
            unfinished(&equal),
            equal,
            "the crafted datagram's finished checksum does not equal its pseudo-header sum"
        );
        let run = xdp_verdict(
            w,
            &g,
            &equal,
            XDP_REDIRECT,
            &[once(Action::RouteForwarded)],
            "a finished checksum equal to the pseudo-header sum",
        );
        assert_eq!(
            u16_at(&run.data, field),
            u16_at(&equal, field),
            "finishing changed a checksum that was finished already"
        );
        Frame(&run.data).assert_checksums("a finished checksum equal to the pseudo sum", false);
    });
}

/// Rewrites an IPv4 frame's total length to `tot` (header checksum fixed).
fn set_tot_len(f: &mut [u8], tot: usize) {
    f[16..18].copy_from_slice(&(tot as u16).to_be_bytes());
    f[24] = 0;
    f[25] = 0;
    let ihl = (f[14] & 0x0f) as usize * 4;
    let c = checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn hostile_unfinished_checksums_are_never_made_valid_over_bytes_outside_the_segment() {
    with_nat_world(|w| {
        let g = w.guests[0];
        uplink_takes_xdp(w);
        let nat = [once(Action::SnatForwarded), once(Action::ConntrackCreated)];

        // A bogus checksum (neither finished nor the pseudo-header sum) is
        // the guest's to get wrong: XDP forwards it and it stays wrong.
        let mut bogus = packet(&g, false, 44000, 40).build();
        let field = csum_field(&bogus);
        let c = u16_at(&bogus, field) ^ 0x1234;
        bogus[field..field + 2].copy_from_slice(&c.to_be_bytes());
        let run = xdp_verdict(w, &g, &bogus, XDP_REDIRECT, &nat, "a bogus UDP checksum");
        assert!(
            Frame(&run.data).check_checksums(false).is_err(),
            "XDP turned a bogus UDP checksum into a valid one"
        );

        // Bytes after the IP payload (Ethernet padding, or a guest's
        // garbage) are not summed: the checksum covers the IP payload only.
        for tcp in [true, false] {
            let sent = packet(&g, tcp, 44010 + tcp as u16, 33);
            let mut frame = unfinished(&sent.build());
            frame.extend_from_slice(&[0xab; 9]);
            let what = format!(
                "{} NEEDS_CSUM with 9 bytes after the IP payload",
                if tcp { "TCP" } else { "UDP" }
            );
            let run = xdp_verdict(w, &g, &frame, XDP_REDIRECT, &nat, &what);
            Frame(&run.data).assert_checksums(&what, false);
        }

        // IP options (IHL 6): the segment starts after them.
        let sent = packet(&g, false, 44020, 21).build();
        let mut opts = sent[..34].to_vec();
        opts.extend_from_slice(&[1, 1, 1, 1]);
        opts.extend_from_slice(&sent[34..]);
        opts[14] = 0x46;
        let tot = opts.len() - 14;
        set_tot_len(&mut opts, tot);
        let frame = unfinished(&opts);
        let before = w.counters();
        let run = w.run_guest_xdp(g.port_ifindex, &frame);
        let what = "UDP NEEDS_CSUM after IPv4 options";
        match run.verdict {
            XDP_REDIRECT => Frame(&run.data).assert_checksums(what, false),
            XDP_PASS | XDP_DROP => {
                // Judged here (dropped, or to the kernel with the pseudo-
                // header sum intact) or left to TC untouched.
                let frame_kept = run.data == frame;
                assert!(
                    run.verdict == XDP_DROP || frame_kept,
                    "{what}: passed on with the frame changed: the kernel's CHECKSUM_PARTIAL needs the pseudo-header sum"
                );
                assert!(
                    run.verdict != XDP_DROP || !w.counters().moved_since(&before).is_empty(),
                    "{what}: dropped without a counted reason"
                );
            }
            v => panic!("{what}: XDP verdict {v}"),
        }

        // What XDP cannot finish goes to TC as it came: the IP length
        // beyond the frame, an L4 header cut short, an IP length too short
        // for the L4 header.
        for tcp in [true, false] {
            let name = if tcp { "TCP" } else { "UDP" };
            let sent = packet(&g, tcp, 44030 + tcp as u16, 50).build();
            let mut longer = sent.clone();
            let tot = longer.len() - 14 + 64;
            set_tot_len(&mut longer, tot);
            left_to_tc(
                w,
                &g,
                &unfinished(&longer),
                &format!("{name} NEEDS_CSUM with an IP length 64 bytes beyond the frame"),
            );
            let hdr = if tcp { 20 } else { 8 };
            let mut cut = unfinished(&sent);
            cut.truncate(34 + hdr - 4);
            left_to_tc(
                w,
                &g,
                &cut,
                &format!("{name} NEEDS_CSUM with its header cut short"),
            );
            let mut short = sent.clone();
            set_tot_len(&mut short, 20 + hdr - 2);
            left_to_tc(
                w,
                &g,
                &unfinished(&short),
                &format!("{name} NEEDS_CSUM with an IP length shorter than its header"),
            );
        }
        assert!(
            w.conntrack()
                .iter()
                .all(|(k, _)| ![44030u16, 44031].contains(&u16::from_be(k.src_port))),
            "XDP recorded a flow for a frame it left to TC"
        );
    });
}

#[test]
fn unfinished_checksums_between_guests_are_finished_before_xdp_redirects_to_the_port() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let h = w.guests[1];
        w.set_mac(NET_ID, h.mac, h.port_ifindex);
        let port = h.port_ifindex;
        let mut ports: DevMapHash<_> =
            DevMapHash::try_from(w.ebpf.map_mut(names::MAP_PORTS).expect("VXDP_PORTS")).unwrap();
        ports
            .insert(port, port, None, 0)
            .expect("port in VXDP_PORTS");
        for tcp in [true, false] {
            for n in [0, 1, 513, 1472] {
                let dst = sock(h.addr, 7000);
                let p = if tcp {
                    Packet::tcp(sock(g.addr, 45000), dst, 0x02)
                } else {
                    Packet::udp(sock(g.addr, 45000), dst)
                };
                let sent = p.payload(&bytes(fits(n, tcp, false))).macs(g.mac, h.mac);
                let finished = sent.build();
                let what = format!(
                    "guest to guest, {} with {} payload bytes, NEEDS_CSUM",
                    if tcp { "TCP" } else { "UDP" },
                    sent.payload.len()
                );
                let run = xdp_verdict(
                    w,
                    &g,
                    &unfinished(&finished),
                    XDP_REDIRECT,
                    &[once(Action::PortForwarded)],
                    &what,
                );
                assert_eq!(
                    run.data, finished,
                    "{what}: not the frame with its checksum finished"
                );
            }
        }
    });
}

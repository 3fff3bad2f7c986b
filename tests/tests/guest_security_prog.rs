//! Program tests of what a hostile guest may not do at its port
//! (`vxdp_guest_in`, `BPF_PROG_TEST_RUN`): leave tagged or with an
//! EtherType nothing checks, act as a router or DHCP server, speak for
//! another MAC in DHCP, claim the gateway's address, ride another port's NAT
//! flow, take the host's frames by claiming the bridge's MAC, or reach the
//! host of an isolated network through a broadcast frame. Each refusal is a counted drop with its own reason.
//!
//! Needs root (network namespaces, BPF).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use vxdp_common::{Action, DropReason, Endpoint, endpoint_flags, mode, network_flags};
use vxdp_testkit::{
    packet::{self, BROADCAST, Mac, Packet, TCP_SYN, bootp, sock},
    packet6::Packet6,
};
use vxdp_tests::progtest::{
    BRIDGE_MAC, GATEWAY, Guest, NET_ID, OUTSIDE, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    UPLINK_ADDR, World, dropped, once, with_nat_world,
};

fn set_flags(w: &mut World, g: &Guest, flags: u32, ipv6: Option<Ipv6Addr>) {
    let ep = Endpoint {
        network_id: NET_ID,
        flags: endpoint_flags::MAC_KNOWN
            | flags
            | if ipv6.is_some() {
                endpoint_flags::IPV6_KNOWN
            } else {
                0
            },
        mac: g.mac,
        _pad0: [0; 2],
        ipv4: 0,
        _pad1: 0,
        ipv6: ipv6.map_or([0; 16], |a| a.octets()),
    };
    w.set_endpoint(g.port_ifindex, &ep);
}

/// Inserts an 802.1Q (or 802.1ad) tag after the MACs of `frame`.
fn tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

fn arp(eth_src: Mac, sender_mac: Mac, sender_ip: Ipv4Addr) -> Vec<u8> {
    let sender = (sender_mac, sender_ip);
    packet::arp(2, eth_src, BROADCAST, sender, (BROADCAST, sender_ip))
}

const GUEST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x10);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x11);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10);

/// An ICMPv6 message of `icmp_type` with `body` after the 4-byte header
/// (checksum left 0: the programs do not verify it).
fn icmp6(icmp_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, 0, 0, 0];
    m.extend_from_slice(body);
    m
}

#[test]
fn tagged_frames_and_unchecked_ethertypes_never_leave_the_port() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let syn = Packet::tcp(sock(g.addr, 40000), sock(OUTSIDE, 80), TCP_SYN)
            .macs(g.mac, BRIDGE_MAC)
            .build();
        for (tpid, what) in [(0x8100u16, "802.1Q"), (0x88a8, "802.1ad (QinQ outer)")] {
            w.guest_verdict(
                &g,
                &tagged(&syn, tpid, 42),
                TC_ACT_SHOT,
                &[dropped(DropReason::VlanTagged)],
                &format!("{what}-tagged SYN to the outside"),
            );
        }
        // A double tag: the outer one would be in the socket buffer on a
        // real port; here both are in the frame.
        let double = tagged(&tagged(&syn, 0x8100, 7), 0x88a8, 42);
        w.guest_verdict(
            &g,
            &double,
            TC_ACT_SHOT,
            &[dropped(DropReason::VlanTagged)],
            "double-tagged SYN",
        );
        for (ethertype, what) in [
            (0x8035u16, "RARP"),
            (0x8863, "PPPoE discovery"),
            (0x88cc, "LLDP"),
            (0x0100, "802.3 length field (LLC)"),
        ] {
            let mut f = syn.clone();
            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
            w.guest_verdict(
                &g,
                &f,
                TC_ACT_SHOT,
                &[dropped(DropReason::UncheckedEtherType)],
                what,
            );
        }
        // The untagged SYN still goes out.
        w.guest_verdict(
            &g,
            &syn,
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "untagged SYN",
        );
    });
}

#[test]
fn guests_cannot_act_as_router_or_dhcp_server_unless_allowed() {
    with_nat_world(|w| {
        let g = w.guests[0];
        // DHCPv4 offer from the guest (67 -> 68, broadcast).
        let offer = Packet::udp(sock(g.addr, 67), sock(Ipv4Addr::BROADCAST, 68))
            .macs(g.mac, BROADCAST)
            .payload(&bootp(2, [0x52, 0x54, 0, 0, 0, 0x0b]))
            .build();
        w.guest_verdict(
            &g,
            &offer,
            TC_ACT_SHOT,
            &[dropped(DropReason::RogueService)],
            "DHCPv4 offer from a guest",
        );
        // Router advertisement, redirect, DHCPv6 advertise.
        let ra = Packet6::raw(
            LINK_LOCAL,
            ALL_NODES,
            58,
            &icmp6(134, &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]),
        )
        .macs(g.mac, [0x33, 0x33, 0, 0, 0, 1])
        .hop_limit(255)
        .build();
        w.guest_verdict(
            &g,
            &ra,
            TC_ACT_SHOT,
            &[dropped(DropReason::RogueService)],
            "router advertisement from a guest",
        );
        let redirect = Packet6::raw(LINK_LOCAL, OTHER6, 58, &icmp6(137, &[0; 36]))
            .macs(g.mac, BRIDGE_MAC)
            .hop_limit(255)
            .build();
        w.guest_verdict(
            &g,
            &redirect,
            TC_ACT_SHOT,
            &[dropped(DropReason::RogueService)],
            "ICMPv6 redirect from a guest",
        );
        let advertise = Packet6::udp(
            SocketAddrV6::new(LINK_LOCAL, 547, 0, 0),
            SocketAddrV6::new(ALL_NODES, 546, 0, 0),
        )
        .macs(g.mac, [0x33, 0x33, 0, 0, 0, 1])
        .build();
        w.guest_verdict(
            &g,
            &advertise,
            TC_ACT_SHOT,
            &[dropped(DropReason::RogueService)],
            "DHCPv6 advertise from a guest",
        );
        // An RA behind a hop-by-hop and a destination-options header is
        // still seen.
        let mut hidden = vec![60, 0, 1, 4, 0, 0, 0, 0];
        hidden.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
        hidden.extend_from_slice(&icmp6(134, &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]));
        let ra_ext = Packet6::raw(LINK_LOCAL, ALL_NODES, 0, &hidden)
            .macs(g.mac, [0x33, 0x33, 0, 0, 0, 1])
            .hop_limit(255)
            .build();
        w.guest_verdict(
            &g,
            &ra_ext,
            TC_ACT_SHOT,
            &[dropped(DropReason::RogueService)],
            "router advertisement behind extension headers",
        );

        // A port allowed to serve sends all of them.
        set_flags(w, &g, endpoint_flags::SERVICES_ALLOWED, None);
        for (f, what) in [
            (&offer, "DHCPv4 offer"),
            (&ra, "router advertisement"),
            (&advertise, "DHCPv6 advertise"),
        ] {
            w.guest_verdict(
                &g,
                f,
                TC_ACT_OK,
                &[once(Action::GuestPassed)],
                &format!("{what} from a port allowed to serve"),
            );
        }
    });
}

#[test]
fn dhcp_client_messages_speak_only_for_the_senders_mac() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let other = w.guests[1].mac;
        let discover = |chaddr| {
            Packet::udp(
                sock(Ipv4Addr::UNSPECIFIED, 68),
                sock(Ipv4Addr::BROADCAST, 67),
            )
            .macs(g.mac, BROADCAST)
            .payload(&bootp(1, chaddr))
            .build()
        };
        w.guest_verdict(
            &g,
            &discover(g.mac),
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "DHCP discover for its own MAC",
        );
        w.guest_verdict(
            &g,
            &discover(other),
            TC_ACT_SHOT,
            &[dropped(DropReason::DhcpChaddrSpoofed)],
            "DHCP release/request for another guest's MAC",
        );
        // Unicast to the server (renewal, release) is checked the same way.
        let release = Packet::udp(sock(g.addr, 68), sock(GATEWAY, 67))
            .macs(g.mac, BRIDGE_MAC)
            .payload(&bootp(1, other))
            .build();
        w.guest_verdict(
            &g,
            &release,
            TC_ACT_SHOT,
            &[dropped(DropReason::DhcpChaddrSpoofed)],
            "unicast DHCP release for another MAC",
        );
        // A fragmented client message could hide its chaddr in a later
        // fragment: refused.
        let mut frag = discover(g.mac);
        frag[20] = 0x20; // more fragments
        let ip_csum = {
            frag[24] = 0;
            frag[25] = 0;
            vxdp_testkit::packet::checksum(&frag[14..34])
        };
        frag[24..26].copy_from_slice(&ip_csum.to_be_bytes());
        w.guest_verdict(
            &g,
            &frag,
            TC_ACT_SHOT,
            &[dropped(DropReason::DhcpChaddrSpoofed)],
            "first fragment of a DHCP message",
        );
    });
}

#[test]
fn no_guest_claims_the_gateway_or_another_guests_ipv6() {
    with_nat_world(|w| {
        let g = w.guests[0];
        let passed = &[once(Action::GuestPassed)];
        let spoofed = &[dropped(DropReason::SpoofedSource)];
        let from_gw = Packet::tcp(sock(GATEWAY, 40000), sock(OUTSIDE, 80), TCP_SYN)
            .macs(g.mac, BRIDGE_MAC)
            .build();
        // A port plugged with only a MAC (no address known yet).
        #[rustfmt::skip]
        w.guest_cases(&g, "MAC only", &[
            ("gratuitous ARP for the gateway's address", arp(g.mac, g.mac, GATEWAY), TC_ACT_SHOT, spoofed),
            ("gratuitous ARP for its own address", arp(g.mac, g.mac, g.addr), TC_ACT_OK, passed),
            ("IPv4 from the gateway's address", from_gw, TC_ACT_SHOT, spoofed),
        ]);

        // Neighbour advertisement for another guest's global address.
        set_flags(w, &g, 0, Some(GUEST6));
        let na = |target: Ipv6Addr| {
            let mut body = vec![0x20, 0, 0, 0];
            body.extend_from_slice(&target.octets());
            Packet6::raw(LINK_LOCAL, ALL_NODES, 58, &icmp6(136, &body))
                .macs(g.mac, [0x33, 0x33, 0, 0, 0, 1])
                .hop_limit(255)
                .build()
        };
        #[rustfmt::skip]
        w.guest_cases(&g, "IPv6 known", &[
            ("NA for another guest's address", na(OTHER6), TC_ACT_SHOT, spoofed),
            ("NA for its own address", na(GUEST6), TC_ACT_OK, passed),
            ("NA for its link-local address", na(LINK_LOCAL), TC_ACT_OK, passed),
        ]);
    });
}

#[test]
fn a_guest_cannot_ride_another_ports_nat_flow() {
    with_nat_world(|w| {
        let (a, b) = (w.guests[0], w.guests[1]);
        let syn = Packet::tcp(sock(a.addr, 40000), sock(OUTSIDE, 80), TCP_SYN);
        w.guest_verdict(
            &a,
            &syn.clone().macs(a.mac, BRIDGE_MAC).build(),
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "guest A opens a flow",
        );
        // Guest B (no address known, so its IPv4 source is not enforced)
        // sends A's 5-tuple from its own MAC.
        w.guest_verdict(
            &b,
            &syn.macs(b.mac, BRIDGE_MAC).build(),
            TC_ACT_SHOT,
            &[dropped(DropReason::FlowOfAnotherPort)],
            "guest B sends A's 5-tuple",
        );
    });
}

#[test]
fn a_guest_claiming_the_bridge_mac_gets_no_one_elses_traffic() {
    with_nat_world(|w| {
        let (a, b) = (w.guests[0], w.guests[1]);
        // Guest B's port registered under the bridge's MAC (a definition
        // giving the guest the bridge's address, or a MAC map entry
        // written for it): frames to the bridge are the host's, never
        // B's, and leave for the outside as before.
        w.set_mac(NET_ID, BRIDGE_MAC, b.port_ifindex);
        let syn = Packet::tcp(sock(a.addr, 40000), sock(OUTSIDE, 80), TCP_SYN)
            .macs(a.mac, BRIDGE_MAC)
            .build();
        w.guest_verdict(
            &a,
            &syn,
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "guest A to the outside while B's port holds the bridge's MAC",
        );
    });
}

#[test]
fn isolated_hosts_are_not_reached_through_broadcast_frames() {
    with_nat_world(|w| {
        let g = w.guests[0];
        for (flags, reason, what) in [
            (
                network_flags::HOST_ADDRESS,
                DropReason::IsolatedNetwork,
                "isolated",
            ),
            (0, DropReason::HostNotReachable, "very isolated"),
        ] {
            w.set_mode(mode::ISOLATED, flags);
            // UDP to the host's uplink address inside a broadcast frame.
            let sneaky = Packet::udp(sock(g.addr, 5000), sock(UPLINK_ADDR, 7))
                .macs(g.mac, BROADCAST)
                .build();
            w.guest_verdict(
                &g,
                &sneaky,
                TC_ACT_SHOT,
                &[dropped(reason)],
                &format!("{what}: unicast to the uplink address in a broadcast frame"),
            );
            let sneaky6 = Packet6::udp(
                SocketAddrV6::new(GUEST6, 5000, 0, 0),
                SocketAddrV6::new("2001:db8:1::2".parse().unwrap(), 7, 0, 0),
            )
            .macs(g.mac, BROADCAST)
            .build();
            w.guest_verdict(
                &g,
                &sneaky6,
                TC_ACT_SHOT,
                &[dropped(reason)],
                &format!("{what}: IPv6 unicast to the uplink address in a broadcast frame"),
            );
            // Real broadcasts stay allowed.
            let bcast = Packet::udp(sock(g.addr, 5000), sock(Ipv4Addr::BROADCAST, 7))
                .macs(g.mac, BROADCAST)
                .build();
            w.guest_verdict(
                &g,
                &bcast,
                TC_ACT_OK,
                &[once(Action::GuestPassed)],
                &format!("{what}: a broadcast"),
            );
        }
        // The subnet's own addresses in a broadcast frame stay in the
        // network when the host is on it.
        w.set_mode(mode::ISOLATED, network_flags::HOST_ADDRESS);
        let in_subnet = Packet::udp(sock(g.addr, 5000), sock(w.guests[1].addr, 7))
            .macs(g.mac, BROADCAST)
            .build();
        w.guest_verdict(
            &g,
            &in_subnet,
            TC_ACT_OK,
            &[once(Action::GuestPassed)],
            "isolated: another guest's address in a broadcast frame",
        );
    });
}

/// `frame` (an Ethernet/IPv4 frame) as a fragment of datagram `id`:
/// offset in 8-byte units, more fragments to come or not; the IPv4 header
/// checksum recomputed.
fn as_fragment(frame: &[u8], id: u16, offset: u16, more: bool) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[18..20].copy_from_slice(&id.to_be_bytes());
    let frags = offset | if more { 0x2000 } else { 0 };
    f[20..22].copy_from_slice(&frags.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let sum = packet::checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

#[test]
fn fragments_follow_only_their_own_datagram() {
    with_nat_world(|w| {
        let (a, b) = (w.guests[0], w.guests[1]);
        let udp = Packet::udp(sock(a.addr, 40000), sock(OUTSIDE, 53))
            .macs(a.mac, BRIDGE_MAC)
            .build();
        let first = as_fragment(&udp, 0x4242, 0, true);
        // A later fragment: the first one's IP header, any payload.
        let rest = as_fragment(&udp, 0x4242, 4, false);
        w.guest_verdict(
            &a,
            &rest,
            TC_ACT_SHOT,
            &[dropped(DropReason::Fragment)],
            "a later fragment before its first (it would leave un-NATed)",
        );
        w.guest_verdict(
            &a,
            &first,
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
            "the first fragment",
        );
        // Guest B (no address known, its IPv4 source not enforced) sends a
        // later fragment of A's datagram from its own MAC.
        let mut stolen = rest.clone();
        stolen[6..12].copy_from_slice(&b.mac);
        w.guest_verdict(
            &b,
            &stolen,
            TC_ACT_SHOT,
            &[dropped(DropReason::FlowOfAnotherPort)],
            "another port's fragment of A's datagram",
        );
        let out = w.guest_verdict(
            &a,
            &rest,
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded)],
            "A's later fragment",
        );
        assert_eq!(
            out[26..30],
            UPLINK_ADDR.octets(),
            "the later fragment left with source {:?}, not the NAT address",
            &out[26..30]
        );
        let ihl = usize::from(out[14] & 0x0f) * 4;
        assert_eq!(
            packet::checksum(&out[14..14 + ihl]),
            0,
            "the later fragment's IPv4 header checksum is wrong"
        );
        // From the outside: a later fragment of a datagram whose first
        // fragment vxdp did not translate is not delivered to any guest.
        let reply = Packet::udp(sock(OUTSIDE, 53), sock(UPLINK_ADDR, 40000)).build();
        let run = w.run_uplink(&as_fragment(&reply, 0x5151, 4, false));
        assert_ne!(
            run.verdict, 4,
            "an unknown later fragment was redirected (XDP_REDIRECT)"
        );
    });
}

/// Writes the default flow limits the control plane writes at load,
/// stamped `age_ns` ago as the daemon's recount stamps them.
fn set_flow_limits(w: &mut World, per_guest: u32, per_network: u32, age_ns: u64) {
    use aya::maps::HashMap;
    use vxdp_common::{FlowQuota, flow_quota, names};
    let stamp = vxdp_control::dataplane::monotonic_ns() - age_ns;
    let mut q: HashMap<_, u32, FlowQuota> = HashMap::try_from(
        w.ebpf
            .map_mut(names::MAP_FLOW_QUOTAS)
            .expect("VXDP_FLOW_QUOTAS"),
    )
    .expect("VXDP_FLOW_QUOTAS is a hash map");
    for (key, limit) in [
        (flow_quota::GUEST_DEFAULT, per_guest),
        (flow_quota::NETWORK_DEFAULT, per_network),
    ] {
        let quota = FlowQuota {
            count: 0,
            limit,
            recounted_ns: stamp,
        };
        q.insert(&key, &quota, 0).expect("writing VXDP_FLOW_QUOTAS");
    }
}

#[test]
fn a_guest_cannot_hold_more_flows_than_its_share() {
    with_nat_world(|w| {
        set_flow_limits(w, 3, 5, 0);
        let (a, b) = (w.guests[0], w.guests[1]);
        let flow = |g: &Guest, port: u16| {
            Packet::udp(sock(g.addr, 40000), sock(OUTSIDE, port))
                .macs(g.mac, BRIDGE_MAC)
                .build()
        };
        let created = [once(Action::SnatForwarded), once(Action::ConntrackCreated)];
        for port in 1..=3 {
            w.guest_verdict(
                &a,
                &flow(&a, port),
                TC_ACT_REDIRECT,
                &created,
                "A's flows 1-3",
            );
        }
        w.guest_verdict(
            &a,
            &flow(&a, 4),
            TC_ACT_SHOT,
            &[dropped(DropReason::GuestFlowLimit)],
            "A's fourth flow (limit 3 per guest)",
        );
        // A's existing flows still pass.
        w.guest_verdict(
            &a,
            &flow(&a, 2),
            TC_ACT_REDIRECT,
            &[once(Action::SnatForwarded)],
            "A's second flow again",
        );
        // B has its own share, up to the network's (5).
        for port in 1..=2 {
            w.guest_verdict(
                &b,
                &flow(&b, port),
                TC_ACT_REDIRECT,
                &created,
                "B's flows 1-2",
            );
        }
        w.guest_verdict(
            &b,
            &flow(&b, 3),
            TC_ACT_SHOT,
            &[dropped(DropReason::NetworkFlowLimit)],
            "B's third flow (limit 5 per network)",
        );
    });
}

/// Counts the daemon has not refreshed for over 2 minutes (it is not
/// running) no longer limit: a guest is never refused for flows it may no
/// longer hold.
#[test]
fn stale_flow_counts_do_not_refuse() {
    with_nat_world(|w| {
        let stale = vxdp_common::flow_quota::FRESH_NS + 1_000_000_000;
        set_flow_limits(w, 1, 1, stale);
        let g = w.guests[0];
        for port in 1..=3 {
            let f = Packet::udp(sock(g.addr, 40000), sock(OUTSIDE, port))
                .macs(g.mac, BRIDGE_MAC)
                .build();
            w.guest_verdict(
                &g,
                &f,
                TC_ACT_REDIRECT,
                &[once(Action::SnatForwarded), once(Action::ConntrackCreated)],
                "a flow over a limit whose count is stale",
            );
        }
    });
}

/// A guest over its outbound rate (`<bandwidth><outbound>`): once its
/// bucket's burst is spent, its frames are dropped at its port before any
/// path sees them, counted as `rate_limited`; a guest without a limit is
/// not slowed by it.
#[test]
fn a_guest_over_its_outbound_rate_is_dropped_at_its_port() {
    use aya::maps::HashMap;
    use vxdp_common::{RateLimit, names};
    with_nat_world(|w| {
        let (g, other) = (w.guests[0], w.guests[1]);
        set_flags(w, &g, endpoint_flags::RATE_LIMITED, None);
        set_flags(w, &other, 0, None);
        // 1,000 bytes/s, 2,000-byte burst: 500-byte frames cost 0.5 s each,
        // so the bucket takes the burst plus one frame, then refuses.
        let mut limits: HashMap<_, u32, RateLimit> = HashMap::try_from(
            w.ebpf
                .map_mut(names::MAP_RATE_LIMITS)
                .expect("VXDP_RATE_LIMITS"),
        )
        .expect("VXDP_RATE_LIMITS is a hash map");
        limits
            .insert(&g.port_ifindex, &RateLimit::new(1000, 2000), 0)
            .expect("writing VXDP_RATE_LIMITS");
        let frame = |from: &Guest| {
            Packet::udp(sock(from.addr, 40000), sock(OUTSIDE, 53))
                .macs(from.mac, BRIDGE_MAC)
                .payload(&[0u8; 458])
                .build()
        };
        let f = frame(&g);
        assert_eq!(f.len(), 500);
        let mut passed = 0;
        while passed < 10 && w.run_guest(g.port_ifindex, &f).verdict == TC_ACT_REDIRECT {
            passed += 1;
        }
        // The runs take microseconds, not the seconds that would refill it.
        assert!(
            (5..=6).contains(&passed),
            "{passed} frames of 500 bytes passed a 2,000-byte burst"
        );
        w.guest_verdict(
            &g,
            &f,
            TC_ACT_SHOT,
            &[dropped(DropReason::RateLimited)],
            "a frame over the rate",
        );
        // The other guest's frames are not charged to this bucket.
        let fo = frame(&other);
        for i in 0..10 {
            assert_eq!(
                w.run_guest(other.port_ifindex, &fo).verdict,
                TC_ACT_REDIRECT,
                "the unlimited guest's frame {i}"
            );
        }
    });
}

/// A network's outbound limit (`<bandwidth>` on the network) charges what
/// leaves the network through the host, whatever MAC the guest addresses
/// it to: a NAT-bound frame sent to an unknown unicast MAC or broadcast
/// (which the program still forwards) is charged like one to the gateway.
#[test]
fn a_guest_cannot_pass_its_networks_outbound_limit_by_its_choice_of_mac() {
    use aya::maps::HashMap;
    use vxdp_common::{RateLimit, names, rate_key};
    with_nat_world(|w| {
        let g = w.guests[0];
        set_flags(w, &g, 0, None);
        let mut cfg = w.network();
        cfg.flags |= network_flags::RATE_LIMITED_OUT;
        w.set_network(NET_ID, &cfg);
        for (dst, what) in [
            (BRIDGE_MAC, "the gateway's MAC"),
            ([0x02, 0, 0, 0, 0, 0x99], "an unknown unicast MAC"),
            (BROADCAST, "the broadcast MAC"),
        ] {
            // A fresh bucket: 1,000 bytes/s, 2,000-byte burst.
            let mut limits: HashMap<_, u32, RateLimit> = HashMap::try_from(
                w.ebpf
                    .map_mut(names::MAP_RATE_LIMITS)
                    .expect("VXDP_RATE_LIMITS"),
            )
            .expect("VXDP_RATE_LIMITS is a hash map");
            limits
                .insert(
                    &rate_key::network_out(NET_ID),
                    &RateLimit::new(1000, 2000),
                    0,
                )
                .expect("writing VXDP_RATE_LIMITS");
            let f = Packet::udp(sock(g.addr, 40001), sock(OUTSIDE, 53))
                .macs(g.mac, dst)
                .payload(&[0u8; 458])
                .build();
            let mut passed = 0;
            while passed < 10 && w.run_guest(g.port_ifindex, &f).verdict != TC_ACT_SHOT {
                passed += 1;
            }
            assert!(
                (5..=6).contains(&passed),
                "to {what}: {passed} frames of 500 bytes passed a 2,000-byte burst"
            );
            w.guest_verdict(
                &g,
                &f,
                TC_ACT_SHOT,
                &[dropped(DropReason::RateLimited)],
                &format!("a frame over the network's rate, to {what}"),
            );
        }
    });
}

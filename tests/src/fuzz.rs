//! A fuzzer for every dataplane program through `BPF_PROG_TEST_RUN` (plain
//! mode: this kernel refuses live frames).
//!
//! Frames are valid ones of every protocol the programs parse (Ethernet,
//! 802.1Q/802.1ad, ARP, IPv4 with options and fragments, IPv6 with
//! extension headers, TCP, UDP, ICMP, ICMPv6, DHCP), each truncated at every
//! length, then random mutations of them (bit flips, interesting values in
//! the header fields the parsers read, truncation, growth, splices of two
//! frames, wholly random frames), half of them with their checksums made
//! valid again so they get past the parsers into the rewriting code.
//!
//! The world is the program tests' ([`with_nat_world`]), run through
//! phases: the network as NAT (with NAT66), route, open, isolated and
//! direct (bridge mode on the uplink as NIC), each phase running the
//! programs that mode reaches, interleaved so guest frames create flows
//! that outside frames then hit. Every run is checked against invariants:
//!
//! - the test run returns no error (except the kernel's own refusal of a
//!   frame too short for the header its EtherType announces, which happens
//!   before the program runs);
//! - the verdict is one the program may return (`TC_ACT_OK`, `SHOT`,
//!   `REDIRECT`, `UNSPEC`; `XDP_DROP`, `PASS`, `REDIRECT`);
//! - `vxdp_guest_in` forwards (OK or REDIRECT; `vxdp_guest_xdp`: REDIRECT)
//!   only frames whose sources
//!   the port may use (its MAC; its IPv4 address, or 0.0.0.0 for UDP and
//!   ARP; its IPv6 address, a link-local one or ::), and what it forwards
//!   carries either the guest's source or the NAT address;
//! - a frame a program rewrote has a valid IPv4 header checksum and valid
//!   L4 checksum whenever the frame it came from had (a checksum that was
//!   wrong may stay wrong: the programs update checksums incrementally, as
//!   routers do), and a new frame (an ICMP error) always has;
//! - the guest port's XDP program (`vxdp_guest_xdp`, run with the uplink
//!   taking XDP frames) passes frames (to TC or, judged, to the kernel)
//!   exactly as they came, and a TCP/UDP frame it redirects whose checksum
//!   was unfinished (the field holding the pseudo-header sum, NEEDS_CSUM;
//!   the corpus holds such versions of its TCP and UDP frames) leaves with
//!   a valid checksum.
//!
//! The PRNG is seeded (splitmix64); the seed is printed, and the same seed
//! and frame count replay the same frames.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
};

use aya::{
    maps::{DevMapHash, HashMap},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use vxdp_common::{
    DirectNic, DirectPort, Endpoint, Nat6Config, endpoint_flags, mode, names, nat6_flags,
    network_flags,
};

use vxdp_testkit::{
    packet::{BROADCAST, ETH_P_ARP, ETH_P_IP, arp},
    packet::{Frame, Packet, TCP_ACK, TCP_RST, TCP_SYN, be, bootp, checksum},
    packet6::ETH_P_IPV6,
    packet6::Packet6,
    tap_writer::{fold, unfinished},
};

use crate::progtest::{
    BRIDGE_MAC, GATEWAY, NET_ID, NEXT_HOP_MAC, OUTSIDE, OUTSIDE6, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, TC_ACT_UNSPEC, UPLINK_ADDR, UPLINK_ADDR6, UPLINK_MAC, World, XDP_DROP, XDP_PASS,
    XDP_REDIRECT, set_nat6,
};

/// The guests' IPv6 addresses in the fuzz world (known to the dataplane,
/// so anti-spoofing applies).
pub const GUEST6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x11),
];

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// The programs the fuzzer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prog {
    GuestIn,
    GuestNat,
    GuestNat6,
    GuestRoute,
    GuestDirect,
    GuestXdp,
    UplinkXdp,
    UplinkTc,
    NicIn,
    NicOut,
    BridgeOut,
}

impl Prog {
    pub const ALL: [Prog; 11] = [
        Prog::GuestIn,
        Prog::GuestNat,
        Prog::GuestNat6,
        Prog::GuestRoute,
        Prog::GuestDirect,
        Prog::GuestXdp,
        Prog::UplinkXdp,
        Prog::UplinkTc,
        Prog::NicIn,
        Prog::NicOut,
        Prog::BridgeOut,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Prog::GuestIn => names::PROG_GUEST_INGRESS,
            Prog::GuestNat => names::PROG_GUEST_NAT,
            Prog::GuestNat6 => names::PROG_GUEST_NAT6,
            Prog::GuestRoute => names::PROG_GUEST_ROUTE,
            Prog::GuestDirect => names::PROG_GUEST_DIRECT,
            Prog::GuestXdp => names::PROG_GUEST_XDP,
            Prog::UplinkXdp => names::PROG_UPLINK_INGRESS,
            Prog::UplinkTc => names::PROG_UPLINK_TC,
            Prog::NicIn => names::PROG_NIC_INGRESS,
            Prog::NicOut => names::PROG_NIC_EGRESS,
            Prog::BridgeOut => names::PROG_BRIDGE_EGRESS,
        }
    }
    fn xdp(self) -> bool {
        matches!(self, Prog::UplinkXdp | Prog::GuestXdp)
    }
    /// Fed guests' frames on a guest port (otherwise the outside's on the
    /// uplink).
    fn guest_side(self) -> bool {
        matches!(
            self,
            Prog::GuestIn
                | Prog::GuestNat
                | Prog::GuestNat6
                | Prog::GuestRoute
                | Prog::GuestDirect
                | Prog::GuestXdp
        )
    }
}

/// A network configuration the world goes through, and the programs that
/// configuration reaches.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Nat,
    Route,
    Open,
    Isolated,
    Direct,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Nat,
        Phase::Route,
        Phase::Open,
        Phase::Isolated,
        Phase::Direct,
    ];
    fn progs(self) -> &'static [Prog] {
        match self {
            Phase::Nat => &[
                Prog::GuestIn,
                Prog::GuestXdp,
                Prog::GuestNat,
                Prog::GuestNat6,
                Prog::GuestRoute,
                Prog::UplinkXdp,
                Prog::UplinkTc,
                Prog::BridgeOut,
            ],
            Phase::Route | Phase::Open => &[
                Prog::GuestIn,
                Prog::GuestXdp,
                Prog::GuestRoute,
                Prog::UplinkXdp,
                Prog::UplinkTc,
                Prog::BridgeOut,
            ],
            Phase::Isolated => &[
                Prog::GuestIn,
                Prog::GuestXdp,
                Prog::UplinkXdp,
                Prog::UplinkTc,
                Prog::BridgeOut,
            ],
            Phase::Direct => &[
                Prog::GuestIn,
                Prog::GuestXdp,
                Prog::GuestDirect,
                Prog::UplinkXdp,
                Prog::NicIn,
                Prog::NicOut,
            ],
        }
    }
}

/// What one program saw.
#[derive(Default, Debug)]
pub struct ProgStats {
    pub frames: u64,
    /// Frames the kernel refused before the program ran (too short for
    /// their EtherType's header).
    pub refused_by_kernel: u64,
    pub verdicts: BTreeMap<u32, u64>,
    /// Rewritten frames whose checksums were checked.
    pub checksums_checked: u64,
}

/// The outcome of a fuzz run.
#[derive(Default, Debug)]
pub struct Report {
    pub seed: u64,
    pub per_prog: BTreeMap<Prog, ProgStats>,
    pub failures: Vec<String>,
    /// Failures beyond the ones kept in `failures`.
    pub more_failures: u64,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut s = format!("fuzz seed {:#x}\n", self.seed);
        for (p, st) in &self.per_prog {
            let _ = writeln!(
                s,
                "  {:<20} {:>9} frames, {:>7} refused by the kernel, {:>8} rewritten frames' checksums checked, verdicts {:?}",
                p.name(),
                st.frames,
                st.refused_by_kernel,
                st.checksums_checked,
                st.verdicts
            );
        }
        let _ = writeln!(
            s,
            "  {} invariant violations",
            self.failures.len() as u64 + self.more_failures
        );
        s
    }
}

const MAX_FAILURES_KEPT: usize = 20;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Frames

const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe00, 0x0a);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

fn tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// `frame` (untagged IPv4) with `opts` (a multiple of 4 bytes) added to its
/// IPv4 header; every checksum stays valid (options are not in the L4
/// pseudo-header).
fn with_ipv4_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert!(opts.len().is_multiple_of(4) && opts.len() <= 40);
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let mut f = frame[..14 + ihl].to_vec();
    f.extend_from_slice(opts);
    f.extend_from_slice(&frame[14 + ihl..]);
    f[14] = 0x40 | ((ihl + opts.len()) / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) as usize + opts.len();
    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    fix_ipv4_header(&mut f, 14);
    f
}

/// `frame` (untagged IPv4) as a fragment: `mf` and `offset` (in 8-byte
/// units).
fn as_fragment(frame: &[u8], mf: bool, offset: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let v = (if mf { 0x2000 } else { 0 }) | (offset & 0x1fff);
    f[20..22].copy_from_slice(&v.to_be_bytes());
    fix_ipv4_header(&mut f, 14);
    f
}

/// An IPv6 frame whose upper layer sits behind a hop-by-hop, a routing
/// (type 0 segments left 0), a destination-options and optionally a
/// fragment header; the upper-layer checksum is computed over the final
/// next header.
fn ipv6_with_ext(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    macs: ([u8; 6], [u8; 6]),
    upper: &Packet6,
    fragment: bool,
) -> Vec<u8> {
    let inner = upper.clone().macs(macs.0, macs.1).build();
    let nh = inner[20];
    let l4 = &inner[54..];
    let mut ext = Vec::new();
    let chain: Vec<u8> = if fragment {
        vec![43, 60, 44, nh]
    } else {
        vec![43, 60, nh]
    };
    // Hop-by-hop (PadN), routing, destination options (PadN), fragment.
    ext.extend_from_slice(&[chain[0], 0, 1, 4, 0, 0, 0, 0]);
    ext.extend_from_slice(&[chain[1], 0, 0, 0, 0, 0, 0, 0]);
    if fragment {
        ext.extend_from_slice(&[chain[2], 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[chain[3], 0, 0, 1, 0x12, 0x34, 0x56, 0x78]);
    } else {
        ext.extend_from_slice(&[chain[2], 0, 1, 4, 0, 0, 0, 0]);
    }
    ext.extend_from_slice(l4);
    let mut f = Packet6::raw(src, dst, 0, &ext).macs(macs.0, macs.1).build();
    // The upper layer's checksum stays right: its pseudo-header has the
    // same addresses and length.
    f[20] = 0;
    f
}

/// Valid frames a guest (port `g`) sends.
fn guest_corpus(w: &World, g: usize) -> Vec<Vec<u8>> {
    let guest = w.guests[g];
    let other = w.guests[1 - g];
    let (mac, a, a6) = (guest.mac, guest.addr, GUEST6[g]);
    let s = |p| SocketAddrV4::new(a, p);
    let o = |p| SocketAddrV4::new(OUTSIDE, p);
    let s6 = |p| SocketAddrV6::new(a6, p, 0, 0);
    let o6 = |p| SocketAddrV6::new(OUTSIDE6, p, 0, 0);
    let to_gw = |p: Packet| p.macs(mac, BRIDGE_MAC).build();
    let to_gw6 = |p: Packet6| p.macs(mac, BRIDGE_MAC).build();
    let syn = to_gw(Packet::tcp(s(40000), o(80), TCP_SYN));
    let mut v = vec![
        syn.clone(),
        to_gw(Packet::tcp(s(40000), o(80), TCP_ACK)),
        to_gw(Packet::tcp(s(40000), o(80), TCP_ACK | 0x01)),
        to_gw(Packet::tcp(s(40000), o(80), TCP_RST)),
        to_gw(Packet::tcp(s(40001), o(443), TCP_SYN).payload(b"syn data")),
        to_gw(Packet::udp(s(5353), o(53))),
        to_gw(Packet::udp(s(5354), o(53)).udp_no_checksum()),
        to_gw(Packet::icmp_echo_request(a, OUTSIDE, 0x4242, 1)),
        to_gw(Packet::icmp_echo_reply(a, OUTSIDE, 0x4243, 1)),
        // TTL 1: the programs answer with an ICMP time exceeded.
        to_gw(Packet::tcp(s(40002), o(80), TCP_SYN).ttl(1)),
        to_gw(Packet::udp(s(5355), o(53)).ttl(1)),
        // To the host, to the other guest, broadcast.
        to_gw(Packet::udp(s(5356), SocketAddrV4::new(GATEWAY, 53))),
        Packet::tcp(s(40003), SocketAddrV4::new(other.addr, 22), TCP_SYN)
            .macs(mac, other.mac)
            .build(),
        Packet::udp(s(5357), SocketAddrV4::new(Ipv4Addr::BROADCAST, 9))
            .macs(mac, BROADCAST)
            .build(),
        // DHCP: discover from 0.0.0.0, a request to the server.
        Packet::udp(
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        )
        .macs(mac, BROADCAST)
        .payload(&bootp(1, mac))
        .build(),
        Packet::udp(s(68), SocketAddrV4::new(GATEWAY, 67))
            .macs(mac, BRIDGE_MAC)
            .payload(&bootp(1, mac))
            .build(),
        Packet::udp(s(67), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68))
            .macs(mac, BROADCAST)
            .payload(&bootp(2, other.mac))
            .build(),
        // Spoofed sources (must be refused).
        to_gw(Packet::tcp(
            SocketAddrV4::new(other.addr, 40004),
            o(80),
            TCP_SYN,
        )),
        to_gw(Packet::tcp(
            SocketAddrV4::new(GATEWAY, 40005),
            o(80),
            TCP_SYN,
        )),
        Packet::tcp(s(40006), o(80), TCP_SYN)
            .macs(other.mac, BRIDGE_MAC)
            .build(),
        // ARP.
        arp(1, mac, BROADCAST, (mac, a), ([0; 6], GATEWAY)),
        arp(2, mac, BRIDGE_MAC, (mac, a), ([0; 6], GATEWAY)),
        arp(1, mac, BROADCAST, (mac, Ipv4Addr::UNSPECIFIED), ([0; 6], a)),
        arp(2, mac, BROADCAST, (mac, GATEWAY), ([0; 6], GATEWAY)),
        // IPv6.
        to_gw6(Packet6::tcp(s6(40010), o6(80), TCP_SYN)),
        to_gw6(Packet6::udp(s6(5360), o6(53))),
        to_gw6(Packet6::echo_request(a6, OUTSIDE6, 0x6666, 1)),
        to_gw6(Packet6::tcp(s6(40011), o6(80), TCP_SYN).hop_limit(1)),
        Packet6::raw(LINK_LOCAL, ALL_ROUTERS, 58, &[133, 0, 0, 0, 0, 0, 0, 0])
            .macs(mac, [0x33, 0x33, 0, 0, 0, 2])
            .hop_limit(255)
            .build(),
        Packet6::raw(a6, GUEST6[1 - g], 58, &[135, 0, 0, 0, 0, 0, 0, 0])
            .macs(mac, other.mac)
            .hop_limit(255)
            .build(),
        Packet6::raw(
            LINK_LOCAL,
            ALL_NODES,
            58,
            &[134, 0, 0, 0, 64, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .macs(mac, [0x33, 0x33, 0, 0, 0, 1])
        .hop_limit(255)
        .build(),
        Packet6::udp(
            SocketAddrV6::new(LINK_LOCAL, 546, 0, 0),
            SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, 0),
        )
        .macs(mac, [0x33, 0x33, 0, 1, 0, 2])
        .build(),
        ipv6_with_ext(
            a6,
            OUTSIDE6,
            (mac, BRIDGE_MAC),
            &Packet6::tcp(s6(40012), o6(80), TCP_SYN),
            false,
        ),
        ipv6_with_ext(
            a6,
            OUTSIDE6,
            (mac, BRIDGE_MAC),
            &Packet6::udp(s6(5361), o6(53)),
            true,
        ),
        to_gw6(Packet6::tcp(
            SocketAddrV6::new(GUEST6[1 - g], 40013, 0, 0),
            o6(80),
            TCP_SYN,
        )),
    ];
    v.push(with_ipv4_options(&syn, &[0x01, 0x01, 0x01, 0x00]));
    v.push(with_ipv4_options(
        &to_gw(Packet::udp(s(5358), o(53))),
        &[0x07, 0x07, 0x04, 0, 0, 0, 0, 0x01, 0x94, 0x04, 0, 0],
    ));
    v.push(with_ipv4_options(
        &syn,
        &[0x44, 0x0c, 0x05, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
    ));
    let udp_big = to_gw(Packet::udp(s(5359), o(53)).payload(&[0x5a; 64]));
    v.push(as_fragment(&udp_big, true, 0));
    v.push(as_fragment(&udp_big, false, 8));
    v.push(tagged(&syn, 0x8100, 42));
    v.push(tagged(&tagged(&syn, 0x8100, 7), 0x88a8, 42));
    // What a guest with checksum offload writes (NEEDS_CSUM): the TCP and
    // UDP frames with the field holding the pseudo-header sum.
    let partial: Vec<Vec<u8>> = v
        .iter()
        .filter(|f| {
            l4_of(f).is_some_and(|l4| matches!(l4.proto, 6 | 17) && (!l4.v6 || l4.off == 54))
        })
        .map(|f| unfinished(f))
        .collect();
    v.extend(partial);
    v
}

/// Valid frames from the outside on the uplink: replies to the guests'
/// flows (to the NAT address and ports `nat_ports`), ICMP errors about
/// them, traffic straight to the guests (routed modes), ARP, IPv6.
fn outside_corpus(w: &World, nat_ports: &[(u8, u16)]) -> Vec<Vec<u8>> {
    let g = w.guests[0];
    let o = |p| SocketAddrV4::new(OUTSIDE, p);
    let n = |p| SocketAddrV4::new(UPLINK_ADDR, p);
    let from_wire = |p: Packet| p.macs(NEXT_HOP_MAC, UPLINK_MAC).build();
    let mut v = Vec::new();
    for &(proto, port) in nat_ports {
        match proto {
            6 => {
                v.push(from_wire(Packet::tcp(o(80), n(port), TCP_SYN | TCP_ACK)));
                v.push(from_wire(Packet::tcp(o(80), n(port), TCP_RST)));
                v.push(from_wire(Packet::tcp(o(80), n(port), TCP_ACK | 0x01)));
            }
            17 => v.push(from_wire(Packet::udp(o(53), n(port)))),
            1 => v.push(from_wire(Packet::icmp_echo_reply(
                OUTSIDE,
                UPLINK_ADDR,
                port,
                1,
            ))),
            _ => {}
        }
        // An ICMP port unreachable quoting the translated packet.
        let quoted = match proto {
            6 => Packet::tcp(n(port), o(80), TCP_SYN).build(),
            17 => Packet::udp(n(port), o(53)).build(),
            _ => Packet::icmp_echo_request(UPLINK_ADDR, OUTSIDE, port, 1).build(),
        };
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[14..14 + 28]);
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = from_wire(Packet::icmp_echo_request(OUTSIDE, UPLINK_ADDR, 0, 0));
        f.truncate(14 + 20);
        f.extend_from_slice(&icmp);
        f[16..18].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        fix_ipv4_header(&mut f, 14);
        v.push(f);
    }
    let to_guest = from_wire(Packet::tcp(o(80), SocketAddrV4::new(g.addr, 22), TCP_SYN));
    v.push(to_guest.clone());
    v.push(from_wire(Packet::udp(
        o(53),
        SocketAddrV4::new(g.addr, 5353),
    )));
    v.push(from_wire(Packet::icmp_echo_request(OUTSIDE, g.addr, 7, 1)));
    v.push(from_wire(Packet::tcp(o(80), n(22), TCP_SYN)));
    v.push(from_wire(
        Packet::tcp(o(80), SocketAddrV4::new(g.addr, 22), TCP_SYN).ttl(1),
    ));
    v.push(with_ipv4_options(&to_guest, &[0x01, 0x01, 0x01, 0x00]));
    v.push(as_fragment(&to_guest, true, 0));
    v.push(tagged(&to_guest, 0x8100, 5));
    v.push(arp(
        1,
        NEXT_HOP_MAC,
        BROADCAST,
        (NEXT_HOP_MAC, Ipv4Addr::new(198, 51, 100, 1)),
        ([0; 6], UPLINK_ADDR),
    ));
    // Broadcast and a guest's MAC (direct modes: the wire → the guest).
    v.push(
        Packet::udp(o(67), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68))
            .macs(NEXT_HOP_MAC, BROADCAST)
            .payload(&bootp(2, g.mac))
            .build(),
    );
    v.push(
        Packet::tcp(o(80), SocketAddrV4::new(g.addr, 22), TCP_SYN)
            .macs(NEXT_HOP_MAC, g.mac)
            .build(),
    );
    v.push(arp(2, g.mac, BROADCAST, (g.mac, g.addr), ([0; 6], g.addr)));
    let o6 = |p| SocketAddrV6::new(OUTSIDE6, p, 0, 0);
    let n6 = |p| SocketAddrV6::new(UPLINK_ADDR6, p, 0, 0);
    let g6 = |p| SocketAddrV6::new(GUEST6[0], p, 0, 0);
    let wire6 = |p: Packet6| p.macs(NEXT_HOP_MAC, UPLINK_MAC).build();
    for &(proto, port) in nat_ports {
        match proto {
            106 => v.push(wire6(Packet6::tcp(o6(80), n6(port), TCP_SYN | TCP_ACK))),
            117 => v.push(wire6(Packet6::udp(o6(53), n6(port)))),
            158 => v.push(wire6(Packet6::echo_reply(OUTSIDE6, UPLINK_ADDR6, port, 1))),
            _ => {}
        }
    }
    v.push(wire6(Packet6::tcp(o6(80), g6(22), TCP_SYN)));
    v.push(wire6(Packet6::echo_request(OUTSIDE6, GUEST6[0], 9, 1)));
    v.push(ipv6_with_ext(
        OUTSIDE6,
        GUEST6[0],
        (NEXT_HOP_MAC, UPLINK_MAC),
        &Packet6::udp(o6(53), g6(5353)),
        false,
    ));
    v.push(ipv6_with_ext(
        OUTSIDE6,
        UPLINK_ADDR6,
        (NEXT_HOP_MAC, UPLINK_MAC),
        &Packet6::udp(o6(53), n6(1024)),
        true,
    ));
    v
}

// ---------------------------------------------------------------------------
// Checksums

fn csum_ok(c: u16) -> bool {
    c == 0 || c == 0xffff
}

/// Recomputes the IPv4 header checksum of the header at `ip` (if the
/// frame holds the whole header).
fn fix_ipv4_header(f: &mut [u8], ip: usize) {
    if f.len() < ip + 20 {
        return;
    }
    let ihl = (f[ip] & 0x0f) as usize * 4;
    if ihl < 20 || f.len() < ip + ihl {
        return;
    }
    f[ip + 10] = 0;
    f[ip + 11] = 0;
    let c = checksum(&f[ip..ip + ihl]);
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

/// Where a frame's upper layer sits, if the frame is untagged IPv4/IPv6
/// and holds a complete, unfragmented TCP/UDP/ICMP/ICMPv6 segment.
struct L4 {
    v6: bool,
    proto: u8,
    off: usize,
    end: usize,
    ip: usize,
}

fn l4_of(f: &[u8]) -> Option<L4> {
    if f.len() < 14 {
        return None;
    }
    match u16::from_be_bytes([f[12], f[13]]) {
        ETH_P_IP => {
            if f.len() < 34 || f[14] >> 4 != 4 {
                return None;
            }
            let ihl = (f[14] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([f[16], f[17]]) as usize;
            let frag = u16::from_be_bytes([f[20], f[21]]);
            if ihl < 20 || total < ihl || 14 + total > f.len() || frag & 0x3fff != 0 {
                return None;
            }
            let proto = f[23];
            matches!(proto, 1 | 6 | 17).then_some(L4 {
                v6: false,
                proto,
                off: 14 + ihl,
                end: 14 + total,
                ip: 14,
            })
        }
        ETH_P_IPV6 => {
            if f.len() < 54 || f[14] >> 4 != 6 {
                return None;
            }
            let end = 54 + u16::from_be_bytes([f[18], f[19]]) as usize;
            if end > f.len() {
                return None;
            }
            let (mut nh, mut off) = (f[20], 54);
            for _ in 0..8 {
                match nh {
                    0 | 43 | 60 => {
                        if off + 8 > end {
                            return None;
                        }
                        let len = (f[off + 1] as usize + 1) * 8;
                        nh = f[off];
                        off += len;
                    }
                    6 | 17 | 58 => break,
                    _ => return None,
                }
            }
            if !matches!(nh, 6 | 17 | 58) || off > end {
                return None;
            }
            Some(L4 {
                v6: true,
                proto: nh,
                off,
                end,
                ip: 14,
            })
        }
        _ => None,
    }
}

/// Offset of the checksum in the upper-layer header.
fn l4_csum_off(proto: u8) -> usize {
    match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    }
}

/// Whether the upper layer's checksum is right: `None` if it cannot be
/// checked (segment too short for its header), `Some(None)` for UDP over
/// IPv4 without a checksum.
fn l4_checksum_valid(f: &[u8], l4: &L4) -> Option<Option<bool>> {
    let co = l4_csum_off(l4.proto);
    if l4.end < l4.off + co + 2 {
        return None;
    }
    let seg = &f[l4.off..l4.end];
    if !l4.v6 && l4.proto == 17 && seg[6] == 0 && seg[7] == 0 {
        return Some(None);
    }
    let mut buf = Vec::with_capacity(40 + seg.len());
    if l4.v6 || l4.proto != 1 {
        if l4.v6 {
            buf.extend_from_slice(&f[l4.ip + 8..l4.ip + 40]);
            buf.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, l4.proto]);
        } else {
            buf.extend_from_slice(&f[l4.ip + 12..l4.ip + 20]);
            buf.extend_from_slice(&[0, l4.proto]);
            buf.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        }
    }
    buf.extend_from_slice(seg);
    Some(Some(csum_ok(checksum(&buf))))
}

/// Whether `f` is TCP/UDP whose checksum field holds the folded
/// pseudo-header sum (what NEEDS_CSUM frames carry).
fn unfinished_l4(f: &[u8]) -> bool {
    let Some(l4) = l4_of(f) else {
        return false;
    };
    let co = l4_csum_off(l4.proto);
    if !matches!(l4.proto, 6 | 17) || l4.end < l4.off + co + 2 {
        return false;
    }
    let field = u16::from_be_bytes([f[l4.off + co], f[l4.off + co + 1]]);
    let len = l4.end - l4.off;
    let mut pseudo = Vec::with_capacity(40);
    if l4.v6 {
        pseudo.extend_from_slice(&f[l4.ip + 8..l4.ip + 40]);
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, l4.proto]);
    } else {
        if l4.proto == 17 && field == 0 {
            return false;
        }
        pseudo.extend_from_slice(&f[l4.ip + 12..l4.ip + 20]);
        pseudo.extend_from_slice(&[0, l4.proto]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    }
    let p = fold(&pseudo);
    field == p || (p == 0xffff && field == 0) || (p == 0 && field == 0xffff)
}

fn ipv4_header_valid(f: &[u8]) -> Option<bool> {
    if f.len() < 34 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
        return None;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    if ihl < 20 || f.len() < 14 + ihl {
        return None;
    }
    Some(csum_ok(checksum(&f[14..14 + ihl])))
}

/// Makes the frame's checksums valid again after a mutation (where the
/// structure allows).
fn fix_checksums(f: &mut [u8]) {
    if f.len() >= 34 && u16::from_be_bytes([f[12], f[13]]) == ETH_P_IP {
        fix_ipv4_header(f, 14);
    }
    if let Some(l4) = l4_of(f) {
        let co = l4_csum_off(l4.proto);
        if l4.end < l4.off + co + 2 {
            return;
        }
        f[l4.off + co] = 0;
        f[l4.off + co + 1] = 0;
        let seg = f[l4.off..l4.end].to_vec();
        let mut buf = Vec::with_capacity(40 + seg.len());
        if l4.v6 {
            buf.extend_from_slice(&f[l4.ip + 8..l4.ip + 40]);
            buf.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, l4.proto]);
        } else if l4.proto != 1 {
            buf.extend_from_slice(&f[l4.ip + 12..l4.ip + 20]);
            buf.extend_from_slice(&[0, l4.proto]);
            buf.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        }
        buf.extend_from_slice(&seg);
        let mut c = checksum(&buf);
        if l4.proto == 17 && c == 0 {
            c = 0xffff;
        }
        f[l4.off + co..l4.off + co + 2].copy_from_slice(&c.to_be_bytes());
    }
}

// ---------------------------------------------------------------------------
// Mutation

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], keep_macs: bool) -> Vec<u8> {
    if rng.chance(1, 64) {
        let len = rng.below(160);
        return (0..len).map(|_| rng.byte()).collect();
    }
    let mut f = rng.pick(corpus).clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = f.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                f[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                f[i] = *rng.pick(&[
                    0u8, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x45, 0x4f, 0x60, 0x06, 0x11, 0x3a,
                ]);
            }
            2 => {
                let l = rng.below(len + 1);
                f.truncate(l);
            }
            3 => {
                let n = 1 + rng.below(64);
                for _ in 0..n {
                    f.push(rng.byte());
                }
            }
            4 if len >= 14 => {
                let et: u16 = *rng.pick(&[
                    ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, 0x8100, 0x88a8, 0x88cc, 0x0000, 0xffff,
                ]);
                f[12..14].copy_from_slice(&et.to_be_bytes());
            }
            5 if len >= 34 && f[12..14] == ETH_P_IP.to_be_bytes() => {
                // IPv4 fields the parsers read.
                match rng.below(6) {
                    0 => f[14] = 0x40 | rng.below(16) as u8,
                    1 => {
                        let t: u16 = *rng.pick(&[
                            0u16,
                            19,
                            20,
                            21,
                            40,
                            60,
                            0xffff,
                            (len - 14) as u16,
                            (len - 13) as u16,
                        ]);
                        f[16..18].copy_from_slice(&t.to_be_bytes());
                    }
                    2 => {
                        let fr: u16 =
                            *rng.pick(&[0x2000u16, 0x0001, 0x4000, 0x1fff, 0x2001, 0x8000]);
                        f[20..22].copy_from_slice(&fr.to_be_bytes());
                    }
                    3 => f[23] = *rng.pick(&[1u8, 6, 17, 0, 2, 41, 47, 58, 255]),
                    4 => f[22] = *rng.pick(&[0u8, 1, 2, 255]),
                    _ => {
                        let a: Ipv4Addr = *rng.pick(&[
                            Ipv4Addr::UNSPECIFIED,
                            Ipv4Addr::BROADCAST,
                            GATEWAY,
                            UPLINK_ADDR,
                            OUTSIDE,
                            Ipv4Addr::new(224, 0, 0, 251),
                            Ipv4Addr::new(192, 168, 122, 11),
                            Ipv4Addr::new(127, 0, 0, 1),
                        ]);
                        let at = if rng.chance(1, 2) { 26 } else { 30 };
                        f[at..at + 4].copy_from_slice(&a.octets());
                    }
                }
            }
            6 if len >= 54 && f[12..14] == ETH_P_IPV6.to_be_bytes() => match rng.below(4) {
                0 => f[20] = *rng.pick(&[0u8, 6, 17, 58, 43, 44, 60, 59, 51, 50, 135]),
                1 => {
                    let p: u16 =
                        *rng.pick(&[0u16, 1, 7, 8, 0xffff, (len - 54) as u16, (len - 53) as u16]);
                    f[18..20].copy_from_slice(&p.to_be_bytes());
                }
                2 => f[21] = *rng.pick(&[0u8, 1, 2, 255]),
                _ => {
                    let a: Ipv6Addr = *rng.pick(&[
                        Ipv6Addr::UNSPECIFIED,
                        LINK_LOCAL,
                        ALL_NODES,
                        OUTSIDE6,
                        UPLINK_ADDR6,
                        GUEST6[0],
                        GUEST6[1],
                        Ipv6Addr::LOCALHOST,
                    ]);
                    let at = if rng.chance(1, 2) { 22 } else { 38 };
                    f[at..at + 16].copy_from_slice(&a.octets());
                }
            },
            7 => {
                // Splice: this frame's head, another's tail.
                let other = rng.pick(corpus);
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => {
                // A run of random bytes somewhere in the headers.
                let at = rng.below(len.min(80));
                let n = 1 + rng.below(8);
                for b in &mut f[at..(at + n).min(len)] {
                    *b = rng.byte();
                }
            }
            _ => {
                // A 16-bit field set to an edge value (ports, lengths, ids).
                if len >= 2 {
                    let i = rng.below(len - 1);
                    let v: u16 = *rng.pick(&[
                        0u16, 1, 67, 68, 546, 547, 1023, 1024, 0x7fff, 0x8000, 0xffff,
                    ]);
                    f[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
    if keep_macs && f.len() >= 12 && !corpus.is_empty() && rng.chance(3, 4) {
        // Most frames keep plausible MACs so they reach past the MAC checks.
        let base = rng.pick(corpus);
        if base.len() >= 12 {
            f[..12].copy_from_slice(&base[..12]);
        }
    }
    if rng.chance(1, 2) {
        fix_checksums(&mut f);
    }
    f
}

// ---------------------------------------------------------------------------
// Running and checking

struct Outcome {
    verdict: u32,
    data: Vec<u8>,
}

fn run_prog(w: &World, prog: Prog, ifindex: u32, frame: &[u8]) -> Result<Outcome, ProgramError> {
    let mut out = vec![0u8; frame.len() + 512];
    if prog.xdp() {
        let p: &Xdp = w
            .ebpf
            .program(prog.name())
            .expect("XDP program")
            .try_into()
            .expect("XDP");
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut ctx_out = [0u8; 24];
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx[..]),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::new()
        })?;
        out.truncate(r.data_size_out as usize);
        let meta = (u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()) as usize).min(out.len());
        let data = out.split_off(meta);
        Ok(Outcome {
            verdict: r.return_value,
            data,
        })
    } else if prog == Prog::BridgeOut {
        // The bridge's egress, the frame forwarded by the host from the
        // uplink (what the program judges).
        let run = w.try_run_tc_received(prog.name(), w.bridge_ifindex, w.uplink_ifindex, frame)?;
        Ok(Outcome {
            verdict: run.verdict,
            data: run.data,
        })
    } else {
        let run = w.try_run_tc(prog.name(), ifindex, frame)?;
        Ok(Outcome {
            verdict: run.verdict,
            data: run.data,
        })
    }
}

/// The kernel refuses (EINVAL) frames shorter than an Ethernet header, and
/// socket-buffer runs of IPv4/IPv6-typed frames shorter than that header,
/// before any program runs.
fn kernel_refuses(prog: Prog, f: &[u8]) -> bool {
    if f.len() < 14 {
        return true;
    }
    if prog.xdp() {
        return false;
    }
    match u16::from_be_bytes([f[12], f[13]]) {
        ETH_P_IP => f.len() < 34,
        ETH_P_IPV6 => f.len() < 54,
        _ => false,
    }
}

/// Why `vxdp_guest_in` must not have forwarded `input` from guest `g`, if
/// it must not have.
fn forbidden_source(w: &World, g: usize, input: &[u8], output: &[u8]) -> Option<String> {
    let guest = w.guests[g];
    if input.len() < 14 {
        return Some("a frame shorter than an Ethernet header".into());
    }
    if input[6..12] != guest.mac {
        return Some(format!(
            "source MAC {} is not the port's",
            hex(&input[6..12])
        ));
    }
    match u16::from_be_bytes([input[12], input[13]]) {
        ETH_P_IP => {
            if input.len() < 34 {
                return Some("an IPv4 frame without a whole header".into());
            }
            let src = Ipv4Addr::new(input[26], input[27], input[28], input[29]);
            let ok = src == guest.addr || (src.is_unspecified() && input[23] == 17);
            if !ok {
                return Some(format!("IPv4 source {src} is not the port's"));
            }
            if output.len() >= 34 && u16::from_be_bytes([output[12], output[13]]) == ETH_P_IP {
                let out = Ipv4Addr::new(output[26], output[27], output[28], output[29]);
                if out != src && out != UPLINK_ADDR {
                    return Some(format!(
                        "forwarded with IPv4 source {out}, neither the guest's nor the NAT address"
                    ));
                }
            }
            None
        }
        ETH_P_IPV6 => {
            if input.len() < 54 {
                return Some("an IPv6 frame without a whole header".into());
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&input[22..38]);
            let src = Ipv6Addr::from(a);
            let ok =
                src == GUEST6[g] || src.is_unspecified() || (a[0] == 0xfe && a[1] & 0xc0 == 0x80);
            if !ok {
                return Some(format!("IPv6 source {src} is not the port's"));
            }
            if output.len() >= 54 && u16::from_be_bytes([output[12], output[13]]) == ETH_P_IPV6 {
                let mut b = [0u8; 16];
                b.copy_from_slice(&output[22..38]);
                let out = Ipv6Addr::from(b);
                if out != src && out != UPLINK_ADDR6 {
                    return Some(format!(
                        "forwarded with IPv6 source {out}, neither the guest's nor the NAT address"
                    ));
                }
            }
            None
        }
        ETH_P_ARP => {
            if input.len() < 14 + 28 {
                return Some("a truncated ARP packet".into());
            }
            let sender = Ipv4Addr::new(input[28], input[29], input[30], input[31]);
            if input[22..28] != guest.mac {
                return Some(format!(
                    "ARP sender MAC {} is not the port's",
                    hex(&input[22..28])
                ));
            }
            if sender != guest.addr && !sender.is_unspecified() {
                return Some(format!("ARP sender address {sender} is not the port's"));
            }
            None
        }
        other => Some(format!("EtherType {other:#06x} forwarded")),
    }
}

/// Why the rewritten `output` has a checksum a receiver would reject when
/// `input`'s were right, if it has.
fn bad_checksums(input: &[u8], output: &[u8]) -> Option<String> {
    if let Some(false) = ipv4_header_valid(output)
        && ipv4_header_valid(input) != Some(false)
    {
        return Some("IPv4 header checksum wrong".into());
    }
    let out_l4 = l4_of(output)?;
    let out_ok = l4_checksum_valid(output, &out_l4)?;
    if out_ok != Some(false) {
        return None;
    }
    // Same protocol, same segment: an incremental update keeps a wrong
    // checksum wrong, which is right.
    if let Some(in_l4) = l4_of(input)
        && in_l4.proto == out_l4.proto
        && in_l4.v6 == out_l4.v6
        && let Some(in_ok) = l4_checksum_valid(input, &in_l4)
        && in_ok != Some(true)
    {
        return None;
    }
    // Input not parseable as a whole segment (e.g. fragment or truncated)
    // but the output is: only a new frame (different protocol) must be right.
    if l4_of(input).is_none()
        && let Some(in_proto) = ip_proto(input)
        && in_proto == out_l4.proto
    {
        return None;
    }
    Some(format!(
        "{} checksum wrong after rewriting (it was right before)",
        match (out_l4.v6, out_l4.proto) {
            (_, 6) => "TCP",
            (_, 17) => "UDP",
            (false, _) => "ICMP",
            (true, _) => "ICMPv6",
        }
    ))
}

fn ip_proto(f: &[u8]) -> Option<u8> {
    if f.len() < 34 {
        return None;
    }
    match u16::from_be_bytes([f[12], f[13]]) {
        ETH_P_IP => Some(f[23]),
        ETH_P_IPV6 if f.len() >= 54 => Some(f[20]),
        _ => None,
    }
}

fn known_verdict(prog: Prog, v: u32) -> bool {
    if prog.xdp() {
        matches!(v, XDP_DROP | XDP_PASS | XDP_REDIRECT)
    } else {
        matches!(v, TC_ACT_OK | TC_ACT_SHOT | TC_ACT_REDIRECT | TC_ACT_UNSPEC)
    }
}

// ---------------------------------------------------------------------------
// World set-up per phase

fn load_remaining(w: &mut World) {
    for name in [
        names::PROG_UPLINK_TC,
        names::PROG_NIC_INGRESS,
        names::PROG_NIC_EGRESS,
        names::PROG_BRIDGE_EGRESS,
    ] {
        let p: &mut SchedClassifier = w
            .ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("classifier");
        if p.fd().is_err() {
            p.load()
                .unwrap_or_else(|e| panic!("loading {name} (verifier): {e}"));
        }
    }
}

fn set_endpoints(w: &mut World) {
    for (i, g) in w.guests.into_iter().enumerate() {
        w.set_endpoint(
            g.port_ifindex,
            &Endpoint {
                network_id: NET_ID,
                flags: endpoint_flags::MAC_KNOWN
                    | endpoint_flags::IPV4_KNOWN
                    | endpoint_flags::IPV6_KNOWN
                    | endpoint_flags::XDP_FRAMES,
                mac: g.mac,
                ipv4: be(g.addr),
                ipv6: GUEST6[i].octets(),
                ..Endpoint::default()
            },
        );
        w.set_mac(NET_ID, g.mac, g.port_ifindex);
    }
}

fn set_direct(w: &mut World, on: bool) {
    let uplink = w.uplink_ifindex;
    let guests = w.guests;
    {
        let mut nics: HashMap<_, u32, DirectNic> = HashMap::try_from(
            w.ebpf
                .map_mut(names::MAP_DIRECT_NICS)
                .expect("VXDP_DIRECT_NICS"),
        )
        .expect("hash map");
        if on {
            let mut nic = DirectNic {
                network_id: NET_ID,
                mode: mode::DIRECT_BRIDGE,
                mac: UPLINK_MAC,
                ..DirectNic::default()
            };
            for g in &guests {
                nic.ports[nic.port_count as usize] = g.port_ifindex;
                nic.port_count += 1;
            }
            nics.insert(&uplink, &nic, 0)
                .expect("writing VXDP_DIRECT_NICS");
        } else {
            let _ = nics.remove(&uplink);
        }
    }
    let mut ports: HashMap<_, u32, DirectPort> = HashMap::try_from(
        w.ebpf
            .map_mut(names::MAP_DIRECT_PORTS)
            .expect("VXDP_DIRECT_PORTS"),
    )
    .expect("hash map");
    for g in &guests {
        if on {
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
        } else {
            let _ = ports.remove(&g.port_ifindex);
        }
    }
}

fn enter_phase(w: &mut World, phase: Phase, original: &vxdp_common::NetworkConfig) {
    set_direct(w, false);
    w.set_network(NET_ID, original);
    set_nat6(
        w,
        NET_ID,
        &Nat6Config {
            flags: 0,
            _pad0: 0,
            addr: [0; 16],
        },
    );
    match phase {
        Phase::Nat => {
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
        }
        Phase::Route => w.set_mode(mode::ROUTE, network_flags::HOST_ADDRESS),
        Phase::Open => w.set_mode(mode::OPEN, network_flags::HOST_ADDRESS),
        Phase::Isolated => w.set_mode(mode::ISOLATED, network_flags::HOST_ADDRESS),
        Phase::Direct => {
            let mut cfg = *original;
            cfg.mode = mode::DIRECT_BRIDGE;
            cfg.bridge_ifindex = 0;
            cfg.bridge_mac = UPLINK_MAC;
            w.set_network(NET_ID, &cfg);
            set_direct(w, true);
        }
    }
}

/// Valid flows through the NAT, to aim the outside's frames at: (protocol,
/// NAT port); IPv6 ones as 100 + protocol.
fn seed_flows(w: &World) -> Vec<(u8, u16)> {
    let g = w.guests[0];
    let s = |p| SocketAddrV4::new(g.addr, p);
    let o = |p| SocketAddrV4::new(OUTSIDE, p);
    let s6 = |p| SocketAddrV6::new(GUEST6[0], p, 0, 0);
    let o6 = |p| SocketAddrV6::new(OUTSIDE6, p, 0, 0);
    let mut ports = Vec::new();
    let v4 = [
        Packet::tcp(s(41000), o(80), TCP_SYN),
        Packet::udp(s(41001), o(53)),
        Packet::icmp_echo_request(g.addr, OUTSIDE, 0x7777, 1),
    ];
    for p in v4 {
        let f = p.macs(g.mac, BRIDGE_MAC).build();
        let r = run_prog(w, Prog::GuestIn, g.port_ifindex, &f).expect("seeding a flow");
        assert_eq!(
            r.verdict, TC_ACT_REDIRECT,
            "fuzz set-up: a valid guest packet was not NATed"
        );
        let fr = Frame(&r.data);
        ports.push((fr.proto(), fr.src_port()));
    }
    let v6 = [
        Packet6::tcp(s6(41002), o6(80), TCP_SYN),
        Packet6::udp(s6(41003), o6(53)),
        Packet6::echo_request(GUEST6[0], OUTSIDE6, 0x7778, 1),
    ];
    for p in v6 {
        let f = p.macs(g.mac, BRIDGE_MAC).build();
        let r = run_prog(w, Prog::GuestIn, g.port_ifindex, &f).expect("seeding a NAT66 flow");
        assert_eq!(
            r.verdict, TC_ACT_REDIRECT,
            "fuzz set-up: a valid guest IPv6 packet was not masqueraded"
        );
        let fr = vxdp_testkit::packet6::Frame6(&r.data);
        ports.push((100 + fr.next_header(), fr.src_port()));
    }
    ports
}

/// Runs `frames_per_prog` frames through every program (split over the
/// phases that reach it) with the PRNG seeded by `seed`.
pub fn fuzz(w: &mut World, seed: u64, frames_per_prog: u64) -> Report {
    load_remaining(w);
    set_endpoints(w);
    // The uplink takes XDP frames, so the guest port's XDP program NATs
    // and routes (and finishes checksums) instead of leaving it to TC.
    let up = w.uplink_ifindex;
    let mut ports: DevMapHash<_> =
        DevMapHash::try_from(w.ebpf.map_mut(names::MAP_PORTS).expect("VXDP_PORTS"))
            .expect("VXDP_PORTS is a device hash map");
    ports.insert(up, up, None, 0).expect("uplink in VXDP_PORTS");
    let original = w.network();
    let mut rng = Rng::new(seed);
    let mut report = Report {
        seed,
        ..Report::default()
    };
    let phases_of = |p: Prog| {
        Phase::ALL
            .iter()
            .filter(|ph| ph.progs().contains(&p))
            .count() as u64
    };

    for phase in Phase::ALL {
        enter_phase(w, phase, &original);
        let nat_ports = if let Phase::Nat = phase {
            seed_flows(w)
        } else {
            Vec::new()
        };
        let guest_corpora = [guest_corpus(w, 0), guest_corpus(w, 1)];
        let outside = outside_corpus(w, &nat_ports);
        // Each program's share of this phase, and its deterministic part:
        // every corpus frame truncated at every length.
        let mut plan: Vec<(Prog, u64, Vec<Vec<u8>>)> = phase
            .progs()
            .iter()
            .map(|&p| {
                let budget = frames_per_prog.div_ceil(phases_of(p));
                let corpus = if p.guest_side() {
                    &guest_corpora[0]
                } else {
                    &outside
                };
                let mut det: Vec<Vec<u8>> = corpus
                    .iter()
                    .flat_map(|f| (0..=f.len()).map(|l| f[..l].to_vec()))
                    .collect();
                // A short run cannot afford every length in every phase: a
                // seeded sample of them, at most half the phase's share.
                while det.len() as u64 > budget / 2 {
                    let i = rng.below(det.len());
                    det.swap_remove(i);
                }
                det.reverse();
                (p, budget, det)
            })
            .collect();
        let mut done: BTreeMap<Prog, u64> = BTreeMap::new();
        loop {
            let mut progressed = false;
            for (prog, budget, det) in plan.iter_mut() {
                let n = done.entry(*prog).or_default();
                if *n >= *budget {
                    continue;
                }
                *n += 1;
                progressed = true;
                let g = if rng.chance(1, 8) { 1 } else { 0 };
                let frame = match det.pop() {
                    Some(f) => f,
                    None => {
                        let mixed = rng.chance(1, 16);
                        let corpus = if prog.guest_side() != mixed {
                            &guest_corpora[g]
                        } else {
                            &outside
                        };
                        mutate(&mut rng, corpus, true)
                    }
                };
                let ifindex = if prog.guest_side() {
                    w.guests[g].port_ifindex
                } else {
                    w.uplink_ifindex
                };
                check_one(w, &mut report, phase, *prog, g, ifindex, &frame);
            }
            if !progressed {
                break;
            }
        }
    }
    w.set_network(NET_ID, &original);
    set_direct(w, false);
    report
}

fn fail(report: &mut Report, msg: String) {
    if report.failures.len() < MAX_FAILURES_KEPT {
        report.failures.push(msg);
    } else {
        report.more_failures += 1;
    }
}

fn check_one(
    w: &World,
    report: &mut Report,
    phase: Phase,
    prog: Prog,
    g: usize,
    ifindex: u32,
    frame: &[u8],
) {
    report.per_prog.entry(prog).or_default().frames += 1;
    let what = || {
        format!(
            "{} ({phase:?} phase, port ifindex {ifindex}), frame {}",
            prog.name(),
            hex(frame)
        )
    };
    let out = match run_prog(w, prog, ifindex, frame) {
        Ok(o) => o,
        Err(e) => {
            if kernel_refuses(prog, frame) {
                report.per_prog.entry(prog).or_default().refused_by_kernel += 1;
            } else {
                let msg = format!("{}: BPF_PROG_TEST_RUN failed: {e}", what());
                fail(report, msg);
            }
            return;
        }
    };
    *report
        .per_prog
        .entry(prog)
        .or_default()
        .verdicts
        .entry(out.verdict)
        .or_default() += 1;
    if !known_verdict(prog, out.verdict) {
        let msg = format!("{}: unknown verdict {}", what(), out.verdict as i32);
        fail(report, msg);
        return;
    }
    let forwarded = if prog.xdp() {
        matches!(out.verdict, XDP_REDIRECT | XDP_PASS)
    } else {
        matches!(out.verdict, TC_ACT_OK | TC_ACT_REDIRECT)
    };
    if prog == Prog::GuestXdp && out.verdict == XDP_PASS && out.data != frame {
        let msg = format!(
            "{}: passed on changed (to TC or the kernel a frame must go as it came: a NEEDS_CSUM socket buffer needs its pseudo-header sum); output {}",
            what(),
            hex(&out.data)
        );
        fail(report, msg);
    }
    if prog == Prog::GuestXdp
        && out.verdict == XDP_REDIRECT
        && unfinished_l4(frame)
        && let Some(l4) = l4_of(&out.data)
        && l4_checksum_valid(&out.data, &l4) == Some(Some(false))
    {
        report.per_prog.entry(prog).or_default().checksums_checked += 1;
        let msg = format!(
            "{}: redirected an unfinished (NEEDS_CSUM) checksum without finishing it; output {}",
            what(),
            hex(&out.data)
        );
        fail(report, msg);
    }
    // The XDP program's XDP_PASS may be a frame left to TC unjudged: only
    // its redirects are its own forwarding.
    let guest_forwarded = match prog {
        Prog::GuestIn => forwarded,
        Prog::GuestXdp => out.verdict == XDP_REDIRECT,
        _ => false,
    };
    if guest_forwarded && let Some(why) = forbidden_source(w, g, frame, &out.data) {
        let msg = format!(
            "{}: forwarded (verdict {}) although {why}; output {}",
            what(),
            out.verdict as i32,
            hex(&out.data)
        );
        fail(report, msg);
    }
    if forwarded && out.data != frame {
        report.per_prog.entry(prog).or_default().checksums_checked += 1;
        if let Some(why) = bad_checksums(frame, &out.data) {
            let msg = format!("{}: {why}; output {}", what(), hex(&out.data));
            fail(report, msg);
        }
    }
}

/// Frames per program: `VXDP_FUZZ_FRAMES` or `default`.
pub fn frames_from_env(default: u64) -> u64 {
    match std::env::var("VXDP_FUZZ_FRAMES") {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("VXDP_FUZZ_FRAMES={v} is not a number")),
        Err(_) => default,
    }
}

/// The seed: `VXDP_FUZZ_SEED` (decimal or 0x-hex) or one from the clock.
pub fn seed_from_env() -> u64 {
    match std::env::var("VXDP_FUZZ_SEED") {
        Ok(v) => {
            let parsed = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("VXDP_FUZZ_SEED={v} is not a number"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum invariant catches a rewrite that breaks a checksum,
    /// and leaves alone one that was already wrong.
    #[test]
    fn checksum_invariant_bites() {
        let good = Packet::udp(
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 122, 10), 5000),
            SocketAddrV4::new(OUTSIDE, 53),
        )
        .build();
        assert!(bad_checksums(&good, &good).is_none());
        let mut natted = good.clone();
        natted[26..30].copy_from_slice(&UPLINK_ADDR.octets());
        fix_ipv4_header(&mut natted, 14);
        assert!(
            bad_checksums(&good, &natted).unwrap().contains("UDP"),
            "a source rewrite without a UDP checksum update must be caught"
        );
        let mut bad_ip = good.clone();
        bad_ip[22] -= 1;
        assert!(
            bad_checksums(&good, &bad_ip)
                .unwrap()
                .contains("IPv4 header")
        );
        let mut already_bad = good.clone();
        already_bad[14 + 20 + 6] ^= 0xff;
        let mut rewritten = already_bad.clone();
        rewritten[26..30].copy_from_slice(&UPLINK_ADDR.octets());
        fix_ipv4_header(&mut rewritten, 14);
        assert!(bad_checksums(&already_bad, &rewritten).is_none());
        let mut fixed = natted.clone();
        fix_checksums(&mut fixed);
        assert!(bad_checksums(&good, &fixed).is_none());
    }

    #[test]
    fn same_seed_same_frames() {
        let corpus = vec![
            Packet::tcp(
                SocketAddrV4::new(GATEWAY, 1),
                SocketAddrV4::new(OUTSIDE, 2),
                TCP_SYN,
            )
            .build(),
        ];
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..1000 {
            assert_eq!(mutate(&mut a, &corpus, true), mutate(&mut b, &corpus, true));
        }
    }
}

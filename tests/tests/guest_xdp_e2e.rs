//! The guest XDP program on a real tap (`attach-interface --port-xdp on`),
//! end to end: this test is the guest, writing frames into the tap as
//! QEMU's tap backend does (a non-blocking fd with a virtio-net header, so
//! tun runs the program natively in the writer's context). vxdp runs in
//! its own namespaces (testkit's `NatTopology`, NAT network `default`).
//!
//! - A hostile guest's spoofed source is dropped and counted by XDP.
//! - A frame with a finished checksum and one the guest left to the host
//!   (NEEDS_CSUM: the field holds the pseudo-header sum) both reach the
//!   outside host's UDP socket NATed to the uplink's address (the socket
//!   drops a bad checksum, so receiving them proves them valid).
//! - Which program carried them: a packet socket on the tap sees only what
//!   became a socket buffer there (what XDP left to TC). With the outside
//!   veth at its defaults (GRO off) the uplink takes no XDP frames and both
//!   go through TC; with GRO on the outside's end (this test is about that
//!   setting) both leave through XDP's redirect, the NEEDS_CSUM one with
//!   its checksum finished by XDP (payloads of 1, odd, even and near-MTU
//!   lengths).
//!
//! Needs root (network namespaces, BPF, /dev/net/tun).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR,
    frame_probe::SkbProbe,
    packet::{Mac, Packet, sock},
    tap_writer::{TapWriter, with_vnet_hdr},
};

const TAP: &str = "gxtap0";
const GUEST_MAC: &str = "52:54:00:78:64:01";
const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 50);

fn mac_of(topo: &NatTopology, dev: &str) -> Result<Mac> {
    let out = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", dev])?.stdout)?;
    let text = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("{dev} has no MAC"))?;
    let mut mac = [0u8; 6];
    for (i, b) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(b, 16)?;
    }
    Ok(mac)
}

fn guest_mac() -> Mac {
    let mut mac = [0u8; 6];
    for (i, b) in GUEST_MAC.split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

/// A UDP socket of the outside host on `port`.
fn outside_socket(topo: &NatTopology, port: u16) -> Result<UdpSocket> {
    let s = topo
        .wan
        .enter(move || UdpSocket::bind(SocketAddrV4::new(OUTSIDE_HOST.parse().unwrap(), port)))??;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(s)
}

/// Waits (up to 30 s, sending again every half second) until `socket`
/// receives `payload`; returns the sender.
fn received(
    tap: &TapWriter,
    frame: &[u8],
    socket: &UdpSocket,
    payload: &[u8],
) -> Result<SocketAddrV4> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 2048];
    loop {
        tap.write_all(frame)?;
        match socket.recv_from(&mut buf) {
            Ok((n, std::net::SocketAddr::V4(from))) if &buf[..n] == payload => return Ok(from),
            Ok(_) | Err(_) if Instant::now() < deadline => continue,
            Ok((n, from)) => bail!("the outside host got {n} other bytes from {from}"),
            Err(e) => bail!("the outside host received nothing within 30 s: {e}"),
        }
    }
}

/// The topology with the tap plugged with `--port-xdp on`; `outside_gro`:
/// GRO on the outside host's veth end, so the uplink takes XDP frames.
fn setup(tag: &str, outside_gro: bool) -> Result<(NatTopology, TapWriter)> {
    let mut topo = NatTopology::new(tag, 0)?;
    if outside_gro {
        topo.wan.exec("ethtool", &["-K", "wan0", "gro", "on"])?;
    }
    topo.create(DEFAULT_XML)?;
    let tap = TapWriter::open(&topo.hyp, TAP)?;
    let addr = GUEST_ADDR.to_string();
    topo.vxdp(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        TAP,
        "--mac",
        GUEST_MAC,
        "--ip",
        &addr,
        "--port-xdp",
        "on",
    ])?;
    let link = String::from_utf8(topo.hyp.ip(&["-d", "link", "show", "dev", TAP])?.stdout)?;
    ensure!(
        link.contains("xdp"),
        "{TAP} has no XDP program after attach-interface --port-xdp on:\n{link}"
    );
    Ok((topo, tap))
}

/// Sends a finished and a NEEDS_CSUM datagram to the outside and returns
/// how many frames the packet socket on the tap saw for each.
fn both_reach_the_outside(topo: &NatTopology, tap: &TapWriter) -> Result<(u64, u64)> {
    both_reach_the_outside_with(topo, tap, b"", 7000)
}

/// [`both_reach_the_outside`] with `extra` after the payload, to outside
/// ports `port` and `port + 1`.
fn both_reach_the_outside_with(
    topo: &NatTopology,
    tap: &TapWriter,
    extra: &[u8],
    port: u16,
) -> Result<(u64, u64)> {
    let bridge = mac_of(topo, "virbr0")?;
    // The next hop's MAC resolved first: XDP leaves a frame whose next hop
    // is unresolved to TC (bpf_redirect_neigh).
    topo.hyp
        .exec("ping", &["-c", "1", "-W", "10", vxdp_testkit::WAN_ADDR])?;
    let mut seen = Vec::new();
    for (i, partial) in [false, true].into_iter().enumerate() {
        let port = port + i as u16;
        let socket = outside_socket(topo, port)?;
        let mut payload = format!("vxdp guest xdp {partial}").into_bytes();
        payload.extend_from_slice(extra);
        let frame = Packet::udp(
            sock(GUEST_ADDR, 5000 + i as u16),
            sock(OUTSIDE_HOST.parse()?, port),
        )
        .payload(&payload)
        .macs(guest_mac(), bridge)
        .build();
        let (snat0, _) = topo.counter("default", "snat_forwarded")?;
        let probe = SkbProbe::start(&topo.hyp, TAP)?;
        let from = received(tap, &with_vnet_hdr(&frame, partial), &socket, &payload).with_context(
            || {
                format!(
                    "UDP with {} payload bytes to the outside, NEEDS_CSUM {partial}",
                    payload.len()
                )
            },
        )?;
        let skb = probe.finish()?;
        ensure!(
            from.ip().to_string() == UPLINK_ADDR,
            "the outside host saw {from}, expected the uplink address {UPLINK_ADDR} (NAT)"
        );
        let (snat1, _) = topo.counter("default", "snat_forwarded")?;
        ensure!(
            snat1 > snat0,
            "NEEDS_CSUM {partial}: the datagram did not take vxdp's NAT path (snat_forwarded {snat0} -> {snat1})"
        );
        seen.push(skb.frames);
    }
    Ok((seen[0], seen[1]))
}

#[test]
fn xdp_on_a_tap_drops_spoofing_and_leaves_what_it_cannot_send_to_tc() -> Result<()> {
    let (topo, tap) = setup("gxt", false)?;
    let bridge = mac_of(&topo, "virbr0")?;
    // Another address of the subnet than the guest's (--ip).
    let spoofed = Packet::udp(
        sock(Ipv4Addr::new(192, 168, 122, 51), 5000),
        sock(OUTSIDE_HOST.parse()?, 7100),
    )
    .payload(b"spoofed")
    .macs(guest_mac(), bridge)
    .build();
    let (drops0, _) = topo.counter("default", "spoofed_source").unwrap_or((0, 0));
    let probe = SkbProbe::start(&topo.hyp, TAP)?;
    tap.write_all(&with_vnet_hdr(&spoofed, false))?;
    let skb = probe.finish()?;
    let (drops1, _) = topo.counter("default", "spoofed_source")?;
    ensure!(
        drops1 == drops0 + 1,
        "a spoofed source through the tap's XDP program: spoofed_source {drops0} -> {drops1}, expected one more"
    );
    ensure!(
        skb.frames == 0,
        "the spoofed frame became a socket buffer on {TAP} ({skb:?}): XDP did not drop it"
    );
    // The outside veth at its defaults: the uplink takes no XDP frames,
    // so XDP leaves both to TC, which NATs them.
    let (finished, partial) = both_reach_the_outside(&topo, &tap)?;
    ensure!(
        finished > 0 && partial > 0,
        "the uplink takes no XDP frames, so TC must carry both (packet socket on {TAP}: finished {finished}, NEEDS_CSUM {partial} frames)"
    );
    Ok(())
}

#[test]
fn xdp_on_a_tap_sends_finished_and_needs_csum_frames_out_of_an_uplink_that_takes_xdp_frames()
-> Result<()> {
    let (topo, tap) = setup("gxg", true)?;
    // Payload lengths (with the 20-byte text): 21 (odd), 1 byte more than
    // a 512-byte chunk and the largest that fits a 1500-byte MTU.
    for (i, extra) in [1usize, 493, 1452].into_iter().enumerate() {
        let extra: Vec<u8> = (0..extra).map(|b| (b * 31 + 7) as u8).collect();
        let (finished, partial) =
            both_reach_the_outside_with(&topo, &tap, &extra, 7000 + 2 * i as u16)?;
        ensure!(
            finished == 0,
            "the finished datagram ({} extra bytes) became a socket buffer on {TAP} ({finished} frames): XDP did not NAT it, though the uplink takes XDP frames",
            extra.len()
        );
        ensure!(
            partial == 0,
            "the NEEDS_CSUM datagram ({} extra bytes) became a socket buffer on {TAP} ({partial} frames): XDP did not finish its checksum and NAT it",
            extra.len()
        );
    }
    Ok(())
}

/// Counters say what the kernel did: a frame the XDP program NATed and
/// redirected out of the uplink, which the kernel then refused (the
/// outside's veth lost GRO after vxdp found the uplink taking XDP frames,
/// so the veth has no NAPI to take it), is a counted drop
/// (`xdp_redirect_refused`), not a forwarded frame.
#[test]
fn xdp_on_a_tap_counts_a_redirect_the_kernel_refused_as_a_drop() -> Result<()> {
    let (topo, tap) = setup("gxr", true)?;
    // Learn the path first (next hop resolved, flow created), while the
    // uplink takes XDP frames.
    let (finished, _) = both_reach_the_outside(&topo, &tap)?;
    ensure!(
        finished == 0,
        "the finished datagram did not take XDP's path"
    );
    topo.wan.exec("ethtool", &["-K", "wan0", "gro", "off"])?;
    let bridge = mac_of(&topo, "virbr0")?;
    let frame = Packet::udp(sock(GUEST_ADDR, 5000), sock(OUTSIDE_HOST.parse()?, 7000))
        .payload(b"refused")
        .macs(guest_mac(), bridge)
        .build();
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let (refused0, _) = topo
        .counter("default", "xdp_redirect_refused")
        .unwrap_or((0, 0));
    tap.write_all(&with_vnet_hdr(&frame, false))?;
    // The tracepoint programs settle it in the writer's context, before
    // the write returns; the daemon-less counters are read right after.
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    let (refused1, _) = topo.counter("default", "xdp_redirect_refused")?;
    ensure!(
        refused1 == refused0 + 1 && snat1 == snat0,
        "a refused XDP redirect out of the uplink: xdp_redirect_refused {refused0} -> {refused1}, \
         snat_forwarded {snat0} -> {snat1}; expected one more drop and no more forwarded"
    );
    Ok(())
}

//! End to end: IPv6 in a NAT network, realized by vxdp in throwaway
//! namespaces (testkit's NatTopology plus IPv6 from
//! 2001:db8::/32). With `<nat ipv6='yes'>` guests' IPv6 is masqueraded to
//! the uplink's IPv6 address (NAT66) and unsolicited inbound IPv6 is dropped
//! and counted; without it, the network's IPv6 is routed and the outside
//! host sees the guests' own addresses, as with libvirt. Ping and TCP are
//! checked at the receiving sockets (a wrong checksum shows up as no
//! connection).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{NatTopology, fetch, pattern, serve_payload, udp_echo};
use vxdp_tests::ipv6nat::{OUTSIDE6, UPLINK6, guest6, topology, wait_ping6, xml};

/// Guest `i` fetches a payload over TCP from the outside host; returns the
/// address the outside host saw.
fn tcp_from_outside(topo: &NatTopology, i: usize) -> Result<SocketAddr> {
    let payload = pattern(256 * 1024, 66 + i as u64);
    let (addr, server) = serve_payload(&topo.wan, &format!("[{OUTSIDE6}]:0"), payload.clone())?;
    let got = fetch(&topo.guests[i].ns, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(
        got == payload,
        "guest {i}: the TCP transfer over IPv6 arrived incomplete or corrupted ({} of {} bytes)",
        got.len(),
        payload.len()
    );
    Ok(peer)
}

#[test]
fn nat66_masquerades_guest_ipv6_and_refuses_unsolicited_inbound() -> Result<()> {
    let mut topo = topology("n66")?;
    topo.start(&xml(true))?;

    // Ping6 from both guests; the echoes are translated by eBPF both ways.
    for i in 0..2 {
        wait_ping6(&topo, i, OUTSIDE6)?;
    }
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let (dnat0, _) = topo.counter("default", "dnat_forwarded")?;
    let out = topo.guests[0]
        .ns
        .exec("ping", &["-6", "-c", "3", "-i", "0.2", "-W", "1", OUTSIDE6])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("3 received"),
        "ping6 lost packets: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    let (dnat1, _) = topo.counter("default", "dnat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3 && dnat1 - dnat0 == 3,
        "echoes should be NAT66'd by eBPF: snat +{}, dnat +{}",
        snat1 - snat0,
        dnat1 - dnat0
    );

    // TCP from both guests: the outside host sees only the uplink's address.
    for i in 0..2 {
        let peer = tcp_from_outside(&topo, i)?;
        ensure!(
            peer.ip().to_string() == UPLINK6,
            "guest {i}: outside host saw {peer}, expected the uplink's IPv6 address {UPLINK6}"
        );
    }
    // UDP request/response with the guest's checksum offload on (its
    // packets carry an unfinished checksum) and off (the receiver checks
    // every checksum in software; a wrong one means no reply).
    let guest = &topo.guests[0];
    for offload in ["on", "off"] {
        guest.ns.exec("ethtool", &["-K", "eth0", "tx", offload])?;
        let (addr, echo) = udp_echo(&topo.wan, &format!("[{OUTSIDE6}]:0"), 1)?;
        let reply = guest.ns.enter(move || -> Result<Vec<u8>> {
            let s = std::net::UdpSocket::bind("[::]:0")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.send_to(b"hello through NAT66", addr)?;
            let mut buf = [0u8; 256];
            let n = s.recv(&mut buf).context("no UDP reply over NAT66")?;
            Ok(buf[..n].to_vec())
        })??;
        echo.join().expect("echo thread")?;
        let text = String::from_utf8_lossy(&reply).to_string();
        ensure!(
            text.ends_with("|hello through NAT66"),
            "UDP reply with offload {offload}: {text:?}"
        );
        ensure!(
            text.starts_with(&format!("[{UPLINK6}]:")),
            "UDP seen from {text:?}, expected the uplink's IPv6 address"
        );
    }
    guest.ns.exec("ethtool", &["-K", "eth0", "tx", "on"])?;

    let ct = String::from_utf8(topo.vxdp(&["conntrack", "list"])?.stdout)?;
    ensure!(
        ct.contains(&format!("[{}]:", guest6(0)))
            && ct.contains(&format!("[{UPLINK6}]:"))
            && ct.contains("icmp6"),
        "conntrack list lacks the guests' NAT66 flows:\n{ct}"
    );

    // Unsolicited inbound: even with a route to the guests' prefix via the
    // hypervisor (the topology has one), the outside host cannot connect.
    let target: SocketAddr = format!("[{}]:8080", guest6(0)).parse()?;
    let listener = topo.guests[0]
        .ns
        .enter(move || std::net::TcpListener::bind(target))??;
    let (drop0, _) = topo.counter("default", "unsolicited_inbound")?;
    let attempt = topo
        .wan
        .enter(move || std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)))?;
    ensure!(
        attempt.is_err(),
        "the outside host connected to a NAT66 guest: unsolicited inbound IPv6 must be refused"
    );
    let (drop1, _) = topo.counter("default", "unsolicited_inbound")?;
    ensure!(
        drop1 > drop0,
        "the refused IPv6 SYN was not counted as unsolicited_inbound ({drop0} -> {drop1})"
    );
    drop(listener);

    let flushed = String::from_utf8(topo.vxdp(&["conntrack", "flush", "default"])?.stdout)?;
    ensure!(
        !flushed.contains("removed 0 "),
        "conntrack flush removed nothing: {flushed}"
    );
    let ct = String::from_utf8(topo.vxdp(&["conntrack", "list"])?.stdout)?;
    ensure!(
        !ct.contains(UPLINK6),
        "NAT66 flows left after conntrack flush:\n{ct}"
    );
    topo.stop()?;
    Ok(())
}

#[test]
fn nat_network_routes_guest_ipv6_without_nat66() -> Result<()> {
    // Routed IPv6 needs the outside to route the guests' prefix back: the
    // topology does.
    let mut topo = topology("n6r")?;
    topo.start(&xml(false))?;
    for i in 0..2 {
        wait_ping6(&topo, i, OUTSIDE6)?;
    }
    let (fwd0, _) = topo.counter("default", "route_forwarded")?;
    for i in 0..2 {
        let peer = tcp_from_outside(&topo, i)?;
        ensure!(
            peer.ip().to_string() == guest6(i),
            "guest {i}: outside host saw {peer}, expected the guest's own address {} (IPv6 is routed without ipv6='yes')",
            guest6(i)
        );
    }
    let (fwd1, _) = topo.counter("default", "route_forwarded")?;
    ensure!(
        fwd1 > fwd0,
        "the guests' IPv6 did not take the eBPF routing path (route_forwarded {fwd0} -> {fwd1})"
    );
    // As with libvirt's routing rules, the outside host reaches the guests.
    let target: SocketAddr = format!("[{}]:8080", guest6(0)).parse()?;
    let listener = topo.guests[0]
        .ns
        .enter(move || std::net::TcpListener::bind(target))??;
    let attempt = topo
        .wan
        .enter(move || std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)))?;
    ensure!(
        attempt.is_ok(),
        "the outside host could not reach a guest's routed IPv6 address: {:?}",
        attempt.err()
    );
    drop(listener);
    topo.stop()?;
    Ok(())
}

#[test]
fn ipv6_forwarding_is_refused_where_it_would_drop_ra_routes() -> Result<()> {
    let mut topo = topology("n6ra")?;
    // A route learned from a router advertisement on the uplink, whose
    // accept_ra is the default (1): forwarding on would make the kernel
    // ignore further advertisements there and the route expire.
    topo.hyp.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:77::/64",
        "dev",
        "up0",
        "proto",
        "ra",
    ])?;
    let file = topo.state_dir.join("ra.xml");
    std::fs::create_dir_all(&topo.state_dir)?;
    std::fs::write(&file, xml(true))?;
    let out = topo.vxdp_status(&["net-create", file.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "net-create turned IPv6 forwarding on despite an RA route on up0 with accept_ra 1"
    );
    ensure!(
        err.contains("up0") && err.contains("accept_ra"),
        "the refusal should name up0 and accept_ra: {err}"
    );
    let fwd = topo
        .hyp
        .exec("sysctl", &["-n", "net.ipv6.conf.all.forwarding"])?;
    ensure!(
        String::from_utf8_lossy(&fwd.stdout).trim() == "0",
        "IPv6 forwarding changed although the start was refused"
    );
    // With accept_ra=2 the routes survive forwarding: the start goes ahead.
    topo.hyp
        .exec("sysctl", &["-qw", "net.ipv6.conf.up0.accept_ra=2"])?;
    topo.start(&xml(true))?;
    topo.stop()?;
    Ok(())
}

#[test]
fn a_dataplane_pinned_before_nat66_still_lists_flushes_and_stops() -> Result<()> {
    // An upgrade adopts the dataplane an older vxdp pinned, which has no
    // NAT66 maps; unpinning them from a current one looks the same to the
    // control plane (the programs keep the maps alive).
    let mut topo = topology("n6old")?;
    topo.start(vxdp_testkit::DEFAULT_XML)?;
    topo.wait_ping(0, vxdp_testkit::OUTSIDE_HOST, Duration::from_secs(15))?;
    // An older vxdp pinned no layout marker either: the maps tell its layout.
    for map in [
        vxdp_common::names::MAP_NAT6,
        vxdp_common::names::MAP_CONNTRACK6,
    ] {
        std::fs::remove_file(topo.bpffs.join("maps").join(map))?;
    }
    std::fs::remove_file(topo.bpffs.join("layout"))?;
    let ct = String::from_utf8(topo.vxdp(&["conntrack", "list"])?.stdout)?;
    ensure!(
        ct.contains(vxdp_testkit::UPLINK_ADDR),
        "the IPv4 flows should still be listed:\n{ct}"
    );
    topo.vxdp(&["conntrack", "flush"])?;
    topo.vxdp(&["stats"])?;
    topo.stop()?;
    Ok(())
}

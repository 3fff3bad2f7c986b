//! Multicast and link-local traffic inside a network, in every mode vxdp
//! realizes on a bridge: what libvirt's bridges let through must keep
//! working with vxdp's programs on the ports. For each mode, two guests in
//! throwaway namespaces check:
//! - mDNS: a datagram to 224.0.0.251:5353 from one guest reaches the other
//!   (multicast inside the network);
//! - IPv6 neighbour discovery: one guest pings the other's link-local
//!   address (ND solicitations are multicast, the echo is unicast);
//! - ARP: covered by every unicast ping of the connection matrix.
//!
//! Needs root (network namespaces, BPF).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns};
use vxdp_tests::matrix::{HOST_BRIDGE_XML, VERY_ISOLATED_XML, prepare_host_bridge, routed_xml};

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;

/// The IPv6 link-local address of `dev` in `ns`, once it is usable (DAD
/// done), within `within`.
fn link_local(ns: &Netns, dev: &str, within: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        let out = String::from_utf8(
            ns.ip(&["-6", "-o", "addr", "show", "dev", dev, "scope", "link"])?
                .stdout,
        )?;
        if !out.contains("tentative")
            && let Some(addr) = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
        {
            return Ok(addr.split('/').next().unwrap_or(addr).to_string());
        }
        if start.elapsed() > within {
            bail!(
                "{dev} in {} has no usable link-local address: {out}",
                ns.name
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends up to 10 mDNS-like datagrams from guest 0 (one every 200 ms) and
/// returns whether guest 1, joined to the group, received one.
fn mdns_reaches(topo: &NatTopology) -> Result<bool> {
    let (g0, g1) = (&topo.guests[0], &topo.guests[1]);
    let g1_addr: Ipv4Addr = g1.addr.parse()?;
    let rx = g1.ns.enter(move || -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT))?;
        s.join_multicast_v4(&MDNS_GROUP, &g1_addr)?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(s)
    })??;
    let g0_addr: Ipv4Addr = g0.addr.parse()?;
    let tx = g0.ns.enter(move || -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind(SocketAddrV4::new(g0_addr, 0))?;
        s.set_multicast_ttl_v4(255)?;
        Ok(s)
    })??;
    let payload = b"vxdp multicast probe";
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        tx.send_to(payload, SocketAddrV4::new(MDNS_GROUP, MDNS_PORT))?;
        if let Ok((n, from)) = rx.recv_from(&mut buf)
            && &buf[..n] == payload
        {
            ensure!(
                from.ip().to_string() == g0.addr,
                "the datagram came from {from}, not guest 0"
            );
            return Ok(true);
        }
    }
    Ok(false)
}

/// Pings guest 1's link-local address from guest 0 (neighbour discovery
/// first) for up to 10 s.
fn ipv6_link_local_reaches(topo: &NatTopology) -> Result<bool> {
    let (g0, g1) = (&topo.guests[0], &topo.guests[1]);
    link_local(&g0.ns, "eth0", Duration::from_secs(10))?;
    let target = format!(
        "{}%eth0",
        link_local(&g1.ns, "eth0", Duration::from_secs(10))?
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if g0
            .ns
            .exec_status("ping", &["-6", "-c", "1", "-W", "1", &target])?
            .status
            .success()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check_mode(
    name: &str,
    xml: &str,
    prepare: Option<fn(&mut NatTopology) -> Result<()>>,
) -> Result<()> {
    let mut topo = NatTopology::new(&format!("mc{}", &name[..2]), 2)?;
    if let Some(prepare) = prepare {
        prepare(&mut topo)?;
    }
    topo.start_with(xml, true)?;
    // Ports leave STP's listening and learning states first.
    let peer = topo.guests[1].addr.clone();
    topo.wait_ping(0, &peer, Duration::from_secs(20))
        .context("guests never reached each other")?;
    let mdns = mdns_reaches(&topo)?;
    let nd = ipv6_link_local_reaches(&topo)?;
    println!(
        "vxdp, mode {name}: mDNS between guests {}; IPv6 ND + link-local ping {}",
        yn(mdns),
        yn(nd)
    );
    ensure!(
        mdns,
        "{name}: guest 1 never received guest 0's mDNS datagram"
    );
    ensure!(
        nd,
        "{name}: guest 0 could not reach guest 1's IPv6 link-local address"
    );
    topo.stop()
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[test]
fn multicast_and_neighbour_discovery_work_in_nat_mode() -> Result<()> {
    check_mode("nat", DEFAULT_XML, None)
}

#[test]
fn multicast_and_neighbour_discovery_work_in_route_and_open_modes() -> Result<()> {
    check_mode("route", &routed_xml("route"), None)?;
    check_mode("open", &routed_xml("open"), None)
}

#[test]
fn multicast_and_neighbour_discovery_work_in_isolated_modes() -> Result<()> {
    check_mode("isolated", &routed_xml(""), None)?;
    check_mode("very-isolated", VERY_ISOLATED_XML, None)
}

#[test]
fn multicast_and_neighbour_discovery_work_in_host_bridge_mode() -> Result<()> {
    check_mode("bridge", HOST_BRIDGE_XML, Some(prepare_host_bridge))
}

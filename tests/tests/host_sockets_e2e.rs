//! A guest must not take over the host's own connections: vxdp's NAT never
//! picks a port a host socket uses for the same remote (the guest's own
//! port or any other candidate, IPv4 and NAT66), and a host socket that
//! takes a guest flow's tuple afterwards gets its answers. Measured before
//! the first fix: a host UDP socket on the uplink address and port 40000
//! talking to an outside server, then a guest sending from port 40000 to
//! the same server, and the server's next answer to the host went to the
//! guest.
//!
//! Needs root (network namespaces, BPF).

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, UPLINK_ADDR, fetch, serve_payload, udp_echo,
};
use vxdp_tests::ipv6nat::{OUTSIDE6, UPLINK6, topology, wait_ping6, xml};

const PORT: u16 = 40000;

fn ask(sock: &UdpSocket, msg: &[u8]) -> Result<String> {
    sock.send(msg)?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).context("no answer")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A UDP socket in `ns` bound to `local` and connected to `remote`.
fn connected(ns: &Netns, local: SocketAddr, remote: SocketAddr) -> Result<UdpSocket> {
    ns.enter(move || -> Result<UdpSocket> {
        let s = UdpSocket::bind(local)?;
        s.connect(remote)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    })?
}

/// The host talks to the outside server from `uplink`:40000, then guest 0
/// sends from port 40000 (bound on `guest_any`) to the same server: the
/// guest's flow must get another port, and both keep their answers.
fn host_socket_port_is_not_given_to_a_guest(
    topo: &NatTopology,
    uplink: &str,
    guest_any: &str,
    server_bind: &str,
) -> Result<()> {
    let (server, echo) = udp_echo(&topo.wan, server_bind, 4)?;
    let host_addr: SocketAddr = format!("{uplink}:{PORT}").parse()?;
    let host = connected(&topo.hyp, host_addr, server)?;
    let first = ask(&host, b"host 1")?;
    ensure!(
        first.ends_with("host 1"),
        "the host's first question got {first:?}"
    );

    let guest = connected(
        &topo.guests[0].ns,
        format!("{guest_any}:{PORT}").parse()?,
        server,
    )?;
    let answer = ask(&guest, b"guest 1")?;
    let (seen_as, _) = answer.split_once('|').context("malformed echo")?;
    ensure!(
        seen_as != host_addr.to_string(),
        "the guest's flow was given the host socket's port: the server saw it as {seen_as}"
    );

    // The host still gets its own answers, and the guest its own.
    let second = ask(&host, b"host 2")
        .context("the host's second question got no answer (delivered to the guest?)")?;
    ensure!(
        second.ends_with("host 2"),
        "the host's second question got {second:?}"
    );
    let again = ask(&guest, b"guest 2")?;
    ensure!(
        again.ends_with("guest 2"),
        "the guest's second question got {again:?}"
    );
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))??;
    println!("host socket {host_addr} kept its answers; the guest's flow was seen as {seen_as}");
    Ok(())
}

#[test]
fn a_guest_cannot_take_over_a_host_socket_s_port() -> Result<()> {
    let mut topo = NatTopology::new("hs", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    host_socket_port_is_not_given_to_a_guest(
        &topo,
        UPLINK_ADDR,
        "0.0.0.0",
        &format!("{OUTSIDE_HOST}:5353"),
    )?;
    topo.stop()
}

#[test]
fn a_nat66_guest_cannot_take_over_a_host_socket_s_port() -> Result<()> {
    let mut topo = topology("hs6")?;
    topo.start(&xml(true))?;
    wait_ping6(&topo, 0, OUTSIDE6)?;
    host_socket_port_is_not_given_to_a_guest(
        &topo,
        &format!("[{UPLINK6}]"),
        "[::]",
        &format!("[{OUTSIDE6}]:5353"),
    )?;
    topo.stop()
}

/// The NAT port range is two ports, 40000 and 40001, and a host service
/// listens on TCP 40000: every guest connection must leave from 40001 (a
/// flow on 40000 would take the remote's connections to that service),
/// whatever port the guest used. Eight connections to eight server ports
/// (one reply tuple each): with the port drawn at random among the two,
/// one in 256 runs would pass by chance without the check.
#[test]
fn random_nat_ports_avoid_host_listeners() -> Result<()> {
    let mut topo = NatTopology::new("hsr", 1)?;
    let xml = DEFAULT_XML.replace(
        "<forward mode='nat'/>",
        "<forward mode='nat'><nat><port start='40000' end='40001'/></nat></forward>",
    );
    ensure!(xml != DEFAULT_XML, "the test's network XML was not changed");
    topo.start(&xml)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let _listener = topo
        .hyp
        .enter(move || std::net::TcpListener::bind((UPLINK_ADDR, PORT)))??;
    let (ex0, _) = topo.counter("default", "nat_port_exhausted")?;
    for i in 0..8 {
        let (addr, server) =
            serve_payload(&topo.wan, &format!("{OUTSIDE_HOST}:0"), b"hello".to_vec())?;
        let got = fetch(&topo.guests[0].ns, addr, Duration::from_secs(5))
            .with_context(|| format!("connection {i} to {addr} failed"))?;
        let peer = server
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))??;
        ensure!(got == b"hello", "connection {i}: got {got:?}");
        ensure!(
            peer.to_string() == format!("{UPLINK_ADDR}:{}", PORT + 1),
            "connection {i} left as {peer}: NAT may only use 40001 (a host service listens on 40000)"
        );
    }
    let (ex1, _) = topo.counter("default", "nat_port_exhausted")?;
    println!("8 connections, all from {UPLINK_ADDR}:40001; nat_port_exhausted {ex0} -> {ex1}");
    topo.stop()
}

/// The guest's flow exists first (its own port 40000 kept); then a host
/// socket binds the same address and port and talks to the same server.
/// After the flow's once-a-second check, the server's answers to the host
/// reach the host, and the guest's next datagram gets another NAT port.
#[test]
fn a_host_socket_opened_after_a_guest_flow_gets_its_answers() -> Result<()> {
    let mut topo = NatTopology::new("hsa", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let (server, echo) = udp_echo(&topo.wan, &format!("{OUTSIDE_HOST}:5353"), 3)?;
    let guest = connected(
        &topo.guests[0].ns,
        format!("0.0.0.0:{PORT}").parse()?,
        server,
    )?;
    let first = ask(&guest, b"guest 1")?;
    let host_addr = format!("{UPLINK_ADDR}:{PORT}");
    ensure!(
        first.starts_with(&format!("{host_addr}|")),
        "the guest's own port should be kept while no host socket uses it: {first:?}"
    );

    let host = connected(&topo.hyp, host_addr.parse()?, server)?;
    // Past the flow's refresh interval (1 s), when the uplink checks it.
    std::thread::sleep(Duration::from_millis(1500));
    let (y0, _) = topo.counter("default", "flow_yielded_to_host")?;
    let answer = ask(&host, b"host 1")
        .context("the host's question got no answer (delivered to the guest's flow?)")?;
    ensure!(
        answer.ends_with("host 1"),
        "the host's question got {answer:?}"
    );
    let (y1, _) = topo.counter("default", "flow_yielded_to_host")?;
    ensure!(
        y1 == y0 + 1,
        "flow_yielded_to_host went {y0} -> {y1}, expected +1"
    );

    let again = ask(&guest, b"guest 2").context("the guest's flow did not recover")?;
    let (seen_as, _) = again.split_once('|').context("malformed echo")?;
    ensure!(
        again.ends_with("guest 2") && seen_as != host_addr,
        "the guest's next datagram should leave from another port: {again:?}"
    );
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))??;
    println!("the host's socket {host_addr} got its answer; the guest moved to {seen_as}");
    topo.stop()
}

//! A guest must not take over the host's own connections: vxdp's NAT keeps
//! a guest's source port only when no host socket uses it for the same
//! remote. Measured before the fix: a host UDP socket on the uplink address
//! and port 40000 talking to an outside server, then a guest sending from
//! port 40000 to the same server, and the server's next answer to the host
//! went to the guest.
//!
//! Needs root (network namespaces, BPF).

use std::{net::UdpSocket, time::Duration};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR, udp_echo};

const PORT: u16 = 40000;

fn ask(sock: &UdpSocket, msg: &[u8]) -> Result<String> {
    sock.send(msg)?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).context("no answer")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn a_guest_cannot_take_over_a_host_socket_s_port() -> Result<()> {
    let mut topo = NatTopology::new("hs", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let (server, echo) = udp_echo(&topo.wan, &format!("{OUTSIDE_HOST}:5353"), 4)?;

    // The host's socket: the uplink address, port 40000, to the server.
    let host = topo.hyp.enter(move || -> Result<UdpSocket> {
        let s = UdpSocket::bind((UPLINK_ADDR, PORT))?;
        s.connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    })??;
    let first = ask(&host, b"host 1")?;
    ensure!(
        first.ends_with("host 1"),
        "the host's first question got {first:?}"
    );

    // The guest sends from the same port to the same server.
    let guest = topo.guests[0].ns.enter(move || -> Result<UdpSocket> {
        let s = UdpSocket::bind(("0.0.0.0", PORT))?;
        s.connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    })??;
    let answer = ask(&guest, b"guest 1")?;
    let (seen_as, _) = answer.split_once('|').context("malformed echo")?;
    ensure!(
        seen_as != format!("{UPLINK_ADDR}:{PORT}"),
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
    println!(
        "host socket {UPLINK_ADDR}:{PORT} kept its answers; the guest's flow was seen as {seen_as}"
    );
    topo.stop()
}

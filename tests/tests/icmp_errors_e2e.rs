//! End to end: ICMP errors about a NATed guest's flows reach the guest, in
//! throwaway namespaces (testkit's NAT topology), so the guest's kernel acts
//! on them: a connected UDP socket sees ECONNREFUSED, and path-MTU
//! discovery learns a smaller MTU behind a router.

use std::{io::ErrorKind, net::UdpSocket, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST};

#[test]
fn udp_to_a_closed_port_outside_gives_the_guest_econnrefused() -> Result<()> {
    let mut topo = NatTopology::new("icmpu", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let (before, _) = topo.counter("default", "icmp_error_translated")?;

    // Nobody listens on the discard port in the outside namespace: its
    // kernel answers with ICMP port unreachable, to the uplink address.
    let target = format!("{OUTSIDE_HOST}:9");
    let result = topo.guests[0].ns.enter(move || -> Result<ErrorKind> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(&target)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send(b"anyone there?")?;
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Ok(n) => bail!("got {n} bytes from a port nobody listens on"),
            Err(e) => Ok(e.kind()),
        }
    })??;
    ensure!(
        result == ErrorKind::ConnectionRefused,
        "the guest's connected UDP socket got {result:?} instead of ECONNREFUSED: the ICMP port unreachable did not reach it translated"
    );
    let (after, _) = topo.counter("default", "icmp_error_translated")?;
    ensure!(
        after > before,
        "icmp_error_translated did not move ({before} -> {after}): the error took another path"
    );
    Ok(())
}

#[test]
fn frag_needed_from_a_router_teaches_the_guest_the_path_mtu() -> Result<()> {
    const FAR: &str = "192.0.2.20";
    let mut topo = NatTopology::new("icmpm", 1)?;
    // Beyond the outside namespace, acting as a router, a host on a link
    // with MTU 1280.
    let far = Netns::new(format!("{}-far", topo.prefix))?;
    topo.wan.ip(&[
        "link", "add", "far0", "mtu", "1280", "type", "veth", "peer", "name", "eth0", "mtu",
        "1280", "netns", &far.name,
    ])?;
    topo.wan
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "far0"])?;
    topo.wan.ip(&["link", "set", "far0", "up"])?;
    topo.wan.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    far.ip(&["addr", "add", &format!("{FAR}/24"), "dev", "eth0"])?;
    far.ip(&["link", "set", "eth0", "up"])?;
    far.ip(&["route", "add", "default", "via", "192.0.2.1"])?;
    // The far host answers the NAT address through the router.
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, FAR, Duration::from_secs(15))?;
    let guest = &topo.guests[0].ns;
    let (before, _) = topo.counter("default", "icmp_error_translated")?;

    // 1400 bytes with DF: fits every link up to the router, not the last.
    let out = guest.exec_status(
        "ping",
        &["-c", "1", "-W", "2", "-M", "do", "-s", "1372", FAR],
    )?;
    ensure!(
        !out.status.success(),
        "a 1400-byte DF ping crossed a 1280-byte link: the test topology is wrong\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let route = String::from_utf8(guest.ip(&["route", "get", FAR])?.stdout)?;
    let mtu = route
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .with_context(|| format!("the guest learned no path MTU for {FAR} from the router's frag needed (route: {route:?})"))?;
    ensure!(
        mtu == "1280",
        "the guest learned path MTU {mtu} for {FAR}, the router said 1280 (route: {route:?})"
    );
    let (after, _) = topo.counter("default", "icmp_error_translated")?;
    ensure!(
        after > before,
        "icmp_error_translated did not move ({before} -> {after})"
    );

    // With the learned MTU the guest's kernel now sizes its packets to fit:
    // a 1280-byte DF ping gets through.
    let out = guest.exec_status(
        "ping",
        &["-c", "1", "-W", "2", "-M", "do", "-s", "1252", FAR],
    )?;
    ensure!(
        out.status.success(),
        "a 1280-byte DF ping did not get through: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[test]
fn nat66_udp_to_a_closed_port_outside_gives_the_guest_econnrefused() -> Result<()> {
    use vxdp_tests::ipv6nat::{OUTSIDE6, topology, wait_ping6, xml};
    let mut topo = topology("icmp6")?;
    topo.start(&xml(true))?;
    wait_ping6(&topo, 0, OUTSIDE6)?;
    let (before, _) = topo.counter("default", "icmp_error_translated")?;
    let target = format!("[{OUTSIDE6}]:9");
    let result = topo.guests[0].ns.enter(move || -> Result<ErrorKind> {
        let s = UdpSocket::bind("[::]:0")?;
        s.connect(&target)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send(b"anyone there?")?;
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Ok(n) => bail!("got {n} bytes from a port nobody listens on"),
            Err(e) => Ok(e.kind()),
        }
    })??;
    ensure!(
        result == ErrorKind::ConnectionRefused,
        "the guest's connected UDP socket (NAT66) got {result:?} instead of ECONNREFUSED: the ICMPv6 port unreachable did not reach it translated"
    );
    let (after, _) = topo.counter("default", "icmp_error_translated")?;
    ensure!(
        after > before,
        "icmp_error_translated did not move ({before} -> {after})"
    );
    Ok(())
}

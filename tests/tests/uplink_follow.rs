//! End to end: a started NAT network follows the host's uplink. When the
//! uplink's address changes (a DHCP renew, an operator's `ip addr`) or the
//! default route moves to another interface, the next reconcile pass
//! (`vxdp load` here; `vxdp serve` runs one every --reconcile-interval)
//! masquerades to the new address, on the new uplink, and flushes the flows
//! of the old address, as the kernel's masquerade does.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR, WAN_ADDR};

const ECHO_PORT: u16 = 7000;

/// A UDP socket on an ephemeral port in guest 0's namespace.
fn guest_socket(topo: &NatTopology) -> Result<UdpSocket> {
    let guest = topo.guests[0]
        .ns
        .enter(|| UdpSocket::bind("0.0.0.0:0"))?
        .context("binding the guest's socket")?;
    guest.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(guest)
}

/// A UDP socket bound in the outside host's namespace, and one in guest 0's.
fn sockets(topo: &NatTopology) -> Result<(UdpSocket, UdpSocket)> {
    let outside: SocketAddr = format!("{OUTSIDE_HOST}:{ECHO_PORT}").parse()?;
    let wan = topo
        .wan
        .enter(move || UdpSocket::bind(outside))?
        .context("binding the outside host's socket")?;
    wan.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok((wan, guest_socket(topo)?))
}

/// Sends `what` from the guest's socket to the outside host and returns the
/// source address the outside host saw; the outside host answers and the
/// guest must get the answer.
fn round_trip(wan: &UdpSocket, guest: &UdpSocket, what: &[u8]) -> Result<Ipv4Addr> {
    let outside: SocketAddr = format!("{OUTSIDE_HOST}:{ECHO_PORT}").parse()?;
    let mut buf = [0u8; 64];
    // The first datagram of a flow can race the guest's ARP for its
    // gateway: a few tries, each bounded.
    let mut seen = None;
    for _ in 0..5 {
        guest.send_to(what, outside)?;
        if let Ok((n, from)) = wan.recv_from(&mut buf)
            && &buf[..n] == what
        {
            seen = Some(from);
            break;
        }
    }
    let from = seen.with_context(|| {
        format!(
            "the outside host never received {:?} from the guest",
            String::from_utf8_lossy(what)
        )
    })?;
    wan.send_to(b"reply", from)?;
    let (n, _) = guest.recv_from(&mut buf).with_context(|| {
        format!(
            "the guest got no reply to {:?}",
            String::from_utf8_lossy(what)
        )
    })?;
    ensure!(&buf[..n] == b"reply", "the guest got {:?}", &buf[..n]);
    match from.ip() {
        std::net::IpAddr::V4(a) => Ok(a),
        other => anyhow::bail!("an IPv4 flow arrived from {other}"),
    }
}

fn reconcile(topo: &NatTopology) -> Result<String> {
    let out = topo.vxdp(&["load"])?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn nat_follows_a_new_uplink_address() -> Result<()> {
    let mut topo = NatTopology::new("fola", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let (wan, guest) = sockets(&topo)?;
    let before: Ipv4Addr = UPLINK_ADDR.parse()?;
    ensure!(round_trip(&wan, &guest, b"one")? == before);

    // The uplink is renumbered as a DHCP client does it: the old address
    // goes (and the default route with it), the new one and the default
    // route come.
    let new = "198.51.100.9";
    topo.hyp
        .ip(&["addr", "del", &format!("{UPLINK_ADDR}/24"), "dev", "up0"])?;
    topo.hyp
        .ip(&["addr", "add", &format!("{new}/24"), "dev", "up0"])?;
    topo.hyp
        .ip(&["route", "replace", "default", "via", WAN_ADDR])?;
    let log = reconcile(&topo)?;
    ensure!(
        log.contains(&format!("now has address {new} (was {UPLINK_ADDR})")),
        "reconcile did not report the new address:\n{log}"
    );

    // The guest's existing flow (same socket) and a new one both leave with
    // the new address, and their replies come back.
    ensure!(
        round_trip(&wan, &guest, b"two")? == new.parse::<Ipv4Addr>()?,
        "the existing flow still leaves with the old address"
    );
    let guest2 = guest_socket(&topo)?;
    ensure!(
        round_trip(&wan, &guest2, b"three")? == new.parse::<Ipv4Addr>()?,
        "a new flow leaves with the old address"
    );
    // Nothing of the old address stays in conntrack.
    let ct = String::from_utf8_lossy(&topo.vxdp(&["conntrack", "list"])?.stdout).into_owned();
    ensure!(
        !ct.contains(UPLINK_ADDR),
        "conntrack still holds flows of the old address:\n{ct}"
    );

    // An address added beside the one in use changes nothing.
    topo.hyp
        .ip(&["addr", "add", "198.51.100.3/24", "dev", "up0"])?;
    let log = reconcile(&topo)?;
    ensure!(
        !log.contains("now has address"),
        "a second address moved NAT:\n{log}"
    );
    ensure!(round_trip(&wan, &guest, b"four")? == new.parse::<Ipv4Addr>()?);

    // No address at all: NAT keeps the last one and says so.
    // The secondary first: removing the primary removes its secondaries.
    for a in ["198.51.100.3", new] {
        topo.hyp
            .ip(&["addr", "del", &format!("{a}/24"), "dev", "up0"])?;
    }
    let log = reconcile(&topo)?;
    ensure!(
        log.contains("has no IPv4 address: NAT keeps 198.51.100.9"),
        "reconcile did not report the missing address:\n{log}"
    );
    Ok(())
}

#[test]
fn nat_follows_the_default_route_to_another_uplink() -> Result<()> {
    let mut topo = NatTopology::new("folr", 1)?;
    // A second way out: up1 (192.0.2.2) to the outside host's wan1.
    topo.hyp.ip(&[
        "link",
        "add",
        "up1",
        "type",
        "veth",
        "peer",
        "name",
        "wan1",
        "netns",
        &topo.wan.name,
    ])?;
    topo.wan
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "wan1"])?;
    topo.wan.ip(&["link", "set", "wan1", "up"])?;
    topo.hyp
        .ip(&["addr", "add", "192.0.2.2/24", "dev", "up1"])?;
    topo.hyp.ip(&["link", "set", "up1", "up"])?;

    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let (wan, guest) = sockets(&topo)?;
    ensure!(round_trip(&wan, &guest, b"one")? == UPLINK_ADDR.parse::<Ipv4Addr>()?);

    topo.hyp.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "192.0.2.1",
        "dev",
        "up1",
    ])?;
    let log = reconcile(&topo)?;
    ensure!(
        log.contains("the default route now leaves through up1: uplink moved from up0"),
        "reconcile did not move the uplink:\n{log}"
    );
    ensure!(
        log.contains("now has address 192.0.2.2"),
        "reconcile did not take up1's address:\n{log}"
    );
    let links = String::from_utf8_lossy(&topo.hyp.ip(&["-d", "link", "show"])?.stdout).into_owned();
    let up1 = links
        .split("\n")
        .skip_while(|l| !l.contains(" up1@"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        up1.contains("xdp"),
        "no XDP program on the new uplink:\n{links}"
    );
    let up0 = links
        .split("\n")
        .skip_while(|l| !l.contains(" up0@"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        !up0.contains("xdp"),
        "the old uplink keeps vxdp's XDP program:\n{links}"
    );
    // Out through up1 with its address; the reply comes in on up1 and is
    // translated back by the program there.
    let (dnat0, _) = topo.counter("default", "dnat_forwarded")?;
    ensure!(round_trip(&wan, &guest, b"two")? == "192.0.2.2".parse::<Ipv4Addr>()?);
    let (dnat1, _) = topo.counter("default", "dnat_forwarded")?;
    ensure!(
        dnat1 > dnat0,
        "the reply did not go through vxdp's reverse NAT on the new uplink"
    );
    Ok(())
}

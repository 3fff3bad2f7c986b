//! Traffic the host forwards into a vxdp network from an interface other
//! than the uplink (a second NIC here; a VPN or a VLAN sub-interface alike)
//! meets the same refusals as traffic arriving on the uplink: nothing into
//! a NAT or isolated network, nothing into a route network with
//! `<forward dev>` but from that device; route mode without it and open
//! mode take it, and the host itself still reaches its guests. libvirt's
//! firewall rules cover every interface; before `vxdp_bridge_out`, with
//! forwarding on and no firewall, the kernel delivered such packets.
//!
//! The hypervisor gets a second interface `lan0` (192.0.2.1/24) to a LAN
//! namespace (192.0.2.2) that routes 192.168.122.0/24 via the hypervisor;
//! forwarding is on in the hypervisor's namespace (as on any host running a
//! NAT network). The LAN sends UDP to a socket in guest 0.
//! Needs root (network namespaces, BPF).

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns};

const LAN_HOST: &str = "192.0.2.2";

/// Adds the LAN namespace behind `lan0` of the hypervisor.
fn add_lan(topo: &NatTopology) -> Result<Netns> {
    let lan = Netns::new(format!("{}-lan", topo.prefix))?;
    topo.hyp.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", &lan.name,
    ])?;
    topo.hyp
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "lan0"])?;
    topo.hyp.ip(&["link", "set", "lan0", "up"])?;
    lan.ip(&["addr", "add", &format!("{LAN_HOST}/24"), "dev", "eth0"])?;
    lan.ip(&["link", "set", "eth0", "up"])?;
    lan.ip(&["route", "add", "192.168.122.0/24", "via", "192.0.2.1"])?;
    topo.hyp
        .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .context("turning forwarding on in the hypervisor's namespace")?;
    Ok(lan)
}

/// Whether a datagram sent from `from` to guest 0 arrives there (three
/// tries, 1 s each).
fn reaches_guest(topo: &NatTopology, from: &Netns) -> Result<bool> {
    let addr: SocketAddr = format!("{}:7777", topo.guests[0].addr).parse()?;
    let sock = topo.guests[0]
        .ns
        .enter(move || UdpSocket::bind(("0.0.0.0", 7777)))??;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let sender = from.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        sender.send_to(b"knock", addr)?;
        if sock.recv(&mut buf).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Starts `xml`, checks the LAN's datagram is refused (and counted as
/// `drop`) or delivered (`drop` = None), and that the host reaches the guest.
fn check(tag: &str, xml: &str, drop: Option<&str>) -> Result<()> {
    let mut topo = NatTopology::new(tag, 1)?;
    let lan = add_lan(&topo)?;
    topo.start_with(xml, true)?;
    topo.wait_ping(0, "192.168.122.1", Duration::from_secs(20))?;
    let before = match drop {
        Some(name) => topo.counter("default", name)?.0,
        None => 0,
    };
    let arrived = reaches_guest(&topo, &lan)?;
    match drop {
        Some(name) => {
            let after = topo.counter("default", name)?.0;
            ensure!(
                !arrived,
                "{tag}: a datagram from the LAN (not the uplink) reached the guest"
            );
            ensure!(
                after > before,
                "{tag}: the LAN's datagrams were not counted as {name} ({before} -> {after})"
            );
        }
        None => ensure!(arrived, "{tag}: the LAN's datagram did not reach the guest"),
    }
    ensure!(
        reaches_guest(&topo, &topo.hyp)?,
        "{tag}: the host itself no longer reaches its guest"
    );
    println!(
        "{tag}: LAN -> guest {}",
        if arrived { "delivered" } else { "refused" }
    );
    topo.stop()
}

fn routed_xml(forward: &str) -> String {
    format!(
        "<network><name>default</name>{forward}<bridge name='virbr0' stp='on' delay='0'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/></network>"
    )
}

#[test]
fn nat_network_refuses_inbound_from_any_interface() -> Result<()> {
    check("oin", DEFAULT_XML, Some("unsolicited_inbound"))
}

#[test]
fn isolated_network_refuses_forwarded_traffic() -> Result<()> {
    check("oii", &routed_xml(""), Some("isolated_network"))
}

#[test]
fn route_network_with_forward_dev_takes_only_that_device() -> Result<()> {
    check(
        "oid",
        &routed_xml("<forward mode='route' dev='up0'/>"),
        Some("inbound_not_via_forward_dev"),
    )
}

#[test]
fn route_and_open_networks_take_inbound_from_any_interface() -> Result<()> {
    check("oir", &routed_xml("<forward mode='route'/>"), None)?;
    check("oio", &routed_xml("<forward mode='open'/>"), None)
}

//! IPv6 in the NAT topology (testkit's `NatTopology`), shared by the NAT66
//! end-to-end test and its libvirt differential: documentation addresses
//! only (2001:db8::/32), all inside the topology's namespaces.
//!
//! ```text
//!  wan   wan0 2001:db8:0:2::1/64, lo 2001:db8:0:ff::10/128 (outside host)
//!  hyp   up0  2001:db8:0:2::2/64, default via 2001:db8:0:2::1
//!  gN    eth0 2001:db8:0:122::(a+N)/64, default via 2001:db8:0:122::1
//! ```

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Result, bail};

use crate::matrix::accepted_peer;

use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns};

/// The outside host's IPv6 address (on the wan namespace's loopback).
pub const OUTSIDE6: &str = "2001:db8:0:ff::10";
pub const WAN6: &str = "2001:db8:0:2::1";
pub const UPLINK6: &str = "2001:db8:0:2::2";
/// The guests' prefix (the bridge is ::1, guest N is ::a+N).
pub const GUESTS6: &str = "2001:db8:0:122::";

/// libvirt's default network with an IPv6 `<ip>`; NAT66 when `nat66`.
pub fn xml(nat66: bool) -> String {
    let ipv6 = format!("<ip family='ipv6' address='{GUESTS6}1' prefix='64'/>\n</network>");
    let xml = DEFAULT_XML.replace("</network>", &ipv6);
    assert!(
        xml.contains("<forward mode='nat'/>"),
        "testkit/data/default.xml changed: {xml}"
    );
    if nat66 {
        xml.replace(
            "<forward mode='nat'/>",
            "<forward mode='nat'>\n    <nat ipv6='yes'/>\n  </forward>",
        )
    } else {
        xml
    }
}

/// Guest `i`'s IPv6 address.
pub fn guest6(i: usize) -> String {
    format!("{GUESTS6}{:x}", 10 + i)
}

/// `NatTopology::new(tag, 2)` plus the IPv6 addresses and routes above.
/// The outside host also routes the guests' prefix to the hypervisor:
/// routed IPv6 needs it, and refusing unsolicited NAT66 inbound proves
/// something only with it.
pub fn topology(tag: &str) -> Result<NatTopology> {
    let topo = NatTopology::new(tag, 2)?;
    topo.wan.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{WAN6}/64"),
        "dev",
        "wan0",
        "nodad",
    ])?;
    topo.wan
        .ip(&["-6", "addr", "add", &format!("{OUTSIDE6}/128"), "dev", "lo"])?;
    topo.wan.ip(&[
        "-6",
        "route",
        "add",
        &format!("{GUESTS6}/64"),
        "via",
        UPLINK6,
    ])?;
    topo.hyp.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{UPLINK6}/64"),
        "dev",
        "up0",
        "nodad",
    ])?;
    topo.hyp
        .ip(&["-6", "route", "add", "default", "via", WAN6])?;
    for (i, g) in topo.guests.iter().enumerate() {
        g.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", guest6(i)),
            "dev",
            "eth0",
            "nodad",
        ])?;
        g.ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("{GUESTS6}1"),
        ])?;
    }
    Ok(topo)
}

/// Pings `dst` from guest `i` until one echo comes back, at most 30 tries
/// of 1 s (the bridge's address goes through duplicate address detection,
/// and libvirt's bridge runs STP).
pub fn wait_ping6(topo: &NatTopology, i: usize, dst: &str) -> Result<()> {
    for _ in 0..30 {
        let out = topo.guests[i]
            .ns
            .exec_status("ping", &["-6", "-c", "1", "-W", "1", dst])?;
        if out.status.success() {
            return Ok(());
        }
    }
    bail!("guest {i} cannot ping6 {dst} within 30 attempts")
}

/// Ping6 and a TCP connect from `from` to `dst` (a listener on `[::]` in
/// `server`, as `matrix::measure` for IPv4): (ping answered, TCP connected, the address the server saw).
pub fn measure6(from: &Netns, dst: &str, server: &Netns) -> Result<(bool, bool, Option<IpAddr>)> {
    let ping = from
        .exec_status("ping", &["-6", "-c", "1", "-W", "2", dst])?
        .status
        .success();
    let l = listener6(server)?;
    let target: SocketAddr = format!("[{dst}]:{}", l.local_addr()?.port()).parse()?;
    let tcp = from
        .enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))?
        .is_ok();
    let peer = if tcp {
        accepted_peer(&l, Duration::from_secs(3)).map(|p| p.ip())
    } else {
        None
    };
    Ok((ping, tcp, peer))
}

fn listener6(ns: &Netns) -> Result<std::net::TcpListener> {
    let l = ns.enter(|| std::net::TcpListener::bind("[::]:0"))??;
    l.set_nonblocking(true)?;
    Ok(l)
}

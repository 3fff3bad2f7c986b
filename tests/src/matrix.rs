//! The connection table of DESIGN.md §2 as data, and how one cell is
//! measured (ping and a TCP connect between namespaces), shared by the vxdp
//! matrix tests and the differential test against libvirt.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use vxdp_testkit::{NatTopology, Netns, UPLINK_ADDR};

/// The guests' gateway: the host's address on the bridge.
pub const GATEWAY: &str = "192.168.122.1";

/// The name every matrix network has (as in libvirt's default network).
pub const DEFAULT_XML_NAME: &str = "default";

/// The cells, in the order of the table's columns.
pub const CELLS: [&str; 4] = [
    "guest→host",
    "guest→guest",
    "guest→outside",
    "outside→guest",
];

/// A network with libvirt's default subnet on bridge `virbr0`, named
/// `default`; `mode` empty means no `<forward>` (isolated).
pub fn routed_xml(mode: &str) -> String {
    let forward = if mode.is_empty() {
        String::new()
    } else {
        format!("<forward mode='{mode}'/>")
    };
    format!(
        "<network><name>default</name>{forward}<bridge name='virbr0' stp='on' delay='0'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/></network>"
    )
}

/// Very isolated: no `<forward>`, no `<ip>`.
pub const VERY_ISOLATED_XML: &str =
    "<network><name>default</name><bridge name='virbr0' stp='on' delay='0'/></network>";

/// Host bridge mode on the bridge [`prepare_host_bridge`] builds.
pub const HOST_BRIDGE_XML: &str =
    "<network><name>default</name><forward mode='bridge'/><bridge name='br0'/></network>";

/// DESIGN.md §2 for the modes vxdp realizes: (mode, yes/no per cell).
pub const TABLE: [(&str, [bool; 4]); 6] = [
    ("nat", [true, true, true, false]),
    ("route", [true, true, true, true]),
    ("open", [true, true, true, true]),
    ("isolated", [true, true, false, false]),
    ("very-isolated", [false, true, false, false]),
    ("bridge", [true, true, true, true]),
];

/// The table's row for `mode`.
pub fn expected(mode: &str) -> [bool; 4] {
    TABLE
        .iter()
        .find(|(m, _)| *m == mode)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("no row for mode {mode}"))
}

/// Listens on an ephemeral port in `ns`, non-blocking so a cell never hangs.
pub fn listener(ns: &Netns) -> Result<TcpListener> {
    let l = ns.enter(|| TcpListener::bind("0.0.0.0:0"))??;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The address the listener saw the client come from, within `within`.
pub fn accepted_peer(l: &TcpListener, within: Duration) -> Option<SocketAddr> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok((_, peer)) = l.accept() {
            return Some(peer);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One measured cell: did ping work, did TCP connect, and from where the
/// server saw the connection.
pub struct Measured {
    pub ping: bool,
    pub tcp: bool,
    pub peer: Option<IpAddr>,
}

/// Ping and a TCP connect from `from` to `dst` (a listener in `server`).
pub fn measure(from: &Netns, dst: &str, server: &Netns) -> Result<Measured> {
    let ping = from
        .exec_status("ping", &["-c", "1", "-W", "2", dst])?
        .status
        .success();
    let l = listener(server)?;
    let port = l.local_addr()?.port();
    let target: SocketAddr = format!("{dst}:{port}").parse()?;
    let tcp = from
        .enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))?
        .is_ok();
    let peer = if tcp {
        accepted_peer(&l, Duration::from_secs(3)).map(|p| p.ip())
    } else {
        None
    };
    Ok(Measured { ping, tcp, peer })
}

/// The MAC of `dev` in `ns`.
pub fn mac_of(ns: &Netns, dev: &str) -> Result<String> {
    let link = String::from_utf8(ns.ip(&["-o", "link", "show", dev])?.stdout)?;
    match link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
    {
        Some(mac) => Ok(mac.to_string()),
        None => bail!("{dev} has no MAC: {link}"),
    }
}

/// Host bridge: the operator's bridge `br0` holds the uplink and the host's
/// address; guests get addresses of the uplink's LAN.
pub fn prepare_host_bridge(topo: &mut NatTopology) -> Result<()> {
    let hyp = &topo.hyp;
    hyp.ip(&["link", "add", "br0", "type", "bridge"])?;
    hyp.ip(&["addr", "del", &format!("{UPLINK_ADDR}/24"), "dev", "up0"])?;
    hyp.ip(&["link", "set", "up0", "master", "br0"])?;
    hyp.ip(&["addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", "br0"])?;
    hyp.ip(&["link", "set", "br0", "up"])?;
    hyp.ip(&["route", "replace", "default", "via", "198.51.100.1"])?;
    for (i, g) in topo.guests.iter_mut().enumerate() {
        g.addr = format!("198.51.100.{}", 10 + i);
        g.ns.ip(&["addr", "flush", "dev", "eth0"])?;
        g.ns.ip(&["addr", "add", &format!("{}/24", g.addr), "dev", "eth0"])?;
        g.ns.ip(&["route", "replace", "default", "via", "198.51.100.1"])?;
    }
    Ok(())
}

/// Direct (macvtap-like) modes, in the order of DESIGN.md §2's last row.
pub const DIRECT_MODES: [&str; 4] = ["bridge", "vepa", "private", "passthrough"];

/// A direct network on the hypervisor's uplink `up0`: libvirt gives each
/// guest a macvtap device on it; vxdp steers frames by MAC in eBPF.
pub fn direct_xml(mode: &str) -> String {
    format!(
        "<network><name>default</name><forward mode='{mode}'><interface dev='up0'/></forward></network>"
    )
}

/// How many guests a direct mode's topology has: in passthrough one guest
/// owns the NIC, so there is no second one.
pub fn direct_guests(mode: &str) -> usize {
    if mode == "passthrough" { 1 } else { 2 }
}

/// DESIGN.md §2's direct row for vxdp, per cell of [`CELLS`]; `None` where
/// the cell does not apply (guest→guest in passthrough). VEPA's
/// guest→guest is "yes" because [`prepare_direct`]'s switch reflects
/// frames back to the port they came from (hairpin, "reflective relay").
pub fn direct_expected(mode: &str) -> [Option<bool>; 4] {
    match mode {
        "bridge" | "vepa" => [Some(true); 4],
        "private" => [Some(true), Some(false), Some(true), Some(true)],
        "passthrough" => [Some(true), None, Some(true), Some(true)],
        _ => panic!("no direct mode {mode}"),
    }
}

/// Cells where vxdp deliberately goes further than macvtap (libvirt's
/// implementation): the host reaches its guests in every direct mode.
pub fn direct_beyond_macvtap(cell: usize) -> bool {
    cell == 0
}

/// Direct modes: guests take addresses on the uplink's LAN
/// (198.51.100.10 and up, gateway 198.51.100.1), and the far end of the
/// uplink becomes a switch: bridge `sw0` in the wan namespace holds `wan0`
/// with hairpin on (what VEPA needs from the external switch) and the wan
/// address. The hypervisor keeps its address on `up0`.
pub fn prepare_direct(topo: &mut NatTopology) -> Result<()> {
    let wan = &topo.wan;
    wan.ip(&["link", "add", "sw0", "type", "bridge"])?;
    wan.ip(&[
        "addr",
        "del",
        &format!("{}/24", vxdp_testkit::WAN_ADDR),
        "dev",
        "wan0",
    ])?;
    wan.ip(&["link", "set", "wan0", "master", "sw0"])?;
    wan.ip(&[
        "link",
        "set",
        "dev",
        "wan0",
        "type",
        "bridge_slave",
        "hairpin",
        "on",
    ])?;
    wan.ip(&[
        "addr",
        "add",
        &format!("{}/24", vxdp_testkit::WAN_ADDR),
        "dev",
        "sw0",
    ])?;
    wan.ip(&["link", "set", "sw0", "up"])?;
    for (i, g) in topo.guests.iter_mut().enumerate() {
        g.addr = format!("198.51.100.{}", 10 + i);
        g.ns.ip(&["addr", "flush", "dev", "eth0"])?;
        g.ns.ip(&["addr", "add", &format!("{}/24", g.addr), "dev", "eth0"])?;
        g.ns.ip(&["route", "replace", "default", "via", vxdp_testkit::WAN_ADDR])?;
    }
    Ok(())
}

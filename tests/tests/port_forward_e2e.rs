//! End to end: port forwards (`<portForward>`, `vxdp port-forward`) into
//! a NAT network realized by vxdp in throwaway namespaces. The outside
//! host connects to the uplink's address and a forwarded port and reaches
//! the guest's service; the guest's answers come back from the public
//! address and port (connected sockets accept nothing else).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use ops_support::{http_get, wait_http};
use vxdp_control::dataplane::{Maps, Pins, host_sockets, pinned};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, Serve, UPLINK_ADDR, WAN_ADDR, vxdp_bin,
};

#[path = "ops_support/mod.rs"]
mod ops_support;

const LISTEN: &str = "127.0.0.1:9465";

/// A TCP service in a guest: answers each connection with
/// "<peer>|<local port>" and closes it; serves until the topology goes.
fn tcp_service(ns: &Netns, port: u16) -> Result<()> {
    let l = ns.enter(move || TcpListener::bind(("0.0.0.0", port)))??;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let _ = write!(s, "{peer}|{port}");
        }
    });
    Ok(())
}

/// A UDP echo in a guest: answers each datagram with "<peer>|<local
/// port>|<payload>".
fn udp_service(ns: &Netns, port: u16) -> Result<()> {
    let s = ns.enter(move || UdpSocket::bind(("0.0.0.0", port)))??;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let mut reply = format!("{peer}|{port}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, peer);
        }
    });
    Ok(())
}

/// From namespace `wan` (the outside host, or a guest): connects to `dst`
/// and reads the service's answer.
fn tcp_ask(wan: &Netns, dst: &str) -> Result<String> {
    let dst: SocketAddr = dst.parse()?;
    wan.enter(move || -> Result<String> {
        // Generous: a loaded CI machine answers late; refusals (RST)
        // come at once, only a dropped SYN waits this long.
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .with_context(|| format!("connecting to {dst}"))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })?
}

/// From namespace `wan`: one datagram to `dst` on a connected socket
/// (which takes answers only from `dst`), the answer.
fn udp_ask(wan: &Netns, dst: &str, payload: &'static [u8]) -> Result<String> {
    let dst: SocketAddr = dst.parse()?;
    wan.enter(move || -> Result<String> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(dst)?;
        // Generous, as above: a refusal (ICMP port unreachable) ends the
        // wait at once on a connected socket.
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.send(payload)?;
        let mut buf = [0u8; 2048];
        let n = s
            .recv(&mut buf)
            .with_context(|| format!("no answer from {dst}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })?
}

fn stdout(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `vxdp ...` that must fail; its stderr.
fn refused(topo: &NatTopology, args: &[&str]) -> Result<String> {
    let out = topo.vxdp_status(args)?;
    ensure!(
        !out.status.success(),
        "`vxdp {}` should have been refused:\n{}",
        args.join(" "),
        stdout(out)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn outside_reaches_forwarded_tcp_and_udp_ports() -> Result<()> {
    let mut topo = NatTopology::new("pf", 2)?;
    topo.start_with(DEFAULT_XML, true)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let g0 = &topo.guests[0];

    // libvirt's example: 2022 → 22; 5000-5020 → 6000-6020 but 5010-5015.
    topo.vxdp(&[
        "port-forward",
        "add",
        "default",
        "vnet0",
        "--proto",
        "tcp",
        "--range",
        "2022:22",
        "--range",
        "5000-5020:6000",
        "--exclude",
        "5010-5015",
    ])?;
    let xml = topo.state_dir.join("udp-forward.xml");
    std::fs::write(
        &xml,
        "<portForward proto='udp'><range start='5353' to='53'/><range start='7000' end='7001'/></portForward>",
    )?;
    topo.vxdp(&[
        "port-forward",
        "add",
        "default",
        "vnet0",
        "--xml",
        xml.to_str().context("path")?,
    ])?;
    for port in [22, 6000, 6012, 6016] {
        tcp_service(&g0.ns, port)?;
    }
    for port in [53, 7001] {
        udp_service(&g0.ns, port)?;
    }

    let (opened0, _) = topo.counter("default", "forward_opened")?;
    let (dnat0, _) = topo.counter("default", "dnat_forwarded")?;
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    // TCP: the guest sees the outside host's own address (no source NAT
    // inbound); the answer arrived, so it came from the public port.
    for (public, guest_port) in [(2022, 22), (5000, 6000), (5016, 6016)] {
        let got = tcp_ask(&topo.wan, &format!("{UPLINK_ADDR}:{public}"))?;
        ensure!(
            got.starts_with(&format!("{WAN_ADDR}:")) && got.ends_with(&format!("|{guest_port}")),
            "public port {public}: expected guest port {guest_port} answering {WAN_ADDR}, got {got:?}"
        );
    }
    // An excluded port is not forwarded: the host's stack refuses it.
    ensure!(
        tcp_ask(&topo.wan, &format!("{UPLINK_ADDR}:5012")).is_err(),
        "excluded port 5012 reached the guest"
    );
    // UDP with `to`, and without (same port).
    for (public, guest_port) in [(5353, 53), (7001, 7001)] {
        let got = udp_ask(&topo.wan, &format!("{UPLINK_ADDR}:{public}"), b"ping")?;
        ensure!(
            got.starts_with(&format!("{WAN_ADDR}:"))
                && got.ends_with(&format!("|{guest_port}|ping")),
            "UDP public port {public}: {got:?}"
        );
    }
    let (opened1, _) = topo.counter("default", "forward_opened")?;
    let (dnat1, _) = topo.counter("default", "dnat_forwarded")?;
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    ensure!(
        opened1 - opened0 == 5,
        "5 forwarded conversations should open 5 flows, forward_opened moved by {}",
        opened1 - opened0
    );
    ensure!(
        dnat1 > dnat0 && snat1 > snat0,
        "forwarded traffic did not take the eBPF paths (dnat {dnat0}->{dnat1}, snat {snat0}->{snat1})"
    );
    let list = stdout(topo.vxdp(&["port-forward", "list", "default"])?);
    ensure!(
        list.contains("2022->22, 5000-5020->6000-6020 except 5010-5015")
            && list.contains("192.168.122.10")
            && !list.contains("not active"),
        "port-forward list:\n{list}"
    );
    let ct = stdout(topo.vxdp(&["conntrack", "list", "default"])?);
    ensure!(
        ct.contains(&format!("{UPLINK_ADDR}:2022")),
        "conntrack list lacks the forwarded flow:\n{ct}"
    );

    // Hairpin: guests reach the forward through the public address too,
    // another guest and the target itself; the target sees the network's
    // NAT address (so its answers come back through vxdp), the client the
    // public address and port (its socket is connected to them).
    for (client, public, guest_port) in [(1, 2022, 22), (0, 5016, 6016)] {
        let got = tcp_ask(&topo.guests[client].ns, &format!("{UPLINK_ADDR}:{public}"))?;
        ensure!(
            got.starts_with(&format!("{UPLINK_ADDR}:")) && got.ends_with(&format!("|{guest_port}")),
            "hairpin from guest {client} to public port {public}: {got:?}"
        );
    }
    let got = udp_ask(
        &topo.guests[1].ns,
        &format!("{UPLINK_ADDR}:5353"),
        b"hairpin",
    )?;
    ensure!(
        got.starts_with(&format!("{UPLINK_ADDR}:")) && got.ends_with("|53|hairpin"),
        "UDP hairpin: {got:?}"
    );
    // A local address without a forward is still the host's.
    ensure!(
        tcp_ask(&topo.guests[1].ns, &format!("{UPLINK_ADDR}:5012")).is_err(),
        "hairpin to an excluded port reached the guest"
    );

    // Hostile or conflicting forwards are refused, naming the conflict.
    let e = refused(
        &topo,
        &[
            "port-forward",
            "add",
            "default",
            "vnet1",
            "--proto",
            "tcp",
            "--range",
            "2022",
        ],
    )?;
    ensure!(e.contains("already forwarded to vnet0"), "{e}");
    let e = refused(
        &topo,
        &[
            "port-forward",
            "add",
            "default",
            "vnet1",
            "--proto",
            "tcp",
            "--range",
            "80",
            "--address",
            "192.168.122.50",
        ],
    )?;
    ensure!(e.contains("inside network 'default'"), "{e}");
    let host_listener = topo.hyp.enter(|| TcpListener::bind("0.0.0.0:8443"))??;
    let e = refused(
        &topo,
        &[
            "port-forward",
            "add",
            "default",
            "vnet1",
            "--proto",
            "tcp",
            "--range",
            "8443",
        ],
    )?;
    ensure!(e.contains("host socket") && e.contains("8443"), "{e}");
    drop(host_listener);

    // The forward opens the public port only: the guest's own address
    // stays closed to the outside, even with a route to it.
    topo.wan
        .ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    let (drop0, _) = topo.counter("default", "unsolicited_inbound")?;
    ensure!(
        tcp_ask(&topo.wan, &format!("{}:22", g0.addr)).is_err(),
        "the outside host reached the guest's private address"
    );
    let (drop1, _) = topo.counter("default", "unsolicited_inbound")?;
    ensure!(
        drop1 > drop0,
        "the refused SYN was not counted ({drop0} -> {drop1})"
    );

    // Removal stops new connections.
    topo.vxdp(&[
        "port-forward",
        "remove",
        "default",
        "vnet0",
        "--proto",
        "tcp",
        "--port",
        "2022",
    ])?;
    ensure!(
        tcp_ask(&topo.wan, &format!("{UPLINK_ADDR}:2022")).is_err(),
        "a removed forward still connects"
    );
    let list = stdout(topo.vxdp(&["port-forward", "list"])?);
    ensure!(
        !list.contains("2022") && list.contains("5353->53"),
        "{list}"
    );
    Ok(())
}

#[test]
fn forwards_come_back_with_the_dataplane_and_from_interface_xml() -> Result<()> {
    let mut topo = NatTopology::new("pfr", 0)?;
    topo.create(DEFAULT_XML)?;
    // A guest plugged with a domain <interface>: its <ip> and
    // <portForward> (a tap vxdp creates; the guest is a namespace behind
    // a veth here, so plug that instead through <target dev>).
    let g = Netns::new(format!("{}-g", topo.prefix))?;
    topo.hyp.ip(&[
        "link", "add", "vnet9", "type", "veth", "peer", "name", "eth0", "netns", &g.name,
    ])?;
    g.ip(&["addr", "add", "192.168.122.20/24", "dev", "eth0"])?;
    g.ip(&["link", "set", "eth0", "up"])?;
    g.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    let link = stdout(g.ip(&["-o", "link", "show", "eth0"])?);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no MAC")?
        .to_string();
    let xml = topo.state_dir.join("if.xml");
    std::fs::write(
        &xml,
        format!(
            "<interface type='network'><source network='default'/><mac address='{mac}'/>\
             <target dev='vnet9'/><ip address='192.168.122.20' family='ipv4' prefix='24'/>\
             <portForward proto='tcp'><range start='2222' to='22'/></portForward></interface>"
        ),
    )?;
    topo.vxdp(&["attach-interface", "--xml", xml.to_str().context("path")?])?;
    topo.wait_port_forwarding("vnet9", Duration::from_secs(15))?;
    tcp_service(&g, 22)?;
    let ask = |topo: &NatTopology| tcp_ask(&topo.wan, &format!("{UPLINK_ADDR}:2222"));
    let got = ask(&topo)?;
    ensure!(got.ends_with("|22"), "{got:?}");

    // Unload removes every map; load builds the dataplane again and its
    // reconcile pass writes the forward back from the port's record.
    topo.vxdp(&["unload"])?;
    ensure!(
        ask(&topo).is_err(),
        "the forward worked without a dataplane"
    );
    topo.vxdp(&["load"])?;
    let mut last = None;
    for _ in 0..20 {
        match ask(&topo) {
            Ok(got) if got.ends_with("|22") => {
                last = None;
                break;
            }
            other => last = Some(format!("{other:?}")),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Some(last) = last {
        bail!("after unload and load the forward did not come back: {last}");
    }
    let list = stdout(topo.vxdp(&["port-forward", "list"])?);
    ensure!(
        list.contains("vnet9") && list.contains("2222->22"),
        "{list}"
    );

    // The daemon (started anew, as after a restart) writes a lost forward
    // back from the port's record; the status page and the metrics show
    // it with the flows it opened.
    let mut serve = Serve::spawn(
        &topo,
        Serve::command(&topo, &vxdp_bin()?),
        &["--listen", LISTEN],
        "pf",
        &[],
    )?;
    wait_http(&mut serve, &topo.hyp, LISTEN, "/api/status")?;
    let maps = Maps::open(&Pins::new(&topo.bpffs))?;
    let entries = maps.forward_entries()?;
    ensure!(
        entries.len() == 1,
        "one forwarded port expected: {entries:?}"
    );
    maps.set_port_forwards(entries[0].1.ifindex, &[])?;
    let mut last = String::new();
    for _ in 0..40 {
        match ask(&topo) {
            Ok(got) if got.ends_with("|22") => {
                last.clear();
                break;
            }
            other => last = format!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    ensure!(
        last.is_empty(),
        "vxdp serve did not write the lost forward back: {last}\n{}",
        serve.log()
    );
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&topo.hyp, LISTEN, "/api/status")?)?;
    let fwd = status["forwards"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["dev"] == "vnet9"))
        .with_context(|| format!("no forward of vnet9 in /api/status: {status}"))?;
    ensure!(
        fwd["ranges"] == "2222->22" && fwd["opened"].as_u64() >= Some(1),
        "/api/status forward: {fwd}"
    );
    let metrics = http_get(&topo.hyp, LISTEN, "/metrics")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("vxdp_port_forward_flows_total{")
                && l.contains("interface=\"vnet9\"")
                && !l.ends_with(" 0")),
        "no vxdp_port_forward_flows_total for vnet9:\n{metrics}"
    );
    drop(serve);

    // The forwards go with their port.
    topo.vxdp(&["detach-interface", "--xml", xml.to_str().context("path")?])?;
    let left = maps.forward_entries()?;
    ensure!(left.is_empty(), "forwards left after detach: {left:?}");
    ensure!(
        ask(&topo).is_err(),
        "a detached port's forward still connects"
    );
    drop(g);
    Ok(())
}

/// From the hypervisor namespace (the host itself): connects to `dst`,
/// reads the service's answer; also what the socket says its peer is.
fn host_tcp_ask(host: &Netns, dst: &str) -> Result<(String, SocketAddr)> {
    let dst: SocketAddr = dst.parse()?;
    host.enter(move || -> Result<(String, SocketAddr)> {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .with_context(|| format!("connecting to {dst}"))?;
        let peer = s.peer_addr()?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok((text, peer))
    })?
}

/// From namespace `ns`: one datagram to `dst` on an unconnected socket;
/// the answer and the address it came from.
fn udp_ask_unconnected(
    ns: &Netns,
    dst: &str,
    payload: &'static [u8],
) -> Result<(String, SocketAddr)> {
    let dst: SocketAddr = dst.parse()?;
    ns.enter(move || -> Result<(String, SocketAddr)> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.send_to(payload, dst)?;
        let mut buf = [0u8; 2048];
        let (n, from) = s
            .recv_from(&mut buf)
            .with_context(|| format!("no answer from {dst}"))?;
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })?
}

/// The ids of the programs attached to the cgroup `root` (`bpftool cgroup
/// show`).
fn cgroup_prog_ids(root: &std::path::Path) -> Result<Vec<u64>> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(root)
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    ensure!(
        out.status.success(),
        "bpftool cgroup show {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v.as_array()
        .context("bpftool's answer is not a list")?
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// The ids of this dataplane's pinned cgroup socket programs.
fn host_socket_prog_ids(topo: &NatTopology) -> Result<Vec<u64>> {
    let ids = pinned::pinned_ids(&Pins::new(&topo.bpffs))?;
    let ours: Vec<u64> = ids
        .progs
        .iter()
        .filter(|(p, _)| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vxdp_host_"))
        })
        .map(|(_, id)| *id as u64)
        .collect();
    ensure!(
        ours.len() == host_sockets::PROGRAMS.len(),
        "expected {} pinned cgroup socket programs, found {ours:?}",
        host_sockets::PROGRAMS.len()
    );
    Ok(ours)
}

#[test]
fn the_host_itself_reaches_forwarded_ports() -> Result<()> {
    let mut topo = NatTopology::new("pfh", 2)?;
    topo.start_with(DEFAULT_XML, true)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(30))?;
    let g0 = &topo.guests[0];
    topo.vxdp(&[
        "port-forward",
        "add",
        "default",
        "vnet0",
        "--proto",
        "tcp",
        "--range",
        "2022:22",
    ])?;
    topo.vxdp(&[
        "port-forward",
        "add",
        "default",
        "vnet0",
        "--proto",
        "udp",
        "--range",
        "5353:53",
    ])?;
    tcp_service(&g0.ns, 22)?;
    udp_service(&g0.ns, 53)?;
    let root = host_sockets::cgroup2_root()?;
    let ours = host_socket_prog_ids(&topo)?;
    let attached = cgroup_prog_ids(&root)?;
    ensure!(
        ours.iter().all(|id| attached.contains(id)),
        "the cgroup socket programs {ours:?} are not all attached to {}: {attached:?}",
        root.display()
    );

    let (host0, _) = topo.counter("default", "host_forwarded")?;
    // TCP with `to`: the guest answers on 22 and sees the host's address
    // on the bridge; the host's socket sees the address it connected to.
    let public = format!("{UPLINK_ADDR}:2022");
    let (got, peer) = host_tcp_ask(&topo.hyp, &public)?;
    ensure!(
        got.starts_with("192.168.122.1:") && got.ends_with("|22"),
        "from the host to {public}: expected guest port 22 answering 192.168.122.1, got {got:?}"
    );
    ensure!(
        peer.to_string() == public,
        "the host's socket says its peer is {peer}, not {public}"
    );
    // UDP, unconnected: the answer reads as coming from the public
    // address and port.
    let public_udp = format!("{UPLINK_ADDR}:5353");
    let (got, from) = udp_ask_unconnected(&topo.hyp, &public_udp, b"host")?;
    ensure!(
        got.starts_with("192.168.122.1:") && got.ends_with("|53|host"),
        "UDP from the host: {got:?}"
    );
    ensure!(
        from.to_string() == public_udp,
        "the UDP answer came from {from}, not {public_udp}"
    );
    // UDP, connected (connect4 rewrites it; the socket takes the guest's
    // answers).
    let got = udp_ask(&topo.hyp, &public_udp, b"connected")?;
    ensure!(got.ends_with("|53|connected"), "connected UDP: {got:?}");
    let (host1, _) = topo.counter("default", "host_forwarded")?;
    ensure!(
        host1 - host0 == 3,
        "three host sockets went through forwards, host_forwarded moved by {}",
        host1 - host0
    );
    let maps = Maps::open(&Pins::new(&topo.bpffs))?;
    let opened: u64 = maps.forward_entries()?.iter().map(|(_, f)| f.opened).sum();
    ensure!(opened >= 3, "the forwards counted {opened} opened, not 3");

    // Other namespaces' sockets are not rewritten: the outside host (no
    // dataplane in its namespace) goes through the uplink and the guest
    // sees its own address; a guest (hostile or not) goes through the
    // hairpin path and the target sees the network's NAT address, not
    // its own (which a rewritten socket would show).
    let got = tcp_ask(&topo.wan, &public)?;
    ensure!(
        got.starts_with(&format!("{WAN_ADDR}:")) && got.ends_with("|22"),
        "the outside host's connection: {got:?}"
    );
    let got = tcp_ask(&topo.guests[1].ns, &public)?;
    ensure!(
        got.starts_with(&format!("{UPLINK_ADDR}:")) && got.ends_with("|22"),
        "a guest's connection to the public port was not the hairpin's: {got:?}"
    );
    let (host2, _) = topo.counter("default", "host_forwarded")?;
    ensure!(
        host2 == host1,
        "sockets of other namespaces were counted as the host's ({host1} -> {host2})"
    );

    // Removal: new connections are not rewritten (the host's own stack
    // has nothing on 2022).
    topo.vxdp(&[
        "port-forward",
        "remove",
        "default",
        "vnet0",
        "--proto",
        "tcp",
        "--port",
        "2022",
    ])?;
    ensure!(
        host_tcp_ask(&topo.hyp, &public).is_err(),
        "the host still reaches a removed forward"
    );

    // Unload leaves none of this dataplane's programs on the cgroup.
    topo.vxdp(&["unload"])?;
    let attached = cgroup_prog_ids(&root)?;
    ensure!(
        ours.iter().all(|id| !attached.contains(id)),
        "after unload, programs {ours:?} are still attached to {}: {attached:?}",
        root.display()
    );
    // The UDP forward was still in the map: its socket goes to the host's
    // own (closed) port now, which refuses it at once.
    if let Ok(got) = udp_ask(&topo.hyp, &public_udp, b"gone") {
        bail!("without a dataplane the host's datagram still reached a guest: {got:?}");
    }
    Ok(())
}

/// Two dataplanes (two namespaces, as parallel tests have) forward the
/// same public address and port to different guest ports: each host
/// reaches its own, so neither program touches the other's sockets.
#[test]
fn each_dataplane_rewrites_only_its_own_namespace() -> Result<()> {
    let mut a = NatTopology::new("pfa", 1)?;
    let mut b = NatTopology::new("pfb", 1)?;
    a.start_with(DEFAULT_XML, true)?;
    b.start_with(DEFAULT_XML, true)?;
    a.wait_ports_forwarding(Duration::from_secs(30))?;
    b.wait_ports_forwarding(Duration::from_secs(30))?;
    for (topo, to) in [(&a, "2022:22"), (&b, "2022:23")] {
        topo.vxdp(&[
            "port-forward",
            "add",
            "default",
            "vnet0",
            "--proto",
            "tcp",
            "--range",
            to,
        ])?;
    }
    tcp_service(&a.guests[0].ns, 22)?;
    tcp_service(&b.guests[0].ns, 23)?;
    let public = format!("{UPLINK_ADDR}:2022");
    for (topo, port) in [(&a, 22), (&b, 23), (&a, 22)] {
        let (got, _) = host_tcp_ask(&topo.hyp, &public)?;
        ensure!(
            got.ends_with(&format!("|{port}")),
            "{}: the host reached {got:?}, not its own guest's port {port}",
            topo.prefix
        );
    }
    Ok(())
}

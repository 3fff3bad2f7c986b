//! The connection table of DESIGN.md §2 as an executable matrix: for each
//! network mode vxdp realizes, a hypervisor, an outside host and two guests
//! in throwaway namespaces, and every cell measured with ping and a TCP
//! connect. "yes" cells must connect; "no" cells must fail *and* show up in
//! vxdp's drop counter with the expected reason. Spoofed MAC and spoofed IPv4
//! sources are dropped and counted in every mode. Each test prints the
//! table it measured.
//!
//! Needs root (network namespaces, BPF).

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, UPLINK_ADDR, WAN_ADDR, pattern};
use vxdp_tests::matrix::{
    CELLS, GATEWAY, HOST_BRIDGE_XML, VERY_ISOLATED_XML, direct_beyond_macvtap, direct_expected,
    direct_guests, direct_xml, expected, mac_of, measure, prepare_direct, prepare_host_bridge,
    routed_xml,
};

/// What a cell of the table must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Yes,
    /// Refused by vxdp: the drop counter with this reason moves.
    Dropped(&'static str),
    /// Nothing to refuse: the hypervisor has no route into the network
    /// (very isolated: the host has no address there). The test checks the
    /// routing table says so.
    NoRoute,
}

/// Where the outside host must see a guest's connection come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Uplink,
    Guest,
}

struct Mode {
    name: &'static str,
    xml: String,
    /// The host address guests try (the bridge's, or — very isolated — the
    /// uplink's, the only one the host has).
    host_target: &'static str,
    /// guest→host, guest→guest, guest→outside, outside→guest.
    cells: [Expect; 4],
    outside_sees: Seen,
    /// Host changes before the network starts (host bridge mode).
    prepare: Option<fn(&mut NatTopology) -> Result<()>>,
}

/// Checks one cell against its expectation; returns the table entry.
fn check_cell(
    topo: &NatTopology,
    cell: &str,
    expect: Expect,
    from: &Netns,
    dst: &str,
    server: &Netns,
) -> Result<String> {
    let before = match expect {
        Expect::Dropped(reason) => topo.counter("default", reason)?.0,
        _ => 0,
    };
    let m = measure(from, dst, server)?;
    match expect {
        Expect::Yes => {
            ensure!(
                m.ping && m.tcp,
                "{cell}: expected yes, measured ping {} tcp {}",
                m.ping,
                m.tcp
            );
            Ok("yes".into())
        }
        Expect::Dropped(reason) => {
            ensure!(
                !m.ping && !m.tcp,
                "{cell}: expected no, measured ping {} tcp {}",
                m.ping,
                m.tcp
            );
            let after = topo.counter("default", reason)?.0;
            // The echo request and at least one SYN.
            ensure!(
                after >= before + 2,
                "{cell}: refused, but drop reason {reason} moved only {before} -> {after}: the failure is not vxdp's drop"
            );
            Ok(format!("no ({reason} +{})", after - before))
        }
        Expect::NoRoute => {
            ensure!(
                !m.ping && !m.tcp,
                "{cell}: expected no, measured ping {} tcp {}",
                m.ping,
                m.tcp
            );
            let route =
                String::from_utf8(topo.hyp.exec_status("ip", &["route", "get", dst])?.stdout)?;
            ensure!(
                !route.contains("virbr0"),
                "{cell}: the hypervisor routes {dst} into the network: {route}"
            );
            Ok("no (no route into the network)".into())
        }
    }
}

/// Builds the world for `mode`, measures every cell, checks anti-spoofing,
/// prints the table.
fn run_matrix(mode: Mode) -> Result<()> {
    // The expectations are DESIGN.md §2's row (shared with the libvirt
    // differential test), refined with the reason of each "no".
    let row = expected(mode.name);
    for (i, cell) in mode.cells.iter().enumerate() {
        ensure!(
            (*cell == Expect::Yes) == row[i],
            "{} {}: expectation disagrees with DESIGN.md §2",
            mode.name,
            CELLS[i]
        );
    }
    let mut topo = NatTopology::new(&mode.name[..2], 2)?;
    if let Some(prepare) = mode.prepare {
        prepare(&mut topo)?;
    }
    topo.start_with(&mode.xml, true)?;
    // The outside host routes the guests' subnet to the hypervisor, so
    // "outside → guest" is refused (or allowed) by vxdp, not by a missing
    // route on the outside.
    topo.wan
        .ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    if mode.name == "very-isolated" {
        let bridge_mac = mac_of(&topo.hyp, "virbr0")?;
        // Very isolated: nobody answers ARP for the gateway. The guests
        // know the bridge's MAC anyway, so their packets do reach the host
        // at layer 2 and it is vxdp that refuses them.
        for g in &topo.guests {
            g.ns.ip(&[
                "neigh",
                "replace",
                GATEWAY,
                "lladdr",
                &bridge_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
    }
    // Guests see each other once the bridge ports leave STP's listening
    // and learning states.
    topo.wait_ping(0, &topo.guests[1].addr.clone(), Duration::from_secs(20))?;

    let (g0, g1) = (&topo.guests[0], &topo.guests[1]);
    let names = CELLS;
    let mut row = Vec::new();
    for (i, expect) in mode.cells.iter().enumerate() {
        let cell = format!("{} {}", mode.name, names[i]);
        let (from, dst, server) = match i {
            0 => (&g0.ns, mode.host_target, &topo.hyp),
            1 => (&g0.ns, g1.addr.as_str(), &g1.ns),
            2 => (&g0.ns, OUTSIDE_HOST, &topo.wan),
            _ => (&topo.wan, g1.addr.as_str(), &g1.ns),
        };
        if i == 2 && *expect == Expect::Yes {
            let (fwd0, _) = topo.counter("default", "route_forwarded")?;
            let m = measure(from, dst, server)?;
            ensure!(
                m.ping && m.tcp,
                "{cell}: expected yes, measured ping {} tcp {}",
                m.ping,
                m.tcp
            );
            let peer = m
                .peer
                .context("the outside host accepted no connection")?
                .to_string();
            let want = if mode.outside_sees == Seen::Uplink {
                UPLINK_ADDR
            } else {
                g0.addr.as_str()
            };
            ensure!(
                peer == want,
                "{cell}: the outside host saw {peer}, expected {want}"
            );
            if mode.name == "route" || mode.name == "open" {
                let (fwd1, _) = topo.counter("default", "route_forwarded")?;
                ensure!(
                    fwd1 >= fwd0 + 2,
                    "{cell}: not forwarded by eBPF (route_forwarded {fwd0} -> {fwd1})"
                );
            }
            row.push(format!("yes (seen as {peer})"));
            continue;
        }
        if i == 1 && *expect == Expect::Yes {
            // Guests of one network go port to port in eBPF (VXDP_MACS).
            let (fwd0, _) = topo.counter("default", "port_forwarded")?;
            let m = measure(from, dst, server)?;
            ensure!(
                m.ping && m.tcp,
                "{cell}: expected yes, measured ping {} tcp {}",
                m.ping,
                m.tcp
            );
            let (fwd1, _) = topo.counter("default", "port_forwarded")?;
            ensure!(
                fwd1 >= fwd0 + 4,
                "{cell}: not forwarded port to port by eBPF (port_forwarded {fwd0} -> {fwd1})"
            );
            row.push(format!("yes (port to port +{})", fwd1 - fwd0));
            continue;
        }
        if i == 3 && *expect == Expect::Yes {
            let routed = mode.name == "route" || mode.name == "open";
            let (in0, _) = if routed {
                topo.counter("default", "route_inbound_forwarded")?
            } else {
                (0, 0)
            };
            let m = measure(from, dst, server)?;
            ensure!(
                m.ping && m.tcp,
                "{cell}: expected yes, measured ping {} tcp {}",
                m.ping,
                m.tcp
            );
            let peer = m
                .peer
                .context("the guest accepted no connection")?
                .to_string();
            ensure!(
                peer == OUTSIDE_HOST || peer == "198.51.100.1",
                "{cell}: the guest saw {peer}"
            );
            if !routed {
                row.push("yes".into());
                continue;
            }
            // The first packet may find the guest's neighbour unresolved
            // (the kernel routes it and resolves it); the TCP handshake's
            // SYN and ACK at least go straight to the guest's port.
            let (in1, _) = topo.counter("default", "route_inbound_forwarded")?;
            ensure!(
                in1 >= in0 + 2,
                "{cell}: not forwarded by eBPF (route_inbound_forwarded {in0} -> {in1})"
            );
            let bulk = bulk_inbound(&topo, 1, g1.addr.as_str())?;
            row.push(format!("yes (fast path +{}; {bulk})", in1 - in0));
            continue;
        }
        row.push(check_cell(&topo, &cell, *expect, from, dst, server)?);
    }

    // Anti-spoofing: another source MAC, then another source IPv4.
    let spoofed_mac = "02:00:00:00:66:66";
    let before = topo.counter("default", "spoofed_mac")?.0;
    g0.ns.ip(&["link", "set", "eth0", "down"])?;
    g0.ns.ip(&["link", "set", "eth0", "address", spoofed_mac])?;
    g0.ns.ip(&["link", "set", "eth0", "up"])?;
    g0.ns.ip(&["neigh", "flush", "dev", "eth0"])?;
    let ok = g0
        .ns
        .exec_status("ping", &["-c", "1", "-W", "2", &g1.addr])?
        .status
        .success();
    let after = topo.counter("default", "spoofed_mac")?.0;
    g0.ns.ip(&["link", "set", "eth0", "down"])?;
    g0.ns.ip(&["link", "set", "eth0", "address", &g0.mac])?;
    g0.ns.ip(&["link", "set", "eth0", "up"])?;
    ensure!(
        !ok,
        "{}: a guest with a spoofed MAC reached another guest",
        mode.name
    );
    ensure!(
        after > before,
        "{}: spoofed MAC not counted (spoofed_mac {before} -> {after})",
        mode.name
    );
    let spoof_mac_cell = format!("dropped (spoofed_mac +{})", after - before);

    let spoofed_ip = "192.168.122.99";
    let before = topo.counter("default", "spoofed_source")?.0;
    g0.ns
        .ip(&["addr", "add", &format!("{spoofed_ip}/24"), "dev", "eth0"])?;
    g0.ns.ip(&["neigh", "flush", "dev", "eth0"])?;
    let ok = g0
        .ns
        .exec_status("ping", &["-c", "1", "-W", "2", "-I", spoofed_ip, &g1.addr])?
        .status
        .success();
    let after = topo.counter("default", "spoofed_source")?.0;
    g0.ns
        .ip(&["addr", "del", &format!("{spoofed_ip}/24"), "dev", "eth0"])?;
    ensure!(
        !ok,
        "{}: a guest with a spoofed IPv4 source reached another guest",
        mode.name
    );
    ensure!(
        after > before,
        "{}: spoofed IPv4 source not counted (spoofed_source {before} -> {after})",
        mode.name
    );
    let spoof_ip_cell = format!("dropped (spoofed_source +{})", after - before);

    let mut table = String::new();
    writeln!(
        table,
        "\nvxdp, mode {} (measured: ping + TCP connect)",
        mode.name
    )?;
    for (name, value) in names.iter().zip(&row) {
        writeln!(table, "  {name:<14} {value}")?;
    }
    writeln!(table, "  {:<14} {spoof_mac_cell}", "spoofed MAC")?;
    writeln!(table, "  {:<14} {spoof_ip_cell}", "spoofed IPv4")?;
    println!("{table}");

    topo.stop()?;
    if mode.name == "bridge" {
        // The operator's bridge stays as it was, uplink and all.
        let up0 = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", "up0"])?.stdout)?;
        ensure!(
            up0.contains("master br0"),
            "net-destroy changed the host bridge: {up0}"
        );
    }
    Ok(())
}

/// Bytes of the bulk transfer outside → guest in route/open modes.
const BULK_BYTES: usize = 4 << 20;

/// The outside host connects to guest `i` at `addr` and sends [`BULK_BYTES`]; the
/// guest checks every byte (a bad checksum would stall the transfer, bad
/// data fails the comparison), and the fast path's counter must have
/// carried at least that many bytes.
fn bulk_inbound(topo: &NatTopology, i: usize, addr: &str) -> Result<String> {
    let g = &topo.guests[i];
    let ip: IpAddr = addr.parse()?;
    let (p0, b0) = topo.counter("default", "route_inbound_forwarded")?;
    let data = pattern(BULK_BYTES, 0x5eed);
    let any: SocketAddr = if ip.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let listener = g.ns.enter(move || TcpListener::bind(any))??;
    listener.set_nonblocking(true)?;
    let target = SocketAddr::new(ip, listener.local_addr()?.port());
    let receiver = std::thread::spawn(move || -> Result<Vec<u8>> {
        // Bounded: gives up when no connection arrives.
        let start = Instant::now();
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && start.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => bail!("the guest accepted no connection: {e}"),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut got = Vec::with_capacity(BULK_BYTES);
        s.read_to_end(&mut got)?;
        Ok(got)
    });
    let sent = data.clone();
    let stream = topo
        .wan
        .enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))?;
    let sender = (|| -> Result<()> {
        let mut s = stream?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(&sent)?;
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    })();
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    sender.context("outside → guest bulk transfer: sending")?;
    let got = received.context("outside → guest bulk transfer: receiving")?;
    ensure!(
        got.len() == data.len(),
        "outside → guest bulk transfer: {} of {} bytes arrived",
        got.len(),
        data.len()
    );
    ensure!(
        got == data,
        "outside → guest bulk transfer: the data arrived corrupted"
    );
    let (p1, b1) = topo.counter("default", "route_inbound_forwarded")?;
    ensure!(
        b1 - b0 >= BULK_BYTES as u64,
        "outside → guest bulk transfer: only {} bytes in {} packets took the fast path (route_inbound_forwarded), {BULK_BYTES} sent",
        b1 - b0,
        p1 - p0
    );
    Ok(format!(
        "{} MiB intact, {} packets via eBPF",
        BULK_BYTES >> 20,
        p1 - p0
    ))
}

/// Pings `dst` from `ns` until it answers, at most `within` (bounded).
fn wait_reachable(ns: &Netns, dst: &str, within: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if ns
            .exec_status("ping", &["-c", "1", "-W", "1", dst])?
            .status
            .success()
        {
            return Ok(());
        }
        ensure!(
            start.elapsed() < within,
            "{} cannot ping {dst} within {within:?}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// IPv6 in route mode, end to end: the outside host reaches a guest's own
/// IPv6 address (ping, TCP, a bulk transfer checked byte by byte) and,
/// once the hypervisor has resolved the guest, through the uplink's fast
/// path (`route_inbound_forwarded`).
#[test]
fn route_mode_ipv6_outside_to_guest_takes_the_fast_path() -> Result<()> {
    const WAN6: &str = "2001:db8:1::1";
    const UPLINK6: &str = "2001:db8:1::2";
    const GATEWAY6: &str = "2001:db8:122::1";
    const GUEST6: &str = "2001:db8:122::10";
    let mut topo = NatTopology::new("r6", 1)?;
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
        .ip(&["-6", "route", "add", "2001:db8:122::/64", "via", UPLINK6])?;
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
    let g = &topo.guests[0];
    g.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{GUEST6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    g.ns.ip(&["-6", "route", "add", "default", "via", GATEWAY6])?;
    topo.start_with(
        "<network><name>default</name><forward mode='route'/><bridge name='virbr0' stp='on' delay='0'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/>\
         <ip family='ipv6' address='2001:db8:122::1' prefix='64'/></network>",
        true,
    )?;
    topo.wait_ping(0, GATEWAY, Duration::from_secs(20))?;
    // The bridge's IPv6 address may still be tentative (DAD).
    wait_reachable(&topo.guests[0].ns, GATEWAY6, Duration::from_secs(10))?;
    wait_reachable(&topo.wan, GUEST6, Duration::from_secs(10))?;

    let (in0, _) = topo.counter("default", "route_inbound_forwarded")?;
    let out = topo
        .wan
        .exec_status("ping", &["-c", "3", "-i", "0.2", "-W", "1", GUEST6])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("3 received"),
        "outside → guest IPv6 ping lost packets: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (in1, _) = topo.counter("default", "route_inbound_forwarded")?;
    ensure!(
        in1 >= in0 + 3,
        "outside → guest IPv6 pings not forwarded by eBPF (route_inbound_forwarded {in0} -> {in1})"
    );
    let bulk = bulk_inbound(&topo, 0, GUEST6)?;
    println!(
        "\nvxdp, mode route, IPv6 outside→guest: pings via eBPF +{}; {bulk}",
        in1 - in0
    );
    topo.stop()?;
    Ok(())
}

#[test]
fn nat_mode_matrix() -> Result<()> {
    run_matrix(Mode {
        name: "nat",
        xml: DEFAULT_XML.to_string(),
        host_target: GATEWAY,
        cells: [
            Expect::Yes,
            Expect::Yes,
            Expect::Yes,
            Expect::Dropped("unsolicited_inbound"),
        ],
        outside_sees: Seen::Uplink,
        prepare: None,
    })
}

#[test]
fn route_mode_matrix() -> Result<()> {
    run_matrix(Mode {
        name: "route",
        xml: routed_xml("route"),
        host_target: GATEWAY,
        cells: [Expect::Yes; 4],
        outside_sees: Seen::Guest,
        prepare: None,
    })
}

#[test]
fn open_mode_matrix() -> Result<()> {
    run_matrix(Mode {
        name: "open",
        xml: routed_xml("open"),
        host_target: GATEWAY,
        cells: [Expect::Yes; 4],
        outside_sees: Seen::Guest,
        prepare: None,
    })
}

#[test]
fn isolated_mode_matrix() -> Result<()> {
    run_matrix(Mode {
        name: "isolated",
        xml: routed_xml(""),
        host_target: GATEWAY,
        cells: [
            Expect::Yes,
            Expect::Yes,
            Expect::Dropped("isolated_network"),
            Expect::Dropped("isolated_network"),
        ],
        outside_sees: Seen::Guest,
        prepare: None,
    })
}

#[test]
fn very_isolated_mode_matrix() -> Result<()> {
    run_matrix(Mode {
        name: "very-isolated",
        xml: VERY_ISOLATED_XML.into(),
        host_target: UPLINK_ADDR,
        cells: [
            Expect::Dropped("host_not_reachable"),
            Expect::Yes,
            Expect::Dropped("host_not_reachable"),
            Expect::NoRoute,
        ],
        outside_sees: Seen::Guest,
        prepare: None,
    })
}

/// The id of a pinned BPF object (`kind`: prog, map or link) as bpftool
/// reports it.
fn pinned_id(kind: &str, path: &std::path::Path) -> Result<u32> {
    let out = vxdp_testkit::run(
        "bpftool",
        &[kind, "show", "pinned", path.to_str().context("path")?],
    )?;
    let text = String::from_utf8(out.stdout)?;
    let id = text
        .split(':')
        .next()
        .context("bpftool printed nothing")?
        .trim();
    id.parse()
        .with_context(|| format!("bpftool {kind} show pinned {}: {text}", path.display()))
}

/// Whether a BPF object with this id still exists in the kernel.
fn exists(kind: &str, id: u32) -> Result<bool> {
    let out = std::process::Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()?;
    Ok(out.status.success())
}

/// Every pinned object under `dir` (progs/, maps/ or links/) with its id.
fn pinned_ids(bpffs: &std::path::Path, dir: &str, kind: &str) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(bpffs.join(dir))? {
        let path = entry?.path();
        out.push((
            path.file_name().unwrap().to_string_lossy().to_string(),
            pinned_id(kind, &path)?,
        ));
    }
    Ok(out)
}

/// Switching a network between modes (destroy, create with another mode)
/// leaves nothing of the old mode: no port link, map entry or conntrack
/// flow while another network keeps the dataplane loaded, and no program,
/// map or link at all once the last network is gone. Checked by the ids and
/// entries this test created (other tests load vxdp concurrently).
#[test]
fn switching_modes_leaves_nothing_of_the_old_mode() -> Result<()> {
    use vxdp_common::{NetworkConfig, mode, network_flags};
    use vxdp_control::dataplane::{Maps, Pins};

    let mut topo = NatTopology::new("sw", 2)?;
    // A second network keeps the programs and maps loaded throughout.
    let keeper = topo.state_dir.join("keeper.xml");
    std::fs::create_dir_all(&topo.state_dir)?;
    std::fs::write(
        &keeper,
        "<network><name>keeper</name><bridge name='virbr9'/><ip address='192.168.200.1' prefix='24'/></network>",
    )?;
    topo.vxdp(&["net-create", keeper.to_str().context("path")?])?;
    topo.start_with(DEFAULT_XML, true)?;
    topo.wan
        .ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let pins = Pins::new(&topo.bpffs);
    let maps = Maps::open(&pins)?;
    let nat_id = vxdp_control::ops::networks::find(
        &vxdp_control::host::Context {
            state_dir: topo.state_dir.clone(),
            pins: pins.clone(),
            load: Default::default(),
        },
        "default",
    )?
    .id;
    ensure!(
        !maps.conntrack_entries(Some(nat_id))?.is_empty(),
        "the NAT network created no flows to check for"
    );
    let port_links: Vec<_> = pinned_ids(&topo.bpffs, "links", "link")?
        .into_iter()
        .filter(|(n, _)| n.starts_with("tc_in_"))
        .collect();
    ensure!(
        port_links.len() == 2,
        "expected one TC link per guest port, found {port_links:?}"
    );
    let all_progs = pinned_ids(&topo.bpffs, "progs", "prog")?;
    let all_maps = pinned_ids(&topo.bpffs, "maps", "map")?;
    let all_links = pinned_ids(&topo.bpffs, "links", "link")?;

    topo.stop()?;
    for (name, id) in &port_links {
        ensure!(
            !exists("link", *id)?,
            "link {name} (id {id}) of the NAT network's port survived net-destroy"
        );
    }
    let ports: Vec<u32> = maps.endpoints()?.keys().collect::<Result<_, _>>()?;
    ensure!(
        ports.is_empty(),
        "endpoint entries survived net-destroy: {ports:?}"
    );
    let macs: Vec<_> = maps.macs()?.keys().collect::<Result<_, _>>()?;
    ensure!(
        macs.is_empty(),
        "MAC table entries survived net-destroy: {macs:?}"
    );
    ensure!(
        maps.conntrack_entries(Some(nat_id))?.is_empty(),
        "NAT flows survived net-destroy"
    );
    let cfg = maps.networks()?.get(&nat_id, 0)?;
    ensure!(
        cfg == NetworkConfig::default(),
        "network slot {nat_id} not cleared: {cfg:?}"
    );
    let owners: Vec<_> = maps
        .subnets()?
        .iter()
        .map(|r| r.map(|(k, o)| (k.prefix_len(), o)))
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        owners.iter().all(|(_, o)| o.mode != mode::NAT),
        "a NAT subnet entry survived: {owners:?}"
    );

    // The same guests, now routed: the outside reaches them.
    topo.start_with(&routed_xml("route"), true)?;
    topo.wait_ping(0, &topo.guests[1].addr.clone(), Duration::from_secs(20))?;
    let out = topo
        .wan
        .exec_status("ping", &["-c", "1", "-W", "2", &topo.guests[1].addr])?;
    ensure!(
        out.status.success(),
        "after switching to route mode the outside host cannot reach a guest"
    );
    let owners: Vec<_> = maps
        .subnets()?
        .iter()
        .map(|r| r.map(|(k, o)| (k.prefix_len(), o)))
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        owners.iter().filter(|(_, o)| o.mode == mode::ROUTE).count() == 1
            && owners.iter().all(|(_, o)| o.mode != mode::NAT),
        "subnet owners after the switch: {owners:?}"
    );
    let active: Vec<(u32, u32)> = maps
        .networks()?
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.ok()
                .filter(|c| c.flags & network_flags::ACTIVE != 0)
                .map(|c| (i as u32, c.mode))
        })
        .collect();
    ensure!(
        active.len() == 2
            && active
                .iter()
                .all(|(_, m)| *m == mode::ROUTE || *m == mode::ISOLATED),
        "active networks after the switch (id, mode): {active:?}"
    );
    drop(maps);

    // The last network gone: every program, map and link this test loaded
    // is gone from the kernel.
    topo.stop()?;
    topo.vxdp(&["net-destroy", "keeper"])?;
    // The kernel releases maps and programs asynchronously (a program array
    // and the programs it holds are freed from a work queue), so allow a
    // bounded moment for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (kind, objects) in [
        ("prog", &all_progs),
        ("map", &all_maps),
        ("link", &all_links),
    ] {
        for (name, id) in objects {
            while exists(kind, *id)? {
                ensure!(
                    Instant::now() < deadline,
                    "{kind} {name} (id {id}) is still loaded 10 s after the last net-destroy"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    ensure!(
        !topo.bpffs.exists() || std::fs::read_dir(&topo.bpffs)?.next().is_none(),
        "pins left under {}",
        topo.bpffs.display()
    );
    println!(
        "switch nat -> route: {} port links, the flows, subnet and network entries removed; then {} programs, {} maps, {} links unloaded",
        port_links.len(),
        all_progs.len(),
        all_maps.len(),
        all_links.len()
    );
    Ok(())
}

/// Pings from `ns` until `dst` answers (bridge ports pass nothing while STP
/// is listening/learning), at most `within`.
fn wait_ping_from(ns: &Netns, dst: &str, within: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if ns
            .exec_status("ping", &["-c", "1", "-W", "1", dst])?
            .status
            .success()
        {
            return Ok(());
        }
        if start.elapsed() > within {
            bail!("{} cannot ping {dst} within {within:?}", ns.name);
        }
    }
}

/// Inter-network isolation: guests of two vxdp networks cannot reach each
/// other (counted as `other_network`) unless both networks route.
#[test]
fn guests_of_two_networks_reach_each_other_only_when_both_route() -> Result<()> {
    let mut table =
        String::from("\nvxdp, guest of network A → guest of network B (ping + TCP connect)\n");
    // A fresh topology per case: the second case does not inherit the
    // first one's bridges, ports or dataplane.
    for (tag, a_xml, b_forward, expect) in [
        (
            "inn",
            DEFAULT_XML.to_string(),
            "<forward mode='nat'/>",
            Expect::Dropped("other_network"),
        ),
        (
            "inr",
            routed_xml("route"),
            "<forward mode='route'/>",
            Expect::Yes,
        ),
    ] {
        let mut topo = NatTopology::new(tag, 1)?;
        let other_ns = Netns::new(format!("{}-gx", topo.prefix))?;
        let other_addr = "192.168.200.10";
        topo.hyp.ip(&[
            "link",
            "add",
            "vnetx",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &other_ns.name,
        ])?;
        other_ns.ip(&["addr", "add", &format!("{other_addr}/24"), "dev", "eth0"])?;
        other_ns.ip(&["link", "set", "eth0", "up"])?;
        other_ns.ip(&["route", "add", "default", "via", "192.168.200.1"])?;
        let other_mac = mac_of(&other_ns, "eth0")?;
        std::fs::create_dir_all(&topo.state_dir)?;
        let other_file = topo.state_dir.join("other.xml");
        std::fs::write(
            &other_file,
            format!(
                "<network><name>other</name>{b_forward}<bridge name='virbr1' stp='on' delay='0'/>\
                 <ip address='192.168.200.1' prefix='24'/></network>"
            ),
        )?;
        topo.start_with(&a_xml, true)?;
        topo.vxdp(&["net-create", other_file.to_str().context("path")?])?;
        let res = (|| -> Result<String> {
            topo.vxdp(&[
                "attach-interface",
                "--network",
                "other",
                "--dev",
                "vnetx",
                "--mac",
                &other_mac,
                "--ip",
                other_addr,
            ])?;
            wait_ping_from(&topo.guests[0].ns, GATEWAY, Duration::from_secs(20))?;
            wait_ping_from(&other_ns, "192.168.200.1", Duration::from_secs(20))?;
            let label = format!(
                "A {} → B {}",
                if a_xml.contains("route") {
                    "route"
                } else {
                    "nat"
                },
                if b_forward.contains("route") {
                    "route"
                } else {
                    "nat"
                }
            );
            let entry = check_cell(
                &topo,
                &label,
                expect,
                &topo.guests[0].ns,
                other_addr,
                &other_ns,
            )?;
            Ok(format!("  {label:<18} {entry}"))
        })();
        // "other" is torn down even when the case failed (the topology's
        // guard only knows "default").
        let destroyed = topo.vxdp(&["net-destroy", "other"]);
        let line = res?;
        destroyed?;
        topo.stop()?;
        writeln!(table, "{line}")?;
    }
    println!("{table}");
    Ok(())
}

#[test]
fn host_bridge_mode_matrix() -> Result<()> {
    run_matrix(Mode {
        name: "bridge",
        xml: HOST_BRIDGE_XML.into(),
        host_target: UPLINK_ADDR,
        cells: [Expect::Yes; 4],
        outside_sees: Seen::Guest,
        prepare: Some(prepare_host_bridge),
    })
}

/// A direct (macvtap-like) mode's matrix: guests on the hypervisor's NIC
/// `up0` with addresses of its LAN, the far end a hairpinning switch.
/// Every cell measured with ping and a TCP connect; "yes" cells must also
/// show the eBPF path that carried them (the counter named in the table),
/// "no" cells the drop reason. The outside must see the guests' own
/// addresses. Host ↔ guest is where vxdp goes further than macvtap
/// (`direct_beyond_macvtap`): the host reaches its guests through the NIC.
fn run_direct_matrix(mode: &str) -> Result<()> {
    let row = direct_expected(mode);
    let mut topo = NatTopology::new(&format!("d{}", &mode[..2]), direct_guests(mode))?;
    prepare_direct(&mut topo)?;
    topo.start_with(&direct_xml(mode), true)?;
    let info = String::from_utf8(topo.vxdp(&["net-list"])?.stdout)?;
    ensure!(
        info.contains(&format!("direct-{mode}")),
        "net-list does not show mode direct-{mode}:\n{info}"
    );
    topo.wait_ping(0, WAN_ADDR, Duration::from_secs(20))?;

    let last = topo.guests.len() - 1;
    let mut table = Vec::new();
    for (i, want) in row.iter().enumerate() {
        let cell = format!("direct {mode} {}", CELLS[i]);
        let Some(want) = *want else {
            table.push("n/a (one guest owns the NIC)".to_string());
            continue;
        };
        let (from, dst, server, path) = match i {
            0 => (&topo.guests[0].ns, UPLINK_ADDR, &topo.hyp, "direct_to_host"),
            1 => (
                &topo.guests[0].ns,
                topo.guests[1].addr.as_str(),
                &topo.guests[1].ns,
                // vepa: out to the switch and back in from the wire.
                if mode == "vepa" {
                    "direct_from_wire"
                } else {
                    "direct_to_guest"
                },
            ),
            2 => (
                &topo.guests[0].ns,
                OUTSIDE_HOST,
                &topo.wan,
                "direct_to_wire",
            ),
            _ => (
                &topo.wan,
                topo.guests[last].addr.as_str(),
                &topo.guests[last].ns,
                "direct_from_wire",
            ),
        };
        if !want {
            let reason = "direct_private";
            row_entry(
                &mut table,
                check_cell(&topo, &cell, Expect::Dropped(reason), from, dst, server)?,
            );
            continue;
        }
        let before = topo.counter("default", path)?.0;
        let m = measure(from, dst, server)?;
        ensure!(
            m.ping && m.tcp,
            "{cell}: expected yes, measured ping {} tcp {}",
            m.ping,
            m.tcp
        );
        let after = topo.counter("default", path)?.0;
        ensure!(
            after >= before + 2,
            "{cell}: not carried by eBPF ({path} {before} -> {after})"
        );
        let peer = m.peer.context("no connection accepted")?.to_string();
        if i == 2 {
            ensure!(
                peer == topo.guests[0].addr,
                "{cell}: the outside host saw {peer}, expected the guest's own {}",
                topo.guests[0].addr
            );
        }
        if i == 0 && direct_beyond_macvtap(i) {
            ensure!(peer == topo.guests[0].addr, "{cell}: the host saw {peer}");
        }
        table.push(format!("yes (seen as {peer}; {path} +{})", after - before));
    }

    // Multicast and broadcast on the NIC's LAN: IPv6 neighbour discovery
    // (link-local pings to the host and to the other guest) and DHCP from a
    // server on the LAN.
    // prepare_direct flushed the guests' addresses, their IPv6 link-local
    // one included: give each one back.
    for (i, g) in topo.guests.iter().enumerate() {
        g.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("fe80::198:51:100:{}/64", 10 + i),
            "dev",
            "eth0",
            "nodad",
        ])?;
    }
    let g0 = &topo.guests[0];
    let host_ll = link_local(&topo.hyp, "up0")?;
    ensure!(
        ping6(&g0.ns, &host_ll)?,
        "direct {mode}: guest → host over IPv6 link-local (neighbour discovery) failed"
    );
    let mut nd = "guest→host yes".to_string();
    if topo.guests.len() > 1 {
        let peer_ll = link_local(&topo.guests[1].ns, "eth0")?;
        let reached = ping6(&g0.ns, &peer_ll)?;
        ensure!(
            reached == (mode != "private"),
            "direct {mode}: guest → guest over IPv6 link-local: reached {reached}"
        );
        nd.push_str(if reached {
            ", guest→guest yes"
        } else {
            ", guest→guest no"
        });
    }
    let lease = lan_dhcp(&topo, 0)?;
    let multicast = format!("ND ping6 link-local: {nd}; DHCP from the LAN: lease {lease}");

    // Anti-spoofing: another source MAC, then another source IPv4.
    let probe = WAN_ADDR;
    let before = topo.counter("default", "spoofed_mac")?.0;
    g0.ns.ip(&["link", "set", "eth0", "down"])?;
    g0.ns
        .ip(&["link", "set", "eth0", "address", "02:00:00:00:66:66"])?;
    g0.ns.ip(&["link", "set", "eth0", "up"])?;
    g0.ns.ip(&["neigh", "flush", "dev", "eth0"])?;
    let ok = g0
        .ns
        .exec_status("ping", &["-c", "1", "-W", "2", probe])?
        .status
        .success();
    let after = topo.counter("default", "spoofed_mac")?.0;
    g0.ns.ip(&["link", "set", "eth0", "down"])?;
    g0.ns.ip(&["link", "set", "eth0", "address", &g0.mac])?;
    g0.ns.ip(&["link", "set", "eth0", "up"])?;
    ensure!(
        !ok,
        "direct {mode}: a guest with a spoofed MAC reached the switch"
    );
    ensure!(
        after > before,
        "direct {mode}: spoofed MAC not counted (spoofed_mac {before} -> {after})"
    );
    let spoof_mac = format!("dropped (spoofed_mac +{})", after - before);

    let spoofed_ip = "198.51.100.99";
    let before = topo.counter("default", "spoofed_source")?.0;
    g0.ns
        .ip(&["addr", "add", &format!("{spoofed_ip}/24"), "dev", "eth0"])?;
    g0.ns.ip(&["neigh", "flush", "dev", "eth0"])?;
    let ok = g0
        .ns
        .exec_status("ping", &["-c", "1", "-W", "2", "-I", spoofed_ip, probe])?
        .status
        .success();
    let after = topo.counter("default", "spoofed_source")?.0;
    g0.ns
        .ip(&["addr", "del", &format!("{spoofed_ip}/24"), "dev", "eth0"])?;
    ensure!(
        !ok,
        "direct {mode}: a guest with a spoofed IPv4 source reached the switch"
    );
    ensure!(
        after > before,
        "direct {mode}: spoofed IPv4 not counted (spoofed_source {before} -> {after})"
    );
    let spoof_ip = format!("dropped (spoofed_source +{})", after - before);

    let mut out = String::new();
    writeln!(
        out,
        "\nvxdp, direct mode {mode} on up0 (measured: ping + TCP connect)"
    )?;
    for (name, value) in CELLS.iter().zip(&table) {
        let note = if direct_beyond_macvtap(CELLS.iter().position(|c| c == name).unwrap_or(9)) {
            "  [macvtap: no]"
        } else {
            ""
        };
        writeln!(out, "  {name:<14} {value}{note}")?;
    }
    writeln!(out, "  {:<14} {spoof_mac}", "spoofed MAC")?;
    writeln!(out, "  {:<14} {spoof_ip}", "spoofed IPv4")?;
    writeln!(out, "  {:<14} {multicast}", "multicast")?;
    println!("{out}");

    // The NIC's links (XDP, TC ingress, TC egress) and the ports' links go
    // with the network.
    let links = pinned_ids(&topo.bpffs, "links", "link")?;
    ensure!(
        links
            .iter()
            .filter(|(n, _)| n.starts_with("tc_nic_") || n.starts_with("xdp_"))
            .count()
            == 3,
        "expected XDP and TC ingress/egress links on up0, found {links:?}"
    );
    topo.stop()?;
    for (name, id) in &links {
        ensure!(
            !exists("link", *id)?,
            "link {name} (id {id}) survived net-destroy of the direct network"
        );
    }
    Ok(())
}

fn row_entry(table: &mut Vec<String>, entry: String) {
    table.push(entry);
}

/// The IPv6 link-local address of `dev` in `ns` once DAD is done (at most
/// 5 s).
fn link_local(ns: &Netns, dev: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = String::from_utf8(
            ns.ip(&["-6", "-o", "addr", "show", "dev", dev, "scope", "link"])?
                .stdout,
        )?;
        if let Some(addr) = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
            && !out.contains("tentative")
        {
            return Ok(addr.split('/').next().unwrap_or(addr).to_string());
        }
        ensure!(
            Instant::now() < deadline,
            "{dev} in {} has no usable link-local address: {out}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pings an IPv6 link-local address out of the guest's eth0 (neighbour
/// discovery first): three echo requests, at least one answered.
fn ping6(ns: &Netns, addr: &str) -> Result<bool> {
    Ok(ns
        .exec_status(
            "ping",
            &["-6", "-c", "3", "-i", "0.5", "-W", "2", "-I", "eth0", addr],
        )?
        .status
        .success())
}

/// A DHCP server (dnsmasq) on the wan switch; killed (by its pid) on drop.
struct LanDhcp(std::process::Child);

impl Drop for LanDhcp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Guest `i` asks the LAN's DHCP server (on the switch `sw0`) for a lease
/// through the direct network; returns the address offered.
fn lan_dhcp(topo: &NatTopology, i: usize) -> Result<String> {
    let dir = topo.state_dir.join("lan-dhcp");
    std::fs::create_dir_all(&dir)?;
    let server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.wan.name,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
        ])
        .args([
            "--interface=sw0",
            "--bind-interfaces",
            "--except-interface=lo",
            "--user=root",
        ])
        .arg("--dhcp-range=198.51.100.100,198.51.100.150,255.255.255.0,2m")
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting dnsmasq on the LAN")?;
    let _server = LanDhcp(server);
    // udhcpc: a few discovers, one second apart; no script, so the guest
    // keeps its address.
    let out = topo.guests[i].ns.exec_status(
        "udhcpc",
        &[
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ],
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "guest {i} got no DHCP lease from the LAN through the direct network: {text}"
    );
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "lease")
        .nth(2)
        .unwrap_or("?")
        .to_string())
}

#[test]
fn direct_bridge_mode_matrix() -> Result<()> {
    run_direct_matrix("bridge")
}

#[test]
fn direct_vepa_mode_matrix() -> Result<()> {
    run_direct_matrix("vepa")
}

#[test]
fn direct_private_mode_matrix() -> Result<()> {
    run_direct_matrix("private")
}

#[test]
fn direct_passthrough_mode_matrix() -> Result<()> {
    run_direct_matrix("passthrough")
}

/// Switching a network between a direct mode and a bridge-based mode
/// (destroy, start with the other XML) leaves nothing of the old mode:
/// direct → its NIC links, device and port entries, MAC entries gone while
/// another network keeps the dataplane loaded; then route mode on a bridge
/// works for the same guests, and back to direct again.
#[test]
fn switching_between_direct_and_bridge_modes_leaves_nothing() -> Result<()> {
    use vxdp_control::dataplane::{Maps, Pins};

    let mut topo = NatTopology::new("dsw", 2)?;
    std::fs::create_dir_all(&topo.state_dir)?;
    let keeper = topo.state_dir.join("keeper.xml");
    std::fs::write(
        &keeper,
        "<network><name>keeper</name><bridge name='virbr9'/><ip address='192.168.200.1' prefix='24'/></network>",
    )?;
    topo.vxdp(&["net-create", keeper.to_str().context("path")?])?;
    let guest_addrs: Vec<String> = topo.guests.iter().map(|g| g.addr.clone()).collect();
    prepare_direct(&mut topo)?;
    let pins = Pins::new(&topo.bpffs);
    let ctx = vxdp_control::host::Context {
        state_dir: topo.state_dir.clone(),
        pins: pins.clone(),
        load: Default::default(),
    };
    let mut lines = Vec::new();
    for round in 0..2 {
        topo.start_with(&direct_xml("vepa"), true)?;
        topo.wait_ping(0, &topo.guests[1].addr.clone(), Duration::from_secs(20))?;
        let id = vxdp_control::ops::networks::find(&ctx, "default")?.id;
        let maps = Maps::open(&pins)?;
        // (The keeper network's bridge egress link is not the direct
        // network's: a direct network has no vxdp bridge.)
        let links: Vec<_> = pinned_ids(&topo.bpffs, "links", "link")?
            .into_iter()
            .filter(|(n, _)| n.starts_with("tc_") || n.starts_with("xdp_"))
            .filter(|(n, _)| !n.starts_with("tc_bridge_out_"))
            .collect();
        // TC ingress and egress on up0 (its XDP and TC uplink links may be shared with the keeper network as its uplink).
        ensure!(
            links
                .iter()
                .filter(|(n, _)| n.starts_with("tc_nic_"))
                .count()
                == 2,
            "NIC TC links: {links:?}"
        );
        ensure!(
            maps.direct_nics()?.keys().count() == 1 && maps.direct_ports()?.keys().count() == 2,
            "direct map entries missing"
        );
        topo.stop()?;
        // The uplink's XDP and TC links may stay with the keeper network.
        for (name, lid) in links
            .iter()
            .filter(|(n, _)| !n.starts_with("xdp_") && !n.starts_with("tc_uplink_"))
        {
            ensure!(
                !exists("link", *lid)?,
                "link {name} (id {lid}) of the direct network survived net-destroy"
            );
        }
        ensure!(
            maps.direct_nics()?.keys().count() == 0,
            "VXDP_DIRECT_NICS entries survived net-destroy"
        );
        ensure!(
            maps.direct_ports()?.keys().count() == 0,
            "VXDP_DIRECT_PORTS entries survived net-destroy"
        );
        let macs: Vec<_> = maps.macs()?.keys().collect::<Result<Vec<_>, _>>()?;
        ensure!(
            macs.iter().all(|k| k.network_id != id),
            "MAC entries of the direct network survived: {macs:?}"
        );
        ensure!(
            maps.endpoints()?.keys().count() == 0,
            "endpoints survived net-destroy"
        );
        ensure!(
            maps.networks()?.get(&id, 0)? == Default::default(),
            "network slot {id} not cleared"
        );
        lines.push(format!(
            "round {round}: direct vepa -> destroyed: {} links, device/port/MAC entries removed",
            links.len()
        ));

        // The same guests on a routed bridge network.
        for (g, addr) in topo.guests.iter_mut().zip(&guest_addrs) {
            g.addr = addr.clone();
            g.ns.ip(&["addr", "flush", "dev", "eth0"])?;
            g.ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            g.ns.ip(&["route", "replace", "default", "via", GATEWAY])?;
        }
        topo.start_with(&routed_xml("route"), true)?;
        topo.wait_ping(0, &topo.guests[1].addr.clone(), Duration::from_secs(20))?;
        topo.wait_ping(0, GATEWAY, Duration::from_secs(20))?;
        let maps = Maps::open(&pins)?;
        ensure!(
            maps.direct_nics()?.keys().count() == 0 && maps.direct_ports()?.keys().count() == 0,
            "direct entries while in route mode"
        );
        let nic_links = pinned_ids(&topo.bpffs, "links", "link")?
            .into_iter()
            .filter(|(n, _)| n.starts_with("tc_nic_"))
            .count();
        ensure!(nic_links == 0, "NIC TC links while in route mode");
        topo.stop()?;
        lines.push(format!("round {round}: route on virbr0 worked with the same guests, no direct entry or NIC link"));
        prepare_direct_guests(&mut topo)?;
    }
    topo.vxdp(&["net-destroy", "keeper"])?;
    ensure!(
        !topo.bpffs.exists() || std::fs::read_dir(&topo.bpffs)?.next().is_none(),
        "pins left under {}",
        topo.bpffs.display()
    );
    println!("\n{}", lines.join("\n"));
    Ok(())
}

/// The guests' side of [`prepare_direct`] again (the switch stays).
fn prepare_direct_guests(topo: &mut NatTopology) -> Result<()> {
    for (i, g) in topo.guests.iter_mut().enumerate() {
        g.addr = format!("198.51.100.{}", 10 + i);
        g.ns.ip(&["addr", "flush", "dev", "eth0"])?;
        g.ns.ip(&["addr", "add", &format!("{}/24", g.addr), "dev", "eth0"])?;
        g.ns.ip(&["route", "replace", "default", "via", WAN_ADDR])?;
    }
    Ok(())
}

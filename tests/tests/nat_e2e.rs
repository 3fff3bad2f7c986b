//! End to end: libvirt's default NAT network realized by vxdp in throwaway
//! namespaces, with real traffic between a guest and an outside host.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR, fetch, pattern, serve_payload, udp_echo,
};

#[test]
fn default_nat_network_forwards_through_ebpf() -> Result<()> {
    let mut topo = NatTopology::new("e2e", 1)?;
    topo.start(DEFAULT_XML)?;
    let guest = &topo.guests[0];

    // Ping: once the bridge port forwards, three echoes come back.
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let (dnat0, _) = topo.counter("default", "dnat_forwarded")?;
    let out = guest
        .ns
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", OUTSIDE_HOST])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("3 received"),
        "ping lost packets"
    );
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    let (dnat1, _) = topo.counter("default", "dnat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3,
        "3 echo requests should be SNATed by eBPF, counter moved by {}",
        snat1 - snat0
    );
    ensure!(
        dnat1 - dnat0 == 3,
        "3 echo replies should be reverse-NATed by eBPF, counter moved by {}",
        dnat1 - dnat0
    );

    // TCP: 10 MB from the outside host arrive byte-identical; the server
    // sees the uplink's address, not the guest's.
    let payload = pattern(10 * 1024 * 1024, 7);
    let (addr, server) = serve_payload(&topo.wan, &format!("{OUTSIDE_HOST}:0"), payload.clone())?;
    let (snat_b0, _) = topo.counter("default", "dnat_forwarded")?;
    let got = fetch(&guest.ns, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(
        got.len() == payload.len(),
        "received {} bytes of {}",
        got.len(),
        payload.len()
    );
    ensure!(got == payload, "the 10 MB transfer arrived corrupted");
    ensure!(
        peer.ip().to_string() == UPLINK_ADDR,
        "outside host saw {peer}, expected the uplink address {UPLINK_ADDR}"
    );
    let (snat_b1, dnat_bytes) = topo.counter("default", "dnat_forwarded")?;
    ensure!(
        snat_b1 > snat_b0 && dnat_bytes >= payload.len() as u64,
        "the transfer did not take the eBPF path (dnat_forwarded {dnat_bytes} bytes)"
    );

    // UDP request/response, with the guest's checksum offload on (default)
    // and off (then the receiver verifies every checksum in software).
    for offload in ["on", "off"] {
        guest.ns.exec("ethtool", &["-K", "eth0", "tx", offload])?;
        let (addr, echo) = udp_echo(&topo.wan, &format!("{OUTSIDE_HOST}:0"), 1)?;
        let reply = guest.ns.enter(move || -> Result<Vec<u8>> {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.send_to(b"hello through vxdp", addr)?;
            let mut buf = [0u8; 256];
            let n = s.recv(&mut buf).context("no UDP reply")?;
            Ok(buf[..n].to_vec())
        })??;
        echo.join().expect("echo thread")?;
        let text = String::from_utf8_lossy(&reply).to_string();
        ensure!(
            text.ends_with("|hello through vxdp"),
            "UDP reply with offload {offload}: {text:?}"
        );
        ensure!(
            text.starts_with(&format!("{UPLINK_ADDR}:")),
            "UDP seen from {text:?}, expected the uplink address"
        );
    }
    guest.ns.exec("ethtool", &["-K", "eth0", "tx", "on"])?;

    // Conntrack shows the guest's flows mapped to the uplink address.
    let ct = String::from_utf8(topo.vxdp(&["conntrack", "list"])?.stdout)?;
    ensure!(
        ct.contains(&format!("{}:", guest.addr)) && ct.contains(&format!("{UPLINK_ADDR}:")),
        "conntrack list lacks the guest's flows:\n{ct}"
    );

    // No kernel NAT was involved: empty ruleset, no kernel conntrack.
    let rules = topo.hyp.exec("nft", &["list", "ruleset"])?;
    ensure!(
        rules.stdout.iter().all(u8::is_ascii_whitespace),
        "vxdp must install no nftables rules, found:\n{}",
        String::from_utf8_lossy(&rules.stdout)
    );
    let kct = topo.hyp.exec_status("conntrack", &["-L"])?;
    let listed = String::from_utf8_lossy(&kct.stdout);
    ensure!(
        !listed.contains(OUTSIDE_HOST),
        "kernel conntrack has entries for our flows:\n{listed}"
    );

    // Unsolicited inbound: even with a route to the guest subnet via the
    // hypervisor, the outside host cannot connect to the guest.
    topo.wan
        .ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    let listener = guest
        .ns
        .enter(|| std::net::TcpListener::bind("0.0.0.0:8080"))??;
    let (drop0, _) = topo.counter("default", "unsolicited_inbound")?;
    let target: SocketAddr = format!("{}:8080", guest.addr).parse()?;
    let attempt = topo
        .wan
        .enter(move || std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)))?;
    ensure!(
        attempt.is_err(),
        "the outside host connected to the guest: NAT must refuse unsolicited inbound"
    );
    let (drop1, _) = topo.counter("default", "unsolicited_inbound")?;
    ensure!(
        drop1 > drop0,
        "the refused SYN was not counted as unsolicited_inbound ({drop0} -> {drop1})"
    );
    drop(listener);

    // Stopping leaves no pins behind.
    topo.vxdp(&["net-destroy", "default"])?;
    ensure!(
        !topo.bpffs.exists() || std::fs::read_dir(&topo.bpffs)?.next().is_none(),
        "pins left under {}",
        topo.bpffs.display()
    );
    ensure!(
        topo.hyp
            .exec_status("ip", &["link", "show", "virbr0"])?
            .status
            .code()
            != Some(0),
        "virbr0 still exists after net-destroy"
    );
    Ok(())
}

#[test]
fn invalid_definitions_are_refused_naming_the_fault() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vxdp-invalid-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cases = [
        (
            "mode.xml",
            "<network><name>n</name><forward mode='nta'/><ip address='192.168.200.1' prefix='24'/></network>",
            "forward@mode",
            "nta",
        ),
        (
            "addr.xml",
            "<network><name>n</name><forward mode='nat'/><ip address='192.168.300.1' prefix='24'/></network>",
            "/network/ip[1]@address",
            "192.168.300.1",
        ),
        (
            "range.xml",
            "<network><name>n</name><forward mode='nat'/><ip address='192.168.200.1' prefix='24'><dhcp><range start='192.168.201.2' end='192.168.201.9'/></dhcp></ip></network>",
            "range",
            "192.168.201.2",
        ),
    ];
    for (file, xml, element, value) in cases {
        let path = dir.join(file);
        std::fs::write(&path, xml)?;
        let out = std::process::Command::new(vxdp_testkit::vxdp_bin()?)
            .args([
                "--state-dir",
                dir.join("state").to_str().unwrap(),
                "net-validate",
                path.to_str().unwrap(),
            ])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{file} was accepted");
        ensure!(
            err.contains(file) && err.contains(element) && err.contains(value),
            "error for {file} should name the file, {element} and {value}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

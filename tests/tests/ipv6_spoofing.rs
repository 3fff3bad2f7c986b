//! IPv6 anti-spoofing: a guest plugged with a static IPv6 address
//! (`attach-interface --ip <IPv6>`) may send only from it (link-local and
//! unspecified sources stay allowed for neighbour discovery); another
//! global source is dropped and counted (`spoofed_source`). Bad `--ip`
//! values are refused naming the value.
//!
//! Needs root (network namespaces, BPF).

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use vxdp_testkit::{NatTopology, Netns};

const GATEWAY6: &str = "2001:db8:122::1";
const GUEST6: &str = "2001:db8:122::10";
const SPOOFED6: &str = "2001:db8:122::99";

fn ping6_from(ns: &Netns, src: &str, dst: &str) -> Result<bool> {
    Ok(ns
        .exec_status("ping", &["-6", "-c", "1", "-W", "1", "-I", src, dst])?
        .status
        .success())
}

#[test]
fn a_guest_sends_ipv6_only_from_its_own_address() -> Result<()> {
    let mut topo = NatTopology::new("s6", 1)?;
    topo.create(
        "<network><name>default</name><forward mode='route'/><bridge name='virbr0' stp='off'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'/>\
         <ip family='ipv6' address='2001:db8:122::1' prefix='64'/></network>",
    )?;
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
    g.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{SPOOFED6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    let (port, mac, addr) = (g.port.clone(), g.mac.clone(), g.addr.clone());

    // Bad values are refused, naming them; nothing is plugged.
    for (bad, why) in [
        ("2001:db8:999::10", "not a guest address"),
        ("fe80::10", "not a global unicast"),
        (GATEWAY6, "not a guest address"),
    ] {
        let out = topo.vxdp_status(&[
            "attach-interface",
            "--network",
            "default",
            "--dev",
            &port,
            "--mac",
            &mac,
            "--ip",
            bad,
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains(bad) && err.contains(why),
            "--ip {bad}: {err}"
        );
    }
    topo.vxdp(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        &port,
        "--mac",
        &mac,
        "--ip",
        &addr,
        "--ip",
        GUEST6,
    ])?;

    // The bridge's IPv6 address may still be tentative (DAD).
    let start = Instant::now();
    while !ping6_from(&g.ns, GUEST6, GATEWAY6)? {
        if start.elapsed() > Duration::from_secs(15) {
            bail!("the guest never reached the host over IPv6 from its own address");
        }
    }
    let (before, _) = topo.counter("default", "spoofed_source")?;
    ensure!(
        !ping6_from(&g.ns, SPOOFED6, GATEWAY6)?,
        "a ping from a spoofed IPv6 source reached the host"
    );
    let (after, _) = topo.counter("default", "spoofed_source")?;
    ensure!(
        after > before,
        "spoofed IPv6 source not counted (spoofed_source {before} -> {after})"
    );
    ensure!(
        ping6_from(&g.ns, GUEST6, GATEWAY6)?,
        "the guest's own IPv6 source stopped working"
    );
    println!(
        "IPv6 anti-spoofing: own source reaches the host, spoofed source dropped (spoofed_source +{})",
        after - before
    );
    topo.stop()
}

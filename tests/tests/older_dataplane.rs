//! A dataplane pinned by an older vxdp (adopted across an upgrade) keeps
//! working with this control plane: here one without the MAC table
//! (`VXDP_MACS`, whose programs have no port-to-port path). Guests still
//! plug in and reach each other through the bridge.
//!
//! Needs root (network namespaces, BPF).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vxdp_common::names;
use vxdp_control::dataplane::Pins;
use vxdp_testkit::NatTopology;
use vxdp_tests::matrix::routed_xml;

#[test]
fn ports_plug_into_a_dataplane_pinned_before_the_mac_table() -> Result<()> {
    let mut topo = NatTopology::new("old", 2)?;
    topo.create(&routed_xml("route"))?;
    // What an older vxdp pinned: no VXDP_MACS.
    let pin = Pins::new(&topo.bpffs).map(names::MAP_MACS);
    std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    topo.plug_guests(true)?;
    let peer = topo.guests[1].addr.clone();
    topo.wait_ping(0, &peer, Duration::from_secs(20))?;
    let (p2p, _) = topo.counter("default", "port_forwarded")?;
    ensure!(
        p2p == 0,
        "port_forwarded moved to {p2p} without a MAC table"
    );
    for g in topo
        .guests
        .iter()
        .map(|g| g.port.clone())
        .collect::<Vec<_>>()
    {
        topo.vxdp(&["detach-interface", "--network", "default", "--dev", &g])?;
    }
    topo.stop()
}

/// A map whose layout changed since it was pinned (here `VXDP_ENDPOINTS`
/// with the 24-byte endpoints of vxdp before IPv6 anti-spoofing) is
/// reported by name with what to do, not as an obscure map error.
#[test]
fn a_map_pinned_with_an_older_layout_is_named_with_the_way_out() -> Result<()> {
    let mut topo = NatTopology::new("oll", 1)?;
    topo.create(&routed_xml("route"))?;
    let pin = Pins::new(&topo.bpffs).map(names::MAP_ENDPOINTS);
    std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    let pin_s = pin.to_str().context("path")?;
    vxdp_testkit::run(
        "bpftool",
        &[
            "map",
            "create",
            pin_s,
            "type",
            "hash",
            "key",
            "4",
            "value",
            "24",
            "entries",
            "4096",
            "name",
            "VXDP_ENDPOINTS",
        ],
    )?;
    let g = &topo.guests[0];
    let out = topo.vxdp_status(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        &g.port,
        "--mac",
        &g.mac,
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "plugging into a dataplane with an older endpoint layout succeeded"
    );
    ensure!(
        err.contains("VXDP_ENDPOINTS") && err.contains("older vxdp") && err.contains("vxdp unload"),
        "the error does not name the map and the way out: {err}"
    );
    let link = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", &g.port])?.stdout)?;
    ensure!(
        !link.contains("master"),
        "a failed plug left {} enslaved: {link}",
        g.port
    );
    topo.stop()
}

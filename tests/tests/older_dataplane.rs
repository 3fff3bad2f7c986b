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
use vxdp_tests::{
    matrix::routed_xml,
    testbed::NatTopology,
};

#[test]
fn ports_plug_into_a_dataplane_pinned_before_the_mac_table() -> Result<()> {
    let topo = NatTopology::new("old", 2)?;
    std::fs::create_dir_all(&topo.state_dir)?;
    let file = topo.state_dir.join("net.xml");
    std::fs::write(&file, routed_xml("route"))?;
    topo.vxdp(&["net-create", file.to_str().context("path")?])?;
    // What an older vxdp pinned: no VXDP_MACS.
    let pin = Pins::new(&topo.bpffs).map(names::MAP_MACS);
    std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    for g in &topo.guests {
        topo.vxdp(&["attach-interface", "--network", "default", "--dev", &g.port, "--mac", &g.mac, "--ip", &g.addr])?;
    }
    let peer = topo.guests[1].addr.clone();
    topo.wait_ping(0, &peer, Duration::from_secs(20))?;
    let (p2p, _) = topo.counter("default", "port_forwarded")?;
    ensure!(p2p == 0, "port_forwarded moved to {p2p} without a MAC table");
    for g in topo.guests.iter().map(|g| g.port.clone()).collect::<Vec<_>>() {
        topo.vxdp(&["detach-interface", "--network", "default", "--dev", &g])?;
    }
    topo.vxdp(&["net-destroy", "default"])?;
    Ok(())
}

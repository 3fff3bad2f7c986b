//! Host bridge mode never breaks what the operator's bridge does. A bridge
//! that filters itself (VLAN filtering, netfilter calls, isolated ports)
//! keeps the frames between guests: they cross the bridge and its rules
//! instead of vxdp's port-to-port path. This kernel has no VLAN filtering,
//! so the test uses port isolation: the uplink port is isolated when the
//! network starts, then both guest ports; the bridge then keeps the guests
//! apart even when one knows the other's MAC.
//!
//! Needs root (network namespaces, BPF).

use std::time::Duration;

use anyhow::{Result, ensure};
use vxdp_testkit::{NatTopology, run};
use vxdp_tests::matrix::{HOST_BRIDGE_XML, prepare_host_bridge};

#[test]
fn a_filtering_host_bridge_keeps_guest_frames_on_the_bridge() -> Result<()> {
    let mut topo = NatTopology::new("hbi", 2)?;
    prepare_host_bridge(&mut topo)?;
    let hyp = topo.hyp.name.clone();
    let bridge = |args: &[&str]| -> Result<()> {
        let mut a = vec!["-n", hyp.as_str()];
        a.extend_from_slice(args);
        run("bridge", &a).map(|_| ())
    };
    bridge(&["link", "set", "dev", "up0", "isolated", "on"])?;
    topo.start_with(HOST_BRIDGE_XML, true)?;
    let (g0, g1) = (&topo.guests[0], &topo.guests[1]);

    // Guest ports not isolated (yet): the bridge forwards, vxdp does not.
    topo.wait_ping(0, &g1.addr, Duration::from_secs(20))?;
    let (p2p0, _) = topo.counter("default", "port_forwarded")?;
    let (passed0, _) = topo.counter("default", "guest_passed")?;
    let ok = g0
        .ns
        .exec_status("ping", &["-c", "3", "-i", "0.2", "-W", "1", &g1.addr])?;
    ensure!(
        String::from_utf8_lossy(&ok.stdout).contains("3 received"),
        "guests lost pings on the bridge"
    );
    let (p2p1, _) = topo.counter("default", "port_forwarded")?;
    let (passed1, _) = topo.counter("default", "guest_passed")?;
    ensure!(
        p2p1 == p2p0,
        "a filtering bridge was bypassed: port_forwarded {p2p0} -> {p2p1}"
    );
    ensure!(
        passed1 >= passed0 + 6,
        "guest frames did not go to the bridge: guest_passed {passed0} -> {passed1}"
    );

    // Both guest ports isolated: the guests know each other's MACs (a
    // permanent neighbour entry), yet the bridge keeps them apart.
    for g in [g0, g1] {
        bridge(&["link", "set", "dev", &g.port, "isolated", "on"])?;
    }
    g0.ns.ip(&[
        "neigh",
        "replace",
        &g1.addr,
        "lladdr",
        &g1.mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    let apart = g0
        .ns
        .exec_status("ping", &["-c", "2", "-i", "0.2", "-W", "1", &g1.addr])?;
    ensure!(
        !apart.status.success(),
        "isolated bridge ports reached each other: {}",
        String::from_utf8_lossy(&apart.stdout)
    );
    let (p2p2, _) = topo.counter("default", "port_forwarded")?;
    ensure!(
        p2p2 == p2p1,
        "frames went port to port past the bridge's port isolation: port_forwarded {p2p1} -> {p2p2}"
    );
    println!(
        "host bridge with isolated ports: guests reached each other through the bridge, then isolation held; port_forwarded unchanged ({p2p2})"
    );
    topo.stop()
}

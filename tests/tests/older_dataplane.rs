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
    // What an older vxdp pinned: no VXDP_MACS, and no layout marker (the
    // layout is then told by the maps there are).
    let pins = Pins::new(&topo.bpffs);
    for pin in [pins.map(names::MAP_MACS), pins.layout_marker()] {
        std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    }
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

/// A layout marker this vxdp does not know (a newer vxdp's, or not
/// vxdp's at all) is refused when the dataplane is adopted or used, naming
/// the way out, and nothing changes on the host.
#[test]
fn a_newer_or_foreign_layout_is_refused_with_the_way_out() -> Result<()> {
    use vxdp_control::dataplane::layout;

    let mut topo = NatTopology::new("nwl", 1)?;
    topo.create(&routed_xml("route"))?;
    let marker = Pins::new(&topo.bpffs).layout_marker();
    let ours = std::fs::read_link(&marker).context("the layout marker of a fresh dataplane")?;
    ensure!(
        ours.to_str() == Some(layout::marker(layout::CURRENT).as_str()),
        "a fresh dataplane's marker is {ours:?}"
    );
    let g = &topo.guests[0];
    for (target, words) in [
        (layout::marker(layout::CURRENT + 1), "newer than this vxdp"),
        ("cilium 1".to_string(), "not a vxdp map layout"),
    ] {
        std::fs::remove_file(&marker)?;
        std::os::unix::fs::symlink(&target, &marker)?;
        for args in [
            &[
                "attach-interface",
                "--network",
                "default",
                "--dev",
                &g.port,
                "--mac",
                &g.mac,
            ][..],
            &["load"][..],
        ] {
            let out = topo.vxdp_status(args)?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success(),
                "{args:?} succeeded on a dataplane with layout {target:?}"
            );
            ensure!(
                err.contains(words) && err.contains("vxdp unload"),
                "{args:?} with layout {target:?}: the error does not say what and the way out: {err}"
            );
        }
        let link = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", &g.port])?.stdout)?;
        ensure!(
            !link.contains("master"),
            "a refused plug left {} enslaved: {link}",
            g.port
        );
    }
    std::fs::remove_file(&marker)?;
    std::os::unix::fs::symlink(layout::marker(layout::CURRENT), &marker)?;
    topo.stop()
}

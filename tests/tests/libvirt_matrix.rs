//! Differential test (connection table; the XML acceptance one is
//! `libvirt_diff.rs`): the connection table measured on libvirt's own
//! implementation (libvirtd in the hypervisor's namespace, its bridge,
//! firewall rules and dnsmasq) must agree cell for cell with the table
//! vxdp is held to (`matrix::TABLE`, enforced on vxdp by `modes_e2e`). The
//! same topology, XML and probes (ping and TCP connect) are used.
//!
//! The direct (macvtap) modes are measured the same way on libvirt's own
//! implementation: libvirt allocates each guest's port (`virsh
//! net-port-create` answers with the uplink and macvtap mode), the test
//! creates the macvtap device libvirt would create when the domain starts,
//! and a relay plays qemu between the device and the guest's NIC
//! (`vxdp_tests::macvtap`). Where vxdp deliberately goes further than
//! macvtap (`direct_beyond_macvtap`: the host reaching its guests) the
//! cells are named as such, not counted as disagreement.
//!
//! Needs root, libvirt-daemon-system, libvirt-clients and dnsmasq-base.

use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed, time::Duration};

use anyhow::{Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, UPLINK_ADDR, WAN_ADDR};
use vxdp_tests::{
    libvirt::Libvirtd,
    macvtap::{MacvtapNic, PrivateDir, allocate_port},
    matrix::{
        CELLS, DEFAULT_XML_NAME, DIRECT_MODES, GATEWAY, HOST_BRIDGE_XML, VERY_ISOLATED_XML,
        direct_beyond_macvtap, direct_expected, direct_guests, direct_xml, expected, mac_of,
        measure, prepare_direct, prepare_host_bridge, routed_xml,
    },
};

fn libvirt_row(mode: &str, xml: &str) -> Result<[bool; 4]> {
    let mut topo = NatTopology::new(&format!("lv{}", &mode[..2]), 2)?;
    let bridge = if mode == "bridge" {
        prepare_host_bridge(&mut topo)?;
        "br0"
    } else {
        "virbr0"
    };
    let libvirt = Libvirtd::start_in(&topo.hyp)?;
    libvirt.net_create(DEFAULT_XML_NAME, xml)?;
    for g in &topo.guests {
        // What libvirt does for a guest's tap: enslave it to the bridge.
        topo.hyp
            .ip(&["link", "set", &g.port, "master", bridge, "up"])?;
    }
    topo.wan
        .ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    let host_target = if mode == "bridge" {
        UPLINK_ADDR
    } else if mode == "very-isolated" {
        // As in the vxdp test: guests know the bridge's MAC, so packets
        // reach the host at layer 2 and the implementation decides.
        let mac = mac_of(&topo.hyp, "virbr0")?;
        for g in &topo.guests {
            g.ns.ip(&[
                "neigh",
                "replace",
                GATEWAY,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        UPLINK_ADDR
    } else {
        GATEWAY
    };
    // libvirt's bridges run STP: ~4 s before a port passes anything.
    topo.wait_ping(0, &topo.guests[1].addr.clone(), Duration::from_secs(20))?;
    let (g0, g1) = (&topo.guests[0], &topo.guests[1]);
    let mut row = [false; 4];
    for (i, cell) in row.iter_mut().enumerate() {
        let (from, dst, server) = match i {
            0 => (&g0.ns, host_target, &topo.hyp),
            1 => (&g0.ns, g1.addr.as_str(), &g1.ns),
            2 => (&g0.ns, OUTSIDE_HOST, &topo.wan),
            _ => (&topo.wan, g1.addr.as_str(), &g1.ns),
        };
        let m = measure(from, dst, server)?;
        ensure!(
            m.ping == m.tcp,
            "libvirt {mode} {}: ping {} but TCP {}",
            CELLS[i],
            m.ping,
            m.tcp
        );
        *cell = m.tcp;
    }
    Ok(row)
}

#[test]
fn libvirt_agrees_with_vxdp_cell_for_cell() -> Result<()> {
    let modes = [
        ("nat", DEFAULT_XML.to_string()),
        ("route", routed_xml("route")),
        ("open", routed_xml("open")),
        ("isolated", routed_xml("")),
        ("very-isolated", VERY_ISOLATED_XML.to_string()),
        ("bridge", HOST_BRIDGE_XML.to_string()),
    ];
    let mut table = String::from("\nmode           cell            libvirt  vxdp\n");
    let mut disagree = Vec::new();
    for (mode, xml) in modes {
        let measured = libvirt_row(mode, &xml)?;
        let vxdp = expected(mode);
        for i in 0..4 {
            let yn = |b: bool| if b { "yes" } else { "no" };
            writeln!(
                table,
                "{mode:<14} {:<15} {:<8} {}",
                CELLS[i],
                yn(measured[i]),
                yn(vxdp[i])
            )?;
            if measured[i] != vxdp[i] {
                disagree.push(format!("{mode} {}", CELLS[i]));
            }
        }
    }
    println!("{table}");
    ensure!(
        disagree.is_empty(),
        "libvirt and vxdp disagree on: {disagree:?}{table}"
    );
    Ok(())
}

/// One direct mode measured on libvirt.
struct DirectRow {
    /// Per cell of [`CELLS`] on `prepare_direct`'s switch (the topology
    /// vxdp is measured on); `None` where the cell does not apply.
    cells: [Option<bool>; 4],
    /// guest→host and guest→guest again with the switch's hairpin off (a
    /// plain switch that never sends a frame back where it came from).
    plain_host: bool,
    plain_guests: Option<bool>,
    /// host→guest behind the plain switch.
    plain_host_to_guest: bool,
    /// Extra lines for the printed table (checks beyond the row).
    notes: Vec<String>,
}

fn yn(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "n/a",
    }
}

/// Measures one cell; ping and TCP must agree.
fn direct_cell(mode: &str, cell: &str, from: &Netns, dst: &str, server: &Netns) -> Result<bool> {
    let m = measure(from, dst, server)?;
    ensure!(
        m.ping == m.tcp,
        "libvirt direct {mode} {cell}: ping {} but TCP {}",
        m.ping,
        m.tcp
    );
    Ok(m.tcp)
}

fn libvirt_direct_row(mode: &str) -> Result<DirectRow> {
    let mut topo = NatTopology::new(&format!("ld{}", &mode[..2]), direct_guests(mode))?;
    prepare_direct(&mut topo)?;
    let dir = PrivateDir::new(&topo.prefix)?;
    let libvirt = Libvirtd::start_in(&topo.hyp)?;
    libvirt.net_create(DEFAULT_XML_NAME, &direct_xml(mode))?;
    let mut notes = Vec::new();
    // Declared after libvirt and topo: the relays stop and the macvtap
    // devices go first, whatever fails.
    let mut nics = Vec::new();
    for (i, g) in topo.guests.iter().enumerate() {
        let plug = allocate_port(
            &libvirt,
            &dir.0,
            DEFAULT_XML_NAME,
            &format!("guest{i}"),
            &g.mac,
        )?;
        ensure!(
            plug.dev == "up0" && plug.mode == mode,
            "libvirt plugs guest{i} as {plug:?}, not {mode} on up0"
        );
        nics.push(MacvtapNic::plug(
            &topo.hyp,
            g,
            &format!("macvtap{i}"),
            &plug,
            &dir.0,
        )?);
        // The VM's NIC is new: the guest configures it as prepare_direct did.
        g.ns.ip(&["addr", "add", &format!("{}/24", g.addr), "dev", "eth0"])?;
        g.ns.ip(&["route", "replace", "default", "via", WAN_ADDR])?;
    }
    if mode == "passthrough" {
        // One guest owns the NIC: libvirt refuses a second one.
        let second = allocate_port(
            &libvirt,
            &dir.0,
            DEFAULT_XML_NAME,
            "guest1",
            "52:54:00:00:00:99",
        );
        ensure!(
            second.is_err(),
            "libvirt gave a second guest the passthrough NIC: {:?}",
            second.ok()
        );
        notes.push(format!(
            "direct {mode:<11} -        second guest    refused by libvirt (net-port-create fails)"
        ));
    }
    // Guest→outside is "yes" in every direct mode: wait until the relay and
    // the uplink's switch carry frames before measuring.
    if let Err(e) = topo.wait_ping(0, WAN_ADDR, Duration::from_secs(10)) {
        let c = &nics[0].counts;
        let (out, inn) = (c.from_guest.load(Relaxed), c.to_guest.load(Relaxed));
        bail!(
            "{e}: relay of {} moved {out} frames from the guest, {inn} to it (running: {})",
            nics[0].macvtap,
            nics[0].running()
        );
    }
    let g0 = &topo.guests[0];
    let target = topo.guests.get(1).unwrap_or(g0);
    let mut cells = [None; 4];
    cells[0] = Some(direct_cell(mode, CELLS[0], &g0.ns, UPLINK_ADDR, &topo.hyp)?);
    if let Some(g1) = topo.guests.get(1) {
        cells[1] = Some(direct_cell(mode, CELLS[1], &g0.ns, &g1.addr, &g1.ns)?);
    }
    cells[2] = Some(direct_cell(
        mode,
        CELLS[2],
        &g0.ns,
        OUTSIDE_HOST,
        &topo.wan,
    )?);
    cells[3] = Some(direct_cell(
        mode,
        CELLS[3],
        &topo.wan,
        &target.addr,
        &target.ns,
    )?);
    // The same from behind a plain switch: macvtap never hands a guest's
    // frame to the host's own stack, so whatever reached the host came back
    // from the switch; a VEPA guest's frames to another guest only come
    // back from a hairpin; bridge mode delivers between guests locally.
    topo.wan.ip(&[
        "link",
        "set",
        "dev",
        "wan0",
        "type",
        "bridge_slave",
        "hairpin",
        "off",
    ])?;
    for ns in topo.guests.iter().map(|g| &g.ns) {
        ns.ip(&["neigh", "flush", "dev", "eth0"])?;
    }
    topo.hyp.ip(&["neigh", "flush", "dev", "up0"])?;
    let plain_host = direct_cell(mode, CELLS[0], &g0.ns, UPLINK_ADDR, &topo.hyp)?;
    ensure!(
        !plain_host,
        "libvirt direct {mode}: a guest reaches the host behind a switch without hairpin"
    );
    let host_to_guest = direct_cell(mode, "host→guest", &topo.hyp, &g0.addr, &g0.ns)?;
    ensure!(
        !host_to_guest,
        "libvirt direct {mode}: the host reaches a guest behind a switch without hairpin"
    );
    let plain_guests = match topo.guests.get(1) {
        Some(g1) => Some(direct_cell(mode, CELLS[1], &g0.ns, &g1.addr, &g1.ns)?),
        None => None,
    };
    let macvtap_guests = match mode {
        "bridge" => Some(true),
        "vepa" | "private" => Some(false),
        _ => None,
    };
    ensure!(
        plain_guests == macvtap_guests,
        "libvirt direct {mode} behind a switch without hairpin: guest→guest {} (macvtap {mode} mode: {})",
        yn(plain_guests),
        yn(macvtap_guests)
    );
    for nic in &nics {
        // The guest's only link is its relay: whatever it reached went
        // through libvirt's macvtap device.
        let (out, inn) = (
            nic.counts.from_guest.load(Relaxed),
            nic.counts.to_guest.load(Relaxed),
        );
        ensure!(
            nic.running(),
            "relay of {} stopped during the measurement",
            nic.macvtap
        );
        ensure!(
            out > 0 && inn > 0,
            "relay of {} moved {out} frames from its guest, {inn} to it",
            nic.macvtap
        );
    }
    drop(nics);
    Ok(DirectRow {
        cells,
        plain_host,
        plain_guests,
        plain_host_to_guest: host_to_guest,
        notes,
    })
}

/// Compares one libvirt cell with vxdp's: "" when they agree, the named
/// exception where vxdp deliberately goes further, or `None` (disagreement).
fn direct_verdict(cell: usize, libvirt: Option<bool>, vxdp: Option<bool>) -> Option<&'static str> {
    match (libvirt, vxdp) {
        (a, b) if a == b => Some(""),
        (Some(false), Some(true)) if direct_beyond_macvtap(cell) => {
            Some("vxdp goes further (host-side port)")
        }
        _ => None,
    }
}

#[test]
fn libvirt_direct_modes_agree_with_vxdp() -> Result<()> {
    let mut table = String::from("\nmode               switch   cell            libvirt  vxdp\n");
    let mut disagree = Vec::new();
    let mut notes = Vec::new();
    for mode in DIRECT_MODES {
        let row = libvirt_direct_row(mode)?;
        let vxdp = direct_expected(mode);
        for (i, cell) in CELLS.iter().enumerate() {
            let verdict = direct_verdict(i, row.cells[i], vxdp[i]).unwrap_or_else(|| {
                disagree.push(format!("{mode} {cell}"));
                "DISAGREE"
            });
            writeln!(
                table,
                "direct {mode:<11} hairpin  {cell:<15} {:<8} {:<5} {verdict}",
                yn(row.cells[i]),
                yn(vxdp[i])
            )?;
        }
        // vxdp's host-side port does not depend on the switch: its
        // guest→host stays "yes" behind a plain switch too.
        let verdict = direct_verdict(0, Some(row.plain_host), vxdp[0]).unwrap_or_else(|| {
            disagree.push(format!("{mode} {} (plain switch)", CELLS[0]));
            "DISAGREE"
        });
        writeln!(
            table,
            "direct {mode:<11} plain    {:<15} {:<8} {:<5} {verdict}",
            CELLS[0],
            yn(Some(row.plain_host)),
            yn(vxdp[0])
        )?;
        if row.plain_guests.is_some() {
            writeln!(
                table,
                "direct {mode:<11} plain    {:<15} {:<8} -     (macvtap {mode} mode)",
                CELLS[1],
                yn(row.plain_guests)
            )?;
        }
        writeln!(
            table,
            "direct {mode:<11} plain    {:<15} {:<8} -     (macvtap hands the host's frames to the wire only)",
            "host→guest",
            yn(Some(row.plain_host_to_guest))
        )?;
        notes.extend(row.notes);
    }
    for note in notes {
        writeln!(table, "{note}")?;
    }
    println!("{table}");
    ensure!(
        disagree.is_empty(),
        "libvirt (macvtap) and vxdp disagree on: {disagree:?}{table}"
    );
    Ok(())
}

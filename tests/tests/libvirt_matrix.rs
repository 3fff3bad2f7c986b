//! Differential test (connection table; the XML acceptance one is
//! `libvirt_diff.rs`): the connection table measured on libvirt's own
//! implementation (libvirtd in the hypervisor's namespace, its bridge,
//! firewall rules and dnsmasq) must agree cell for cell with the table
//! vxdp is held to (`matrix::TABLE`, enforced on vxdp by `modes_e2e`). The
//! same topology, XML and probes (ping and TCP connect) are used.
//!
//! Needs root, libvirt-daemon-system, libvirt-clients and dnsmasq-base.

use std::{fmt::Write as _, time::Duration};

use anyhow::{Result, ensure};
use vxdp_tests::{
    libvirt::Libvirtd,
    matrix::{CELLS, DEFAULT_XML_NAME, GATEWAY, HOST_BRIDGE_XML, VERY_ISOLATED_XML, prepare_host_bridge, expected, mac_of, measure, routed_xml},
    testbed::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR},
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
        topo.hyp.ip(&["link", "set", &g.port, "master", bridge, "up"])?;
    }
    topo.wan.ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    let host_target = if mode == "bridge" {
        UPLINK_ADDR
    } else if mode == "very-isolated" {
        // As in the vxdp test: guests know the bridge's MAC, so packets
        // reach the host at layer 2 and the implementation decides.
        let mac = mac_of(&topo.hyp, "virbr0")?;
        for g in &topo.guests {
            g.ns.ip(&["neigh", "replace", GATEWAY, "lladdr", &mac, "dev", "eth0", "nud", "permanent"])?;
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
        ensure!(m.ping == m.tcp, "libvirt {mode} {}: ping {} but TCP {}", CELLS[i], m.ping, m.tcp);
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
            writeln!(table, "{mode:<14} {:<15} {:<8} {}", CELLS[i], yn(measured[i]), yn(vxdp[i]))?;
            if measured[i] != vxdp[i] {
                disagree.push(format!("{mode} {}", CELLS[i]));
            }
        }
    }
    println!("{table}");
    ensure!(disagree.is_empty(), "libvirt and vxdp disagree on: {disagree:?}{table}");
    Ok(())
}

//! Differential test: IPv6 in a NAT network measured on libvirt 9.0's own
//! implementation (libvirtd in the hypervisor's namespace, its bridge,
//! ip6tables rules and dnsmasq) and on vxdp, with the same topology, XML
//! and probes (ping6 and TCP connect). For a NAT network with an IPv6
//! `<ip>`, without and with `<nat ipv6='yes'>`: can a guest reach the
//! outside host, which address does the outside host see (the guest's own
//! or the uplink's), can the outside host reach a guest (it routes the
//! guests' prefix to the hypervisor). Both must agree on every answer.
//!
//! Needs root, libvirt-daemon-system, libvirt-clients and dnsmasq-base.

use std::{fmt::Write as _, net::IpAddr};

use anyhow::{Result, ensure};
use vxdp_testkit::NatTopology;
use vxdp_tests::{
    ipv6nat::{OUTSIDE6, UPLINK6, guest6, measure6, topology, wait_ping6, xml},
    libvirt::Libvirtd,
};

/// What one implementation does with a NAT network's IPv6.
#[derive(Debug, PartialEq, Eq)]
struct Behaviour {
    /// Guest 0 → outside host (ping6 and TCP).
    outbound: bool,
    /// The address the outside host saw: "uplink" or "guest" (own address).
    seen_as: &'static str,
    /// Outside host → guest 1 (ping6 and TCP).
    inbound: bool,
}

fn probe(topo: &NatTopology, who: &str) -> Result<Behaviour> {
    wait_ping6(topo, 0, OUTSIDE6)?;
    let (ping, tcp, peer) = measure6(&topo.guests[0].ns, OUTSIDE6, &topo.wan)?;
    ensure!(
        ping == tcp,
        "{who}: guest → outside: ping6 {ping} but TCP {tcp}"
    );
    let seen_as = match peer {
        Some(p) if p == UPLINK6.parse::<IpAddr>()? => "uplink",
        Some(p) if p == guest6(0).parse::<IpAddr>()? => "guest",
        Some(p) => anyhow::bail!(
            "{who}: the outside host saw the guest as {p}, neither its own nor the uplink's address"
        ),
        None => "nothing",
    };
    let (ping_in, tcp_in, _) = measure6(&topo.wan, &guest6(1), &topo.guests[1].ns)?;
    ensure!(
        ping_in == tcp_in,
        "{who}: outside → guest: ping6 {ping_in} but TCP {tcp_in}"
    );
    Ok(Behaviour {
        outbound: tcp,
        seen_as,
        inbound: tcp_in,
    })
}

fn libvirt(nat66: bool) -> Result<Behaviour> {
    let topo = topology(if nat66 { "lv66" } else { "lv6r" })?;
    let lv = Libvirtd::start_in(&topo.hyp)?;
    lv.net_create("default", &xml(nat66))?;
    for g in &topo.guests {
        // What libvirt does for a guest's tap: enslave it to the bridge.
        topo.hyp
            .ip(&["link", "set", &g.port, "master", "virbr0", "up"])?;
    }
    let b = probe(&topo, "libvirt");
    lv.clean_networks();
    b
}

fn vxdp(nat66: bool) -> Result<Behaviour> {
    let mut topo = topology(if nat66 { "vx66" } else { "vx6r" })?;
    topo.start(&xml(nat66))?;
    let b = probe(&topo, "vxdp");
    topo.stop()?;
    b
}

#[test]
fn ipv6_in_nat_networks_behaves_like_libvirt() -> Result<()> {
    let mut table =
        String::from("\nnat ipv6   implementation  guest→outside  seen as  outside→guest\n");
    let mut disagree = Vec::new();
    for nat66 in [false, true] {
        let l = libvirt(nat66)?;
        let v = vxdp(nat66)?;
        for (who, b) in [("libvirt 9.0", &l), ("vxdp", &v)] {
            writeln!(
                table,
                "{:<10} {who:<15} {:<14} {:<8} {}",
                if nat66 { "yes" } else { "no" },
                b.outbound,
                b.seen_as,
                b.inbound
            )?;
        }
        if l != v {
            disagree.push(format!(
                "nat ipv6={}: libvirt {l:?}, vxdp {v:?}",
                if nat66 { "yes" } else { "no" }
            ));
        }
        // What the README promises, so that agreeing on something else
        // (both broken) fails too.
        let want = if nat66 {
            Behaviour {
                outbound: true,
                seen_as: "uplink",
                inbound: false,
            }
        } else {
            Behaviour {
                outbound: true,
                seen_as: "guest",
                inbound: true,
            }
        };
        ensure!(
            v == want,
            "vxdp with nat ipv6={nat66}: {v:?}, documented {want:?}{table}"
        );
    }
    println!("{table}");
    ensure!(
        disagree.is_empty(),
        "libvirt and vxdp disagree: {disagree:?}{table}"
    );
    Ok(())
}

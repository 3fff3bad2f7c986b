//! Direct (macvtap-like) networks through the real `vxdp` binary: a pool of
//! devices (each guest on the least used one; passthrough: one guest per
//! device, a third refused), and reconcile (`vxdp load`) putting back a
//! device's detached TC link and a port's lost device entry.
//!
//! Needs root (network namespaces, BPF).

use anyhow::{Context, Result, ensure};
use vxdp_control::dataplane::{Maps, Pins};
use vxdp_testkit::run;
use vxdp_tests::corpus::VxdpHost;

fn ifindex(host: &VxdpHost, dev: &str) -> Result<u32> {
    let out = String::from_utf8(host.ns.ip(&["-o", "link", "show", dev])?.stdout)?;
    Ok(out.split(':').next().context("ifindex")?.trim().parse()?)
}

fn link_id(path: &std::path::Path) -> Result<String> {
    let out = run(
        "bpftool",
        &["link", "show", "pinned", path.to_str().context("path")?],
    )?;
    Ok(String::from_utf8(out.stdout)?
        .split(':')
        .next()
        .context("link id")?
        .trim()
        .to_string())
}

#[test]
fn passthrough_pool_gives_each_guest_its_own_device_and_reconcile_repairs_it() -> Result<()> {
    let host = VxdpHost::new("dcli")?;
    for i in 0..3 {
        host.ns.ip(&[
            "link",
            "add",
            &format!("vnet{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("gp{i}"),
        ])?;
        host.ns.ip(&["link", "set", &format!("vnet{i}"), "up"])?;
        host.ns.ip(&["link", "set", &format!("gp{i}"), "up"])?;
    }
    let xml = host.write(
        "pt.xml",
        "<network><name>pt</name><forward mode='passthrough'><interface dev='eth1'/><interface dev='eth2'/></forward></network>",
    )?;
    host.vxdp(&["net-create", xml.to_str().context("path")?])?;
    let (eth1, eth2) = (ifindex(&host, "eth1")?, ifindex(&host, "eth2")?);
    let pins = Pins::new(&host.bpffs);
    let mut devices = Vec::new();
    for i in 0..2 {
        host.vxdp(&[
            "attach-interface",
            "--network",
            "pt",
            "--dev",
            &format!("vnet{i}"),
            "--mac",
            &format!("52:54:00:00:10:0{i}"),
        ])?;
        let port = ifindex(&host, &format!("vnet{i}"))?;
        devices.push(
            Maps::open(&pins)?
                .direct_port(port)?
                .context("no device entry for the port")?,
        );
    }
    devices.sort();
    ensure!(
        devices == vec![eth1.min(eth2), eth1.max(eth2)],
        "each guest must get its own device: {devices:?} (eth1 {eth1}, eth2 {eth2})"
    );
    let out = host.vxdp_status(&[
        "attach-interface",
        "--network",
        "pt",
        "--dev",
        "vnet2",
        "--mac",
        "52:54:00:00:10:02",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("passthrough") && err.contains("eth1, eth2"),
        "a third guest on a two-device passthrough pool: {err}"
    );
    ensure!(
        Maps::open(&pins)?
            .direct_port(ifindex(&host, "vnet2")?)?
            .is_none(),
        "the refused port left a device entry"
    );

    // Reconcile: a device's TC ingress link detached by hand and a port's
    // device entry removed come back with `vxdp load`.
    let [nic_in, _] = pins.nic_links(eth1);
    let old = link_id(&nic_in)?;
    run("bpftool", &["link", "detach", "id", &old])?;
    let port0 = ifindex(&host, "vnet0")?;
    let maps = Maps::open(&pins)?;
    let dev0 = maps.direct_port(port0)?.context("vnet0 has no device")?;
    maps.remove_direct_port(port0)?;
    host.vxdp(&["load"])?;
    let new = link_id(&nic_in)?;
    ensure!(
        new != old,
        "the detached TC link on eth1 was not replaced (still {old})"
    );
    ensure!(
        maps.direct_port(port0)? == Some(dev0),
        "vnet0's device entry not restored"
    );
    let nic = maps.direct_nic(dev0)?.context("device entry gone")?;
    ensure!(
        nic.port_count == 1 && nic.ports[0] == port0,
        "device {dev0} lists its ports wrongly after the repair: {:?}",
        &nic.ports[..nic.port_count as usize]
    );

    host.vxdp(&["net-destroy", "pt"])?;
    ensure!(
        !host.bpffs.join("links").exists()
            || std::fs::read_dir(host.bpffs.join("links"))?
                .next()
                .is_none(),
        "links left after net-destroy"
    );
    println!(
        "passthrough pool eth1+eth2: two guests on two devices, a third refused; reconcile restored a TC link and a device entry"
    );
    Ok(())
}

//! `vxdp libvirt-adopt` / `vxdp libvirt-release` against a real, private
//! libvirtd (issue 18, item 1): libvirtd runs in the test's hypervisor
//! namespace (and a private mount namespace, see `vxdp_tests::libvirt`);
//! vxdp reaches it through `--connect` with the URI of its private socket.
//!
//! No VM here: a guest started by libvirt on the adopted network is
//! emulated where vxdp sees it, a `vnetN` with libvirt's tap MAC (`fe` +
//! the guest MAC's last five bytes) enslaved to the bridge.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, run_vxdp};
use vxdp_tests::libvirt::Libvirtd;

/// Destroys and undefines vxdp's `default` whatever the test did (dropped
/// before libvirtd and the namespaces).
struct VxdpCleanup {
    ns: String,
    state_dir: PathBuf,
    bpffs: PathBuf,
}

impl Drop for VxdpCleanup {
    fn drop(&mut self) {
        let _ = run_vxdp(
            &self.ns,
            &self.state_dir,
            &self.bpffs,
            &["net-destroy", "default"],
        );
        let _ = run_vxdp(
            &self.ns,
            &self.state_dir,
            &self.bpffs,
            &["net-undefine", "default"],
        );
    }
}

fn cleanup(topo: &NatTopology) -> VxdpCleanup {
    VxdpCleanup {
        ns: topo.hyp.name.clone(),
        state_dir: topo.state_dir.clone(),
        bpffs: topo.bpffs.clone(),
    }
}

fn virsh_ok(lv: &Libvirtd, args: &[&str]) -> Result<String> {
    let out = lv.virsh(args)?;
    ensure!(
        out.status.success(),
        "virsh {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// libvirt's `default`, defined from the stock XML, started, autostarted.
fn libvirt_default(topo: &NatTopology) -> Result<Libvirtd> {
    let lv = Libvirtd::start_in(&topo.hyp)?;
    let file = topo.state_dir.join("libvirt-default.xml");
    std::fs::create_dir_all(&topo.state_dir)?;
    std::fs::write(&file, DEFAULT_XML)?;
    // The test's /tmp is libvirtd's too (only libvirt's own paths are private).
    virsh_ok(&lv, &["net-define", file.to_str().context("path")?])?;
    virsh_ok(&lv, &["net-start", "default"])?;
    virsh_ok(&lv, &["net-autostart", "default"])?;
    Ok(lv)
}

fn info(lv: &Libvirtd) -> Result<String> {
    virsh_ok(lv, &["net-info", "default"])
}

fn field(info: &str, key: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// libvirt's dnsmasq for `default` runs (in this namespace).
fn libvirt_dnsmasq_runs(topo: &NatTopology) -> Result<bool> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &topo.hyp.name])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains("/var/lib/libvirt/dnsmasq/default.conf")
            })
        }))
}

fn wait_ping(ns: &Netns, dst: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ns
            .exec_status("ping", &["-c", "1", "-W", "1", dst])?
            .status
            .success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} cannot ping {dst} within 20 s", ns.name);
        }
    }
}

#[test]
fn adopt_and_release_the_default_network() -> Result<()> {
    let topo = NatTopology::new("lad", 0)?;
    let lv = libvirt_default(&topo)?;
    let _vx = cleanup(&topo);
    let before = virsh_ok(&lv, &["net-dumpxml", "--inactive", "default"])?;
    let uuid = field(&virsh_ok(&lv, &["net-info", "default"])?, "UUID:");
    ensure!(!uuid.is_empty(), "libvirt gave default no UUID");
    ensure!(
        libvirt_dnsmasq_runs(&topo)?,
        "libvirt's dnsmasq is not running before adopt"
    );

    let uri = lv.uri();
    let out = topo.vxdp(&["libvirt-adopt", "default", "--connect", &uri])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("adopted"),
        "adopt said: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // libvirt keeps `default`, same UUID, as a bridge network on virbr0,
    // running and autostarted; its dnsmasq is gone.
    let standin = virsh_ok(&lv, &["net-dumpxml", "--inactive", "default"])?;
    ensure!(
        standin.contains("<forward mode='bridge'/>")
            && standin.contains("<bridge name='virbr0'/>")
            && standin.contains(&format!("<uuid>{uuid}</uuid>"))
            && !standin.contains("<ip"),
        "libvirt's stand-in definition:\n{standin}"
    );
    let i = info(&lv)?;
    ensure!(
        field(&i, "Active:") == "yes" && field(&i, "Autostart:") == "yes",
        "libvirt's stand-in state:\n{i}"
    );
    ensure!(
        !libvirt_dnsmasq_runs(&topo)?,
        "libvirt's dnsmasq still runs for the adopted network"
    );
    // vxdp runs it: started, autostarted, on virbr0 with libvirt's address.
    let list = String::from_utf8(topo.vxdp(&["net-list", "--all"])?.stdout)?;
    let row = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some("default"))
        .with_context(|| format!("default not in vxdp net-list:\n{list}"))?;
    ensure!(
        row.contains("active") && row.contains("yes"),
        "vxdp's default: {row}"
    );
    let addr = String::from_utf8(
        topo.hyp
            .ip(&["-o", "addr", "show", "dev", "virbr0"])?
            .stdout,
    )?;
    ensure!(
        addr.contains("192.168.122.1/24"),
        "virbr0 lacks libvirt's address: {addr}"
    );
    // Adopting twice is refused, and changes nothing.
    let again = topo.vxdp_status(&["libvirt-adopt", "default", "--connect", &uri])?;
    ensure!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already adopted"),
        "a second adopt: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A guest libvirt starts on `default` now: its tap on virbr0 is plugged
    // by vxdp's reconcile (`vxdp load` runs one pass) and its traffic is
    // NATed by vxdp.
    let g = Netns::new(format!("{}-g0", topo.prefix))?;
    topo.hyp.ip(&[
        "link",
        "add",
        "vnet0",
        "address",
        "fe:54:00:00:00:10",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "address",
        "52:54:00:00:00:10",
        "netns",
        &g.name,
    ])?;
    g.ip(&["addr", "add", "192.168.122.10/24", "dev", "eth0"])?;
    g.ip(&["link", "set", "eth0", "up"])?;
    g.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    topo.hyp
        .ip(&["link", "set", "vnet0", "master", "virbr0", "up"])?;
    topo.vxdp(&["load"])?;
    topo.wait_port_forwarding("vnet0", Duration::from_secs(20))?;
    wait_ping(&g, OUTSIDE_HOST)?;
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let ping = g.exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", OUTSIDE_HOST])?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains("3 received"),
        "pings lost through the adopted network"
    );
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3,
        "not through vxdp: snat_forwarded +{}",
        snat1 - snat0
    );

    // Release: libvirt's own definition (exactly), state and dnsmasq come
    // back; vxdp has no `default` any more.
    topo.vxdp(&["libvirt-release", "default", "--connect", &uri])?;
    let after = virsh_ok(&lv, &["net-dumpxml", "--inactive", "default"])?;
    ensure!(
        after == before,
        "libvirt's definition changed:\nbefore:\n{before}\nafter:\n{after}"
    );
    let i = info(&lv)?;
    ensure!(
        field(&i, "Active:") == "yes" && field(&i, "Autostart:") == "yes",
        "libvirt's state after release:\n{i}"
    );
    ensure!(
        libvirt_dnsmasq_runs(&topo)?,
        "libvirt's dnsmasq is not back after release"
    );
    let list = String::from_utf8(topo.vxdp(&["net-list", "--all"])?.stdout)?;
    ensure!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some("default")),
        "vxdp kept default after release:\n{list}"
    );
    let again = topo.vxdp_status(&["libvirt-release", "default", "--connect", &uri])?;
    ensure!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not adopted"),
        "a second release: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    drop(g);
    Ok(())
}

#[test]
fn adopt_refuses_and_changes_nothing_when_a_step_fails() -> Result<()> {
    let topo = NatTopology::new("laf", 0)?;
    let lv = libvirt_default(&topo)?;
    let _vx = cleanup(&topo);
    let before = virsh_ok(&lv, &["net-dumpxml", "--inactive", "default"])?;
    // vxdp already has a network named `default`: its define step fails.
    let file = topo.state_dir.join("mine.xml");
    std::fs::write(
        &file,
        DEFAULT_XML
            .replace("virbr0", "vxbr9")
            .replace("192.168.122.", "198.51.100."),
    )?;
    topo.vxdp(&["net-define", file.to_str().context("path")?])?;
    let uri = lv.uri();
    let out = topo.vxdp_status(&["libvirt-adopt", "default", "--connect", &uri])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "adopt succeeded over vxdp's own default"
    );
    ensure!(
        err.contains("default"),
        "the refusal does not name the network: {err}"
    );
    let after = virsh_ok(&lv, &["net-dumpxml", "--inactive", "default"])?;
    ensure!(after == before, "libvirt's definition changed:\n{after}");
    let i = info(&lv)?;
    ensure!(
        field(&i, "Active:") == "yes" && libvirt_dnsmasq_runs(&topo)?,
        "libvirt's network was not left running:\n{i}"
    );
    ensure!(
        !topo.state_dir.join("libvirt/default.json").exists(),
        "the adopt record outlived the refusal"
    );
    // A network libvirt does not have: refused, naming the step.
    let out = topo.vxdp_status(&["libvirt-adopt", "nosuch", "--connect", &uri])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("reading libvirt's network"),
        "adopting a missing network: {err}"
    );
    Ok(())
}

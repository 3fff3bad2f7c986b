//! The global `--guest-xdp` setting is kept in the state directory: a
//! command or a daemon started without the option (a reboot's `vxdp load`,
//! a `vxdp serve` whose unit does not set it) reconciles the tap ports as
//! the last value given says, and does not take the XDP program off them;
//! `--guest-xdp=off` is kept the same way, and a port's own
//! `attach-interface --port-xdp` choice stays above both.
//!
//! Needs root (network namespaces, BPF, /dev/net/tun).

use anyhow::{Result, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, tap_writer::TapWriter, vxdp::vxdp_bin};

/// A tap with no choice of its own, and one plugged with `--port-xdp on`.
const PLAIN: &str = "gxstap0";
const CHOSEN: &str = "gxstap1";

fn has_xdp(topo: &NatTopology, dev: &str) -> Result<bool> {
    let link = String::from_utf8(topo.hyp.ip(&["-d", "link", "show", "dev", dev])?.stdout)?;
    Ok(link.contains("prog/xdp"))
}

fn expect(topo: &NatTopology, after: &str, plain: bool, chosen: bool) -> Result<()> {
    let (p, c) = (has_xdp(topo, PLAIN)?, has_xdp(topo, CHOSEN)?);
    ensure!(
        (p, c) == (plain, chosen),
        "after {after}: XDP on {PLAIN} (no choice of its own) is {p}, expected {plain}; \
         on {CHOSEN} (--port-xdp on) {c}, expected {chosen}"
    );
    Ok(())
}

#[test]
fn the_global_guest_xdp_setting_outlives_the_command_that_gave_it() -> Result<()> {
    let mut topo = NatTopology::new("gxs", 0)?;
    topo.create(DEFAULT_XML)?;
    let _plain = TapWriter::open(&topo.hyp, PLAIN)?;
    let _chosen = TapWriter::open(&topo.hyp, CHOSEN)?;
    expect(&topo, "opening the taps", false, false)?;

    topo.vxdp(&[
        "--guest-xdp",
        "attach-interface",
        "--network",
        "default",
        "--dev",
        PLAIN,
        "--mac",
        "52:54:00:78:73:01",
    ])?;
    topo.vxdp(&[
        "attach-interface",
        "--network",
        "default",
        "--dev",
        CHOSEN,
        "--mac",
        "52:54:00:78:73:02",
        "--port-xdp",
        "on",
    ])?;
    expect(&topo, "attach-interface with --guest-xdp", true, true)?;

    // A reconcile by a command without the option keeps the setting.
    topo.vxdp(&["load"])?;
    expect(&topo, "`vxdp load` without --guest-xdp", true, true)?;

    // Off is kept too; the port's own choice stays above it.
    topo.vxdp(&["--guest-xdp=off", "load"])?;
    expect(&topo, "`vxdp --guest-xdp=off load`", false, true)?;
    topo.vxdp(&["load"])?;
    expect(
        &topo,
        "a second `vxdp load` without the option",
        false,
        true,
    )?;

    // The environment variable is the option.
    let out = std::process::Command::new(vxdp_bin()?)
        .env("VXDP_GUEST_XDP", "1")
        .args(["--netns", &topo.hyp.name, "--state-dir"])
        .arg(&topo.state_dir)
        .arg("--bpffs")
        .arg(&topo.bpffs)
        .arg("load")
        .output()?;
    ensure!(
        out.status.success(),
        "VXDP_GUEST_XDP=1 vxdp load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect(&topo, "`VXDP_GUEST_XDP=1 vxdp load`", true, true)?;

    // A value that is not a boolean is refused, naming the option, and
    // changes nothing.
    let out = topo.vxdp_status(&["--guest-xdp=maybe", "load"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("--guest-xdp"),
        "--guest-xdp=maybe should be refused naming the option: {err}"
    );
    topo.vxdp(&["load"])?;
    expect(
        &topo,
        "a refused --guest-xdp=maybe and `vxdp load`",
        true,
        true,
    )?;
    Ok(())
}

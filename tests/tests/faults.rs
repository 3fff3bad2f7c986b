//! Faults: `vxdp` killed with SIGKILL in the middle of `net-start`,
//! `attach-interface` and `net-destroy` (at every crash point the binary
//! offers through `VXDP_TEST_KILL_AT`, which is `kill -9` at that exact
//! moment), then a retry of the same command, or a reconcile pass
//! (`vxdp load`, what `vxdp serve` runs), must leave the host consistent: no
//! bridge, tap, uplink program, pin, dnsmasq or map entry that no started
//! network or port accounts for. And a state directory that cannot be
//! written (read-only, or a full disk) gives a clear error and changes
//! nothing on the host.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, vxdp_bin};

const KILL_AT: &str = "VXDP_TEST_KILL_AT";

/// `vxdp` in the topology's namespace, killed at `point`: it must die of
/// SIGKILL there (a run that finishes means the point was never reached).
fn killed_at(topo: &NatTopology, point: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(vxdp_bin()?)
        .env(KILL_AT, point)
        .arg("--netns")
        .arg(&topo.hyp.name)
        .arg("--state-dir")
        .arg(&topo.state_dir)
        .arg("--bpffs")
        .arg(&topo.bpffs)
        .args(args)
        .output()
        .context("running vxdp")?;
    ensure!(
        out.status.signal() == Some(libc::SIGKILL),
        "`vxdp {}` with {KILL_AT}={point} was not killed there ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Processes whose command line mentions `needle` (dnsmasq and its guard
/// run with the state directory in their arguments).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// Kills what a test's crashed `vxdp` may have left running, whatever the
/// test's outcome (the topology's own teardown only knows started networks).
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.0) {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn reaper(topo: &NatTopology) -> Reaper {
    Reaper(topo.state_dir.display().to_string())
}

fn links(topo: &NatTopology) -> Result<String> {
    Ok(String::from_utf8_lossy(&topo.hyp.ip(&["-d", "link", "show"])?.stdout).into_owned())
}

/// The entries of a pinned map as `bpftool -j map dump` lists them; none
/// when the map is gone.
fn map_dump(pins: &Path, map: &str) -> Result<Vec<serde_json::Value>> {
    let path = pins.join("maps").join(map);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .context("running bpftool (apt package bpftool)")?;
    ensure!(
        out.status.success(),
        "bpftool map dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Entries of a pinned map, 0 when the map is gone.
fn map_entries(pins: &Path, map: &str) -> Result<usize> {
    Ok(map_dump(pins, map)?.len())
}

/// Non-zero (in use) entries of the networks array.
fn networks_in_use(pins: &Path) -> Result<usize> {
    Ok(map_dump(pins, "VXDP_NETWORKS")?
        .iter()
        .filter(|e| {
            e["value"]
                .as_array()
                .is_some_and(|b| b.iter().any(|x| x.as_str().is_some_and(|s| s != "0x00")))
        })
        .count())
}

/// The host holds nothing of vxdp's networks: no bridge virbr0, no XDP on
/// the uplink, no dnsmasq, no guest port in a bridge, no network, endpoint
/// or subnet map entry, no pinned link of a network (the dataplane's own,
/// the tracepoints' and the cgroup socket programs', may stay with it).
fn assert_no_network(topo: &NatTopology, when: &str) -> Result<()> {
    let l = links(topo)?;
    ensure!(!l.contains(" virbr0:"), "{when}: bridge virbr0 left:\n{l}");
    ensure!(
        !l.lines().any(|x| x.contains(" up0@") && x.contains("xdp")),
        "{when}: XDP left on the uplink:\n{l}"
    );
    ensure!(
        !l.contains("master virbr0"),
        "{when}: a port left in virbr0:\n{l}"
    );
    let procs = processes_mentioning(&topo.state_dir.display().to_string());
    ensure!(procs.is_empty(), "{when}: processes left: {procs:?}");
    ensure!(
        networks_in_use(&topo.bpffs)? == 0,
        "{when}: a network map entry left"
    );
    for map in ["VXDP_ENDPOINTS", "VXDP_SUBNETS"] {
        let n = map_entries(&topo.bpffs, map)?;
        ensure!(n == 0, "{when}: {n} entries left in {map}");
    }
    let link_dir = topo.bpffs.join("links");
    if link_dir.exists() {
        let left: Vec<_> = std::fs::read_dir(&link_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("tp_") && !n.starts_with("cgroup_"))
            .collect();
        ensure!(left.is_empty(), "{when}: pinned links left: {left:?}");
    }
    let list = text(&topo.vxdp(&["net-list"])?);
    ensure!(
        !list.contains("default"),
        "{when}: net-list still shows the network:\n{list}"
    );
    Ok(())
}

/// The network runs: the guest reaches the outside through vxdp.
fn assert_works(topo: &NatTopology, when: &str) -> Result<()> {
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))
        .with_context(|| format!("{when}: the guest does not reach the outside"))?;
    Ok(())
}

fn define(topo: &mut NatTopology) -> Result<String> {
    std::fs::create_dir_all(&topo.state_dir)?;
    let file = topo.state_dir.join("net.xml");
    std::fs::write(&file, DEFAULT_XML)?;
    Ok(file.display().to_string())
}

const START_POINTS: &[&str] = &[
    "net-start:bridge",
    "net-start:maps",
    "net-start:uplink",
    "net-start:dnsmasq",
];

#[test]
fn a_start_killed_anywhere_is_undone_by_a_reconcile_pass_or_a_retry() -> Result<()> {
    let mut failures = Vec::new();
    for &point in START_POINTS {
        for recovery in ["reconcile", "retry"] {
            if let Err(e) = start_killed(point, recovery) {
                failures.push(format!("killed at {point}, recovered by {recovery}: {e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    Ok(())
}

fn start_killed(point: &str, recovery: &str) -> Result<()> {
    let mut topo = NatTopology::new("fs", 1)?;
    let _reap = reaper(&topo);
    let file = define(&mut topo)?;
    killed_at(&topo, point, &["net-create", &file])?;
    if recovery == "reconcile" {
        let out = topo.vxdp(&["load"])?;
        assert_no_network(&topo, &format!("after `vxdp load`:\n{}", text(&out)))?;
        topo.vxdp(&["unload"])?;
    }
    // Starting again works and forwards.
    topo.start(DEFAULT_XML)
        .context("starting the network again")?;
    assert_works(&topo, "started again")?;
    topo.stop()?;
    assert_no_network(&topo, "destroyed after the retry")?;
    Ok(())
}

const ATTACH_POINTS: &[&str] = &["attach:endpoint", "attach:plugged"];

#[test]
fn an_attach_killed_anywhere_is_undone_by_a_reconcile_pass_or_completed_by_a_retry() -> Result<()> {
    let mut failures = Vec::new();
    for &point in ATTACH_POINTS {
        for recovery in ["reconcile", "retry"] {
            if let Err(e) = attach_killed(point, recovery) {
                failures.push(format!("killed at {point}, recovered by {recovery}: {e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    Ok(())
}

fn attach_killed(point: &str, recovery: &str) -> Result<()> {
    let mut topo = NatTopology::new("fa", 1)?;
    let _reap = reaper(&topo);
    topo.create(DEFAULT_XML)?;
    let (port, mac) = (topo.guests[0].port.clone(), topo.guests[0].mac.clone());
    let attach = [
        "attach-interface",
        "--network",
        "default",
        "--dev",
        &port,
        "--mac",
        &mac,
    ];
    killed_at(&topo, point, &attach)?;
    if recovery == "reconcile" {
        let out = topo.vxdp(&["load"])?;
        let log = text(&out);
        // The port was never plugged as far as the record goes: nothing of
        // it may stay (no endpoint, no program, not in the bridge).
        let n = map_entries(&topo.bpffs, "VXDP_ENDPOINTS")?;
        ensure!(
            n == 0,
            "after `vxdp load`: {n} endpoint entries left:\n{log}"
        );
        let l = links(&topo)?;
        ensure!(
            !l.lines()
                .any(|x| x.contains(&format!(" {port}@")) && x.contains("master virbr0")),
            "after `vxdp load`: {port} left in virbr0:\n{l}"
        );
        ensure!(
            !topo
                .bpffs
                .join("links")
                .read_dir()?
                .flatten()
                .any(|e| { e.file_name().to_string_lossy().starts_with("tc_in_") }),
            "after `vxdp load`: the port's TC link is left"
        );
    }
    topo.vxdp(&attach).context("attaching again")?;
    assert_works(&topo, "attached again")?;
    topo.stop()?;
    assert_no_network(&topo, "destroyed")?;
    Ok(())
}

#[test]
fn a_tap_created_for_a_killed_attach_is_not_left_behind() -> Result<()> {
    let mut topo = NatTopology::new("ft", 0)?;
    let _reap = reaper(&topo);
    topo.create(DEFAULT_XML)?;
    let xml = topo.state_dir.join("if.xml");
    std::fs::write(
        &xml,
        "<interface type='network'><source network='default'/>\
         <mac address='52:54:00:aa:bb:01'/><target dev='vxtap7'/></interface>",
    )?;
    let xml = xml.display().to_string();
    for point in ["attach:tap", "attach:endpoint", "attach:plugged"] {
        killed_at(&topo, point, &["attach-interface", "--xml", &xml])?;
        // A retry plugs the tap and owns it: detaching removes it.
        topo.vxdp(&["attach-interface", "--xml", &xml])
            .with_context(|| format!("attaching again after a kill at {point}"))?;
        topo.vxdp(&["detach-interface", "--xml", &xml])?;
        let l = links(&topo)?;
        ensure!(
            !l.contains(" vxtap7:"),
            "killed at {point}: the tap vxdp created is left after retry and detach:\n{l}"
        );
    }
    topo.stop()?;
    assert_no_network(&topo, "destroyed")?;
    Ok(())
}

const DESTROY_POINTS: &[&str] = &[
    "net-destroy:dnsmasq",
    "net-destroy:ports",
    "net-destroy:maps",
    "net-destroy:bridge",
    "net-destroy:unloaded",
];

#[test]
fn a_destroy_killed_anywhere_is_finished_by_a_retry_or_repaired_by_reconcile() -> Result<()> {
    let mut failures = Vec::new();
    for &point in DESTROY_POINTS {
        for recovery in ["reconcile", "retry"] {
            if let Err(e) = destroy_killed(point, recovery) {
                failures.push(format!("killed at {point}, recovered by {recovery}: {e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    Ok(())
}

fn destroy_killed(point: &str, recovery: &str) -> Result<()> {
    let mut topo = NatTopology::new("fd", 1)?;
    let _reap = reaper(&topo);
    topo.start(DEFAULT_XML)?;
    assert_works(&topo, "started")?;
    killed_at(&topo, point, &["net-destroy", "default"])?;
    if recovery == "reconcile" {
        // Either the network is still started (and reconcile brings all of
        // it back), or it is gone (and nothing of it may stay).
        let out = topo.vxdp(&["load"])?;
        let list = text(&topo.vxdp(&["net-list"])?);
        if list.contains("default") {
            assert_works(&topo, &format!("after `vxdp load`:\n{}", text(&out)))?;
        } else {
            assert_no_network(&topo, &format!("after `vxdp load`:\n{}", text(&out)))?;
            topo.vxdp(&["unload"])?;
            return Ok(());
        }
    }
    // net-destroy again: finishes the job (or says the network is not
    // started when the record was already gone, and then left nothing).
    let out = topo.vxdp_status(&["net-destroy", "default"])?;
    ensure!(
        out.status.success() || text(&out).contains("not started"),
        "net-destroy again failed: {}",
        text(&out)
    );
    assert_no_network(&topo, &format!("after net-destroy again: {}", text(&out)))?;
    // And after the last network, the dataplane is gone.
    ensure!(
        !topo.bpffs.join("maps").exists(),
        "the dataplane's pins stay after the last network was destroyed"
    );
    Ok(())
}

/// Runs `vxdp net-create` in a private mount namespace where the state
/// directory is `how`: "read-only" (a read-only bind mount) or "full" (a
/// 64 KiB tmpfs filled up). The host's mounts are not touched.
fn net_create_with_state(topo: &NatTopology, xml: &Path, how: &str) -> Result<Output> {
    let state = topo.state_dir.display().to_string();
    let prepare = match how {
        "read-only" => format!(
            "mkdir -p {state} && mount --bind {state} {state} && mount -o remount,bind,ro {state}"
        ),
        _ => format!(
            "mkdir -p {state} && mount -t tmpfs -o size=64k tmpfs {state} && \
             (dd if=/dev/zero of={state}/filler bs=4k 2>/dev/null || true)"
        ),
    };
    let script = format!(
        "set -e; {prepare}; exec \"$0\" --netns {} --state-dir {state} --bpffs {} net-create {}",
        topo.hyp.name,
        topo.bpffs.display(),
        xml.display()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(vxdp_bin()?)
        .output()
        .context("running unshare (util-linux)")
}

#[test]
fn a_state_directory_that_cannot_be_written_stops_a_start_before_any_change() -> Result<()> {
    for (how, says) in [
        ("read-only", "Read-only file system"),
        ("full", "No space left on device"),
    ] {
        let topo = NatTopology::new("fro", 1)?;
        let _reap = reaper(&topo);
        let xml = std::env::temp_dir().join(format!("{}-net.xml", topo.prefix));
        std::fs::write(&xml, DEFAULT_XML)?;
        let out = net_create_with_state(&topo, &xml, how);
        let _ = std::fs::remove_file(&xml);
        let out = out?;
        let log = text(&out);
        ensure!(
            !out.status.success(),
            "{how} state directory: net-create succeeded:\n{log}"
        );
        ensure!(
            log.contains(says) && log.contains(&topo.state_dir.display().to_string()),
            "{how} state directory: the error does not name the directory and the cause \
             ({says}):\n{log}"
        );
        let l = links(&topo)?;
        ensure!(!l.contains(" virbr0:"), "{how}: a bridge was created:\n{l}");
        ensure!(
            !l.lines().any(|x| x.contains(" up0@") && x.contains("xdp")),
            "{how}: XDP was attached to the uplink:\n{l}"
        );
        let pinned_maps = std::fs::read_dir(topo.bpffs.join("maps"))
            .map(|d| d.count())
            .unwrap_or(0);
        ensure!(
            pinned_maps == 0,
            "{how}: the dataplane was loaded ({pinned_maps} maps pinned)"
        );
        let procs = processes_mentioning(&topo.state_dir.display().to_string());
        ensure!(procs.is_empty(), "{how}: processes started: {procs:?}");
    }
    Ok(())
}

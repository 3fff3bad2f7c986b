//! The `vxdp` CLI driver: the binary under test and how to run it with a
//! private state directory and pin directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail, ensure};

/// Runs the vxdp binary in namespace `netns` with a private state directory
/// and bpffs pin directory, whatever the outcome.
pub fn run_vxdp(netns: &str, state_dir: &Path, bpffs: &Path, args: &[&str]) -> Result<Output> {
    Command::new(vxdp_bin()?)
        .arg("--netns")
        .arg(netns)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--bpffs")
        .arg(bpffs)
        .args(args)
        .output()
        .context("running vxdp")
}

/// The vxdp binary under test: $VXDP_BIN, or target/debug/vxdp.
pub fn vxdp_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VXDP_BIN") {
        return Ok(p.into());
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/vxdp");
    ensure!(
        p.exists(),
        "{} not found: build it first (`cargo xtask test` does) or set VXDP_BIN",
        p.display()
    );
    Ok(p)
}

/// The output of `vxdp <args>` if it succeeded; otherwise an error with its
/// stderr.
pub fn succeeded(args: &[&str], out: Output) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "`vxdp {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Counter `name` of `network` in the output of `vxdp stats --all`, summed
/// over CPUs: (packets, bytes).
pub fn stats_counter(stats: &str, network: &str, name: &str) -> Result<(u64, u64)> {
    for line in stats.lines() {
        let f: Vec<_> = line.split_whitespace().collect();
        if f.len() >= 5 && f[0] == network && f[2] == name {
            let n = f.len();
            return Ok((f[n - 2].parse()?, f[n - 1].parse()?));
        }
    }
    bail!("counter {network}/{name} not in `vxdp stats --all`:\n{stats}")
}

//! `cargo xtask setup`: make this (Debian) machine able to build and test
//! vxdp. Each step checks first and changes nothing when already done, so a
//! second run is a fast no-op; each prints one `[setup] <step> ... <outcome>`
//! line.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::cmd::{command, run_captured};
use crate::toolchain::Toolchain;

/// Debian packages the build and the tests need: LLVM 22 (+ the libraries
/// bpf-linker links against) for bpf-linker, a C toolchain for build
/// scripts, and the network tools the end-to-end tests drive.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "build-essential",
    "pkg-config",
    "iproute2",
    "bpftool",
    "iputils-ping",
    "ethtool",
    "conntrack",
    "nftables",
    "tcpdump",
    // The differential test runs libvirt's own network driver (in the
    // test's namespaces only) as the reference.
    "libvirt-daemon-system",
    "libvirt-clients",
    "dnsmasq-base",
];

/// bpf-linker links the eBPF object; 0.13.0 built against Debian's LLVM 22
/// matches the LLVM of the pinned rustc.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";

/// Runs every step in order; stops at the first failure.
pub fn run(toolchain: &Toolchain) -> anyhow::Result<()> {
    ensure_root()?;
    step("apt packages", || ensure_apt_packages(APT_PACKAGES))?;
    step(&format!("rust toolchain {}", toolchain.version()), || {
        toolchain.ensure_installed()
    })?;
    step(&format!("bpf-linker {BPF_LINKER_VERSION}"), || {
        ensure_bpf_linker(toolchain)
    })?;
    step(&format!("bpffs at {BPFFS}"), ensure_bpffs)?;
    Ok(())
}

/// Prints the step's progress line around `f`; a failure is wrapped so the
/// error names the step (the cause names the command and its stderr).
fn step(name: &str, f: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    print!("[setup] {name} ... ");
    let _ = std::io::stdout().flush();
    match f() {
        Ok(outcome) => {
            println!("{outcome}");
            Ok(())
        }
        Err(err) => {
            println!("FAILED");
            Err(err.context(format!("setup step `{name}` failed")))
        }
    }
}

/// Extends the current progress line before a slow action, so the user
/// knows why nothing happens for a while.
pub fn note(what: &str) {
    print!("{what} ... ");
    let _ = std::io::stdout().flush();
}

/// Setup installs packages, toolchains and mounts, and the tests create
/// network namespaces and load eBPF: all need root.
fn ensure_root() -> anyhow::Result<()> {
    match effective_uid()? {
        0 => Ok(()),
        uid => bail!(
            "cargo xtask must run as root (it installs packages, mounts bpffs, and the tests \
             load eBPF programs and create network namespaces); running as uid {uid}. \
             Try `sudo -E env PATH=\"$PATH\" cargo xtask ...` or a root shell."
        ),
    }
}

/// From /proc/self/status (`Uid: real effective saved fs`); std has no
/// geteuid and xtask takes no libc dependency.
fn effective_uid() -> anyhow::Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

fn ensure_apt_packages(packages: &[&str]) -> anyhow::Result<String> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        return Ok("ok (already installed)".to_owned());
    }
    note(&format!("installing {}", missing.join(" ")));
    // Only now: the package lists may be stale or absent (fresh containers
    // ship without them).
    run_captured(apt_get().arg("update"))?;
    run_captured(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still = missing_packages(&missing)?;
    if !still.is_empty() {
        bail!(
            "apt-get reported success but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(format!("ok (installed {})", missing.join(" ")))
}

fn apt_get() -> std::process::Command {
    let mut apt = command("apt-get");
    apt.env("DEBIAN_FRONTEND", "noninteractive");
    apt
}

/// The packages dpkg does not report as `install ok installed` (absent,
/// removed with config files left, half-installed, ...).
fn missing_packages<'a>(packages: &[&'a str]) -> anyhow::Result<Vec<&'a str>> {
    let mut missing = Vec::new();
    for &package in packages {
        // Exit status 1 with "no packages found" just means absent, so the
        // status is judged by the output, not the exit code.
        let out = command("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
            .context("could not start `dpkg-query` (is this a Debian system?)")?;
        if String::from_utf8_lossy(&out.stdout).trim() != "install ok installed" {
            missing.push(package);
        }
    }
    Ok(missing)
}

fn ensure_bpf_linker(toolchain: &Toolchain) -> anyhow::Result<String> {
    let found = bpf_linker_version();
    if found.as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok("ok (already installed)".to_owned());
    }
    note(&format!(
        "building it with cargo +{} install (about 1-2 minutes)",
        toolchain.version()
    ));
    run_captured(
        toolchain
            .cargo()
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            // --force: replace a broken or differently built binary of the
            // same version too.
            .args([
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )?;
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {}
        other => bail!(
            "after cargo install, `bpf-linker --version` reports {} (expected {BPF_LINKER_VERSION}); \
             is another bpf-linker earlier in PATH?",
            other.as_deref().unwrap_or("nothing")
        ),
    }
    Ok(match found {
        Some(old) => format!("ok (installed, replacing {old})"),
        None => "ok (installed)".to_owned(),
    })
}

/// The version `bpf-linker --version` prints (`bpf-linker 0.13.0`), looked
/// up in PATH with the cargo bin directory first; None if absent or broken.
fn bpf_linker_version() -> Option<String> {
    let out = command("bpf-linker").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_bpf_linker_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_bpf_linker_version(output: &str) -> Option<String> {
    let mut words = output.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next().map(str::to_owned)
}

/// aya pins maps and links under /sys/fs/bpf; containers often lack the
/// mount.
fn ensure_bpffs() -> anyhow::Result<String> {
    let mounts_path = "/proc/self/mounts";
    let read_mounts =
        || std::fs::read_to_string(mounts_path).with_context(|| format!("reading {mounts_path}"));
    if is_bpffs_mounted(&read_mounts()?, BPFFS) {
        return Ok("ok (already mounted)".to_owned());
    }
    if !Path::new(BPFFS).is_dir() {
        bail!(
            "{BPFFS} does not exist: is sysfs mounted, and does the kernel have CONFIG_BPF_SYSCALL?"
        );
    }
    run_captured(command("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    if !is_bpffs_mounted(&read_mounts()?, BPFFS) {
        bail!(
            "`mount -t bpf bpf {BPFFS}` succeeded but {mounts_path} shows no bpf filesystem there"
        );
    }
    Ok("ok (mounted)".to_owned())
}

/// Whether the mount visible at `target` is a bpf filesystem: the last
/// mount at a path hides earlier ones.
fn is_bpffs_mounted(mounts: &str, target: &str) -> bool {
    mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (_source, at, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (at == target).then_some(fstype)
        })
        .next_back()
        == Some("bpf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::CommandFailed;

    #[test]
    fn absent_packages_are_missing() {
        // Read-only: dpkg-query only.
        let missing = missing_packages(&["vxdp-no-such-package", "dpkg"]).unwrap();
        assert_eq!(missing, ["vxdp-no-such-package"]);
    }

    #[test]
    fn failed_step_names_step_and_command() {
        let result = step("apt packages", || {
            run_captured(command("sh").args([
                "-c",
                "echo 'E: Unable to locate package vxdp-nope' >&2; exit 100",
            ]))?;
            Ok("ok".to_owned())
        });
        let err = result.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("setup step `apt packages` failed: `sh -c"),
            "{text}"
        );
        assert!(text.contains("exited with status 100"), "{text}");
        assert!(
            text.contains("E: Unable to locate package vxdp-nope"),
            "{text}"
        );
        assert_eq!(
            err.downcast_ref::<CommandFailed>().unwrap().exit_code(),
            100
        );
    }

    #[test]
    fn recognises_bpffs() {
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        assert!(is_bpffs_mounted(mounts, "/sys/fs/bpf"));
        assert!(!is_bpffs_mounted(
            "sysfs /sys sysfs rw 0 0\n",
            "/sys/fs/bpf"
        ));
        let hidden = format!("{mounts}tmpfs /sys/fs/bpf tmpfs rw 0 0\n");
        assert!(!is_bpffs_mounted(&hidden, "/sys/fs/bpf"));
        assert!(!is_bpffs_mounted(
            "bpf /sys/fs/bpf/x bpf rw 0 0\n",
            "/sys/fs/bpf"
        ));
    }

    #[test]
    fn parses_bpf_linker_version() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something else 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn reads_our_uid() {
        effective_uid().unwrap();
    }
}

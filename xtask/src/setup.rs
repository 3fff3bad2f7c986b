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
    // The libvirt differential test (tests/tests/libvirt_diff.rs) runs the
    // real libvirtd in a private namespace; see POLICY_RC_D below.
    "libvirt-daemon-system",
    "libvirt-clients",
    "dnsmasq-base",
    // Guest services (DHCP/DNS/TFTP per network) and the tools their tests use.
    "udhcpc",
    "tftp-hpa",
    "bind9-dnsutils",
    // promtool, which the daemon tests run on `vxdp serve`'s /metrics, and
    // the Prometheus server tests/tests/ops_prometheus.rs runs.
    "prometheus",
    // The status page test (tests/tests/ops_status.rs) renders it headless.
    "chromium",
    // cargo xtask deb checks the package it builds (dpkg-deb, dpkg-shlibdeps
    // and strip come with build-essential).
    "lintian",
    // cargo xtask man and the package's man pages: `man -l` renders them
    // (tests/tests/ops_deb.rs), lintian checks them with groff.
    "man-db",
    "groff-base",
    // cargo xtask bench: the kernel reference path uses libvirt's
    // iptables(-nft) rules; TCP throughput is measured with iperf3.
    "iptables",
    "iperf3",
    // The real-VM tests (tests/tests/real_vm.rs) boot a tiny guest under
    // QEMU with TCG. On a machine image that ships Debian's backported
    // qemu-utils 10.x, apt replaces it with bookworm's (qemu-system-common
    // 7.2 is in its Breaks); vxdp uses neither qemu-img nor qemu-nbd.
    // The guest's kernel and busybox are not installed: see guest_image.rs.
    "qemu-system-x86",
    // The qemu-hook test (tests/tests/libvirt_vms.rs) gives a domain
    // libvirt's clean-traffic filter, which libvirt's nwfilter driver
    // applies with ebtables (already installed here; not a libvirt
    // dependency).
    "ebtables",
];

/// Debian's invoke-rc.d asks this script whether a package may start its
/// service; exit status 101 means "no". Installing libvirt-daemon-system
/// would otherwise start libvirtd in the root namespace, and with it the
/// autostarted `default` network (virbr0, 192.168.122.0/24, firewall rules):
/// the tests run libvirtd only in their own namespaces.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

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
    step("real-VM guest image", crate::guest_image::ensure)?;
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
    let policy = ServicesBlocked::new()?;
    let installed = run_captured(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    );
    policy.restore()?;
    installed?;
    let still = missing_packages(&missing)?;
    if !still.is_empty() {
        bail!(
            "apt-get reported success but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(format!("ok (installed {})", missing.join(" ")))
}

/// While alive, no package may start a service (see [`POLICY_RC_D`]). An
/// existing policy-rc.d is left alone (whatever it says is the machine
/// owner's choice); one created here is removed by [`Self::restore`] or on drop.
struct ServicesBlocked {
    path: std::path::PathBuf,
    created: bool,
}

impl ServicesBlocked {
    fn new() -> anyhow::Result<Self> {
        Self::at(Path::new(POLICY_RC_D))
    }

    fn at(path: &Path) -> anyhow::Result<Self> {
        let mut guard = Self {
            path: path.to_path_buf(),
            created: false,
        };
        if path.exists() {
            return Ok(guard);
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, "#!/bin/sh\n# written by cargo xtask setup for the duration of apt-get install\nexit 101\n")
            .with_context(|| format!("writing {}", path.display()))?;
        guard.created = true;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(guard)
    }

    fn restore(mut self) -> anyhow::Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> anyhow::Result<()> {
        if std::mem::take(&mut self.created) {
            std::fs::remove_file(&self.path)
                .with_context(|| format!("removing {}", self.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for ServicesBlocked {
    fn drop(&mut self) {
        let _ = self.remove();
    }
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
    fn service_block_is_created_forbids_and_is_removed_but_never_replaces() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        let guard = ServicesBlocked::at(&path).unwrap();
        // Through sh: exec-ing a file just written can fail with ETXTBSY while
        // another test thread forks.
        let status = std::process::Command::new("sh")
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o111 != 0,
            "policy-rc.d is not executable"
        );
        assert_eq!(
            status.code(),
            Some(101),
            "policy-rc.d must answer 101 (action forbidden)"
        );
        guard.restore().unwrap();
        assert!(!path.exists(), "the created policy-rc.d was not removed");
        // The machine's own file is left as it was.
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        drop(ServicesBlocked::at(&path).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

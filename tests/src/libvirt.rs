//! A private libvirtd for differential tests (DESIGN.md §7 item 5).
//!
//! libvirtd runs inside its own network namespace (with the devices of
//! [`crate::corpus::add_host_devices`]) and its own mount namespace
//! (`unshare -m --propagation private`), where private directories are bound
//! over all of `/run`, `/etc/libvirt` (a copy without any network
//! definitions, so no `default` network autostarts), `/var/lib/libvirt`,
//! `/var/log/libvirt` and `/var/cache/libvirt`. It therefore sees neither the
//! host's sockets and configuration nor its interfaces, and whatever it
//! writes (bridges, firewall rules, dnsmasq and its lease helper's pid file)
//! stays in those namespaces and directories. `virsh` reaches it through
//! `nsenter` into the same namespaces.
//!
//! [`Libvirtd::start_in`] runs it instead in a namespace the caller built
//! (the connection-table differential plugs its guests into libvirt's
//! bridge there).
//!
//! Drop destroys and undefines every network (libvirt's dnsmasq outlives a
//! libvirtd stopped with networks up), stops libvirtd, kills whatever is left
//! of it (everything in a namespace of its own; dnsmasq in a borrowed one)
//! and deletes the namespace it created and its directories.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{corpus::add_host_devices, testbed::{Netns, run}};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Binds private directories over libvirt's paths and execs libvirtd, so the
/// child's pid is libvirtd's. `$1` is the private root.
const INNER: &str = r#"set -e
r="$1"
mount --bind "$r/run" /run
mount --bind "$r/etc" /etc/libvirt
mount --bind "$r/lib" /var/lib/libvirt
mount --bind "$r/log" /var/log/libvirt
mount --bind "$r/cache" /var/cache/libvirt
exec libvirtd
"#;

pub struct Libvirtd {
    /// The namespace libvirtd created for itself ([`Libvirtd::start`]).
    pub ns: Option<Netns>,
    ns_name: String,
    root: PathBuf,
    child: Option<Child>,
    pid: u32,
}

fn require_tool(name: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(name).exists());
    ensure!(
        found,
        "{name} is not installed: the libvirt differential test needs libvirt-daemon-system, libvirt-clients \
         and dnsmasq-base (`cargo xtask setup` installs them)"
    );
    Ok(())
}

impl Libvirtd {
    /// Starts libvirtd in fresh namespaces and waits for its socket.
    pub fn start(tag: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("vx{tag}{}-{n}", std::process::id());
        Self::check_tools()?;
        let ns = Netns::new(format!("{prefix}-lv"))?;
        add_host_devices(&ns)?;
        let name = ns.name.clone();
        Self::launch(Some(ns), name, &prefix)
    }

    /// Starts libvirtd in the caller's network namespace `ns` (and a private
    /// mount namespace of its own) and waits for its socket.
    pub fn start_in(ns: &Netns) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Self::check_tools()?;
        Self::launch(None, ns.name.clone(), &format!("{}-{n}", ns.name))
    }

    fn check_tools() -> Result<()> {
        ensure!(unsafe { libc::geteuid() } == 0, "the libvirt differential tests need root");
        for tool in ["libvirtd", "virsh", "dnsmasq", "unshare", "nsenter"] {
            require_tool(tool)?;
        }
        Ok(())
    }

    fn launch(ns: Option<Netns>, ns_name: String, prefix: &str) -> Result<Self> {
        let root = std::env::temp_dir().join(format!("{prefix}-libvirt"));
        for d in ["run", "lib", "log", "cache"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        run("cp", &["-a", "/etc/libvirt", root.join("etc").to_str().context("path")?])?;
        // No network definitions at all: in particular not the autostarted
        // `default` (virbr0, 192.168.122.0/24).
        let nets = root.join("etc/qemu/networks");
        if nets.exists() {
            std::fs::remove_dir_all(&nets)?;
        }
        std::fs::create_dir_all(nets.join("autostart"))?;
        let log = std::fs::File::create(root.join("libvirtd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns_name, "unshare", "-m", "--propagation", "private", "sh", "-c", INNER, "sh"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting libvirtd")?;
        let pid = child.id();
        let mut lv = Self { ns, ns_name, root, child: Some(child), pid };
        let sock = lv.root.join("run/libvirt/libvirt-sock");
        let start = Instant::now();
        loop {
            if let Some(status) = lv.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("libvirtd exited ({status}) before its socket appeared: {}", lv.log_tail());
            }
            if sock.exists() && lv.virsh(&["net-list", "--all"]).is_ok_and(|o| o.status.success()) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("libvirtd did not answer within 30 s: {}", lv.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(lv)
    }

    /// Starts a transient network from `xml` (`virsh net-create`); fails
    /// with virsh's message.
    pub fn net_create(&self, name: &str, xml: &str) -> Result<()> {
        let file = self.root.join(format!("{name}.xml"));
        std::fs::write(&file, xml)?;
        let out = self.virsh(&["net-create", file.to_str().context("path")?])?;
        ensure!(out.status.success(), "virsh net-create {name} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("libvirtd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `virsh -q -c qemu:///system ARGS` inside libvirtd's namespaces.
    pub fn virsh(&self, args: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-n", "virsh", "-q", "-c", "qemu:///system"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running virsh")
    }

    fn network_names(&self, flag: &str) -> Vec<String> {
        self.virsh(&["net-list", flag, "--name"])
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// Destroys and undefines every network libvirtd has.
    pub fn clean_networks(&self) {
        for name in self.network_names("--all") {
            let _ = self.virsh(&["net-destroy", &name]);
            let _ = self.virsh(&["net-undefine", &name]);
        }
    }

    /// What is left of this libvirtd: every process of its own namespace, or
    /// the dnsmasq processes of a borrowed one.
    fn leftover_pids(&self) -> Vec<i32> {
        let pids: Vec<i32> = Command::new("ip")
            .args(["netns", "pids", &self.ns_name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        if self.ns.is_some() {
            return pids;
        }
        pids.into_iter()
            .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "dnsmasq"))
            .collect()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        self.clean_networks();
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Only what libvirtd left: dnsmasq and its helpers.
        for _ in 0..3 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

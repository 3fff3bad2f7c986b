//! Guest services: one dnsmasq per started network with an `<ip>`, serving
//! DHCP, DNS and TFTP on that network's bridge only, like libvirt's.
//!
//! This module owns everything under `<state-dir>/dnsmasq/<network>/`: the
//! generated configuration, the lease file (kept across dnsmasq restarts and
//! network restarts), dnsmasq's pid file, the supervisor's pid file, the log,
//! and the lease hook dnsmasq runs on every lease change. The hook calls
//! `vxdp dhcp-lease-event`, which writes the leased address into the guest
//! port's `Endpoint` (flag `IPV4_KNOWN`), the anti-spoofing source of truth.
//!
//! Supervision needs no daemon: `net-create` spawns a detached
//! `vxdp dnsmasq-supervise` (its own session) that runs dnsmasq in the
//! foreground and restarts it with a bounded backoff whenever it exits.
//! `net-destroy` ends the whole session (supervisor, dnsmasq, hook runs).

mod config;
pub mod dns;
pub mod leases;
mod supervise;

use std::{
    fs,
    io,
    path::{Path, PathBuf},
};

pub use config::{DNSMASQ_USER, MAX_LINE, generate, wanted};
pub use leases::{LeaseEntry, apply_event, guest_ipv4, read_leases};
pub use supervise::{LOG_LIMIT, MAX_RESTART_DELAY, run_supervisor};

use crate::xml::{NetworkDef, XmlError};

#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("dnsmasq not found (looked in $PATH, /usr/sbin, /sbin): install the dnsmasq-base package")]
    NotInstalled,
    #[error("starting the dnsmasq supervisor for network '{network}': {source}")]
    Spawn { network: String, source: io::Error },
    #[error("dnsmasq for network '{network}' did not start (waited {secs} s); its log {log} ends with:\n{tail}")]
    NotReady { network: String, secs: u64, log: PathBuf, tail: String },
    #[error("dnsmasq of network '{network}' (session {pid}) did not stop")]
    Stuck { network: String, pid: i32 },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DnsmasqError + '_ {
    move |source| DnsmasqError::Io { path: path.to_path_buf(), source }
}

/// The files of one network's dnsmasq.
#[derive(Clone, Debug)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    /// `<state-dir>/dnsmasq/<network>`, made absolute: dnsmasq and the hook
    /// do not run in the caller's working directory.
    pub fn new(state_dir: &Path, network: &str) -> Self {
        let base = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        Paths { dir: base.join("dnsmasq").join(network) }
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.conf")
    }
    pub fn leases(&self) -> PathBuf {
        self.dir.join("leases")
    }
    /// dnsmasq's own pid file.
    pub fn pid(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// The lease hook (`dhcp-script`).
    pub fn hook(&self) -> PathBuf {
        self.dir.join("lease-hook")
    }
}

/// Where `vxdp` itself keeps state and pins: the supervisor and the lease
/// hook run `vxdp` again with the same paths.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
}

impl Invocation {
    pub fn current(state_dir: &Path, bpffs: &Path) -> Result<Self, DnsmasqError> {
        let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?;
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(Invocation { exe, state_dir: abs(state_dir), bpffs: abs(bpffs) })
    }
}

/// Quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), DnsmasqError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Checks everything the network's dnsmasq configuration is made of (the
/// `<dns>` values, the TFTP root, option lines) without touching the host.
pub fn check(def: &NetworkDef, file: &str) -> Result<(), XmlError> {
    generate(def, "check", &Paths::new(Path::new("/"), &def.name), file).map(drop)
}

/// Writes the configuration and the lease hook, spawns the supervisor and
/// waits until dnsmasq runs. On error nothing of ours is left running.
/// Returns false (and does nothing) when the network needs no dnsmasq.
pub fn start(inv: &Invocation, def: &NetworkDef, bridge: &str, file: &str) -> Result<bool, DnsmasqError> {
    if !wanted(def, file)? {
        return Ok(false);
    }
    let paths = Paths::new(&inv.state_dir, &def.name);
    let conf = generate(def, bridge, &paths, file)?;
    fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    // Something of an earlier run may still hold the files (a crash of the
    // host or of vxdp between start and record): end it first.
    supervise::stop(&paths, &def.name)?;
    write_file(&paths.conf(), &conf, 0o644)?;
    let hook = format!(
        "#!/bin/sh\n# Generated by vxdp: dnsmasq runs this on every lease change of network '{name}'.\n\
         exec {exe} --state-dir {state} --bpffs {bpffs} dhcp-lease-event {qname} \"$@\"\n",
        name = def.name,
        exe = sh_quote(&inv.exe.to_string_lossy()),
        state = sh_quote(&inv.state_dir.to_string_lossy()),
        bpffs = sh_quote(&inv.bpffs.to_string_lossy()),
        qname = sh_quote(&def.name),
    );
    write_file(&paths.hook(), &hook, 0o755)?;
    let log_start = supervise::spawn(inv, &paths, &def.name)?;
    if let Err(e) = supervise::wait_ready(&paths, &def.name, log_start) {
        let _ = supervise::stop(&paths, &def.name);
        return Err(e);
    }
    Ok(true)
}

/// Starts the network's dnsmasq again if its supervisor is gone (it was
/// killed, or the host rebooted with the state directory kept); a running
/// one is left alone. For the daemon's periodic check. Returns true when it
/// (re)started it.
pub fn ensure_running(inv: &Invocation, def: &NetworkDef, bridge: &str, file: &str) -> Result<bool, DnsmasqError> {
    let paths = Paths::new(&inv.state_dir, &def.name);
    if supervise::live_supervisor(&paths, &def.name).is_some() {
        return Ok(false);
    }
    start(inv, def, bridge, file)
}

/// Stops the network's supervisor and dnsmasq (waiting until they are
/// gone) and removes the generated files; the lease file stays, so a
/// restarted network hands guests their addresses again.
pub fn stop(state_dir: &Path, network: &str) -> Result<(), DnsmasqError> {
    let paths = Paths::new(state_dir, network);
    if !paths.dir.exists() {
        return Ok(());
    }
    supervise::stop(&paths, network)?;
    for p in [paths.conf(), paths.hook(), paths.pid(), paths.supervisor_pid()] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(())
}

/// The pid of the network's running dnsmasq, if any.
pub fn dnsmasq_pid(state_dir: &Path, network: &str) -> Option<i32> {
    supervise::live_pid(&Paths::new(state_dir, network).pid(), "dnsmasq")
}

#[cfg(test)]
mod tests;

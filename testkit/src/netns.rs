//! Network namespaces: unique names, commands run inside them, deleted in
//! `Drop` (also when a test panics), and stale ones of killed processes
//! reaped.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};

/// Runs a command, failing with its stderr when it does not succeed.
pub fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!("running {cmd}: is it installed? (cargo xtask setup installs it)")
    })?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix><pid>-<n>`, the form
/// [`reap_stale`] recognises.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes what processes that no longer exist (killed before their `Drop`
/// ran) left under names `<prefix><pid>-*`: namespaces, pin directories
/// `/sys/fs/bpf/<name>-pins` and state directories `$TMPDIR/<name>-state`.
/// Nothing of a live process is touched.
pub fn reap_stale(prefix: &str) {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(prefix) else {
            return false;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
            return false;
        };
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    for dir in ["/run/netns", "/sys/fs/bpf"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            if dir == "/run/netns" {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            } else if name.ends_with("-pins") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("-state") && dead(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A network namespace, deleted on drop. Every command goes through
/// `ip -n NAME` / `ip netns exec NAME`, which fail (rather than fall back to
/// the host) if the namespace is gone.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn new(name: String) -> Result<Self> {
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace named by [`unique_name`]`(prefix)`; the first call for
    /// a prefix in a process reaps what killed processes left under it.
    pub fn unique(prefix: &str) -> Result<Self> {
        static REAPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        {
            let mut reaped = REAPED.lock().unwrap_or_else(|e| e.into_inner());
            if !reaped.iter().any(|p| p == prefix) {
                reap_stale(prefix);
                reaped.push(prefix.to_string());
            }
        }
        Self::new(unique_name(prefix))
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip netns exec <ns> <cmd> ...`
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<Output> {
        let mut a = vec!["netns", "exec", self.name.as_str(), cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Same, returning the output whatever the exit status.
    pub fn exec_status(&self, cmd: &str, args: &[&str]) -> Result<Output> {
        let mut a = vec!["netns", "exec", self.name.as_str(), cmd];
        a.extend_from_slice(args);
        Command::new("ip")
            .args(&a)
            .output()
            .with_context(|| format!("running {cmd}"))
    }

    /// `ip -n <ns> ...` with the arguments of one whitespace-separated line.
    pub fn ip_line(&self, line: &str) -> Result<()> {
        self.ip(&line.split_whitespace().collect::<Vec<_>>())
            .map(drop)
    }

    /// Moves the calling thread (only it) into the namespace.
    pub fn enter_current_thread(&self) -> Result<()> {
        setns(&self.name)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created
    /// there stay in this namespace wherever they are used afterwards.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let name = self.name.clone();
        std::thread::spawn(move || -> Result<T> {
            setns(&name)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {} panicked", self.name))?
    }
}

/// Moves the calling thread into namespace `name`.
fn setns(name: &str) -> Result<()> {
    let path = PathBuf::from("/run/netns").join(name);
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!(
                "warning: could not delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

//! Shared by the `ops_*` tests: a `vxdp serve` process in a test's
//! hypervisor namespace, killed on drop, and a tiny HTTP GET.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{NatTopology, Netns};

/// The unit file shipped in the package.
pub fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/vxdp.service")
}

/// The capabilities `CapabilityBoundingSet=` of the unit grants.
pub fn unit_capabilities() -> Result<Vec<String>> {
    let unit = std::fs::read_to_string(unit_file())?;
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("vxdp.service has no CapabilityBoundingSet=")?;
    let caps: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    ensure!(
        !caps.is_empty() && caps.iter().all(|c| c.starts_with("CAP_")),
        "odd CapabilityBoundingSet= {line:?}"
    );
    Ok(caps)
}

/// A `vxdp serve` process, SIGKILLed on drop if still running.
pub struct Serve {
    pub child: Child,
    pub log: PathBuf,
}

impl Serve {
    /// Spawns `cmd` (already holding the binary and any wrapper) with the
    /// topology's paths, `serve --listen <listen>` and `extra_env`.
    pub fn spawn(
        topo: &NatTopology,
        mut cmd: Command,
        listen: &str,
        tag: &str,
        extra_env: &[(&str, &Path)],
    ) -> Result<Self> {
        let log = topo.state_dir.join(format!("serve-{tag}.log"));
        std::fs::create_dir_all(&topo.state_dir)?;
        cmd.arg("--netns")
            .arg(&topo.hyp.name)
            .arg("--state-dir")
            .arg(&topo.state_dir)
            .arg("--bpffs")
            .arg(&topo.bpffs)
            .args(["serve", "--reconcile-interval", "1s", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting vxdp serve")?;
        Ok(Self { child, log })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until GET `path` on `addr` in `hyp` answers 200 (at most 20 s).
    pub fn wait_http(&mut self, hyp: &Netns, addr: &str, path: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("vxdp serve exited ({status}):\n{}", self.log());
            }
            if http_get(hyp, addr, path).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "vxdp serve did not answer {path} within 20 s:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `sig` to the process and waits (at most 10 s) for it to exit.
    pub fn signal(&mut self, sig: i32) -> Result<std::process::ExitStatus> {
        // Our own child, by its pid.
        if unsafe { libc::kill(self.child.id() as i32, sig) } != 0 {
            bail!(
                "kill({}, {sig}): {}",
                self.child.id(),
                std::io::Error::last_os_error()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "vxdp serve did not exit within 10 s of signal {sig}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET `path` from `addr` inside `ns`: the body on 200, an error otherwise.
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> Result<String> {
    let sock: SocketAddr = addr.parse()?;
    let mut stream =
        ns.enter(move || TcpStream::connect_timeout(&sock, Duration::from_secs(2)))??;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp)?;
    let resp = String::from_utf8(resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .context("HTTP response without header end")?;
    ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "GET {path}: {head}\n{body}"
    );
    Ok(body.to_string())
}

/// Runs `vxdp net-destroy <name>` and `net-undefine` in the topology on
/// drop: networks the daemon autostarted are not the topology's to stop.
pub struct NetworkGuard<'a> {
    pub topo: &'a NatTopology,
    pub name: &'static str,
}

impl Drop for NetworkGuard<'_> {
    fn drop(&mut self) {
        let _ = self.topo.vxdp_status(&["net-destroy", self.name]);
        let _ = self.topo.vxdp_status(&["net-undefine", self.name]);
    }
}

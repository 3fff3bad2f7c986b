//! Shared by the `ops_*` tests: the unit file, waiting for a `vxdp serve`
//! (testkit's [`Serve`]) to answer HTTP, and a tiny HTTP GET.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{NatTopology, Netns, Serve};

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

/// Waits until GET `path` on `addr` in `hyp` answers 200 (at most 20 s).
pub fn wait_http(serve: &mut Serve, hyp: &Netns, addr: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = serve.child.try_wait()? {
            bail!("vxdp serve exited ({status}):\n{}", serve.log());
        }
        if http_get(hyp, addr, path).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "vxdp serve did not answer {path} within 20 s:\n{}",
                serve.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
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

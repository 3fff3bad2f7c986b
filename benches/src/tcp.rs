//! TCP: bulk throughput guest → outside host and outside host → guest
//! (iperf3 `-R`: the guest still opens the connection) with iperf3, and
//! request/response latency (1-byte ping-pong, like netperf's TCP_RR), with
//! the guest's checksum offload on (the veth default).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    progs::{in_netns, pin_to_cpu},
    report::median,
    topo::{OUTSIDE, Topology},
};

/// Kills (by its own pid) and reaps a child this module started.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// iperf3 for `secs` seconds between the topology's guest (client) and
/// outside host (server), server and client pinned to `cpu`; with
/// `reverse` the outside host sends. Gbit/s received.
pub fn iperf(topo: &Topology, secs: u32, cpu: usize, port: u16, reverse: bool) -> Result<f64> {
    iperf_ns(
        &topo.guest.name,
        &topo.wan.name,
        OUTSIDE,
        &Run {
            secs,
            cpu,
            port,
            reverse,
        },
    )
    .with_context(|| topo.path.name())
}

/// One iperf3 run's parameters.
pub struct Run {
    pub secs: u32,
    /// Client and server are pinned to it.
    pub cpu: usize,
    pub port: u16,
    /// The server sends (`-R`), else the client.
    pub reverse: bool,
}

/// iperf3 server in namespace `server_ns` bound to `server_addr`, client
/// in `client_ns`. Gbit/s received.
pub fn iperf_ns(client_ns: &str, server_ns: &str, server_addr: &str, run: &Run) -> Result<f64> {
    let cpu = run.cpu.to_string();
    let port = run.port.to_string();
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            server_ns,
            "taskset",
            "-c",
            &cpu,
            "iperf3",
            "-s",
            "-1",
            "-B",
            server_addr,
            "-p",
            &port,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (cargo xtask setup installs iperf3)")?;
    let _server = ChildGuard(server);
    let mut last = String::new();
    // Until the server listens: generous, for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                client_ns,
                "taskset",
                "-c",
                &cpu,
                "iperf3",
                "-c",
                server_addr,
                "-p",
                &port,
            ])
            .args(["-t", &run.secs.to_string(), "-J"])
            .args(run.reverse.then_some("-R"))
            .output()
            .context("running iperf3 -c")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps / 1e9);
        }
        last = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into());
        if !last.contains("connect") {
            break;
        }
    }
    bail!("iperf3 gave no result: {last}")
}

/// `count` 1-byte request/response round trips over one TCP connection,
/// client in the guest, server on the outside host, both on `cpu`. Median
/// round trip in microseconds.
pub fn request_response(topo: &Topology, count: u32, cpu: usize) -> Result<f64> {
    let listener = in_netns(&topo.wan.name, None, || {
        Ok(TcpListener::bind((OUTSIDE, 0))?)
    })?;
    let addr: SocketAddr = listener.local_addr()?;
    listener.set_nonblocking(false)?;
    let server = std::thread::spawn(move || -> Result<()> {
        pin_to_cpu(cpu)?;
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b)? {
                0 => return Ok(()),
                _ => s.write_all(&b)?,
            }
        }
    });
    let rtts = in_netns(&topo.guest.name, Some(cpu), || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("{}: connecting to {addr}", topo.path.name()))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [7u8; 1];
        let mut rtts = Vec::with_capacity(count as usize);
        for i in 0..count + 100 {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            if i >= 100 {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(rtts)
    })?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("ping-pong server panicked"))??;
    ensure!(rtts.len() == count as usize, "incomplete ping-pong");
    median(&rtts).context("no round trips")
}

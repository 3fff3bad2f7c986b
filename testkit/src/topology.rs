//! Throwaway network topologies for end-to-end tests and the demo.
//!
//! Everything lives in network namespaces this module creates with unique
//! names and deletes in `Drop`, so a failing test cleans up too. The root
//! namespace is never touched. "Outside" uses documentation addresses only:
//!
//! ```text
//!  <p>-wan   wan0 198.51.100.1/24, lo 203.0.113.10/32 (the outside host)
//!     |  veth (no route back to 192.168.122.0/24)
//!  <p>-hyp   up0 198.51.100.2/24, default via .1; vxdp runs here: virbr0
//!     |  veth vnetN (guest port, plugged by vxdp attach-interface)
//!  <p>-gN    eth0 192.168.122.(10+N)/24, default via 192.168.122.1
//! ```

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    netns::Netns,
    vxdp::{run_vxdp, stats_counter, succeeded},
};

pub const OUTSIDE_HOST: &str = "203.0.113.10";
pub const UPLINK_ADDR: &str = "198.51.100.2";
pub const WAN_ADDR: &str = "198.51.100.1";

/// libvirt's stock default network, as users have it in
/// /etc/libvirt/qemu/networks/default.xml.
pub const DEFAULT_XML: &str = include_str!("../data/default.xml");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A guest behind a veth pair: `eth0` in its own namespace, `vnetN` in the
/// hypervisor namespace.
pub struct Guest {
    pub ns: Netns,
    pub addr: String,
    pub port: String,
    pub mac: String,
}

/// How the outside host's veth (`wan0`) hands its TCP/UDP segments to the
/// uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideChecksums {
    /// `ethtool -K wan0 tx off`: finished checksums, as a real uplink NIC
    /// delivers them.
    Finished,
    /// The veth's default (TX checksum offload on): segments arrive with
    /// unfinished (CHECKSUM_PARTIAL) checksums.
    VethDefault,
}

/// The NAT topology with vxdp's state and pins private to this instance.
pub struct NatTopology {
    pub prefix: String,
    pub wan: Netns,
    pub hyp: Netns,
    pub guests: Vec<Guest>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    started: bool,
}

impl NatTopology {
    /// Builds wan and hypervisor namespaces and `guests` guests, every veth
    /// in the kernel's default settings; vxdp is not started yet.
    pub fn new(tag: &str, guests: usize) -> Result<Self> {
        Self::with_outside(tag, guests, OutsideChecksums::VethDefault)
    }

    /// Like [`NatTopology::new`], choosing how the outside host's veth
    /// sends checksums.
    pub fn with_outside(tag: &str, guests: usize, outside: OutsideChecksums) -> Result<Self> {
        ensure!(
            unsafe { libc::geteuid() } == 0,
            "end-to-end tests need root (network namespaces, BPF)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("vx{tag}{}-{n}", std::process::id());
        let wan = Netns::new(format!("{prefix}-wan"))?;
        let hyp = Netns::new(format!("{prefix}-hyp"))?;
        let mut topo = Self {
            state_dir: std::env::temp_dir().join(format!("{prefix}-state")),
            bpffs: PathBuf::from("/sys/fs/bpf").join(format!("{prefix}-pins")),
            prefix,
            wan,
            hyp,
            guests: Vec::new(),
            started: false,
        };
        // The product's own check: mounts /sys/fs/bpf when absent.
        vxdp_control::dataplane::ensure_bpffs(&topo.bpffs)?;
        topo.hyp.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "wan0",
            "netns",
            &topo.wan.name,
        ])?;
        topo.wan
            .ip(&["addr", "add", &format!("{WAN_ADDR}/24"), "dev", "wan0"])?;
        topo.wan
            .ip(&["addr", "add", &format!("{OUTSIDE_HOST}/32"), "dev", "lo"])?;
        topo.wan.ip(&["link", "set", "wan0", "up"])?;
        // Kernel defaults unless asked (DESIGN.md §7): wan0 keeps its TX
        // checksum offload, so the uplink receives unfinished
        // (CHECKSUM_PARTIAL) TCP/UDP as it would from any local sender.
        // `OutsideChecksums::Finished` is the one tuned case, for tests
        // that compare with a wire (which sends finished checksums).
        if outside == OutsideChecksums::Finished {
            topo.wan.exec("ethtool", &["-K", "wan0", "tx", "off"])?;
        }
        topo.hyp
            .ip(&["addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", "up0"])?;
        topo.hyp.ip(&["link", "set", "up0", "up"])?;
        topo.hyp.ip(&["route", "add", "default", "via", WAN_ADDR])?;
        for i in 0..guests {
            let g = Netns::new(format!("{}-g{i}", topo.prefix))?;
            let port = format!("vnet{i}");
            let addr = format!("192.168.122.{}", 10 + i);
            topo.hyp.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &g.name,
            ])?;
            g.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            g.ip(&["link", "set", "eth0", "up"])?;
            g.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
            // Kernel defaults: GRO stays off on the guest's end, so the
            // guest port cannot take XDP frames and vxdp must use the
            // socket-buffer path to reach it.
            let link = String::from_utf8(g.ip(&["-o", "link", "show", "eth0"])?.stdout)?;
            let mac = link
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .context("guest eth0 has no MAC")?
                .to_string();
            topo.guests.push(Guest {
                ns: g,
                addr,
                port,
                mac,
            });
        }
        Ok(topo)
    }

    /// Runs `vxdp` in the hypervisor namespace with this instance's paths.
    pub fn vxdp(&self, args: &[&str]) -> Result<Output> {
        succeeded(args, self.vxdp_status(args)?)
    }

    pub fn vxdp_status(&self, args: &[&str]) -> Result<Output> {
        run_vxdp(&self.hyp.name, &self.state_dir, &self.bpffs, args)
    }

    /// Starts the network from `xml` and plugs every guest in.
    pub fn start(&mut self, xml: &str) -> Result<()> {
        self.start_with(xml, false)
    }

    /// Like [`NatTopology::start`]; with `static_ips` each guest's address
    /// is given to `attach-interface --ip` (enforced by anti-spoofing).
    /// The network must be named `default`.
    pub fn start_with(&mut self, xml: &str, static_ips: bool) -> Result<()> {
        self.create(xml)?;
        self.plug_guests(static_ips)
    }

    /// `attach-interface` of every guest's port to the network `default`;
    /// with `static_ips` each guest's address is given to `--ip`.
    pub fn plug_guests(&self, static_ips: bool) -> Result<()> {
        for g in &self.guests {
            let mut args = vec![
                "attach-interface",
                "--network",
                "default",
                "--dev",
                &g.port,
                "--mac",
                &g.mac,
            ];
            if static_ips {
                args.extend(["--ip", g.addr.as_str()]);
            }
            self.vxdp(&args)?;
        }
        Ok(())
    }

    /// `net-create` of the network in `xml` (named `default`), no guest
    /// plugged; it is destroyed when the topology goes away, whatever
    /// happens in between.
    pub fn create(&mut self, xml: &str) -> Result<()> {
        std::fs::create_dir_all(&self.state_dir)?;
        let file = self.state_dir.join("net.xml");
        std::fs::write(&file, xml)?;
        self.started = true;
        self.vxdp(&["net-create", file.to_str().context("path")?])?;
        Ok(())
    }

    /// Stops the network started by [`NatTopology::start`].
    pub fn stop(&mut self) -> Result<()> {
        self.vxdp(&["net-destroy", "default"])?;
        self.started = false;
        Ok(())
    }

    /// Waits until guest `i` can ping `dst` (the bridge port passes nothing
    /// while STP is listening/learning, ~4 s with libvirt's settings).
    /// Guests' frames between each other go port to port in eBPF and pass
    /// even while the bridge's STP still blocks its ports, so a ping
    /// between guests with warm ARP caches says nothing about the bridge:
    /// this waits for the ports too.
    pub fn wait_ping(&self, i: usize, dst: &str, within: Duration) -> Result<()> {
        let start = Instant::now();
        self.wait_ports_forwarding(within)?;
        loop {
            let out = self.guests[i]
                .ns
                .exec_status("ping", &["-c", "1", "-W", "1", dst])?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "guest {i} cannot ping {dst} within {within:?}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }

    /// Waits until every guest port that is a bridge port is in STP's
    /// forwarding state (ports on no bridge, as in direct modes, count as
    /// ready).
    pub fn wait_ports_forwarding(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for g in &self.guests {
            self.wait_port_forwarding(&g.port, deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    /// Waits until hypervisor port `port` forwards (at once when it is on
    /// no bridge).
    pub fn wait_port_forwarding(&self, port: &str, within: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = Command::new("bridge")
                .args(["-n", &self.hyp.name, "link", "show", "dev", port])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.contains(" state ") || text.contains("state forwarding") {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "bridge port {port} not forwarding within {within:?}: {}",
                    text.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A counter of `vxdp stats` (network, name) → (packets, bytes).
    pub fn counter(&self, network: &str, name: &str) -> Result<(u64, u64)> {
        let out = String::from_utf8(self.vxdp(&["stats", "--all"])?.stdout)?;
        stats_counter(&out, network, name)
    }
}

impl Drop for NatTopology {
    fn drop(&mut self) {
        if self.started {
            let _ = self.vxdp_status(&["net-destroy", "default"]);
        }
        // Any other network a test started (and a failure left running):
        // its dnsmasq would outlive the namespaces.
        if let Ok(dir) = std::fs::read_dir(self.state_dir.join("run")) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "json")
                    && let Some(name) = path.file_stem().and_then(|n| n.to_str())
                {
                    let _ = self.vxdp_status(&["net-destroy", name]);
                }
            }
        }
        // Pins are removed by net-destroy; remove what a failure left.
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

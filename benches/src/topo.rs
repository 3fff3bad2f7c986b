//! The benchmark topology, built once per forwarding path in namespaces this
//! module creates with unique names and deletes on drop:
//!
//! ```text
//!  guest  eth0 192.168.122.10/24 ──veth── vnet0 (port of virbr0)  hyp
//!  hyp    virbr0 192.168.122.1/24, up0 198.51.100.2/24, default via .1
//!  wan    wan0 198.51.100.1/24 ──veth── up0; lo 203.0.113.10/32
//!  guest  floor0 ──veth── floor1 (the generator's floor: sent, dropped)
//! ```
//!
//! Paths: the kernel as libvirt sets it up (bridge, forwarding, libvirt 9.0's
//! iptables(-nft) rules, so masquerade + conntrack for NAT), the real `vxdp`
//! binary (its own state directory and bpffs pins), and the ceiling (an XDP
//! program on vnet0 that only rewrites MACs and redirects to up0; the same
//! at TC ingress for comparison). Neighbours
//! and the guest's bridge port are static: the sinks drop what they count, so
//! nothing may depend on ARP while traffic runs.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use vxdp_testkit::{
    Netns,
    packet::{Mac, fmt_mac},
    reap_stale, run_vxdp, stats_counter, succeeded,
};

use crate::{
    progs::{BenchProgs, PROG_CEILING_TC, PROG_CEILING_XDP, PROG_SINK, ifindex, in_netns},
    wire::CeilingConfig,
};

pub const GUEST_ADDR: &str = "192.168.122.10";
pub const GATEWAY: &str = "192.168.122.1";
pub const SUBNET: &str = "192.168.122.0/24";
pub const UPLINK_ADDR: &str = "198.51.100.2";
pub const WAN_ADDR: &str = "198.51.100.1";
pub const OUTSIDE: &str = "203.0.113.10";

pub const GUEST_MAC: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a];
pub const VNET_MAC: Mac = [0xfe, 0x54, 0x00, 0x00, 0x00, 0x0a];
pub const BRIDGE_MAC: Mac = [0x52, 0x54, 0x00, 0x00, 0x01, 0x01];
pub const UPLINK_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02];
pub const WAN_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01];

/// The guest namespace's floor pair: the generator sends on `FLOOR_TX`,
/// the sink drops on `FLOOR_RX`.
pub const FLOOR_TX: &str = "floor0";
pub const FLOOR_RX: &str = "floor1";

/// A forwarding path under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    KernelNat,
    KernelRoute,
    VxdpNat,
    VxdpRoute,
    Ceiling,
    /// The ceiling program at TC ingress instead of XDP.
    CeilingTc,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::KernelNat => "kernel_nat",
            Path::KernelRoute => "kernel_route",
            Path::VxdpNat => "vxdp_nat",
            Path::VxdpRoute => "vxdp_route",
            Path::Ceiling => "ceiling",
            Path::CeilingTc => "ceiling_tc",
        }
    }

    pub fn is_vxdp(self) -> bool {
        matches!(self, Path::VxdpNat | Path::VxdpRoute)
    }

    pub fn is_nat(self) -> bool {
        matches!(self, Path::KernelNat | Path::VxdpNat)
    }
}

/// libvirt 9.0's rules for a NAT network on virbr0 (192.168.122.0/24), as it
/// writes them with iptables(-nft).
pub(crate) fn libvirt_rules(nat: bool) -> String {
    let fwi = if nat {
        "-A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    } else {
        "-A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -j ACCEPT\n"
    };
    let mut r = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :LIBVIRT_INP - [0:0]\n:LIBVIRT_OUT - [0:0]\n:LIBVIRT_FWO - [0:0]\n:LIBVIRT_FWI - [0:0]\n:LIBVIRT_FWX - [0:0]\n\
         -A INPUT -j LIBVIRT_INP\n-A FORWARD -j LIBVIRT_FWX\n-A FORWARD -j LIBVIRT_FWI\n-A FORWARD -j LIBVIRT_FWO\n-A OUTPUT -j LIBVIRT_OUT\n\
         -A LIBVIRT_INP -i virbr0 -p udp -m udp --dport 53 -j ACCEPT\n-A LIBVIRT_INP -i virbr0 -p tcp -m tcp --dport 53 -j ACCEPT\n\
         -A LIBVIRT_INP -i virbr0 -p udp -m udp --dport 67 -j ACCEPT\n-A LIBVIRT_INP -i virbr0 -p tcp -m tcp --dport 67 -j ACCEPT\n\
         -A LIBVIRT_OUT -o virbr0 -p udp -m udp --dport 53 -j ACCEPT\n-A LIBVIRT_OUT -o virbr0 -p tcp -m tcp --dport 53 -j ACCEPT\n\
         -A LIBVIRT_OUT -o virbr0 -p udp -m udp --dport 68 -j ACCEPT\n-A LIBVIRT_OUT -o virbr0 -p tcp -m tcp --dport 68 -j ACCEPT\n\
         -A LIBVIRT_FWX -i virbr0 -o virbr0 -j ACCEPT\n",
    );
    r.push_str(fwi);
    r.push_str(
        "-A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable\n\
         -A LIBVIRT_FWO -s 192.168.122.0/24 -i virbr0 -j ACCEPT\n\
         -A LIBVIRT_FWO -i virbr0 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n",
    );
    if nat {
        r.push_str(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:LIBVIRT_PRT - [0:0]\n\
             -A POSTROUTING -j LIBVIRT_PRT\n\
             -A LIBVIRT_PRT -s 192.168.122.0/24 -d 224.0.0.0/24 -j RETURN\n\
             -A LIBVIRT_PRT -s 192.168.122.0/24 -d 255.255.255.255/32 -j RETURN\n\
             -A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -p tcp -j MASQUERADE --to-ports 1024-65535\n\
             -A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -p udp -j MASQUERADE --to-ports 1024-65535\n\
             -A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE\nCOMMIT\n",
        );
    }
    r.push_str(
        "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:LIBVIRT_PRT - [0:0]\n\
         -A POSTROUTING -j LIBVIRT_PRT\n\
         -A LIBVIRT_PRT -o virbr0 -p udp -m udp --dport 68 -j CHECKSUM --checksum-fill\nCOMMIT\n",
    );
    r
}

const NAT_XML: &str = vxdp_testkit::DEFAULT_XML;
const ROUTE_XML: &str = "<network>\n  <name>default</name>\n  <bridge name='virbr0' stp='on' delay='0'/>\n  \
    <forward mode='route'/>\n  <ip address='192.168.122.1' netmask='255.255.255.0'/>\n</network>\n";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Names of the benchmark's namespaces, pins and state: `vxb<pid>-<n>-*`,
/// so that [`reap_stale`] finds what a killed run left.
const NAME_PREFIX: &str = "vxb";

/// vxdp's private state directory and pins of one topology.
struct VxdpPaths {
    state_dir: PathBuf,
    bpffs: PathBuf,
    conntrack_entries: u32,
}

/// One topology. On drop vxdp's network is destroyed first, then the
/// harness's programs detach and the namespaces go (field order).
pub struct Topology {
    pub path: Path,
    pub progs: BenchProgs,
    vxdp: Option<VxdpPaths>,
    pub guest: Netns,
    pub hyp: Netns,
    pub wan: Netns,
    pub bridge_mac: Mac,
}

/// `path` cannot be built on this machine (vxdp refuses the mode): the
/// reason, reported as "not available".
#[derive(Debug)]
pub struct NotAvailable(pub String);

impl std::fmt::Display for NotAvailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAvailable {}

impl Topology {
    /// Builds the topology for `path`. For vxdp, `conntrack_entries` sizes
    /// its table. A vxdp that refuses the mode gives a [`NotAvailable`]
    /// error.
    pub fn new(
        path: Path,
        conntrack_entries: u32,
        generator: crate::generator::Kind,
    ) -> Result<Self> {
        static REAP: std::sync::Once = std::sync::Once::new();
        REAP.call_once(|| reap_stale(NAME_PREFIX));
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NAME_PREFIX}{}-{n}", std::process::id());
        let wan = Netns::new(format!("{prefix}-wan"))?;
        let hyp = Netns::new(format!("{prefix}-hyp"))?;
        let guest = Netns::new(format!("{prefix}-g"))?;
        let progs = BenchProgs::load(generator)?;
        let vxdp = path.is_vxdp().then(|| VxdpPaths {
            state_dir: std::env::temp_dir().join(format!("{prefix}-state")),
            bpffs: PathBuf::from("/sys/fs/bpf").join(format!("{prefix}-pins")),
            conntrack_entries,
        });
        let mut topo = Self {
            path,
            progs,
            vxdp,
            guest,
            hyp,
            wan,
            bridge_mac: BRIDGE_MAC,
        };
        topo.build()
            .with_context(|| format!("building the {} topology", path.name()))?;
        Ok(topo)
    }

    fn build(&mut self) -> Result<()> {
        let (wan, hyp, guest) = (&self.wan, &self.hyp, &self.guest);
        // Uplink and outside host.
        hyp.ip(&[
            "link",
            "add",
            "up0",
            "address",
            &fmt_mac(&UPLINK_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "wan0",
            "address",
            &fmt_mac(&WAN_MAC),
            "netns",
            &wan.name,
        ])?;
        wan.ip(&["addr", "add", &format!("{WAN_ADDR}/24"), "dev", "wan0"])?;
        wan.ip(&["addr", "add", &format!("{OUTSIDE}/32"), "dev", "lo"])?;
        wan.ip(&["link", "set", "wan0", "up"])?;
        // Finished checksums, as from a wire.
        wan.exec("ethtool", &["-K", "wan0", "tx", "off"])?;
        wan.ip(&[
            "neigh",
            "replace",
            UPLINK_ADDR,
            "lladdr",
            &fmt_mac(&UPLINK_MAC),
            "dev",
            "wan0",
            "nud",
            "permanent",
        ])?;
        if matches!(self.path, Path::KernelRoute | Path::VxdpRoute) {
            wan.ip(&["route", "add", SUBNET, "via", UPLINK_ADDR])?;
        }
        hyp.ip(&["addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", "up0"])?;
        hyp.ip(&["link", "set", "up0", "up"])?;
        hyp.ip(&["route", "add", "default", "via", WAN_ADDR])?;
        hyp.ip(&[
            "neigh",
            "replace",
            WAN_ADDR,
            "lladdr",
            &fmt_mac(&WAN_MAC),
            "dev",
            "up0",
            "nud",
            "permanent",
        ])?;

        // The guest and its port.
        hyp.ip(&[
            "link",
            "add",
            "vnet0",
            "address",
            &fmt_mac(&VNET_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            &fmt_mac(&GUEST_MAC),
            "netns",
            &guest.name,
        ])?;
        guest.ip(&["addr", "add", &format!("{GUEST_ADDR}/24"), "dev", "eth0"])?;
        guest.ip(&["link", "set", "eth0", "up"])?;
        guest.ip(&["route", "add", "default", "via", GATEWAY])?;
        // Kernel defaults on both ends (GRO off): the generator's socket
        // hands frames to the veth one at a time, as a guest's stack does,
        // and vxdp's uplink takes its TC path to a veth port (XDP frames
        // only go to ports that take them).
        hyp.ip(&["link", "set", "vnet0", "up"])?;
        // The floor pair: no address, nothing but the sink on floor1.
        guest.ip(&[
            "link", "add", FLOOR_TX, "type", "veth", "peer", "name", FLOOR_RX,
        ])?;
        guest.ip(&["link", "set", FLOOR_TX, "up"])?;
        guest.ip(&["link", "set", FLOOR_RX, "up"])?;

        match self.path {
            Path::KernelNat | Path::KernelRoute | Path::Ceiling | Path::CeilingTc => {
                self.build_kernel_bridge()?
            }
            Path::VxdpNat | Path::VxdpRoute => self.start_vxdp()?,
        }
        self.guest.ip(&[
            "neigh",
            "replace",
            GATEWAY,
            "lladdr",
            &fmt_mac(&self.bridge_mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        if matches!(self.path, Path::Ceiling | Path::CeilingTc) {
            let up = in_netns(&self.hyp.name, None, || ifindex("up0"))?;
            self.progs.set_ceiling(CeilingConfig {
                dst_mac: WAN_MAC,
                src_mac: UPLINK_MAC,
                ifindex: up,
            })?;
            let hyp_ns = self.hyp.name.clone();
            if self.path == Path::Ceiling {
                self.progs.attach(PROG_CEILING_XDP, &hyp_ns, "vnet0")?;
            } else {
                self.progs.attach_tc(PROG_CEILING_TC, &hyp_ns, "vnet0")?;
            }
        }
        Ok(())
    }

    /// libvirt's bridge (STP on, 2 s forward delay: libvirt's delay='0' is
    /// clamped to the kernel's minimum), its rules, forwarding on.
    fn build_kernel_bridge(&mut self) -> Result<()> {
        let hyp = &self.hyp;
        hyp.ip(&[
            "link",
            "add",
            "virbr0",
            "address",
            &fmt_mac(&BRIDGE_MAC),
            "type",
            "bridge",
            "stp_state",
            "1",
            "forward_delay",
            "200",
        ])?;
        hyp.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "virbr0"])?;
        hyp.ip(&["link", "set", "vnet0", "master", "virbr0"])?;
        hyp.ip(&["link", "set", "virbr0", "up"])?;
        hyp.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        hyp.ip(&[
            "neigh",
            "replace",
            GUEST_ADDR,
            "lladdr",
            &fmt_mac(&GUEST_MAC),
            "dev",
            "virbr0",
            "nud",
            "permanent",
        ])?;
        Command::new("bridge")
            .args([
                "-n",
                &hyp.name,
                "fdb",
                "replace",
                &fmt_mac(&GUEST_MAC),
                "dev",
                "vnet0",
                "master",
                "static",
            ])
            .status()
            .context("bridge fdb")?;
        match self.path {
            Path::KernelNat => iptables_restore(&self.hyp, &libvirt_rules(true))?,
            Path::KernelRoute => iptables_restore(&self.hyp, &libvirt_rules(false))?,
            _ => {}
        }
        Ok(())
    }

    fn start_vxdp(&mut self) -> Result<()> {
        let paths = self.vxdp.as_ref().context("vxdp paths")?;
        std::fs::create_dir_all(&paths.state_dir)?;
        let file = paths.state_dir.join("net.xml");
        std::fs::write(
            &file,
            if self.path == Path::VxdpNat {
                NAT_XML
            } else {
                ROUTE_XML
            },
        )?;
        let out = self.vxdp_status(&["net-create", file.to_str().context("path")?])?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if self.path == Path::VxdpRoute {
                return Err(NotAvailable(format!("vxdp refused route mode: {err}")).into());
            }
            bail!("`vxdp net-create` failed: {err}");
        }
        self.vxdp(&[
            "attach-interface",
            "--network",
            "default",
            "--dev",
            "vnet0",
            "--mac",
            &fmt_mac(&GUEST_MAC),
        ])?;
        // As on the kernel's bridge: the guest's neighbour is static (the
        // sink on its eth0 drops ARP), so routed traffic into the network
        // finds it resolved.
        self.hyp.ip(&[
            "neigh",
            "replace",
            GUEST_ADDR,
            "lladdr",
            &fmt_mac(&GUEST_MAC),
            "dev",
            "virbr0",
            "nud",
            "permanent",
        ])?;
        let link = String::from_utf8(self.hyp.ip(&["-o", "link", "show", "virbr0"])?.stdout)?;
        let mac = link
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .context("virbr0 has no MAC")?;
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<_, _>>()?;
        self.bridge_mac = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad MAC {mac}"))?;
        Ok(())
    }

    pub fn vxdp_status(&self, args: &[&str]) -> Result<std::process::Output> {
        let paths = self.vxdp.as_ref().context("not a vxdp topology")?;
        let entries = paths.conntrack_entries.to_string();
        let args = [&["--conntrack-entries", entries.as_str()], args].concat();
        run_vxdp(&self.hyp.name, &paths.state_dir, &paths.bpffs, &args)
    }

    pub fn vxdp(&self, args: &[&str]) -> Result<std::process::Output> {
        succeeded(args, self.vxdp_status(args)?)
    }

    /// The pinned conntrack map of this topology's vxdp.
    pub fn conntrack_pin(&self) -> Option<PathBuf> {
        self.vxdp
            .as_ref()
            .map(|p| p.bpffs.join("maps").join(vxdp_common::names::MAP_CONNTRACK))
    }

    /// A vxdp counter summed over CPUs: (packets, bytes).
    pub fn vxdp_counter(&self, name: &str) -> Result<u64> {
        let out = String::from_utf8(self.vxdp(&["stats", "--all"])?.stdout)?;
        Ok(stats_counter(&out, "default", name)?.0)
    }

    /// Waits until the guest reaches `dst` (the bridge port passes nothing
    /// while STP listens and learns).
    pub fn wait_ping(&self, dst: &str, within: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = self
                .guest
                .exec_status("ping", &["-c", "1", "-W", "1", dst])?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "{}: the guest cannot ping {dst} within {within:?}",
                    self.path.name()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Empties the path's connection table: kernel conntrack of the
    /// hypervisor namespace, or vxdp's table.
    pub fn flush_conntrack(&self) -> Result<()> {
        if self.path.is_vxdp() {
            self.vxdp(&["conntrack", "flush", "default"])?;
        } else if self.path == Path::KernelNat {
            // `conntrack -F` exits 0 also when the table is empty.
            self.hyp.exec("conntrack", &["-F"])?;
        }
        Ok(())
    }

    /// Interface statistics of the three namespaces, to show where frames
    /// stopped when a run delivered nothing.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (ns, ifaces) in [
            (&self.guest, ["eth0", ""]),
            (&self.hyp, ["vnet0", "up0"]),
            (&self.wan, ["wan0", ""]),
        ] {
            for iface in ifaces.iter().filter(|i| !i.is_empty()) {
                if let Ok(o) = ns.exec_status("ethtool", &["-S", iface]) {
                    let stats: Vec<String> = String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.ends_with(": 0") && l.contains(':'))
                        .map(str::to_string)
                        .collect();
                    out.push_str(&format!("  {iface}: {}\n", stats.join(", ")));
                }
            }
        }
        out
    }

    /// Attaches (or detaches) the counting sinks on wan0, the guest's eth0
    /// and the floor pair's receiving end.
    pub fn sinks(&mut self, on: bool) -> Result<()> {
        let (wan, guest) = (self.wan.name.clone(), self.guest.name.clone());
        for (ns, iface) in [(&wan, "wan0"), (&guest, "eth0"), (&guest, FLOOR_RX)] {
            if on {
                self.progs.attach(PROG_SINK, ns, iface)?;
            } else {
                self.progs.detach(PROG_SINK, ns, iface)?;
            }
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(paths) = &self.vxdp {
            let _ = self.vxdp_status(&["net-destroy", "default"]);
            let _ = std::fs::remove_dir_all(&paths.bpffs);
            let _ = std::fs::remove_dir_all(&paths.state_dir);
        }
    }
}

/// `bridge-nf-call-iptables` as a new namespace has it (bridged frames
/// traverse iptables when 1).
pub fn bridge_nf_call_iptables(ns: &Netns) -> String {
    ns.exec_status("cat", &["/proc/sys/net/bridge/bridge-nf-call-iptables"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "absent (br_netfilter not loaded)".into())
}

/// `iptables-restore` of `rules` in namespace `ns`.
pub(crate) fn iptables_restore(ns: &Netns, rules: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "iptables-restore"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running iptables-restore (cargo xtask setup installs iptables)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "iptables-restore of libvirt's rules failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

//! Helpers for `BPF_PROG_TEST_RUN` tests of the dataplane programs.
//!
//! - [`NetNs`]: a throwaway network namespace with a unique name, deleted in
//!   `Drop` (also when a test panics).
//! - [`with_nat_world`]: builds the NAT topology in such a namespace (bridge
//!   `br0` with two guest ports, uplink `up0` with a default route and a
//!   permanent neighbour), then, on a dedicated thread that entered the
//!   namespace, loads the eBPF object, seeds its maps ([`World`]) and runs the
//!   test body there. `bpf_fib_lookup`, devmap inserts and test runs all use
//!   the calling thread's network namespace, so everything happens on that
//!   thread.
//! - [`Packet`]: a builder for Ethernet/IPv4 TCP, UDP and ICMP echo frames
//!   with correct checksums, and [`Frame`]: a reader for the bytes a program
//!   returned, with checksums recomputed from scratch.
//! - [`Counters`]: a snapshot of `VXDP_COUNTERS` (CPUs summed) to assert
//!   exactly which counters moved.
//!
//! Map pinning: the object declares every map pinned by name, and aya 0.16
//! always pins such maps (there is no "load unpinned" switch). The worker
//! thread therefore unshares its mount namespace, makes it private and mounts
//! a fresh bpffs on `/sys/fs/bpf` there: the pins live in a bpffs instance
//! that no other process sees and that disappears with the thread. Nothing is
//! mounted or pinned in the host's mount namespace.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fmt,
    fs::File,
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4},
    os::fd::AsRawFd,
    panic,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, DevMapHash, HashMap, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use vxdp_common::{
    Action, COUNTER_SLOTS, ConntrackEntry, ConntrackKey, Counter, DEFAULT_TIMEOUTS_S, DropReason,
    Endpoint, MacKey, MacPort, NetworkConfig, Subnet6Key, SubnetKey, SubnetOwner, counter_index,
    endpoint_flags, mode, names, network_flags,
};

/// TC verdicts (`TC_ACT_*`).
pub const TC_ACT_OK: u32 = 0;
/// TC_ACT_UNSPEC (-1): TCX goes on to the interface's next program, then the kernel.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
/// XDP verdicts (`enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

pub type Mac = [u8; 6];

/// The NAT network every world configures, as libvirt's default network.
pub const NET_ID: u32 = 1;
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 0);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
pub const NAT_PORT_MIN: u16 = 1024;
pub const NAT_PORT_MAX: u16 = 65535;
pub const BRIDGE: &str = "br0";
pub const BRIDGE_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x02, 0x01];

/// The uplink: its address is the NAT address.
pub const UPLINK: &str = "up0";
pub const UPLINK_PEER: &str = "up1";
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const UPLINK_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02];
/// The default gateway and its (permanent) neighbour entry.
pub const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const NEXT_HOP_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// An outside host (TEST-NET-3).
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// IPv6: the guests' prefix (bridge address), the uplink, its next hop and
/// an outside host.
pub const SUBNET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0);
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 1);
pub const UPLINK_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const NEXT_HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 10);

/// The two guests: port name (bridge side of the veth), peer, MAC, address.
pub const GUESTS: [(&str, &str, Mac, Ipv4Addr); 2] = [
    (
        "vg0",
        "vg1",
        [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a],
        Ipv4Addr::new(192, 168, 122, 10),
    ),
    (
        "vh0",
        "vh1",
        [0x52, 0x54, 0x00, 0x00, 0x00, 0x0b],
        Ipv4Addr::new(192, 168, 122, 11),
    ),
];

/// Conntrack table size in tests (the default would preallocate ~40 MB per
/// test).
const TEST_CONNTRACK_ENTRIES: u32 = 4096;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `vxdp-pt-<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "vxdp-pt-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// The address as it sits in a packet or map (network byte order).
pub fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The address from its in-memory (network byte order) form.
pub fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

pub fn fmt_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A network namespace with a unique name, deleted on drop. Every command
/// goes through `ip -n NAME` / `ip netns exec NAME`, which fail (rather than
/// fall back to the host) if the namespace is gone.
pub struct NetNs {
    name: String,
}

/// Deletes namespaces `vxdp-pt-<pid>-*` left by test processes that no
/// longer exist (killed before their `Drop` ran). Namespaces of live
/// processes are never touched.
fn reap_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("vxdp-pt-") else {
            continue;
        };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_cmd(Command::new("ip").args(["netns", "del", &name]));
        }
    }
}

impl NetNs {
    pub fn new() -> anyhow::Result<Self> {
        static REAP: std::sync::Once = std::sync::Once::new();
        REAP.call_once(reap_stale_namespaces);
        let name = unique_name();
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(Self { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME <args>`.
    pub fn ip(&self, args: &str) -> anyhow::Result<()> {
        run_cmd(
            Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(args.split_whitespace()),
        )
    }

    /// `ip netns exec NAME <args>`.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<()> {
        run_cmd(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
        )
    }

    /// Moves the calling thread (only it) into the namespace.
    pub fn enter_current_thread(&self) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let f = File::open(&path).with_context(|| format!("opening {path}"))?;
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!(
                "warning: could not delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// Gives the calling thread a private mount namespace with a fresh bpffs on
/// `/sys/fs/bpf`, and returns a unique pin directory in it. Nothing changes in
/// the host's mount namespace; the bpffs (and every pin in it) goes away when
/// the thread exits.
pub fn private_bpffs() -> anyhow::Result<PathBuf> {
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let root = CString::new("/").unwrap();
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "making the private mount namespace private: {}",
                std::io::Error::last_os_error()
            );
        }
        let src = CString::new("bpf").unwrap();
        let target = CString::new("/sys/fs/bpf").unwrap();
        if libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "mounting a private bpffs: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let dir = PathBuf::from("/sys/fs/bpf").join(unique_name());
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Removes the pin directory on drop (the bpffs itself dies with the thread's
/// mount namespace).
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).unwrap();
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {name} in this thread's namespace"),
        i => Ok(i),
    }
}

/// Builds the topology in `ns`: bridge + two guest ports, uplink with a
/// default route and a resolved next hop, forwarding on.
fn build_topology(ns: &NetNs) -> anyhow::Result<()> {
    ns.ip("link set lo up")?;
    ns.ip(&format!(
        "link add {BRIDGE} address {} type bridge",
        fmt_mac(&BRIDGE_MAC)
    ))?;
    ns.ip(&format!("addr add {GATEWAY}/24 dev {BRIDGE}"))?;
    for (port, peer, mac, _) in GUESTS {
        ns.ip(&format!(
            "link add {port} type veth peer name {peer} address {}",
            fmt_mac(&mac)
        ))?;
        ns.ip(&format!("link set {port} master {BRIDGE}"))?;
        ns.ip(&format!("link set {port} up"))?;
        ns.ip(&format!("link set {peer} up"))?;
    }
    ns.ip(&format!("link set {BRIDGE} up"))?;
    ns.ip(&format!(
        "link add {UPLINK} address {} type veth peer name {UPLINK_PEER} address {}",
        fmt_mac(&UPLINK_MAC),
        fmt_mac(&NEXT_HOP_MAC)
    ))?;
    ns.ip(&format!("addr add {UPLINK_ADDR}/24 dev {UPLINK}"))?;
    ns.ip(&format!("link set {UPLINK} up"))?;
    ns.ip(&format!("link set {UPLINK_PEER} up"))?;
    ns.ip(&format!("route add default via {NEXT_HOP} dev {UPLINK}"))?;
    ns.ip(&format!(
        "neigh replace {NEXT_HOP} lladdr {} dev {UPLINK} nud permanent",
        fmt_mac(&NEXT_HOP_MAC)
    ))?;
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    // IPv6 for the route/open tests: the guests' prefix on the bridge, a
    // default route via the uplink's next hop with a permanent neighbour.
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    ns.ip(&format!("-6 addr add {GATEWAY6}/64 dev {BRIDGE} nodad"))?;
    ns.ip(&format!("-6 addr add {UPLINK_ADDR6}/64 dev {UPLINK} nodad"))?;
    ns.ip(&format!(
        "-6 route add default via {NEXT_HOP6} dev {UPLINK}"
    ))?;
    ns.ip(&format!(
        "-6 neigh replace {NEXT_HOP6} lladdr {} dev {UPLINK} nud permanent",
        fmt_mac(&NEXT_HOP_MAC)
    ))?;
    Ok(())
}

/// Builds a fresh namespace with the NAT topology, loads and seeds the
/// dataplane on a thread inside it, and runs `body` there. The namespace is
/// deleted afterwards, also when `body` panics (the panic is then re-raised
/// so the test fails with its message).
pub fn with_nat_world<F>(body: F)
where
    F: FnOnce(&mut World) + Send,
{
    let ns = NetNs::new().expect("creating the test network namespace");
    build_topology(&ns).expect("building the test topology (bridge, guest ports, uplink)");
    let ns_ref = &ns;
    let result = thread::scope(|s| {
        thread::Builder::new()
            .name(format!("progtest-{}", ns_ref.name()))
            .spawn_scoped(s, move || {
                ns_ref
                    .enter_current_thread()
                    .expect("entering the test network namespace");
                let pins =
                    PinDir(private_bpffs().expect("setting up a private bpffs for map pins"));
                let mut world =
                    World::load(ns_ref.name(), &pins.0).expect("loading and seeding the dataplane");
                body(&mut world);
                drop(world);
                drop(pins);
            })
            .expect("spawning the test thread")
            .join()
    });
    drop(ns);
    if let Err(payload) = result {
        panic::resume_unwind(payload);
    }
}

/// One guest as the dataplane knows it.
#[derive(Clone, Copy, Debug)]
pub struct Guest {
    pub port: &'static str,
    pub port_ifindex: u32,
    pub mac: Mac,
    pub addr: Ipv4Addr,
}

/// What a program returned for one packet.
#[derive(Clone, Debug)]
pub struct Run {
    pub verdict: u32,
    pub data: Vec<u8>,
    /// XDP: the metadata the program put in front of the frame (empty: none).
    pub meta: Vec<u8>,
}

/// The loaded dataplane in a test namespace, maps seeded for network
/// [`NET_ID`] (NAT, 192.168.122.0/24) with two guests.
pub struct World {
    pub netns: String,
    pub ebpf: Ebpf,
    pub guests: [Guest; 2],
    pub bridge_ifindex: u32,
    pub uplink_ifindex: u32,
}

impl World {
    /// Loads the object with its maps pinned under `pin_dir`, loads both
    /// programs and seeds the maps. Must run on a thread inside the test
    /// namespace.
    pub fn load(netns: &str, pin_dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(names::MAP_CONNTRACK, TEST_CONNTRACK_ENTRIES)
            .map_max_entries(names::MAP_CONNTRACK6, TEST_CONNTRACK_ENTRIES)
            .load(vxdp_control::dataplane_object())
            .context("loading the dataplane object")?;
        {
            let p: &mut SchedClassifier = ebpf
                .program_mut(names::PROG_GUEST_INGRESS)
                .context("no guest program in the object")?
                .try_into()?;
            p.load().context("loading vxdp_guest_in (verifier)")?;
        }
        {
            let p: &mut Xdp = ebpf
                .program_mut(names::PROG_UPLINK_INGRESS)
                .context("no uplink program in the object")?
                .try_into()?;
            p.load().context("loading vxdp_uplink_in (verifier)")?;
        }
        for (name, _) in names::GUEST_JUMPS {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("no {name} program in the object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("loading {name} (verifier)"))?;
        }
        vxdp_control::dataplane::fill_guest_jumps(&mut ebpf).context("filling VXDP_GUEST_JUMP")?;

        let bridge_ifindex = ifindex(BRIDGE)?;
        let uplink_ifindex = ifindex(UPLINK)?;
        let mut guests = Vec::new();
        for (port, _, mac, addr) in GUESTS {
            guests.push(Guest {
                port,
                port_ifindex: ifindex(port)?,
                mac,
                addr,
            });
        }
        let guests: [Guest; 2] = guests.try_into().unwrap();

        let net = NetworkConfig {
            mode: mode::NAT,
            flags: network_flags::ACTIVE,
            subnet: be(SUBNET),
            netmask: be(Ipv4Addr::new(255, 255, 255, 0)),
            gateway: be(GATEWAY),
            nat_addr_first: be(UPLINK_ADDR),
            nat_addr_last: be(UPLINK_ADDR),
            nat_port_min: NAT_PORT_MIN,
            nat_port_max: NAT_PORT_MAX,
            uplink_ifindex,
            bridge_ifindex,
            bridge_mac: BRIDGE_MAC,
            _pad0: [0; 2],
        };
        let mut networks: Array<_, NetworkConfig> =
            Array::try_from(ebpf.map_mut(names::MAP_NETWORKS).context("VXDP_NETWORKS")?)?;
        networks
            .set(NET_ID, &net, 0)
            .context("seeding VXDP_NETWORKS")?;

        let mut endpoints: HashMap<_, u32, Endpoint> = HashMap::try_from(
            ebpf.map_mut(names::MAP_ENDPOINTS)
                .context("VXDP_ENDPOINTS")?,
        )?;
        for g in &guests {
            // Ports that take XDP frames (as taps do), so the uplink's XDP
            // program may redirect to them.
            let ep = Endpoint {
                network_id: NET_ID,
                flags: endpoint_flags::MAC_KNOWN | endpoint_flags::XDP_FRAMES,
                mac: g.mac,
                _pad0: [0; 2],
                ipv4: be(g.addr),
                _pad1: 0,
                ipv6: [0; 16],
            };
            endpoints
                .insert(&g.port_ifindex, &ep, 0)
                .context("seeding VXDP_ENDPOINTS")?;
        }

        let mut subnets: LpmTrie<_, SubnetKey, SubnetOwner> =
            LpmTrie::try_from(ebpf.map_mut(names::MAP_SUBNETS).context("VXDP_SUBNETS")?)?;
        subnets
            .insert(
                &Key::new(24, SubnetKey { addr: be(SUBNET) }),
                &SubnetOwner {
                    network_id: NET_ID,
                    mode: mode::NAT,
                },
                0,
            )
            .context("seeding VXDP_SUBNETS")?;

        let mut timeouts: Array<_, u64> =
            Array::try_from(ebpf.map_mut(names::MAP_TIMEOUTS).context("VXDP_TIMEOUTS")?)?;
        for (class, secs) in DEFAULT_TIMEOUTS_S.iter().enumerate() {
            timeouts
                .set(class as u32, &(secs * 1_000_000_000), 0)
                .context("seeding VXDP_TIMEOUTS")?;
        }

        let mut ports =
            DevMapHash::try_from(ebpf.map_mut(names::MAP_PORTS).context("VXDP_PORTS")?)?;
        for g in &guests {
            ports
                .insert(g.port_ifindex, g.port_ifindex, None, 0)
                .with_context(|| format!("seeding VXDP_PORTS with {}", g.port))?;
        }

        Ok(Self {
            netns: netns.to_string(),
            ebpf,
            guests,
            bridge_ifindex,
            uplink_ifindex,
        })
    }

    /// Runs `vxdp_guest_in` on `frame` as if it arrived on `port_ifindex`.
    pub fn run_guest(&self, port_ifindex: u32, frame: &[u8]) -> Run {
        self.try_run_guest(port_ifindex, frame)
            .expect("BPF_PROG_TEST_RUN of vxdp_guest_in failed")
    }

    /// Like [`World::run_guest`], returning the syscall's error: the kernel
    /// refuses some frames before the program sees them (since about 6.x an
    /// IPv4/IPv6-typed frame shorter than its network header is EINVAL).
    pub fn try_run_guest(
        &self,
        port_ifindex: u32,
        frame: &[u8],
    ) -> Result<Run, aya::programs::ProgramError> {
        self.try_run_tc(names::PROG_GUEST_INGRESS, port_ifindex, frame)
    }

    /// Runs the TC program `name` on `frame` as if it arrived on `ifindex`,
    /// returning the syscall's error as [`World::try_run_guest`] does.
    pub fn try_run_tc(
        &self,
        name: &str,
        ifindex: u32,
        frame: &[u8],
    ) -> Result<Run, aya::programs::ProgramError> {
        let p: &SchedClassifier = self
            .ebpf
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|_| panic!("{name} is not a classifier"));
        // struct __sk_buff (192 bytes); `ifindex` (offset 40) is one of the
        // fields BPF_PROG_TEST_RUN lets us set: it picks skb->dev.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 512];
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(Run {
            verdict: r.return_value,
            data: out,
            meta: Vec::new(),
        })
    }

    /// Runs `vxdp_uplink_in` on `frame` (arriving on the namespace's
    /// loopback).
    pub fn run_uplink(&self, frame: &[u8]) -> Run {
        self.run_uplink_from(0, frame)
    }

    /// Runs `vxdp_uplink_in` on `frame` as if it arrived on `ifindex`
    /// (0: the namespace's loopback).
    pub fn run_uplink_from(&self, ifindex: u32, frame: &[u8]) -> Run {
        let p: &Xdp = self
            .ebpf
            .program(names::PROG_UPLINK_INGRESS)
            .expect("uplink program")
            .try_into()
            .expect("uplink program is XDP");
        // struct xdp_md: data, data_end (must be the frame's length),
        // data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 512];
        let mut ctx_out = [0u8; 24];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx[..]),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN of vxdp_uplink_in failed");
        out.truncate(r.data_size_out as usize);
        // The output starts at the metadata: `data` is its length.
        let meta_len =
            (u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()) as usize).min(out.len());
        let data = out.split_off(meta_len);
        Run {
            verdict: r.return_value,
            data,
            meta: out,
        }
    }

    /// Network [`NET_ID`]'s configuration as seeded (NAT).
    pub fn network(&self) -> NetworkConfig {
        let networks: Array<_, NetworkConfig> =
            Array::try_from(self.ebpf.map(names::MAP_NETWORKS).expect("VXDP_NETWORKS"))
                .expect("VXDP_NETWORKS is an array");
        networks.get(&NET_ID, 0).expect("reading VXDP_NETWORKS")
    }

    /// Replaces network `id`'s configuration.
    pub fn set_network(&mut self, id: u32, cfg: &NetworkConfig) {
        let mut networks: Array<_, NetworkConfig> = Array::try_from(
            self.ebpf
                .map_mut(names::MAP_NETWORKS)
                .expect("VXDP_NETWORKS"),
        )
        .expect("VXDP_NETWORKS is an array");
        networks.set(id, cfg, 0).expect("writing VXDP_NETWORKS");
    }

    /// Re-seeds network [`NET_ID`] as `net_mode` (its subnet's owner too),
    /// with `flags` besides ACTIVE, as the control plane would start it.
    pub fn set_mode(&mut self, net_mode: u32, flags: u32) {
        let mut cfg = self.network();
        cfg.mode = net_mode;
        cfg.flags = network_flags::ACTIVE | flags;
        self.set_network(NET_ID, &cfg);
        let owner = SubnetOwner {
            network_id: NET_ID,
            mode: net_mode,
        };
        self.set_subnet(be(SUBNET), 24, &owner);
        self.set_subnet6(SUBNET6, 64, &owner);
    }

    pub fn set_subnet(&mut self, addr: u32, prefix: u32, owner: &SubnetOwner) {
        let mut subnets: LpmTrie<_, SubnetKey, SubnetOwner> =
            LpmTrie::try_from(self.ebpf.map_mut(names::MAP_SUBNETS).expect("VXDP_SUBNETS"))
                .expect("VXDP_SUBNETS is an LPM trie");
        subnets
            .insert(&Key::new(prefix, SubnetKey { addr }), owner, 0)
            .expect("writing VXDP_SUBNETS");
    }

    pub fn set_subnet6(&mut self, addr: Ipv6Addr, prefix: u32, owner: &SubnetOwner) {
        let mut subnets: LpmTrie<_, Subnet6Key, SubnetOwner> = LpmTrie::try_from(
            self.ebpf
                .map_mut(names::MAP_SUBNETS6)
                .expect("VXDP_SUBNETS6"),
        )
        .expect("VXDP_SUBNETS6 is an LPM trie");
        subnets
            .insert(
                &Key::new(
                    prefix,
                    Subnet6Key {
                        addr: addr.octets(),
                    },
                ),
                owner,
                0,
            )
            .expect("writing VXDP_SUBNETS6");
    }

    /// Replaces a guest port's endpoint entry.
    pub fn set_endpoint(&mut self, port_ifindex: u32, ep: &Endpoint) {
        let mut endpoints: HashMap<_, u32, Endpoint> = HashMap::try_from(
            self.ebpf
                .map_mut(names::MAP_ENDPOINTS)
                .expect("VXDP_ENDPOINTS"),
        )
        .expect("VXDP_ENDPOINTS is a hash map");
        endpoints
            .insert(&port_ifindex, ep, 0)
            .expect("writing VXDP_ENDPOINTS");
    }

    /// Writes the `VXDP_MACS` entry the control plane writes with a port
    /// whose MAC is known.
    pub fn set_mac(&mut self, network_id: u32, mac: Mac, port_ifindex: u32) {
        let mut macs: HashMap<_, MacKey, MacPort> =
            HashMap::try_from(self.ebpf.map_mut(names::MAP_MACS).expect("VXDP_MACS"))
                .expect("VXDP_MACS is a hash map");
        let key = MacKey {
            network_id,
            mac,
            _pad0: [0; 2],
        };
        macs.insert(
            &key,
            &MacPort {
                ifindex: port_ifindex,
                _pad0: 0,
            },
            0,
        )
        .expect("writing VXDP_MACS");
    }

    /// The ifindex of `name` in the world's namespace.
    pub fn ifindex(&self, name: &str) -> u32 {
        ifindex(name).expect("interface of the test namespace")
    }

    /// `ip -n <this world's namespace> <args>`.
    pub fn ip(&self, args: &str) -> anyhow::Result<()> {
        run_cmd(
            Command::new("ip")
                .arg("-n")
                .arg(&self.netns)
                .args(args.split_whitespace()),
        )
    }

    /// Removes a guest port from `VXDP_PORTS` (as when its VM goes away).
    pub fn remove_port(&mut self, port_ifindex: u32) {
        let mut ports =
            DevMapHash::try_from(self.ebpf.map_mut(names::MAP_PORTS).expect("VXDP_PORTS"))
                .expect("VXDP_PORTS is a devmap hash");
        ports
            .remove(port_ifindex)
            .expect("removing a guest port from VXDP_PORTS");
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Vec<(ConntrackKey, ConntrackEntry)> {
        let map: HashMap<_, ConntrackKey, ConntrackEntry> =
            HashMap::try_from(self.ebpf.map(names::MAP_CONNTRACK).expect("VXDP_CONNTRACK"))
                .expect("VXDP_CONNTRACK is a hash map");
        map.iter()
            .map(|r| r.expect("reading VXDP_CONNTRACK"))
            .collect()
    }

    /// A snapshot of the counters of networks 0 and [`NET_ID`].
    pub fn counters(&self) -> Counters {
        let map: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.ebpf.map(names::MAP_COUNTERS).expect("VXDP_COUNTERS"))
                .expect("VXDP_COUNTERS is a per-CPU array");
        let mut slots = BTreeMap::new();
        for net in [0, NET_ID] {
            for slot in 0..COUNTER_SLOTS {
                let values = map
                    .get(&counter_index(net, slot), 0)
                    .expect("reading VXDP_COUNTERS");
                let mut sum = Counter::default();
                for v in values.iter() {
                    sum.packets += v.packets;
                    sum.bytes += v.bytes;
                }
                slots.insert((net, slot), sum);
            }
        }
        Counters(slots, self.port_counters())
    }

    /// `VXDP_PORT_STATS` summed over CPUs and interfaces, by (network, slot).
    fn port_counters(&self) -> BTreeMap<(u32, u32), Counter> {
        let map: aya::maps::PerCpuHashMap<_, vxdp_common::PortCounterKey, Counter> =
            aya::maps::PerCpuHashMap::try_from(
                self.ebpf
                    .map(names::MAP_PORT_COUNTERS)
                    .expect("VXDP_PORT_STATS"),
            )
            .expect("VXDP_PORT_STATS is a per-CPU hash");
        let mut out = BTreeMap::new();
        for item in map.iter() {
            let (key, values) = item.expect("reading VXDP_PORT_STATS");
            let sum: &mut Counter = out
                .entry((key.network_id as u32, key.slot as u32))
                .or_default();
            for v in values.iter() {
                sum.packets += v.packets;
                sum.bytes += v.bytes;
            }
        }
        out
    }
}

/// A counter slot, named as in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Action(Action),
    Drop(DropReason),
}

impl Slot {
    pub fn index(self) -> u32 {
        match self {
            Slot::Action(a) => a.slot(),
            Slot::Drop(r) => r.slot(),
        }
    }

    pub fn name_of(slot: u32) -> String {
        if let Some(a) = Action::ALL.iter().find(|a| a.slot() == slot) {
            return format!("action {}", a.name());
        }
        if let Some(r) = DropReason::ALL.iter().find(|r| r.slot() == slot) {
            return format!("drop reason {}", r.name());
        }
        format!("unnamed slot {slot}")
    }
}

/// A change of one counter between two snapshots.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub network: u32,
    pub slot: u32,
    pub packets: u64,
    pub bytes: u64,
}

impl fmt::Debug for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {} {}: +{} packets, +{} bytes",
            self.network,
            Slot::name_of(self.slot),
            self.packets,
            self.bytes
        )
    }
}

/// Counter values (CPUs summed) keyed by (network, slot): `VXDP_COUNTERS`,
/// then `VXDP_PORT_STATS` summed over interfaces.
#[derive(Clone)]
pub struct Counters(
    pub BTreeMap<(u32, u32), Counter>,
    pub BTreeMap<(u32, u32), Counter>,
);

impl Counters {
    /// The counters that changed since `before`.
    pub fn moved_since(&self, before: &Counters) -> Vec<Moved> {
        self.0
            .iter()
            .filter_map(|(&(network, slot), now)| {
                let was = before.0.get(&(network, slot)).copied().unwrap_or_default();
                (now != &was).then(|| Moved {
                    network,
                    slot,
                    packets: now.packets.wrapping_sub(was.packets),
                    bytes: now.bytes.wrapping_sub(was.bytes),
                })
            })
            .collect()
    }

    pub fn get(&self, network: u32, slot: Slot) -> Counter {
        self.0
            .get(&(network, slot.index()))
            .copied()
            .unwrap_or_default()
    }
}

/// Asserts that exactly the listed counters moved since `before`, each by the
/// given number of packets, and nothing else did.
#[track_caller]
pub fn assert_counters_moved(
    before: &Counters,
    after: &Counters,
    expected: &[(u32, Slot, u64)],
    what: &str,
) {
    let moved = after.moved_since(before);
    // Every packet counted per network is counted per port too (the
    // metrics' interface label); events without a packet only per network.
    let events = [
        Action::ConntrackCreated,
        Action::ConntrackExpiredReused,
        Action::ConntrackRepaired,
    ]
    .map(Action::slot);
    let per_port = Counters(after.1.clone(), BTreeMap::new())
        .moved_since(&Counters(before.1.clone(), BTreeMap::new()));
    let per_network: Vec<Moved> = moved
        .iter()
        .copied()
        .filter(|m| !events.contains(&m.slot))
        .collect();
    assert_eq!(
        per_port, per_network,
        "{what}: per-port counters (VXDP_PORT_STATS) disagree with per-network ones"
    );
    let mut ok = moved.len() == expected.len();
    for &(net, slot, packets) in expected {
        ok &= moved
            .iter()
            .any(|m| m.network == net && m.slot == slot.index() && m.packets == packets);
    }
    if !ok {
        let want: Vec<String> = expected
            .iter()
            .map(|(n, s, p)| format!("network {n} {}: +{p} packets", Slot::name_of(s.index())))
            .collect();
        panic!(
            "{what}: counters in vxdp's metrics would be wrong.\n  expected exactly: {want:#?}\n  actually moved:   {moved:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Packets

pub const ETH_P_IP: u16 = 0x0800;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_RST: u8 = 0x04;

#[derive(Clone, Debug)]
pub enum L4Spec {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        no_checksum: bool,
    },
    IcmpEcho {
        request: bool,
        id: u16,
        seq: u16,
    },
}

/// An Ethernet/IPv4 frame to build. Defaults: TTL 64, DF set, no options.
#[derive(Clone, Debug)]
pub struct Packet {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub ip_id: u16,
    pub l4: L4Spec,
    pub payload: Vec<u8>,
}

impl Packet {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4Spec) -> Self {
        Self {
            eth_src: [0x02, 0, 0, 0, 0xee, 0x01],
            eth_dst: [0x02, 0, 0, 0, 0xee, 0x02],
            src,
            dst,
            ttl: 64,
            ip_id: 0x1c46,
            l4,
            payload: Vec::new(),
        }
    }

    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4Spec::Tcp {
                src_port: src.port(),
                dst_port: dst.port(),
                flags,
                seq: 0x0102_0304,
                ack: 0,
            },
        )
    }

    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4Spec::Udp {
                src_port: src.port(),
                dst_port: dst.port(),
                no_checksum: false,
            },
        )
        .payload(b"vxdp udp payload, odd length!")
    }

    pub fn icmp_echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        Self::new(
            src,
            dst,
            L4Spec::IcmpEcho {
                request: true,
                id,
                seq,
            },
        )
        .payload(b"ping payload 0123456789")
    }

    pub fn icmp_echo_reply(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        Self::new(
            src,
            dst,
            L4Spec::IcmpEcho {
                request: false,
                id,
                seq,
            },
        )
        .payload(b"ping payload 0123456789")
    }

    pub fn macs(mut self, src: Mac, dst: Mac) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// UDP only: send with checksum 0 ("no checksum").
    pub fn udp_no_checksum(mut self) -> Self {
        if let L4Spec::Udp { no_checksum, .. } = &mut self.l4 {
            *no_checksum = true;
        }
        self
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4Spec::Tcp { .. } => PROTO_TCP,
            L4Spec::Udp { .. } => PROTO_UDP,
            L4Spec::IcmpEcho { .. } => PROTO_ICMP,
        }
    }

    /// The frame's bytes, every checksum correct.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        match self.l4 {
            L4Spec::Tcp {
                src_port,
                dst_port,
                flags,
                seq,
                ack,
            } => {
                l4.extend_from_slice(&src_port.to_be_bytes());
                l4.extend_from_slice(&dst_port.to_be_bytes());
                l4.extend_from_slice(&seq.to_be_bytes());
                l4.extend_from_slice(&ack.to_be_bytes());
                l4.push(5 << 4);
                l4.push(flags);
                l4.extend_from_slice(&64240u16.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            }
            L4Spec::Udp {
                src_port, dst_port, ..
            } => {
                l4.extend_from_slice(&src_port.to_be_bytes());
                l4.extend_from_slice(&dst_port.to_be_bytes());
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            L4Spec::IcmpEcho { request, id, seq } => {
                l4.push(if request { 8 } else { 0 });
                l4.push(0);
                l4.extend_from_slice(&[0, 0]);
                l4.extend_from_slice(&id.to_be_bytes());
                l4.extend_from_slice(&seq.to_be_bytes());
            }
        }
        l4.extend_from_slice(&self.payload);
        let proto = self.proto();
        let csum = match self.l4 {
            L4Spec::Udp {
                no_checksum: true, ..
            } => 0,
            L4Spec::IcmpEcho { .. } => checksum(&l4),
            L4Spec::Udp { .. } => match checksum(&pseudo_header(self.src, self.dst, proto, &l4)) {
                0 => 0xffff,
                c => c,
            },
            L4Spec::Tcp { .. } => checksum(&pseudo_header(self.src, self.dst, proto, &l4)),
        };
        let off = l4_csum_offset(proto);
        l4[off..off + 2].copy_from_slice(&csum.to_be_bytes());

        let mut ip = Vec::with_capacity(20);
        ip.push(0x45);
        ip.push(0);
        ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&self.ip_id.to_be_bytes());
        ip.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip.push(self.ttl);
        ip.push(proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::with_capacity(14 + ip.len() + l4.len());
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

fn l4_csum_offset(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => 2,
    }
}

/// The Internet checksum (RFC 1071) of `data`, computed from scratch.
/// A BOOTP/DHCP message of `op` (1 request, 2 reply) for client hardware
/// address `chaddr`, 300 bytes as clients send them: the magic cookie, a
/// message-type option and the end option. The guest program checks that
/// a client speaks only for its own MAC.
pub fn bootp(op: u8, chaddr: Mac) -> Vec<u8> {
    let mut b = vec![0u8; 300];
    b[0] = op;
    b[1] = 1;
    b[2] = 6;
    b[28..34].copy_from_slice(&chaddr);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b[240..243].copy_from_slice(&[53, 1, 1]);
    b[243] = 255;
    b
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let (pairs, rest) = data.as_chunks::<2>();
    for c in pairs {
        sum += u16::from_be_bytes(*c) as u32;
    }
    if let [last] = rest {
        sum += (*last as u32) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 pseudo-header followed by the L4 segment.
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + l4.len());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.push(0);
    v.push(proto);
    v.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    v.extend_from_slice(l4);
    v
}

/// 0x0000 and 0xffff are the same one's complement number: a receiver
/// accepts either where the other is computed.
fn csum_same(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

/// A read-only view of an Ethernet/IPv4 frame a program returned.
pub struct Frame<'a>(pub &'a [u8]);

impl Frame<'_> {
    fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }
    pub fn eth_dst(&self) -> Mac {
        self.0[0..6].try_into().unwrap()
    }
    pub fn eth_src(&self) -> Mac {
        self.0[6..12].try_into().unwrap()
    }
    pub fn ihl(&self) -> usize {
        (self.0[14] & 0x0f) as usize * 4
    }
    pub fn ttl(&self) -> u8 {
        self.0[14 + 8]
    }
    pub fn proto(&self) -> u8 {
        self.0[14 + 9]
    }
    pub fn ip_id(&self) -> u16 {
        self.u16_at(14 + 4)
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[26], self.0[27], self.0[28], self.0[29])
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[30], self.0[31], self.0[32], self.0[33])
    }
    fn l4_off(&self) -> usize {
        14 + self.ihl()
    }
    fn l4_end(&self) -> usize {
        (14 + self.u16_at(16) as usize).min(self.0.len())
    }
    /// TCP/UDP source port; ICMP echo: the identifier.
    pub fn src_port(&self) -> u16 {
        match self.proto() {
            PROTO_ICMP => self.icmp_id(),
            _ => self.u16_at(self.l4_off()),
        }
    }
    /// TCP/UDP destination port; ICMP echo: the identifier.
    pub fn dst_port(&self) -> u16 {
        match self.proto() {
            PROTO_ICMP => self.icmp_id(),
            _ => self.u16_at(self.l4_off() + 2),
        }
    }
    pub fn icmp_id(&self) -> u16 {
        self.u16_at(self.l4_off() + 4)
    }
    pub fn sock_src(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.src(), self.src_port())
    }
    pub fn sock_dst(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.dst(), self.dst_port())
    }
    /// L4 payload after the fixed header.
    pub fn payload(&self) -> &[u8] {
        let hdr = match self.proto() {
            PROTO_TCP => 20,
            _ => 8,
        };
        &self.0[self.l4_off() + hdr..self.l4_end()]
    }
    pub fn ip_checksum(&self) -> u16 {
        self.u16_at(24)
    }
    pub fn l4_checksum(&self) -> u16 {
        self.u16_at(self.l4_off() + l4_csum_offset(self.proto()))
    }

    /// The IPv4 header checksum computed from scratch over the header as it is.
    pub fn expected_ip_checksum(&self) -> u16 {
        let mut h = self.0[14..14 + self.ihl()].to_vec();
        h[10] = 0;
        h[11] = 0;
        checksum(&h)
    }

    /// The L4 checksum computed from scratch (with the pseudo-header for TCP
    /// and UDP; UDP's computed 0 is sent as 0xffff).
    pub fn expected_l4_checksum(&self) -> u16 {
        let proto = self.proto();
        let mut l4 = self.0[self.l4_off()..self.l4_end()].to_vec();
        let off = l4_csum_offset(proto);
        l4[off] = 0;
        l4[off + 1] = 0;
        match proto {
            PROTO_ICMP => checksum(&l4),
            PROTO_UDP => match checksum(&pseudo_header(self.src(), self.dst(), proto, &l4)) {
                0 => 0xffff,
                c => c,
            },
            _ => checksum(&pseudo_header(self.src(), self.dst(), proto, &l4)),
        }
    }

    /// Checks that the IPv4 and L4 checksums are what a receiver computes
    /// (a UDP checksum of 0, "none", is accepted only if `udp_zero_ok`);
    /// `Err` says what a receiver would see wrong.
    pub fn check_checksums(&self, udp_zero_ok: bool) -> Result<(), String> {
        let (got, want) = (self.ip_checksum(), self.expected_ip_checksum());
        if !csum_same(got, want) {
            return Err(format!(
                "IPv4 header checksum is {got:#06x}, a receiver computes {want:#06x}: the packet would be dropped on arrival"
            ));
        }
        let name = match self.proto() {
            PROTO_TCP => "TCP",
            PROTO_UDP => "UDP",
            PROTO_ICMP => "ICMP",
            _ => "L4",
        };
        let got = self.l4_checksum();
        if self.proto() == PROTO_UDP && got == 0 {
            return if udp_zero_ok {
                Ok(())
            } else {
                Err(
                    "UDP checksum is 0 (\"none\") but the sender had one: checksum protection lost"
                        .into(),
                )
            };
        }
        let want = self.expected_l4_checksum();
        if !csum_same(got, want) {
            return Err(format!(
                "{name} checksum is {got:#06x}, a receiver computes {want:#06x} (pseudo-header {} -> {}): the packet would be dropped on arrival",
                self.src(),
                self.dst()
            ));
        }
        Ok(())
    }

    /// [`Frame::check_checksums`] as an assertion.
    #[track_caller]
    pub fn assert_checksums(&self, what: &str, udp_zero_ok: bool) {
        if let Err(e) = self.check_checksums(udp_zero_ok) {
            panic!("{what}: {e}");
        }
    }
}

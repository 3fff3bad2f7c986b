//! Helpers for `BPF_PROG_TEST_RUN` tests of the dataplane programs.
//!
//! - [`with_nat_world`]: builds the NAT topology in a throwaway namespace
//!   (testkit's [`Netns`], deleted also when a test panics: bridge
//!   `br0` with two guest ports, uplink `up0` with a default route and a
//!   permanent neighbour), then, on a dedicated thread that entered the
//!   namespace, loads the eBPF object, seeds its maps ([`World`]) and runs the
//!   test body there. `bpf_fib_lookup`, devmap inserts and test runs all use
//!   the calling thread's network namespace, so everything happens on that
//!   thread.
//! - [`once`], [`dropped`]: the counter moves most cases expect, and
//!   [`World::guest_verdict`]/[`World::uplink_verdict`]: run one frame and
//!   assert its verdict and exactly those moves.
//! - [`set_nat6`], [`conntrack6`]: NAT66's maps.
//!
//! Frames are built and read with `vxdp_testkit::packet` and `packet6`.
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
    net::{Ipv4Addr, Ipv6Addr},
    panic,
    path::PathBuf,
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
    Action, COUNTER_SLOTS, Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, Counter,
    DEFAULT_TIMEOUTS_S, DropReason, Endpoint, MacKey, MacPort, Nat6Config, NetworkConfig,
    Subnet6Key, SubnetKey, SubnetOwner, counter_index, endpoint_flags, mode, names, network_flags,
};
use vxdp_testkit::{
    Netns,
    packet::{Mac, be, fmt_mac},
    run, unique_name,
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

/// Names of the worlds' namespaces and pin directories: `vxdp-pt-<pid>-<n>`.
const NETNS_PREFIX: &str = "vxdp-pt-";

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
    let dir = PathBuf::from("/sys/fs/bpf").join(unique_name(NETNS_PREFIX));
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
fn build_topology(ns: &Netns) -> anyhow::Result<()> {
    ns.ip_line("link set lo up")?;
    ns.ip_line(&format!(
        "link add {BRIDGE} address {} type bridge",
        fmt_mac(&BRIDGE_MAC)
    ))?;
    ns.ip_line(&format!("addr add {GATEWAY}/24 dev {BRIDGE}"))?;
    for (port, peer, mac, _) in GUESTS {
        ns.ip_line(&format!(
            "link add {port} type veth peer name {peer} address {}",
            fmt_mac(&mac)
        ))?;
        ns.ip_line(&format!("link set {port} master {BRIDGE}"))?;
        ns.ip_line(&format!("link set {port} up"))?;
        ns.ip_line(&format!("link set {peer} up"))?;
    }
    ns.ip_line(&format!("link set {BRIDGE} up"))?;
    ns.ip_line(&format!(
        "link add {UPLINK} address {} type veth peer name {UPLINK_PEER} address {}",
        fmt_mac(&UPLINK_MAC),
        fmt_mac(&NEXT_HOP_MAC)
    ))?;
    ns.ip_line(&format!("addr add {UPLINK_ADDR}/24 dev {UPLINK}"))?;
    ns.ip_line(&format!("link set {UPLINK} up"))?;
    ns.ip_line(&format!("link set {UPLINK_PEER} up"))?;
    ns.ip_line(&format!("route add default via {NEXT_HOP} dev {UPLINK}"))?;
    ns.ip_line(&format!(
        "neigh replace {NEXT_HOP} lladdr {} dev {UPLINK} nud permanent",
        fmt_mac(&NEXT_HOP_MAC)
    ))?;
    ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    // IPv6 for the route/open tests: the guests' prefix on the bridge, a
    // default route via the uplink's next hop with a permanent neighbour.
    ns.exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
    ns.ip_line(&format!("-6 addr add {GATEWAY6}/64 dev {BRIDGE} nodad"))?;
    ns.ip_line(&format!("-6 addr add {UPLINK_ADDR6}/64 dev {UPLINK} nodad"))?;
    ns.ip_line(&format!(
        "-6 route add default via {NEXT_HOP6} dev {UPLINK}"
    ))?;
    ns.ip_line(&format!(
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
    let ns = Netns::unique(NETNS_PREFIX).expect("creating the test network namespace");
    build_topology(&ns).expect("building the test topology (bridge, guest ports, uplink)");
    let ns_ref = &ns;
    let result = thread::scope(|s| {
        thread::Builder::new()
            .name(format!("progtest-{}", ns_ref.name))
            .spawn_scoped(s, move || {
                ns_ref
                    .enter_current_thread()
                    .expect("entering the test network namespace");
                let pins =
                    PinDir(private_bpffs().expect("setting up a private bpffs for map pins"));
                let mut world =
                    World::load(&ns_ref.name, &pins.0).expect("loading and seeding the dataplane");
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
        let guest_xdp = names::GUEST_XDP_JUMPS.map(|(n, _)| n);
        for name in std::iter::once(names::PROG_GUEST_XDP).chain(guest_xdp) {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no {name} program in the object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("loading {name} (verifier)"))?;
        }
        vxdp_control::dataplane::fill_guest_xdp_jumps(&mut ebpf)
            .context("filling VXDP_GUEST_XDP_JUMP")?;

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
        self.try_run_tc_received(name, ifindex, 0, frame)
    }

    /// [`World::try_run_tc`] for a socket buffer received on
    /// `received_on` (`ingress_ifindex`; 0: sent by the host itself), as an
    /// egress program sees what the host forwards.
    pub fn try_run_tc_received(
        &self,
        name: &str,
        ifindex: u32,
        received_on: u32,
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
        // `ingress_ifindex` (offset 36) is another: skb->skb_iif.
        let mut ctx = [0u8; 192];
        ctx[36..40].copy_from_slice(&received_on.to_ne_bytes());
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

    /// The uplink's XDP program left `frame` to the kernel untouched and
    /// unmarked, nothing counted: GRO and the TC program take it from
    /// there (a judged mark would make TC let it through untranslated).
    #[track_caller]
    pub fn assert_uplink_left_to_tc(&self, frame: &[u8], what: &str) {
        let before = self.counters();
        let run = self.run_uplink_from(self.uplink_ifindex, frame);
        assert_eq!(
            run.verdict, XDP_PASS,
            "{what}: XDP verdict {} instead of XDP_PASS (left to TC)",
            run.verdict
        );
        assert_eq!(run.data, frame, "{what}: XDP changed a frame it left to TC");
        assert!(
            run.meta.is_empty(),
            "{what}: XDP marked the frame judged ({:02x?}), so TC would let it through untranslated",
            run.meta
        );
        assert_counters_moved(&before, &self.counters(), &[], what);
    }

    /// Runs `vxdp_uplink_in` on `frame` as if it arrived on `ifindex`
    /// (0: the namespace's loopback).
    pub fn run_uplink_from(&self, ifindex: u32, frame: &[u8]) -> Run {
        self.run_xdp(names::PROG_UPLINK_INGRESS, ifindex, frame)
    }

    /// Runs `vxdp_guest_xdp` (the guest port's XDP program, `--guest-xdp`)
    /// on `frame` as if guest port `port_ifindex` received it.
    pub fn run_guest_xdp(&self, port_ifindex: u32, frame: &[u8]) -> Run {
        self.run_xdp(names::PROG_GUEST_XDP, port_ifindex, frame)
    }

    /// Runs the XDP program `name` on `frame` arriving on `ifindex`.
    fn run_xdp(&self, name: &str, ifindex: u32, frame: &[u8]) -> Run {
        let p: &Xdp = self
            .ebpf
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap_or_else(|_| panic!("{name} is not XDP"));
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
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name} failed: {e}"));
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

    /// Runs `frame` through guest `g`'s port program and asserts its TC
    /// verdict and that exactly the counters `moved` moved; returns the
    /// frame as the program left it.
    #[track_caller]
    pub fn guest_verdict(
        &self,
        g: &Guest,
        frame: &[u8],
        verdict: u32,
        moved: &[(u32, Slot, u64)],
        what: &str,
    ) -> Vec<u8> {
        let before = self.counters();
        let run = self.run_guest(g.port_ifindex, frame);
        assert_eq!(
            run.verdict, verdict,
            "{what}: TC verdict {} instead of {verdict}",
            run.verdict
        );
        assert_counters_moved(&before, &self.counters(), moved, what);
        run.data
    }

    /// Like [`World::guest_verdict`] for the uplink's XDP program.
    #[track_caller]
    pub fn uplink_verdict(
        &self,
        frame: &[u8],
        verdict: u32,
        moved: &[(u32, Slot, u64)],
        what: &str,
    ) -> Vec<u8> {
        self.uplink_verdict_from(0, frame, verdict, moved, what)
    }

    /// Like [`World::uplink_verdict`], the frame arriving on `ifindex`.
    #[track_caller]
    pub fn uplink_verdict_from(
        &self,
        ifindex: u32,
        frame: &[u8],
        verdict: u32,
        moved: &[(u32, Slot, u64)],
        what: &str,
    ) -> Vec<u8> {
        let before = self.counters();
        let run = self.run_uplink_from(ifindex, frame);
        assert_eq!(
            run.verdict, verdict,
            "{what}: XDP verdict {} instead of {verdict}",
            run.verdict
        );
        assert_counters_moved(&before, &self.counters(), moved, what);
        run.data
    }

    /// Runs every case of a table through guest `g`'s port program (see
    /// [`Case`]); a failure names `context: <the case>`.
    #[track_caller]
    pub fn guest_cases(&self, g: &Guest, context: &str, cases: &[Case]) {
        for (what, frame, verdict, moved) in cases {
            self.guest_verdict(g, frame, *verdict, moved, &format!("{context}: {what}"));
        }
    }

    /// Like [`World::guest_cases`] for the uplink's XDP program, the frames
    /// arriving on `ifindex` (0: as [`World::run_uplink`]).
    #[track_caller]
    pub fn uplink_cases(&self, ifindex: u32, context: &str, cases: &[Case]) {
        for (what, frame, verdict, moved) in cases {
            self.uplink_verdict_from(
                ifindex,
                frame,
                *verdict,
                moved,
                &format!("{context}: {what}"),
            );
        }
    }

    /// The ifindex of `name` in the world's namespace.
    pub fn ifindex(&self, name: &str) -> u32 {
        ifindex(name).expect("interface of the test namespace")
    }

    /// `ip -n <this world's namespace> <args>`.
    pub fn ip(&self, args: &str) -> anyhow::Result<()> {
        let mut a = vec!["-n", self.netns.as_str()];
        a.extend(args.split_whitespace());
        run("ip", &a).map(drop)
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

    /// Removes one conntrack entry (as LRU eviction would).
    pub fn remove_conntrack(&mut self, key: &ConntrackKey) {
        let mut map: HashMap<_, ConntrackKey, ConntrackEntry> = HashMap::try_from(
            self.ebpf
                .map_mut(names::MAP_CONNTRACK)
                .expect("VXDP_CONNTRACK"),
        )
        .expect("VXDP_CONNTRACK is a hash map");
        map.remove(key).expect("removing a conntrack entry");
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
/// One row of a table-driven program test (as Katran's fixtures): what the
/// case is, the frame, the verdict the program must return and exactly the
/// counters that must move. Tests whose cases differ only in these data
/// list them and run them with [`World::guest_cases`] or
/// [`World::uplink_cases`].
pub type Case<'a> = (&'a str, Vec<u8>, u32, &'a [(u32, Slot, u64)]);

/// Every network mode the guest programs serve, with its name in messages.
pub const EVERY_MODE: [(u32, &str); 5] = [
    (mode::NAT, "nat"),
    (mode::ROUTE, "route"),
    (mode::OPEN, "open"),
    (mode::ISOLATED, "isolated"),
    (mode::BRIDGE, "bridge"),
];

/// Host `host` of the guests' IPv6 prefix ([`SUBNET6`]).
pub fn guest6(host: u16) -> Ipv6Addr {
    let s = SUBNET6.segments();
    Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, host)
}

/// Action `a` counted once on network [`NET_ID`].
pub fn once(a: Action) -> (u32, Slot, u64) {
    (NET_ID, Slot::Action(a), 1)
}

/// One drop for reason `r` on network [`NET_ID`].
pub fn dropped(r: DropReason) -> (u32, Slot, u64) {
    (NET_ID, Slot::Drop(r), 1)
}

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
    let events: Vec<u32> = Action::ALL
        .iter()
        .filter(|a| a.is_event())
        .map(|a| a.slot())
        .collect();
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

/// Network `id`'s NAT66 settings (`VXDP_NAT6`), as the control plane
/// writes them at start.
pub fn set_nat6(world: &mut World, id: u32, cfg: &Nat6Config) {
    let mut map: Array<_, Nat6Config> =
        Array::try_from(world.ebpf.map_mut(names::MAP_NAT6).expect("VXDP_NAT6"))
            .expect("VXDP_NAT6 is an array");
    map.set(id, cfg, 0).expect("writing VXDP_NAT6");
}

/// Every NAT66 conntrack entry.
pub fn conntrack6(world: &World) -> Vec<(Conntrack6Key, Conntrack6Entry)> {
    let map: HashMap<_, Conntrack6Key, Conntrack6Entry> = HashMap::try_from(
        world
            .ebpf
            .map(names::MAP_CONNTRACK6)
            .expect("VXDP_CONNTRACK6"),
    )
    .expect("VXDP_CONNTRACK6 is a hash map");
    map.iter()
        .map(|r| r.expect("reading VXDP_CONNTRACK6"))
        .collect()
}

//! The eBPF side of the control plane: loading the programs, pinning maps,
//! programs and links under the bpffs directory (so the dataplane runs with
//! no process attached and a restart adopts it), filling and reading maps.
//!
//! Pin layout under `<bpffs>` (default `/sys/fs/bpf/vxdp/v1`):
//! `maps/VXDP_*`, `progs/vxdp_guest_in`, `progs/vxdp_uplink_in`,
//! `links/tc_in_<ifindex>`, `links/xdp_<ifindex>` with
//! `links/tc_uplink_<ifindex>` (the uplink's XDP and TC programs), on a
//! direct network's NIC `links/tc_nic_in_<ifindex>`,
//! `links/tc_nic_out_<ifindex>`, and the tracepoint programs' links
//! `links/tp_xdp_devmap_xmit`, `links/tp_xdp_redirect_err`.

pub mod conntrack_gc;
pub mod pinned;

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
        ProgramArray, lpm_trie::Key as LpmKey,
    },
    programs::{
        Link, ProgramError, SchedClassifier, TcAttachType, TracePoint, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use aya_obj::programs::XdpAttachType;
use vxdp_common::{
    COUNTER_SLOTS, Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, Counter,
    DEFAULT_CONNTRACK_ENTRIES, DEFAULT_TIMEOUTS_S, DirectNic, DirectPort, Endpoint, MacKey,
    MacPort, Nat6Config, NetworkConfig, PortCounterKey, Subnet6Key, SubnetKey, SubnetOwner,
    counter_index, endpoint_flags, names,
};

/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "{path}: not on a bpf filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or pass --bpffs with a directory on one"
    )]
    NotBpffs { path: PathBuf },
    #[error("mounting bpffs on {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program { name: String, source: ProgramError },
    #[error("attaching {what} to {interface}: {source}")]
    Attach {
        what: &'static str,
        interface: String,
        source: ProgramError,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("link {path}: {source}")]
    Link { path: PathBuf, source: LinkError },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("map VXDP_PORTS: {0}")]
    Ports(aya::maps::xdp::XdpMapError),
    #[error("the dataplane is not loaded: no pinned programs under {0} (start a network first)")]
    NotLoaded(PathBuf),
    #[error(
        "map {name} pinned under {pins} has another layout ({what}): it was pinned by an older vxdp; stop its networks and run `vxdp unload` then `vxdp load` to load the current dataplane"
    )]
    OlderLayout {
        name: &'static str,
        pins: PathBuf,
        what: String,
    },
    #[error(
        "the dataplane pinned under {0} predates IPv6 in NAT networks (no VXDP_NAT6 map): stop its networks and run `vxdp unload` then `vxdp load` (or restart them) to load the current one"
    )]
    PredatesNat6(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataplaneError + '_ {
    move |source| DataplaneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Where vxdp pins its objects.
#[derive(Clone, Debug)]
pub struct Pins {
    pub root: PathBuf,
}

impl Pins {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }
    pub fn tc_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("tc_in_{ifindex}"))
    }
    /// TC ingress/egress links on a direct network's NIC.
    pub fn nic_links(&self, ifindex: u32) -> [PathBuf; 2] {
        [
            self.root.join("links").join(format!("tc_nic_in_{ifindex}")),
            self.root
                .join("links")
                .join(format!("tc_nic_out_{ifindex}")),
        ]
    }
    pub fn xdp_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("xdp_{ifindex}"))
    }
    /// The uplink's TC ingress link (next to its XDP link).
    pub fn uplink_tc_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("tc_uplink_{ifindex}"))
    }
    /// A tracepoint program's link (`xdp:<event>`).
    pub fn tracepoint_link(&self, event: &str) -> PathBuf {
        self.root.join("links").join(format!("tp_{event}"))
    }
    pub fn is_loaded(&self) -> bool {
        self.prog(names::PROG_GUEST_INGRESS).exists()
    }
}

fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// True when `path`, or the nearest of its ancestors that exists, is on a
/// bpf filesystem.
fn on_bpffs(path: &Path) -> bool {
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => return false,
        }
    }
    fs_type(probe).is_ok_and(|t| t == BPF_FS_MAGIC)
}

/// The parent of process `pid`, from /proc/PID/stat.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold anything, so from the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Makes the pins under `root` (absolute) reachable when this process was
/// started by `ip netns exec`. That runs its command in a mount namespace
/// of its own with a fresh sysfs on /sys, which hides the host's bpffs at
/// /sys/fs/bpf; mounting bpffs there again would make a new, empty
/// instance (a second dataplane, whose uplink program cannot attach next
/// to the first). So when `root` is not on a bpffs here, this joins the
/// mount namespace of the nearest ancestor process in which it is, keeping
/// the working directory: vxdp then sees the mounts `vxdp --netns` sees
/// (the network namespace is not touched). Must run before the process
/// starts a thread. Returns the pid whose mount namespace it joined.
pub fn join_mount_ns_with_bpffs(root: &Path) -> io::Result<Option<i32>> {
    use std::os::fd::AsRawFd;
    if on_bpffs(root) {
        return Ok(None);
    }
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let Some(ours) = ns(std::process::id() as i32) else {
        return Ok(None);
    };
    let relative = root.strip_prefix("/").unwrap_or(root);
    let mut pid = std::process::id() as i32;
    while let Some(parent) = parent_of(pid).filter(|p| *p > 0) {
        pid = parent;
        // An ancestor we may not look into (another user's, a sandbox's
        // init) is skipped.
        let Some(theirs) = ns(pid) else { continue };
        if theirs == ours || !on_bpffs(&Path::new(&format!("/proc/{pid}/root")).join(relative)) {
            continue;
        }
        let target = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
        let cwd = std::fs::File::open(".")?;
        // SAFETY: plain syscalls on open descriptors; the process has no
        // other thread (setns of a mount namespace would refuse otherwise).
        unsafe {
            if libc::setns(target.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // setns moved the working directory to the namespace's root.
            if libc::fchdir(cwd.as_raw_fd()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        return Ok(Some(pid));
    }
    Ok(None)
}

/// Makes sure `root` lies on a bpffs, mounting the standard one at
/// /sys/fs/bpf when it is missing (as systemd would at boot).
pub fn ensure_bpffs(root: &Path) -> Result<(), DataplaneError> {
    let std_mount = Path::new("/sys/fs/bpf");
    if root.starts_with(std_mount) && fs_type(std_mount).map_err(io_err(std_mount))? != BPF_FS_MAGIC
    {
        let (src, dst, ty) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) } != 0
        {
            return Err(DataplaneError::Mount {
                path: std_mount.into(),
                source: io::Error::last_os_error(),
            });
        }
    }
    let mut probe = root;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    if fs_type(probe).map_err(io_err(probe))? != BPF_FS_MAGIC {
        return Err(DataplaneError::NotBpffs { path: root.into() });
    }
    for dir in ["maps", "progs", "links"] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    Ok(())
}

/// Load-time options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub conntrack_entries: u32,
    pub timeouts_s: [u64; DEFAULT_TIMEOUTS_S.len()],
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conntrack_entries: DEFAULT_CONNTRACK_ENTRIES,
            timeouts_s: DEFAULT_TIMEOUTS_S,
        }
    }
}

/// Loads the programs and maps unless they are pinned already (then the
/// pinned ones are adopted untouched, keeping conntrack). Returns whether it
/// loaded anything.
pub fn ensure_loaded(pins: &Pins, opts: &LoadOptions) -> Result<bool, DataplaneError> {
    ensure_bpffs(&pins.root)?;
    if pins.is_loaded() {
        return Ok(false);
    }
    let maps_dir = pins.maps_dir();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps_dir)
        .map_max_entries(names::MAP_CONNTRACK, opts.conntrack_entries)
        .map_max_entries(names::MAP_CONNTRACK6, opts.conntrack_entries)
        .load(crate::dataplane_object())?;
    let prog_err = |name: &str| {
        let name = name.to_string();
        move |source| DataplaneError::Program { name, source }
    };
    for name in [
        names::PROG_GUEST_INGRESS,
        names::PROG_UPLINK_INGRESS,
        names::PROG_GUEST_NAT,
        names::PROG_GUEST_ROUTE,
        names::PROG_GUEST_DIRECT,
        names::PROG_NIC_INGRESS,
        names::PROG_NIC_EGRESS,
        names::PROG_GUEST_NAT6,
        names::PROG_UPLINK_TC,
        names::PROG_TP_DEVMAP_XMIT,
        names::PROG_TP_REDIRECT_ERR,
    ] {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| DataplaneError::Program {
                name: name.into(),
                source: ProgramError::NotLoaded,
            })?;
        let path = pins.prog(name);
        let pin_err = |source| DataplaneError::Pin {
            path: path.clone(),
            source,
        };
        if name == names::PROG_UPLINK_INGRESS {
            let p: &mut Xdp = program.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
            p.pin(&path).map_err(pin_err)?;
        } else if name == names::PROG_TP_DEVMAP_XMIT || name == names::PROG_TP_REDIRECT_ERR {
            let p: &mut TracePoint = program.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
            p.pin(&path).map_err(pin_err)?;
        } else {
            let p: &mut SchedClassifier = program.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
            p.pin(&path).map_err(pin_err)?;
        }
    }
    fill_guest_jumps(&mut ebpf)?;
    attach_tracepoints(pins)?;
    let mut timeouts: Array<_, u64> = Array::try_from(ebpf.map_mut(names::MAP_TIMEOUTS).ok_or(
        DataplaneError::Map {
            name: names::MAP_TIMEOUTS,
            source: MapError::InvalidName {
                name: names::MAP_TIMEOUTS.into(),
            },
        },
    )?)
    .map_err(map_err(names::MAP_TIMEOUTS))?;
    for (class, secs) in opts.timeouts_s.iter().enumerate() {
        timeouts
            .set(class as u32, &(secs * 1_000_000_000), 0)
            .map_err(map_err(names::MAP_TIMEOUTS))?;
    }
    Ok(true)
}

/// Puts the guest port's path programs into `VXDP_GUEST_JUMP`. The pinned
/// map keeps them after this process exits.
pub fn fill_guest_jumps(ebpf: &mut aya::Ebpf) -> Result<(), DataplaneError> {
    for (name, slot) in names::GUEST_JUMPS {
        let fd = {
            let p: &SchedClassifier = ebpf
                .program(name)
                .ok_or_else(|| DataplaneError::Program {
                    name: name.into(),
                    source: ProgramError::NotLoaded,
                })?
                .try_into()
                .map_err(|source| DataplaneError::Program {
                    name: name.into(),
                    source,
                })?;
            p.fd()
                .map_err(|source| DataplaneError::Program {
                    name: name.into(),
                    source,
                })?
                .try_clone()
                .map_err(|source| DataplaneError::Io {
                    path: name.into(),
                    source,
                })?
        };
        let map = ebpf
            .map_mut(names::MAP_GUEST_JUMP)
            .ok_or(DataplaneError::Map {
                name: names::MAP_GUEST_JUMP,
                source: MapError::InvalidName {
                    name: names::MAP_GUEST_JUMP.into(),
                },
            })?;
        let mut jumps = ProgramArray::try_from(map).map_err(map_err(names::MAP_GUEST_JUMP))?;
        jumps
            .set(slot, &fd, 0)
            .map_err(map_err(names::MAP_GUEST_JUMP))?;
    }
    Ok(())
}

/// Removes every pinned vxdp object (programs, maps, links) under `root`.
/// Attached links are detached as their pins go.
pub fn unload(pins: &Pins) -> Result<(), DataplaneError> {
    if pins.root.exists() {
        std::fs::remove_dir_all(&pins.root).map_err(io_err(&pins.root))?;
    }
    Ok(())
}

fn open_map(pins: &Pins, name: &'static str) -> Result<Map, DataplaneError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(DataplaneError::NotLoaded(pins.root.clone()));
    }
    let data = MapData::from_pin(&path).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

macro_rules! typed_map {
    ($fn:ident, $name:expr, $ty:ty) => {
        pub fn $fn(&self) -> Result<$ty, DataplaneError> {
            <$ty>::try_from(open_map(&self.pins, $name)?).map_err(|e| match e {
                MapError::InvalidKeySize { size, expected }
                | MapError::InvalidValueSize { size, expected } => DataplaneError::OlderLayout {
                    name: $name,
                    pins: self.pins.root.clone(),
                    what: format!("{size}-byte keys or values where this vxdp uses {expected}"),
                },
                e => map_err($name)(e),
            })
        }
    };
}

/// A conntrack table's entries, optionally of one network (`network_of`
/// reads an entry's network id).
fn entries_of<K: aya::Pod, V: aya::Pod>(
    table: &HashMap<MapData, K, V>,
    network_id: Option<u32>,
    network_of: impl Fn(&V) -> u32,
) -> Vec<(K, V)> {
    // Entries can vanish (LRU) between key and value reads.
    table
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| network_id.is_none_or(|id| network_of(v) == id))
        .collect()
}

/// Handles on the pinned maps.
pub struct Maps {
    pins: Pins,
}

impl Maps {
    pub fn open(pins: &Pins) -> Result<Self, DataplaneError> {
        if !pins.is_loaded() {
            return Err(DataplaneError::NotLoaded(pins.root.clone()));
        }
        Ok(Self { pins: pins.clone() })
    }

    typed_map!(networks, names::MAP_NETWORKS, Array<MapData, NetworkConfig>);
    typed_map!(endpoints, names::MAP_ENDPOINTS, HashMap<MapData, u32, Endpoint>);
    typed_map!(subnets, names::MAP_SUBNETS, LpmTrie<MapData, SubnetKey, SubnetOwner>);
    typed_map!(subnets6, names::MAP_SUBNETS6, LpmTrie<MapData, Subnet6Key, SubnetOwner>);
    typed_map!(conntrack, names::MAP_CONNTRACK, HashMap<MapData, ConntrackKey, ConntrackEntry>);
    typed_map!(counter_array, names::MAP_COUNTERS, PerCpuArray<MapData, Counter>);
    typed_map!(ports, names::MAP_PORTS, DevMapHash<MapData>);
    typed_map!(macs, names::MAP_MACS, HashMap<MapData, MacKey, MacPort>);
    typed_map!(timeouts, names::MAP_TIMEOUTS, Array<MapData, u64>);
    typed_map!(direct_nics, names::MAP_DIRECT_NICS, HashMap<MapData, u32, DirectNic>);
    typed_map!(direct_ports, names::MAP_DIRECT_PORTS, HashMap<MapData, u32, DirectPort>);
    typed_map!(port_counters, names::MAP_PORT_COUNTERS, PerCpuHashMap<MapData, PortCounterKey, Counter>);
    typed_map!(conntrack6, names::MAP_CONNTRACK6, HashMap<MapData, Conntrack6Key, Conntrack6Entry>);
    typed_map!(nat6, names::MAP_NAT6, Array<MapData, Nat6Config>);

    /// Whether the pinned dataplane has the NAT66 maps. One pinned by a
    /// vxdp that predates NAT66 (adopted across an upgrade) has not: its
    /// programs route NAT networks' IPv6 nowhere, and there is no NAT66
    /// state to read or clear.
    pub fn has_nat6(&self) -> bool {
        self.pins.map(names::MAP_NAT6).exists() && self.pins.map(names::MAP_CONNTRACK6).exists()
    }

    /// Writes network `id`'s `VXDP_NAT6` entry (zeroed: none).
    pub fn set_nat6(&self, id: u32, cfg: &Nat6Config) -> Result<(), DataplaneError> {
        if !self.has_nat6() {
            if *cfg == Nat6Config::default() {
                return Ok(());
            }
            return Err(DataplaneError::PredatesNat6(self.pins.root.clone()));
        }
        self.nat6()?
            .set(id, cfg, 0)
            .map_err(map_err(names::MAP_NAT6))
    }

    /// All NAT66 conntrack entries (both directions), optionally of one network.
    pub fn conntrack6_entries(
        &self,
        network_id: Option<u32>,
    ) -> Result<Vec<(Conntrack6Key, Conntrack6Entry)>, DataplaneError> {
        if !self.has_nat6() {
            return Ok(Vec::new());
        }
        Ok(entries_of(&self.conntrack6()?, network_id, |v| {
            v.network_id as u32
        }))
    }

    pub fn set_network(&self, id: u32, cfg: &NetworkConfig) -> Result<(), DataplaneError> {
        self.networks()?
            .set(id, cfg, 0)
            .map_err(map_err(names::MAP_NETWORKS))
    }

    pub fn set_subnet(
        &self,
        addr: u32,
        prefix: u32,
        owner: &SubnetOwner,
    ) -> Result<(), DataplaneError> {
        self.subnets()?
            .insert(&LpmKey::new(prefix, SubnetKey { addr }), owner, 0)
            .map_err(map_err(names::MAP_SUBNETS))
    }

    pub fn remove_subnet(&self, addr: u32, prefix: u32) -> Result<(), DataplaneError> {
        match self
            .subnets()?
            .remove(&LpmKey::new(prefix, SubnetKey { addr }))
        {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_SUBNETS)(e)),
        }
    }

    /// The owner `VXDP_SUBNETS` gives `addr/prefix` (longest match, as the
    /// programs look it up), if any.
    pub fn subnet_owner(
        &self,
        addr: u32,
        prefix: u32,
    ) -> Result<Option<SubnetOwner>, DataplaneError> {
        match self
            .subnets()?
            .get(&LpmKey::new(prefix, SubnetKey { addr }), 0)
        {
            Ok(o) => Ok(Some(o)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_SUBNETS)(e)),
        }
    }

    /// [`Self::subnet_owner`] in `VXDP_SUBNETS6`.
    pub fn subnet6_owner(
        &self,
        addr: [u8; 16],
        prefix: u32,
    ) -> Result<Option<SubnetOwner>, DataplaneError> {
        match self
            .subnets6()?
            .get(&LpmKey::new(prefix, Subnet6Key { addr }), 0)
        {
            Ok(o) => Ok(Some(o)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_SUBNETS6)(e)),
        }
    }

    pub fn set_subnet6(
        &self,
        addr: [u8; 16],
        prefix: u32,
        owner: &SubnetOwner,
    ) -> Result<(), DataplaneError> {
        self.subnets6()?
            .insert(&LpmKey::new(prefix, Subnet6Key { addr }), owner, 0)
            .map_err(map_err(names::MAP_SUBNETS6))
    }

    pub fn remove_subnet6(&self, addr: [u8; 16], prefix: u32) -> Result<(), DataplaneError> {
        match self
            .subnets6()?
            .remove(&LpmKey::new(prefix, Subnet6Key { addr }))
        {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_SUBNETS6)(e)),
        }
    }

    /// Plugs a guest port in: its endpoint, its redirect slot and (MAC
    /// known) its `VXDP_MACS` entry. A MAC or network the port had before
    /// loses its entry.
    pub fn set_endpoint(&self, ifindex: u32, ep: &Endpoint) -> Result<(), DataplaneError> {
        if let Some(old) = self.endpoint(ifindex)?
            && (old.mac != ep.mac
                || old.network_id != ep.network_id
                || ep.flags & endpoint_flags::MAC_KNOWN == 0)
        {
            self.remove_mac(ifindex, &old)?;
        }
        self.endpoints()?
            .insert(&ifindex, ep, 0)
            .map_err(map_err(names::MAP_ENDPOINTS))?;
        if ep.flags & endpoint_flags::MAC_KNOWN != 0 && self.has_macs() {
            let key = MacKey {
                network_id: ep.network_id,
                mac: ep.mac,
                _pad0: [0; 2],
            };
            self.macs()?
                .insert(&key, &MacPort { ifindex, _pad0: 0 }, 0)
                .map_err(map_err(names::MAP_MACS))?;
        }
        self.ports()?
            .insert(ifindex, ifindex, None, 0)
            .map_err(DataplaneError::Ports)
    }

    /// Whether the pinned dataplane has `VXDP_MACS`. One pinned by a vxdp
    /// before it (adopted across an upgrade) has none, and its programs no
    /// port-to-port path: ports then simply get no MAC entries until
    /// `vxdp unload` + `load`.
    pub fn has_macs(&self) -> bool {
        self.pins.map(names::MAP_MACS).exists()
    }

    /// Removes `ep`'s MAC entry if it still points at `ifindex`.
    fn remove_mac(&self, ifindex: u32, ep: &Endpoint) -> Result<(), DataplaneError> {
        if !self.has_macs() {
            return Ok(());
        }
        let key = MacKey {
            network_id: ep.network_id,
            mac: ep.mac,
            _pad0: [0; 2],
        };
        let mut macs = self.macs()?;
        match macs.get(&key, 0) {
            Ok(p) if p.ifindex == ifindex => match macs.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_err(names::MAP_MACS)(e)),
            },
            Ok(_) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_MACS)(e)),
        }
    }

    /// Whether `VXDP_MACS` holds what `ep` (the endpoint of `ifindex`) needs.
    pub fn mac_entry_current(&self, ifindex: u32, ep: &Endpoint) -> Result<bool, DataplaneError> {
        if ep.flags & endpoint_flags::MAC_KNOWN == 0 || !self.has_macs() {
            return Ok(true);
        }
        Ok(self.mac_port(ep.network_id, ep.mac)? == Some(ifindex))
    }

    /// The port `VXDP_MACS` names for `mac` in network `network_id`.
    pub fn mac_port(&self, network_id: u32, mac: [u8; 6]) -> Result<Option<u32>, DataplaneError> {
        match self.macs()?.get(
            &MacKey {
                network_id,
                mac,
                _pad0: [0; 2],
            },
            0,
        ) {
            Ok(p) => Ok(Some(p.ifindex)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_MACS)(e)),
        }
    }

    /// The endpoint of a guest port, if it is plugged in.
    pub fn endpoint(&self, ifindex: u32) -> Result<Option<Endpoint>, DataplaneError> {
        match self.endpoints()?.get(&ifindex, 0) {
            Ok(ep) => Ok(Some(ep)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_ENDPOINTS)(e)),
        }
    }

    /// Unplugs a guest port: its endpoint, MAC and port entries, and every
    /// flow it created (replies must not reach whatever is plugged next
    /// with this ifindex).
    pub fn remove_endpoint(&self, ifindex: u32) -> Result<(), DataplaneError> {
        if let Some(old) = self.endpoint(ifindex)? {
            self.remove_mac(ifindex, &old)?;
        }
        self.flush_port_flows(ifindex)?;
        for r in [
            self.endpoints()?.remove(&ifindex),
            self.ports()?.remove(ifindex),
        ] {
            match r {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::MAP_ENDPOINTS)(e)),
            }
        }
        Ok(())
    }

    /// A direct network's NIC entry, if any.
    pub fn direct_nic(&self, nic: u32) -> Result<Option<DirectNic>, DataplaneError> {
        match self.direct_nics()?.get(&nic, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_DIRECT_NICS)(e)),
        }
    }

    pub fn set_direct_nic(&self, nic: u32, v: &DirectNic) -> Result<(), DataplaneError> {
        self.direct_nics()?
            .insert(&nic, v, 0)
            .map_err(map_err(names::MAP_DIRECT_NICS))
    }

    pub fn remove_direct_nic(&self, nic: u32) -> Result<(), DataplaneError> {
        match self.direct_nics()?.remove(&nic) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_DIRECT_NICS)(e)),
        }
    }

    /// The NIC a direct guest port is on, if any.
    pub fn direct_port(&self, port: u32) -> Result<Option<u32>, DataplaneError> {
        match self.direct_ports()?.get(&port, 0) {
            Ok(v) => Ok(Some(v.nic_ifindex)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_DIRECT_PORTS)(e)),
        }
    }

    pub fn set_direct_port(&self, port: u32, nic: u32) -> Result<(), DataplaneError> {
        self.direct_ports()?
            .insert(
                &port,
                &DirectPort {
                    nic_ifindex: nic,
                    _pad0: 0,
                },
                0,
            )
            .map_err(map_err(names::MAP_DIRECT_PORTS))
    }

    pub fn remove_direct_port(&self, port: u32) -> Result<(), DataplaneError> {
        match self.direct_ports()?.remove(&port) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_DIRECT_PORTS)(e)),
        }
    }

    /// All conntrack entries (both directions), optionally of one network.
    pub fn conntrack_entries(
        &self,
        network_id: Option<u32>,
    ) -> Result<Vec<(ConntrackKey, ConntrackEntry)>, DataplaneError> {
        Ok(entries_of(&self.conntrack()?, network_id, |v| {
            v.network_id as u32
        }))
    }

    /// Removes the conntrack entries (both directions, IPv4 and NAT66) of
    /// the flows guest port `ifindex` created; returns how many.
    pub fn flush_port_flows(&self, ifindex: u32) -> Result<usize, DataplaneError> {
        let mut ct = self.conntrack()?;
        let keys: Vec<_> = entries_of(&ct, None, |_| 0)
            .into_iter()
            .filter(|(_, v)| v.ifindex == ifindex)
            .map(|(k, _)| k)
            .collect();
        let mut n = keys.iter().filter(|k| ct.remove(k).is_ok()).count();
        if self.has_nat6() {
            let mut ct6 = self.conntrack6()?;
            let keys: Vec<_> = entries_of(&ct6, None, |_| 0)
                .into_iter()
                .filter(|(_, v)| v.ifindex == ifindex)
                .map(|(k, _)| k)
                .collect();
            n += keys.iter().filter(|k| ct6.remove(k).is_ok()).count();
        }
        Ok(n)
    }

    /// Removes a network's conntrack entries, IPv4 and NAT66; returns how many.
    pub fn flush_conntrack(&self, network_id: u32) -> Result<usize, DataplaneError> {
        let entries = self.conntrack_entries(Some(network_id))?;
        let mut ct = self.conntrack()?;
        let mut n = 0;
        for (k, _) in entries {
            if ct.remove(&k).is_ok() {
                n += 1;
            }
        }
        let entries = self.conntrack6_entries(Some(network_id))?;
        if entries.is_empty() {
            return Ok(n);
        }
        let mut ct6 = self.conntrack6()?;
        for (k, _) in entries {
            if ct6.remove(&k).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Counters of one network summed over CPUs: (slot, counter).
    pub fn counters(&self, network_id: u32) -> Result<Vec<(u32, Counter)>, DataplaneError> {
        let arr = self.counter_array()?;
        let mut out = Vec::with_capacity(COUNTER_SLOTS as usize);
        for slot in 0..COUNTER_SLOTS {
            let per_cpu = arr
                .get(&counter_index(network_id, slot), 0)
                .map_err(map_err(names::MAP_COUNTERS))?;
            let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            out.push((slot, sum));
        }
        Ok(out)
    }

    /// Zeroes a network's counters (when its id is reused).
    pub fn reset_counters(&self, network_id: u32) -> Result<(), DataplaneError> {
        let mut arr = self.counter_array()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        for slot in 0..COUNTER_SLOTS {
            let zero =
                aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus.get() as usize])
                    .map_err(|source| DataplaneError::Io {
                        path: "VXDP_COUNTERS".into(),
                        source,
                    })?;
            arr.set(counter_index(network_id, slot), zero, 0)
                .map_err(map_err(names::MAP_COUNTERS))?;
        }
        Ok(())
    }
}

/// Attaches the guest-port program (TC ingress, TCX link) to `ifindex` and
/// pins the link. Idempotent: an existing pin is kept.
pub fn attach_guest_port(pins: &Pins, ifindex: u32, ifname: &str) -> Result<(), DataplaneError> {
    let link_path = pins.tc_link(ifindex);
    if link_path.exists() {
        return Ok(());
    }
    attach_tc_link(
        pins,
        names::PROG_GUEST_INGRESS,
        ifindex,
        ifname,
        TcAttachType::Ingress,
        link_path,
        "the guest-port TC program",
    )
}

/// Attaches the pinned TC program `prog_name` at `attach` of `ifindex` (a
/// TCX link) and pins the link at `link_path`; `what` names the program in
/// errors.
fn attach_tc_link(
    pins: &Pins,
    prog_name: &str,
    ifindex: u32,
    ifname: &str,
    attach: TcAttachType,
    link_path: PathBuf,
    what: &'static str,
) -> Result<(), DataplaneError> {
    let mut prog = SchedClassifier::from_pin(pins.prog(prog_name)).map_err(|source| {
        DataplaneError::Program {
            name: prog_name.into(),
            source,
        }
    })?;
    let attach_err = |source| DataplaneError::Attach {
        what,
        interface: ifname.to_string(),
        source,
    };
    let id = prog.attach(ifindex, attach).map_err(attach_err)?;
    let link = prog.take_link(id).map_err(attach_err)?;
    pin_link(link, link_path)
}

/// Pins an attached program's link at `link_path` (so it outlives this
/// process and the daemon can adopt it).
fn pin_link(
    link: impl TryInto<FdLink, Error = LinkError>,
    link_path: PathBuf,
) -> Result<(), DataplaneError> {
    let fd: FdLink = link.try_into().map_err(|source| DataplaneError::Link {
        path: link_path.clone(),
        source,
    })?;
    fd.pin(&link_path).map_err(|source| DataplaneError::Pin {
        path: link_path,
        source,
    })?;
    Ok(())
}

/// Attaches the direct-network NIC programs (TC ingress and egress, TCX
/// links) to `ifindex` and pins their links. Idempotent.
pub fn attach_nic(pins: &Pins, ifindex: u32, ifname: &str) -> Result<(), DataplaneError> {
    let [in_path, out_path] = pins.nic_links(ifindex);
    for (prog_name, attach, link_path) in [
        (names::PROG_NIC_INGRESS, TcAttachType::Ingress, in_path),
        (names::PROG_NIC_EGRESS, TcAttachType::Egress, out_path),
    ] {
        if link_path.exists() {
            continue;
        }
        attach_tc_link(
            pins,
            prog_name,
            ifindex,
            ifname,
            attach,
            link_path,
            "a direct network's NIC TC program",
        )?;
    }
    Ok(())
}

/// Attaches the uplink programs to `ifindex` and pins their links: XDP
/// (native when the driver has it) and, for the frames XDP leaves to the
/// socket-buffer path, TC ingress (TCX). Idempotent: an existing pin is
/// kept.
pub fn attach_uplink(pins: &Pins, ifindex: u32, ifname: &str) -> Result<(), DataplaneError> {
    let link_path = pins.xdp_link(ifindex);
    if !link_path.exists() {
        let prog_path = pins.prog(names::PROG_UPLINK_INGRESS);
        let mut prog = Xdp::from_pin(&prog_path, XdpAttachType::Interface).map_err(|source| {
            DataplaneError::Program {
                name: names::PROG_UPLINK_INGRESS.into(),
                source,
            }
        })?;
        let attach_err = |source| DataplaneError::Attach {
            what: "the uplink XDP program",
            interface: ifname.to_string(),
            source,
        };
        let id = prog.attach(ifindex, XdpMode::Default).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        pin_link(link, link_path)?;
    }
    let tc_path = pins.uplink_tc_link(ifindex);
    if tc_path.exists() {
        return Ok(());
    }
    let prog_path = pins.prog(names::PROG_UPLINK_TC);
    if !prog_path.exists() {
        // A dataplane pinned before the TC half existed (adopted across an
        // upgrade): XDP alone, as it was.
        return Ok(());
    }
    attach_tc_link(
        pins,
        names::PROG_UPLINK_TC,
        ifindex,
        ifname,
        TcAttachType::Ingress,
        tc_path,
        "the uplink TC program",
    )
}

/// Detaches both uplink programs from `ifindex`.
pub fn detach_uplink(pins: &Pins, ifindex: u32) -> Result<(), DataplaneError> {
    detach(&pins.xdp_link(ifindex))?;
    detach(&pins.uplink_tc_link(ifindex))
}

/// The tracepoints whose programs turn XDP redirects the kernel refused
/// into drops (see `DropReason::XdpRedirectRefused`).
const TRACEPOINTS: [(&str, &str); 2] = [
    (names::PROG_TP_DEVMAP_XMIT, "xdp_devmap_xmit"),
    (names::PROG_TP_REDIRECT_ERR, "xdp_redirect_err"),
];

/// Attaches the tracepoint programs (once per dataplane: tracepoints are
/// global) and pins their links. Tracepoints are found by id in tracefs;
/// when it is not mounted, it is mounted in a private mount namespace of a
/// short-lived thread, so the host's mounts stay as they are.
fn attach_tracepoints(pins: &Pins) -> Result<(), DataplaneError> {
    let progs: Vec<_> = TRACEPOINTS
        .into_iter()
        .map(|(name, event)| (name, event, pins.tracepoint_link(event)))
        .filter(|(_, _, link)| !link.exists())
        .collect();
    if progs.is_empty() {
        return Ok(());
    }
    let root = pins.root.clone();
    let worker = std::thread::spawn(move || -> Result<(), DataplaneError> {
        private_tracefs()?;
        let pins = Pins::new(root);
        for (name, event, link_path) in progs {
            let mut prog = TracePoint::from_pin(pins.prog(name)).map_err(|source| {
                DataplaneError::Program {
                    name: name.into(),
                    source,
                }
            })?;
            let attach_err = |source| DataplaneError::Attach {
                what: "a tracepoint program",
                interface: format!("xdp:{event}"),
                source,
            };
            let id = prog.attach("xdp", event).map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            pin_link(link, link_path)?;
        }
        Ok(())
    });
    worker.join().map_err(|_| DataplaneError::Io {
        path: "tracefs".into(),
        source: io::Error::other("the thread attaching the tracepoint programs panicked"),
    })?
}

/// Makes tracefs available at /sys/kernel/tracing to this thread: as it
/// is, or mounted in a mount namespace of the thread's own.
fn private_tracefs() -> Result<(), DataplaneError> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    let err = |what: &str| DataplaneError::Mount {
        path: tracing.into(),
        source: io::Error::new(
            io::Error::last_os_error().kind(),
            format!("{what}: {}", io::Error::last_os_error()),
        ),
    };
    // SAFETY: plain syscalls; CLONE_NEWNS only affects this thread (it
    // gets its own filesystem context), which ends after the attach.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(err("unshare(CLONE_NEWNS)"));
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(err("making / private"));
        }
        if libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(err("mounting tracefs"));
        }
    }
    Ok(())
}

/// Detaches a pinned link (the program leaves the interface with it).
pub fn detach(link_path: &Path) -> Result<(), DataplaneError> {
    if !link_path.exists() {
        return Ok(());
    }
    let pinned = PinnedLink::from_pin(link_path).map_err(|source| DataplaneError::Link {
        path: link_path.into(),
        source,
    })?;
    let fd = pinned.unpin().map_err(io_err(link_path))?;
    let _ = fd.detach();
    Ok(())
}

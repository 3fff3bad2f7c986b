//! The eBPF side of the control plane: loading the programs and pinning
//! them with their maps and links under the bpffs directory (so the
//! dataplane runs with no process attached and a restart adopts it), and
//! attaching them to interfaces. Submodules: [`pins`] (where), [`layout`]
//! (which map layout is pinned, and what to do about an older one),
//! [`maps`] (the map families), [`pinned`] (what the kernel reports),
//! [`conntrack_gc`] (expiry).
//!
//! Pin layout under `<bpffs>` (default `/sys/fs/bpf/vxdp/v1`):
//! `layout` (a symlink naming the map layout), `maps/VXDP_*`,
//! `progs/vxdp_guest_in`, `progs/vxdp_uplink_in`,
//! `links/tc_in_<ifindex>` (with `links/xdp_guest_<ifindex>` on a tap
//! with `--guest-xdp`), `links/xdp_<ifindex>` with
//! `links/tc_uplink_<ifindex>` (the uplink's XDP and TC programs), on a
//! direct network's NIC `links/tc_nic_in_<ifindex>`,
//! `links/tc_nic_out_<ifindex>`, on a bridge vxdp created
//! `links/tc_bridge_out_<ifindex>`, and the tracepoint programs' links
//! `links/tp_xdp_devmap_xmit`, `links/tp_xdp_redirect_err`, and the cgroup
//! socket programs' links on the root cgroup v2,
//! `links/cgroup_vxdp_host_<hook>` ([`host_sockets`]).

pub mod conntrack_gc;
pub mod host_sockets;
pub mod layout;
pub mod maps;
pub mod pinned;
pub mod pins;

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{Array, MapError, ProgramArray},
    programs::{
        CgroupSockAddr, Link, ProgramError, SchedClassifier, TcAttachType, TracePoint, Xdp,
        XdpMode,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use aya_obj::programs::XdpAttachType;
use vxdp_common::{DEFAULT_CONNTRACK_ENTRIES, DEFAULT_TIMEOUTS_S, flow_quota, names};

pub use maps::Maps;
pub use pins::{Pins, ensure_bpffs, join_mount_ns_with_bpffs};

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
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(
        "no cgroup v2 hierarchy is mounted (not at /sys/fs/cgroup, /sys/fs/cgroup/unified or anywhere in /proc/self/mountinfo): port forwards used from the host itself attach to its root; mount it (`mount -t cgroup2 none /sys/fs/cgroup/unified`, or boot with the unified hierarchy) and try again"
    )]
    NoCgroup2,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataplaneError + '_ {
    move |source| DataplaneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// CLOCK_MONOTONIC in ns: the programs stamp flows with `CLOCK_MONOTONIC_COARSE`, the same clock as of the last tick (at most a few ms behind this one).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Load-time options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub conntrack_entries: u32,
    pub timeouts_s: [u64; DEFAULT_TIMEOUTS_S.len()],
    /// Flow limits per guest port and per network (0: none); `None`: the
    /// defaults for the table size (`flow_quota::defaults`).
    pub flows_per_guest: Option<u32>,
    pub flows_per_network: Option<u32>,
    /// `--guest-xdp`: tap guest ports get the XDP program next to the TC
    /// one, unless the port says otherwise (`PortRecord::guest_xdp`).
    /// Applies when ports are plugged or reconciled.
    pub guest_xdp: bool,
}

impl LoadOptions {
    /// The flow limits per guest port and per network this load writes.
    pub fn flow_limits(&self) -> (u32, u32) {
        let (guest, network) = flow_quota::defaults(self.conntrack_entries);
        (
            self.flows_per_guest.unwrap_or(guest),
            self.flows_per_network.unwrap_or(network),
        )
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conntrack_entries: DEFAULT_CONNTRACK_ENTRIES,
            timeouts_s: DEFAULT_TIMEOUTS_S,
            flows_per_guest: None,
            flows_per_network: None,
            guest_xdp: false,
        }
    }
}

/// Loads the programs and maps unless they are pinned already (then the
/// pinned ones are adopted untouched, keeping conntrack). Returns whether it
/// loaded anything.
pub fn ensure_loaded(pins: &Pins, opts: &LoadOptions) -> Result<bool, DataplaneError> {
    ensure_bpffs(&pins.root)?;
    if pins.is_loaded() {
        let layout = layout::adopt(pins)?;
        // Put back what lost its pin (idempotent); an older layout has no
        // cgroup socket programs.
        if layout.has(layout::Feature::HostForwards) {
            host_sockets::attach(pins)?;
        }
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
        names::PROG_BRIDGE_EGRESS,
        names::PROG_TP_DEVMAP_XMIT,
        names::PROG_TP_REDIRECT_ERR,
        names::PROG_HOST_CONNECT4,
        names::PROG_HOST_SENDMSG4,
        names::PROG_HOST_RECVMSG4,
        names::PROG_HOST_GETPEERNAME4,
        names::PROG_GUEST_XDP,
        names::GUEST_XDP_JUMPS[0].0,
        names::GUEST_XDP_JUMPS[1].0,
        names::GUEST_XDP_JUMPS[2].0,
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
        if name == names::PROG_UPLINK_INGRESS
            || name == names::PROG_GUEST_XDP
            || names::GUEST_XDP_JUMPS.iter().any(|(n, _)| *n == name)
        {
            let p: &mut Xdp = program.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
            p.pin(&path).map_err(pin_err)?;
        } else if host_sockets::PROGRAMS.iter().any(|(n, _)| *n == name) {
            let p: &mut CgroupSockAddr = program.try_into().map_err(prog_err(name))?;
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
    fill_guest_xdp_jumps(&mut ebpf)?;
    layout::write(pins)?;
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
    let (per_guest, per_network) = opts.flow_limits();
    Maps::open(pins)?.set_flow_limits(per_guest, per_network)?;
    host_sockets::attach(pins)?;
    Ok(true)
}

/// Puts the guest port's path programs into `VXDP_GUEST_JUMP`. The pinned
/// map keeps them after this process exits.
pub fn fill_guest_jumps(ebpf: &mut aya::Ebpf) -> Result<(), DataplaneError> {
    fill_jumps::<SchedClassifier>(ebpf, names::MAP_GUEST_JUMP, &names::GUEST_JUMPS)
}

/// Puts the guest port XDP program's path programs into
/// `VXDP_GUEST_XDP_JUMP` (direct and hairpin stay empty: the XDP program
/// leaves those frames to the TC program).
pub fn fill_guest_xdp_jumps(ebpf: &mut aya::Ebpf) -> Result<(), DataplaneError> {
    fill_jumps::<Xdp>(ebpf, names::MAP_GUEST_XDP_JUMP, &names::GUEST_XDP_JUMPS)
}

/// Puts each loaded program `P` named in `slots` into program array `map`
/// at its slot.
fn fill_jumps<P>(
    ebpf: &mut aya::Ebpf,
    map: &'static str,
    slots: &[(&'static str, u32)],
) -> Result<(), DataplaneError>
where
    for<'a> &'a P: TryFrom<&'a aya::programs::Program, Error = ProgramError>,
    P: ProgramFd,
{
    for &(name, slot) in slots {
        let prog_err = |source| DataplaneError::Program {
            name: name.into(),
            source,
        };
        let fd = {
            let p: &P = ebpf
                .program(name)
                .ok_or_else(|| prog_err(ProgramError::NotLoaded))?
                .try_into()
                .map_err(prog_err)?;
            p.prog_fd()
                .map_err(prog_err)?
                .try_clone()
                .map_err(|source| DataplaneError::Io {
                    path: name.into(),
                    source,
                })?
        };
        let array = ebpf.map_mut(map).ok_or(DataplaneError::Map {
            name: map,
            source: MapError::InvalidName { name: map.into() },
        })?;
        let mut jumps = ProgramArray::try_from(array).map_err(map_err(map))?;
        jumps.set(slot, &fd, 0).map_err(map_err(map))?;
    }
    Ok(())
}

/// A program kind whose file descriptor goes into a program array.
trait ProgramFd {
    fn prog_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError>;
}

impl ProgramFd for SchedClassifier {
    fn prog_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError> {
        self.fd()
    }
}

impl ProgramFd for Xdp {
    fn prog_fd(&self) -> Result<&aya::programs::ProgramFd, ProgramError> {
        self.fd()
    }
}

/// Removes every pinned vxdp object (programs, maps, links) under `root`.
/// Attached links are detached as their pins go.
pub fn unload(pins: &Pins) -> Result<(), DataplaneError> {
    if pins.root.exists() {
        std::fs::remove_dir_all(&pins.root).map_err(io_err(&pins.root))?;
    }
    Ok(())
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

/// Attaches (`on`) or detaches the guest port XDP program on the tap
/// `ifindex` (`--guest-xdp`), pinning its link; idempotent, and a link that
/// was detached behind vxdp's back is attached again. The TC program stays
/// attached either way: it takes what XDP leaves to it. A dataplane pinned
/// before the program existed goes without it.
pub fn set_guest_xdp(
    pins: &Pins,
    ifindex: u32,
    ifname: &str,
    on: bool,
) -> Result<(), DataplaneError> {
    let link_path = pins.guest_xdp_link(ifindex);
    let prog_path = pins.prog(names::PROG_GUEST_XDP);
    if !on || !prog_path.exists() {
        return detach(&link_path);
    }
    if pinned::link_attached(&link_path, ifindex) {
        return Ok(());
    }
    detach(&link_path)?;
    let mut prog = Xdp::from_pin(&prog_path, XdpAttachType::Interface).map_err(|source| {
        DataplaneError::Program {
            name: names::PROG_GUEST_XDP.into(),
            source,
        }
    })?;
    let attach_err = |source| DataplaneError::Attach {
        what: "the guest-port XDP program",
        interface: ifname.to_string(),
        source,
    };
    // A tap runs it natively, in the writer's context.
    let id = prog.attach(ifindex, XdpMode::Default).map_err(attach_err)?;
    let link = prog.take_link(id).map_err(attach_err)?;
    pin_link(link, link_path)
}

/// Detaches the guest port's programs (TC and, if attached, XDP).
pub fn detach_guest_port(pins: &Pins, ifindex: u32) -> Result<(), DataplaneError> {
    detach(&pins.guest_xdp_link(ifindex))?;
    detach(&pins.tc_link(ifindex))
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

/// Attaches the bridge egress program (TC egress, TCX link) to the bridge
/// `ifindex` vxdp created and pins the link: what the host forwards into
/// the network from any interface meets the uplink's refusals. Idempotent.
/// A dataplane pinned before the program existed (adopted across an
/// upgrade) goes without it, as it was; `vxdp unload` + `vxdp load` adds it.
pub fn attach_bridge(pins: &Pins, ifindex: u32, ifname: &str) -> Result<(), DataplaneError> {
    let link_path = pins.bridge_link(ifindex);
    if link_path.exists() || !pins.prog(names::PROG_BRIDGE_EGRESS).exists() {
        return Ok(());
    }
    attach_tc_link(
        pins,
        names::PROG_BRIDGE_EGRESS,
        ifindex,
        ifname,
        TcAttachType::Egress,
        link_path,
        "the bridge egress TC program",
    )
}

/// Detaches the bridge egress program from the bridge `ifindex`.
pub fn detach_bridge(pins: &Pins, ifindex: u32) -> Result<(), DataplaneError> {
    detach(&pins.bridge_link(ifindex))
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

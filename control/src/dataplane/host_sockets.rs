//! Port forwards used from the host itself: the cgroup socket-address
//! programs (`vxdp_host_connect4`, `_sendmsg4`, `_recvmsg4`,
//! `_getpeername4`) on the root of the cgroup v2 hierarchy, and the
//! network namespace they serve.
//!
//! The programs are attached with BPF links, which the kernel always
//! attaches alongside the programs already there (multi-attach): several
//! vxdp dataplanes (one per network namespace, e.g. parallel tests) and
//! other tools' programs coexist, and none is replaced. The links are
//! pinned as `links/cgroup_<program>`, so they outlive the CLI; `vxdp
//! unload` removes the pins and with them the attachment. Each program acts
//! only for sockets of the namespace whose cookie is in `VXDP_HOST_CONFIG`.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::programs::{CgroupAttachMode, CgroupSockAddr, CgroupSockAddrAttachType, ProgramError};
use vxdp_common::names;

use super::{DataplaneError, Maps, Pins, pin_link};

/// The programs and where each one hooks.
pub const PROGRAMS: [(&str, CgroupSockAddrAttachType); 4] = [
    (
        names::PROG_HOST_CONNECT4,
        CgroupSockAddrAttachType::Connect4,
    ),
    (
        names::PROG_HOST_SENDMSG4,
        CgroupSockAddrAttachType::UDPSendMsg4,
    ),
    (
        names::PROG_HOST_RECVMSG4,
        CgroupSockAddrAttachType::UDPRecvMsg4,
    ),
    (
        names::PROG_HOST_GETPEERNAME4,
        CgroupSockAddrAttachType::GetPeerName4,
    ),
];

/// cgroup2's magic number (statfs f_type).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The mount point of the cgroup v2 hierarchy's root in this mount
/// namespace: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified`
/// on a hybrid one (systemd's layout), or wherever `/proc/self/mountinfo`
/// shows a cgroup2 mount of the root.
pub fn cgroup2_root() -> Result<PathBuf, DataplaneError> {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if is_cgroup2(Path::new(candidate)) {
            return Ok(candidate.into());
        }
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        // "id parent dev root mountpoint options ... - fstype source ..."
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(sep + 1) == Some(&"cgroup2") && fields.get(3) == Some(&"/") {
            let mount = PathBuf::from(fields[4].replace("\\040", " "));
            if is_cgroup2(&mount) {
                return Ok(mount);
            }
        }
    }
    Err(DataplaneError::NoCgroup2)
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) }) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// The cookie of this process's network namespace (`SO_NETNS_COOKIE`, the
/// value `bpf_get_netns_cookie` gives the programs for its sockets).
pub fn netns_cookie() -> io::Result<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Tells the programs which namespace they serve (this process's) and
/// attaches them to the root cgroup v2, pinning their links. Idempotent:
/// an attached program (pinned link) is kept.
pub fn attach(pins: &Pins) -> Result<(), DataplaneError> {
    let missing: Vec<_> = PROGRAMS
        .into_iter()
        .filter(|(name, _)| !pins.cgroup_link(name).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let cookie = netns_cookie().map_err(|source| DataplaneError::Io {
        path: "SO_NETNS_COOKIE".into(),
        source,
    })?;
    Maps::open(pins)?.set_host_netns_cookie(cookie)?;
    let root = cgroup2_root()?;
    for (name, attach_type) in missing {
        let mut prog =
            CgroupSockAddr::from_pin(pins.prog(name), attach_type).map_err(|source| {
                DataplaneError::Program {
                    name: name.into(),
                    source,
                }
            })?;
        let cgroup = File::open(&root).map_err(super::io_err(&root))?;
        let attach_err = |source: ProgramError| DataplaneError::Attach {
            what: "a cgroup socket program (port forwards from the host)",
            interface: format!("the cgroup {}", root.display()),
            source,
        };
        // A BPF link: the kernel attaches it next to the programs there
        // (BPF_F_ALLOW_MULTI implied; the flags must be empty).
        let id = prog
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        pin_link(link, pins.cgroup_link(name))?;
    }
    Ok(())
}

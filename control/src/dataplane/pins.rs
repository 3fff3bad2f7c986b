//! Where vxdp pins its objects (`maps/`, `progs/`, `links/` and the
//! `layout` marker under one root on a bpf filesystem), and making that root
//! reachable: mounting bpffs, or joining the mount namespace that has it.

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use vxdp_common::names;

use super::{DataplaneError, io_err};

/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

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
    /// The XDP link on a tap guest port (`--guest-xdp`).
    pub fn guest_xdp_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("xdp_guest_{ifindex}"))
    }
    pub fn xdp_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("xdp_{ifindex}"))
    }
    /// The uplink's TC ingress link (next to its XDP link).
    pub fn uplink_tc_link(&self, ifindex: u32) -> PathBuf {
        self.root.join("links").join(format!("tc_uplink_{ifindex}"))
    }
    /// The TC egress link on a bridge vxdp created.
    pub fn bridge_link(&self, ifindex: u32) -> PathBuf {
        self.root
            .join("links")
            .join(format!("tc_bridge_out_{ifindex}"))
    }
    /// A tracepoint program's link (`xdp:<event>`).
    pub fn tracepoint_link(&self, event: &str) -> PathBuf {
        self.root.join("links").join(format!("tp_{event}"))
    }
    /// A cgroup socket program's link on the root cgroup v2.
    pub fn cgroup_link(&self, prog: &str) -> PathBuf {
        self.root.join("links").join(format!("cgroup_{prog}"))
    }
    /// The symlink naming the pinned map layout (see [`super::layout`]).
    pub fn layout_marker(&self) -> PathBuf {
        self.root.join("layout")
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

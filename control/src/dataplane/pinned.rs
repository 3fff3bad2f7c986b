//! What is pinned under the bpffs directory, as the kernel sees it: the ids
//! of vxdp's programs, maps and links (what `bpftool prog|map|link show`
//! lists) and whether each pinned link is still attached to its interface.
//!
//! A link can outlive its attachment: `bpftool link detach` (or the
//! interface going away) leaves the pinned link "defunct", attached to
//! nothing. aya does not report a link's target, so the link's info is read
//! with `BPF_OBJ_GET_INFO_BY_FD` here.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{maps::MapData, programs::ProgramInfo};

use crate::dataplane::Pins;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf(cmd: libc::c_long, attr: *mut libc::c_void, size: usize) -> io::Result<libc::c_long> {
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a pinned object (`BPF_OBJ_GET`).
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(
        BPF_OBJ_GET,
        (&mut attr as *mut ObjGetAttr).cast(),
        size_of::<ObjGetAttr>(),
    )?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pinned link as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub id: u32,
    pub prog_id: u32,
    /// The interface it is attached to; 0 once detached (defunct).
    pub ifindex: u32,
}

/// Reads a pinned TCX or XDP link's id, program and interface.
pub fn link_state(path: &Path) -> io::Result<LinkState> {
    let fd = obj_get(path)?;
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8
    // whose tcx and xdp members both start with the ifindex.
    let mut info = [0u64; 32];
    let mut attr = InfoByFdAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        (&mut attr as *mut InfoByFdAttr).cast(),
        size_of::<InfoByFdAttr>(),
    )?;
    Ok(LinkState {
        id: (info[0] >> 32) as u32,
        prog_id: info[1] as u32,
        ifindex: info[2] as u32,
    })
}

/// Whether the link pinned at `path` exists and is attached to `ifindex`.
pub fn link_attached(path: &Path, ifindex: u32) -> bool {
    path.exists() && link_state(path).is_ok_and(|s| s.ifindex == ifindex)
}

/// Kernel ids of everything pinned under the bpffs directory, by pin path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedIds {
    pub progs: Vec<(PathBuf, u32)>,
    pub maps: Vec<(PathBuf, u32)>,
    pub links: Vec<(PathBuf, LinkState)>,
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Lists the pinned programs, maps and links with their kernel ids.
pub fn pinned_ids(pins: &Pins) -> io::Result<PinnedIds> {
    let mut ids = PinnedIds::default();
    for path in entries(&pins.root.join("progs")) {
        let info = ProgramInfo::from_pin(&path)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        ids.progs.push((path, info.id()));
    }
    for path in entries(&pins.maps_dir()) {
        let map = MapData::from_pin(&path)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        let info = map
            .info()
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        ids.maps.push((path, info.id()));
    }
    for path in entries(&pins.root.join("links")) {
        let state = link_state(&path)?;
        ids.links.push((path, state));
    }
    Ok(ids)
}

//! Persistent tap devices for guest ports: created with `TUNSETIFF` on
//! `/dev/net/tun` and kept with `TUNSETPERSIST`, so the hypervisor (or a test)
//! later attaches to the same device by name, as libvirt hands QEMU a tap.
//! Works in the calling thread's network namespace.

use std::{fs::OpenOptions, io, os::fd::AsRawFd};

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("/dev/net/tun: {0} (is the tun module available?)")]
    Open(io::Error),
    #[error("tap {name}: {op}: {source}")]
    Ioctl { name: String, op: &'static str, source: io::Error },
    #[error("tap name {0:?} is longer than 15 bytes")]
    Name(String),
}

// From <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqHwaddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr,
    _pad: [u8; 8],
}

fn name_bytes(name: &str) -> Result<[u8; libc::IFNAMSIZ], TapError> {
    let mut out = [0u8; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(TapError::Name(name.into()));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn ioctl<T>(fd: &std::fs::File, name: &str, op: &'static str, req: libc::c_ulong, arg: &mut T) -> Result<(), TapError> {
    // SAFETY: `arg` is a properly laid out ifreq for `req` and outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) } < 0 {
        return Err(TapError::Ioctl { name: name.into(), op, source: io::Error::last_os_error() });
    }
    Ok(())
}

/// Opens `/dev/net/tun` bound to tap `name` (creating it when absent).
fn bind(name: &str) -> Result<std::fs::File, TapError> {
    let fd = OpenOptions::new().read(true).write(true).open("/dev/net/tun").map_err(TapError::Open)?;
    let mut req = IfReqFlags { name: name_bytes(name)?, flags: IFF_TAP | IFF_NO_PI, _pad: [0; 22] };
    ioctl(&fd, name, "TUNSETIFF", TUNSETIFF, &mut req)?;
    Ok(fd)
}

/// Creates persistent tap `name` with host-side MAC `mac`. Fails if any
/// step fails, removing what it created.
pub fn create(name: &str, mac: [u8; 6]) -> Result<(), TapError> {
    let fd = bind(name)?;
    let mut hw = IfReqHwaddr {
        name: name_bytes(name)?,
        // SAFETY: sockaddr is plain old data; all-zero is a valid value.
        addr: unsafe { std::mem::zeroed() },
        _pad: [0; 8],
    };
    hw.addr.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in hw.addr.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    ioctl(&fd, name, "SIOCSIFHWADDR", libc::SIOCSIFHWADDR, &mut hw)?;
    // Until TUNSETPERSIST succeeds the tap vanishes with `fd`: nothing to undo.
    set_persist(&fd, name, true)
}

fn set_persist(fd: &std::fs::File, name: &str, on: bool) -> Result<(), TapError> {
    // TUNSETPERSIST takes its argument by value.
    // SAFETY: plain ioctl with an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(on)) } < 0 {
        return Err(TapError::Ioctl { name: name.into(), op: "TUNSETPERSIST", source: io::Error::last_os_error() });
    }
    Ok(())
}

/// Removes persistent tap `name` (it disappears once no process holds it open).
pub fn delete(name: &str) -> Result<(), TapError> {
    let fd = bind(name)?;
    set_persist(&fd, name, false)
}

//! Persistent tap devices for guest ports: created with `TUNSETIFF` on
//! `/dev/net/tun` and kept with `TUNSETPERSIST`, so the hypervisor (or a test)
//! later attaches to the same device by name, as libvirt hands QEMU a tap.
//! Works in the calling thread's network namespace.
//!
//! Every tap gets an owner (`TUNSETOWNER`, and a group with `TUNSETGROUP`
//! when one is given): `/dev/net/tun` is open to every user, and the
//! kernel lets anyone attach to a persistent tap that has neither, i.e.
//! read and write a guest's traffic. With an owner, only that user (and,
//! with a group, only while in that group), or a process with
//! CAP_NET_ADMIN, can attach.

use std::{fs::OpenOptions, io, os::fd::AsRawFd};

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("/dev/net/tun: {0} (is the tun module available?)")]
    Open(io::Error),
    #[error("tap {name}: {op}: {source}")]
    Ioctl {
        name: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("tap name {0:?} is longer than 15 bytes")]
    Name(String),
}

// From <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
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

fn ioctl<T>(
    fd: &std::fs::File,
    name: &str,
    op: &'static str,
    req: libc::c_ulong,
    arg: &mut T,
) -> Result<(), TapError> {
    // SAFETY: `arg` is a properly laid out ifreq for `req` and outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) } < 0 {
        return Err(TapError::Ioctl {
            name: name.into(),
            op,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens `/dev/net/tun` bound to tap `name` (creating it when absent).
fn bind(name: &str) -> Result<std::fs::File, TapError> {
    let fd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    let mut req = IfReqFlags {
        name: name_bytes(name)?,
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    ioctl(&fd, name, "TUNSETIFF", TUNSETIFF, &mut req)?;
    Ok(fd)
}

/// Who may attach to a tap: `USER[:GROUP]` (names or numeric ids), like
/// libvirt's qemu `user`/`group`. The default (uid 0, no group) is root:
/// only root (or CAP_NET_ADMIN) attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapOwner {
    pub uid: u32,
    pub gid: Option<u32>,
}

/// A numeric id, or the id of the user (`user`: true) or group named `name`.
fn lookup_id(name: &str, user: bool) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let found = if user {
        crate::host::users::user(name).map(|u| u.uid)
    } else {
        crate::host::users::group(name)
    };
    found.ok_or_else(|| {
        let what = if user { "user" } else { "group" };
        format!(
            "no {what} named {name:?} (getent {})",
            if user { "passwd" } else { "group" }
        )
    })
}

impl TapOwner {
    /// Parses `USER[:GROUP]`.
    pub fn parse(s: &str) -> Result<TapOwner, String> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        if user.is_empty() || group == Some("") {
            return Err(format!("{s:?}: expected USER or USER:GROUP"));
        }
        Ok(TapOwner {
            uid: lookup_id(user, true)?,
            gid: group.map(|g| lookup_id(g, false)).transpose()?,
        })
    }
}

/// Creates persistent tap `name` with host-side MAC `mac`, which only
/// `owner` may attach to. Fails if any step fails, removing what it created.
pub fn create(name: &str, mac: [u8; 6], owner: TapOwner) -> Result<(), TapError> {
    let fd = bind(name)?;
    set_id(&fd, name, "TUNSETOWNER", TUNSETOWNER, owner.uid)?;
    if let Some(gid) = owner.gid {
        set_id(&fd, name, "TUNSETGROUP", TUNSETGROUP, gid)?;
    }
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

fn set_id(
    fd: &std::fs::File,
    name: &str,
    op: &'static str,
    req: libc::c_ulong,
    id: u32,
) -> Result<(), TapError> {
    // TUNSETOWNER and TUNSETGROUP take the id by value.
    // SAFETY: plain ioctl with an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, libc::c_ulong::from(id)) } < 0 {
        return Err(TapError::Ioctl {
            name: name.into(),
            op,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn set_persist(fd: &std::fs::File, name: &str, on: bool) -> Result<(), TapError> {
    // TUNSETPERSIST takes its argument by value.
    // SAFETY: plain ioctl with an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(on)) } < 0 {
        return Err(TapError::Ioctl {
            name: name.into(),
            op: "TUNSETPERSIST",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Removes persistent tap `name` (it disappears once no process holds it open).
pub fn delete(name: &str) -> Result<(), TapError> {
    let fd = bind(name)?;
    set_persist(&fd, name, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a thread of its own in a new, anonymous network
    /// namespace: the taps it creates go with the namespace when the thread
    /// ends, and the host's interfaces are never touched.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread's namespaces.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare(CLONE_NEWNET) needs root: {}",
                io::Error::last_os_error()
            );
            f()
        })
        .join()
        .expect("test thread")
    }

    /// Forks a child (in the calling thread's network namespace) that opens
    /// /dev/net/tun, drops to `uid`/`gid` with no supplementary groups (and
    /// so no capabilities) and tries to attach to tap `name`; returns the
    /// errno of TUNSETIFF, or 0 when it attached.
    fn attach_as(name: &str, uid: u32, gid: u32) -> i32 {
        let mut req = IfReqFlags {
            name: name_bytes(name).unwrap(),
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        let path = c"/dev/net/tun";
        // SAFETY: the child only makes async-signal-safe calls on memory
        // prepared before the fork, then _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
            if pid == 0 {
                // Opened before dropping root: /dev/net/tun is usually mode
                // 0666 (0600 on some hosts); what is checked is the caller
                // of TUNSETIFF, whatever opened the device.
                let fd = libc::open(path.as_ptr(), libc::O_RDWR);
                if fd < 0 {
                    libc::_exit(201);
                }
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(200);
                }
                let code = if libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReqFlags) < 0 {
                    *libc::__errno_location()
                } else {
                    0
                };
                libc::_exit(code);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "child did not exit: {status}");
            let code = libc::WEXITSTATUS(status);
            assert!(
                code != 200 && code != 201,
                "child could not drop to {uid}:{gid} or open /dev/net/tun ({code})"
            );
            code
        }
    }

    const NOBODY: u32 = 65534;

    #[test]
    fn another_user_cannot_attach_to_a_guest_tap() {
        let errno = in_new_netns(|| {
            create("vxtapown0", [0xfe, 0x54, 0, 0, 0, 1], TapOwner::default()).expect("create tap");
            attach_as("vxtapown0", NOBODY, NOBODY)
        });
        assert_eq!(
            errno,
            libc::EPERM,
            "an unprivileged user attached to a root-owned tap (errno {errno})"
        );
    }

    #[test]
    fn the_configured_owner_can_attach() {
        let (owner_ok, other) = in_new_netns(|| {
            let owner = TapOwner {
                uid: NOBODY,
                gid: Some(NOBODY),
            };
            create("vxtapown1", [0xfe, 0x54, 0, 0, 0, 2], owner).expect("create tap");
            (
                attach_as("vxtapown1", NOBODY, NOBODY),
                attach_as("vxtapown1", NOBODY - 1, NOBODY - 1),
            )
        });
        assert_eq!(
            owner_ok, 0,
            "the tap's owner could not attach (errno {owner_ok})"
        );
        assert_eq!(
            other,
            libc::EPERM,
            "a user other than the owner attached (errno {other})"
        );
    }

    #[test]
    fn owners_parse_from_names_and_ids() {
        assert_eq!(TapOwner::parse("root"), Ok(TapOwner { uid: 0, gid: None }));
        assert_eq!(
            TapOwner::parse("0:0"),
            Ok(TapOwner {
                uid: 0,
                gid: Some(0)
            })
        );
        assert_eq!(
            TapOwner::parse("nobody:root"),
            Ok(TapOwner {
                uid: NOBODY,
                gid: Some(0)
            })
        );
        for bad in [
            "",
            ":",
            "root:",
            "no-such-user-vxdp",
            "root:no-such-group-vxdp",
        ] {
            assert!(TapOwner::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

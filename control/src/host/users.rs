//! Users and groups by name or id (getpwnam_r, getgrnam_r, getgrgid_r), for
//! the processes and devices vxdp hands to an unprivileged user: the
//! owner of guest taps, the user dnsmasq runs as.

use std::ffi::{CStr, CString};

/// A user's id and primary group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

fn buffer() -> Vec<libc::c_char> {
    vec![0; 16 * 1024]
}

/// The user named `name`, if any.
pub fn user(name: &str) -> Option<User> {
    let cname = CString::new(name).ok()?;
    let mut buf = buffer();
    // SAFETY: `pw` is plain old data, `buf` outlives the call, and `pw` is
    // read only when the call reports a match.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        (libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        ) == 0
            && !out.is_null())
        .then_some(User {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        })
    }
}

/// The id of the group named `name`, if any.
pub fn group(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = buffer();
    // SAFETY: as in `user`.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out: *mut libc::group = std::ptr::null_mut();
        (libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        ) == 0
            && !out.is_null())
        .then_some(gr.gr_gid)
    }
}

/// The name of group `gid`, if it has one.
pub fn group_name(gid: u32) -> Option<String> {
    let mut buf = buffer();
    // SAFETY: as in `user`; the name points into `buf`, copied before it goes.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out: *mut libc::group = std::ptr::null_mut();
        if libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) != 0
            || out.is_null()
        {
            return None;
        }
        Some(CStr::from_ptr(gr.gr_name).to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_its_group_are_found() {
        assert_eq!(user("root"), Some(User { uid: 0, gid: 0 }));
        assert_eq!(group("root"), Some(0));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(user("no-such-user-vxdp"), None);
        assert_eq!(group("no-such-group-vxdp"), None);
    }
}

//! Whether a device takes frames an XDP program redirects to it, as the
//! kernel says: the `netdev` generic netlink family's `dev-get` reports a
//! device's XDP features, `NETDEV_XDP_ACT_NDO_XMIT` among them. A veth
//! reports it only while its peer can receive them (an XDP program or GRO
//! on the peer), a NIC when its driver implements XDP transmit.

use std::io;

/// `NETLINK_GENERIC` and its controller.
const NETLINK_GENERIC: i32 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// The `netdev` family (`Documentation/netlink/specs/netdev.yaml`).
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
const NETDEV_XDP_ACT_NDO_XMIT: u64 = 4;

const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;

/// Whether `ifindex` (in this process's network namespace) takes XDP
/// frames redirected to it. An error: the kernel could not be asked (no
/// `netdev` family before Linux 6.3).
pub fn takes_xdp_frames(ifindex: u32) -> io::Result<bool> {
    let sock = Genl::open()?;
    let family = sock.family_id("netdev")?;
    let reply = sock.request(
        family,
        NETDEV_CMD_DEV_GET,
        NETDEV_A_DEV_IFINDEX,
        &ifindex.to_ne_bytes(),
    )?;
    let features = attr(&reply, NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|v| v.get(..8))
        .map(|v| u64::from_ne_bytes(v.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| io::Error::other("netdev dev-get reply without xdp-features"))?;
    Ok(features & NETDEV_XDP_ACT_NDO_XMIT != 0)
}

struct Genl(std::os::fd::OwnedFd);

impl Genl {
    fn open() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn family_id(&self, name: &str) -> io::Result<u16> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        let reply = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, &n)?;
        attr(&reply, CTRL_ATTR_FAMILY_ID)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_ne_bytes([v[0], v[1]]))
            .ok_or_else(|| io::Error::other(format!("no generic netlink family {name}")))
    }

    /// Sends one request with one attribute; returns the reply's attributes.
    fn request(&self, family: u16, cmd: u8, attr_type: u16, value: &[u8]) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let attr_len = 4 + value.len();
        let len = 16 + 4 + attr_len.next_multiple_of(4);
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        msg.extend_from_slice(&[cmd, 1, 0, 0]); // genlmsghdr: cmd, version
        msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        msg.extend_from_slice(&attr_type.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize(len, 0);
        let fd = self.0.as_raw_fd();
        let sent = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(got as usize);
        if buf.len() < 20 {
            return Err(io::Error::other("short generic netlink reply"));
        }
        let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
        if msg_type == NLMSG_ERROR {
            let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            return Err(io::Error::from_raw_os_error(-errno));
        }
        let msg_len =
            (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(buf.len());
        Ok(buf[20..msg_len].to_vec())
    }
}

/// The value of attribute `kind` among `attrs`.
fn attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut rest = attrs;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let t = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if t == kind {
            return Some(&rest[4..len]);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_past_padding() {
        // A 5-byte string attribute (padded to 8), then a u16.
        let mut a = vec![9, 0, 2, 0, b'a', b'b', b'c', b'd', 0, 0, 0, 0];
        a.extend_from_slice(&[6, 0, 1, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(attr(&a, 1), Some(&[0x34, 0x12][..]));
        assert_eq!(attr(&a, 2), Some(&b"abcd\0"[..]));
        assert_eq!(attr(&a, 3), None);
    }
}

//! A guest as QEMU's tap backend is one: a tap opened non-blocking with
//! virtio-net headers (`IFF_VNET_HDR`, 10 bytes), written one frame per
//! `write`. tun runs a native XDP program in the writer's context for
//! such writes (non-GSO frames that fit a page).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, ensure};

use crate::netns::Netns;

/// Size of `struct virtio_net_hdr` (no mergeable buffers): tun's default.
pub const VNET_HDR: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// `struct ifreq` for TUNSETIFF: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// The open tap; it goes away with the fd.
pub struct TapWriter {
    fd: OwnedFd,
    pub name: String,
}

impl TapWriter {
    /// Creates tap `name` in `ns`, sets it up, and opens it as QEMU does.
    pub fn open(ns: &Netns, name: &str) -> Result<Self> {
        Self::open_offloaded(ns, name, 0, false)
    }

    /// [`TapWriter::open`], then `TUNSETOFFLOAD` with `offloads`
    /// (`libc::TUN_F_*`), as QEMU does for a guest that negotiated those
    /// virtio-net features: the kernel then hands the reader GSO frames
    /// and unfinished checksums (flagged in the virtio-net header) up to
    /// those offloads. 0 leaves the tap as [`TapWriter::open`] does. With
    /// `napi` (`IFF_NAPI`) frames written go through NAPI and GRO, as a
    /// virtio-net driver receives them: for a tap standing in for the
    /// guest's own interface, not for QEMU's.
    pub fn open_offloaded(
        ns: &Netns,
        name: &str,
        offloads: libc::c_uint,
        napi: bool,
    ) -> Result<Self> {
        let dev = name.to_string();
        let fd = ns.enter(move || -> Result<OwnedFd> {
            let path = c"/dev/net/tun";
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            ensure!(
                fd >= 0,
                "opening /dev/net/tun: {}",
                std::io::Error::last_os_error()
            );
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                flags: (libc::IFF_TAP
                    | libc::IFF_NO_PI
                    | libc::IFF_VNET_HDR
                    | if napi { libc::IFF_NAPI } else { 0 })
                    as libc::c_short,
                _pad: [0; 22],
            };
            ensure!(dev.len() < libc::IFNAMSIZ, "tap name {dev} too long");
            req.name[..dev.len()].copy_from_slice(dev.as_bytes());
            ensure!(
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } >= 0,
                "TUNSETIFF {dev}: {}",
                std::io::Error::last_os_error()
            );
            if offloads != 0 {
                ensure!(
                    unsafe {
                        libc::ioctl(
                            fd.as_raw_fd(),
                            libc::TUNSETOFFLOAD,
                            offloads as libc::c_ulong,
                        )
                    } >= 0,
                    "TUNSETOFFLOAD {dev} {offloads:#x}: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(fd)
        })??;
        ns.ip(&["link", "set", name, "up"])?;
        Ok(Self {
            fd,
            name: name.to_string(),
        })
    }

    /// Writes one frame (virtio-net header first); false when the kernel
    /// refused it.
    pub fn write(&self, data: &[u8]) -> bool {
        let n = unsafe { libc::write(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        n == data.len() as isize
    }

    /// Reads one frame (virtio-net header first) into `buf`: its length,
    /// or `None` when none is queued (the fd is non-blocking) or the read
    /// failed.
    pub fn read(&self, buf: &mut [u8]) -> Option<usize> {
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).ok()
    }

    /// The tap's fd, to wait on with `poll`.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// [`TapWriter::write`], an error naming why the kernel refused it.
    pub fn write_all(&self, data: &[u8]) -> Result<()> {
        ensure!(
            self.write(data),
            "writing {} bytes to {}: {}",
            data.len(),
            self.name,
            std::io::Error::last_os_error()
        );
        Ok(())
    }
}

/// The tap's fd, for a reader of what the kernel sends to the guest (the
/// benchmark drains it as QEMU's backend does: one frame per `read`).
impl AsRawFd for TapWriter {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// One's complement sum of `data` as big-endian words, folded.
pub fn fold(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// `frame` as a sender with checksum offload hands it over: the TCP/UDP
/// checksum field replaced by the folded pseudo-header sum (what Linux
/// writes for CHECKSUM_PARTIAL, and virtio's NEEDS_CSUM frames carry).
pub fn unfinished(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (pseudo, l4_off, proto) = match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            let ihl = (f[14] & 0x0f) as usize * 4;
            let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
            let mut p = f[26..34].to_vec();
            p.extend_from_slice(&[0, f[23]]);
            p.extend_from_slice(&((tot - ihl) as u16).to_be_bytes());
            (p, 14 + ihl, f[23])
        }
        0x86dd => {
            let mut p = f[22..54].to_vec();
            p.extend_from_slice(&[0, 0, f[18], f[19], 0, 0, 0, f[20]]);
            (p, 54, f[20])
        }
        t => panic!("not IP: ethertype {t:#x}"),
    };
    let off = l4_off + if proto == 6 { 16 } else { 6 };
    f[off..off + 2].copy_from_slice(&fold(&pseudo).to_be_bytes());
    f
}

/// An IPv4 UDP `frame` (20-byte IP header) with the virtio-net header a
/// guest writes: with `partial`, checksum offload (NEEDS_CSUM, the field
/// holding the pseudo-header sum, as Linux's virtio-net driver leaves it);
/// else an empty header and the frame as it is.
pub fn with_vnet_hdr(frame: &[u8], partial: bool) -> Vec<u8> {
    let mut f = frame.to_vec();
    let mut hdr = [0u8; VNET_HDR];
    if partial {
        let udp_len = u16::from_be_bytes([f[38], f[39]]);
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        f[40..42].copy_from_slice(&fold(&pseudo).to_be_bytes());
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset
    }
    let mut out = hdr.to_vec();
    out.extend_from_slice(&f);
    out
}

//! Probes for measuring what programs on a guest port see (DESIGN.md §6's
//! open questions about taps), independent of vxdp's own programs:
//!
//! - [`XdpCounter`]: a test-only XDP program, assembled here as eBPF
//!   instructions and loaded with the bpf(2) syscall (no ELF, no
//!   toolchain), that counts frames, bytes, frames longer than 1514 bytes
//!   and the longest frame, then passes every frame (`XDP_PASS`). It is
//!   attached through a bpf link (`BPF_LINK_CREATE`) made in the port's
//!   namespace, so dropping the link detaches it.
//! - [`SkbProbe`]: an AF_PACKET socket with `PACKET_VNET_HDR` on the port,
//!   which reports each received socket buffer's checksum state and GSO
//!   type as a virtio-net header. It taps the same socket buffer the TC
//!   ingress program gets next (`__netif_receive_skb_core` delivers to
//!   packet sockets before TC ingress).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::Netns;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// What the counting program saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounts {
    pub frames: u64,
    pub bytes: u64,
    pub over_1514: u64,
    pub longest: u64,
}

/// The counting XDP program and its one-entry array map.
pub struct XdpCounter {
    map: OwnedFd,
    prog: Arc<OwnedFd>,
}

/// XDP modes (`XDP_FLAGS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native: the driver runs the program (tun: in the writer's context).
    Driver,
    /// Generic: the stack runs it on socket buffers.
    Generic,
}

/// An attachment; dropping it detaches the program.
pub struct XdpLink(#[allow(dead_code)] OwnedFd);

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr of 128 bytes for `cmd`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(a: &mut [u8; 128], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(a: &mut [u8; 128], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

impl XdpCounter {
    /// Loads the program (not attached anywhere yet).
    pub fn load() -> Result<Self> {
        // BPF_MAP_CREATE: type, key size, value size, max entries.
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_ARRAY);
        put_u32(&mut attr, 4, 4);
        put_u32(&mut attr, 8, 32);
        put_u32(&mut attr, 12, 1);
        let map_fd = bpf(BPF_MAP_CREATE, &mut attr).context("creating the counter map")? as i32;
        // SAFETY: a new fd the kernel just returned, owned by nobody else.
        let map = unsafe { OwnedFd::from_raw_fd(map_fd) };

        // r6 = ctx; r7 = data_end - data; look up entry 0; count; XDP_PASS.
        let prog = [
            insn(0xbf, 6, 1, 0, 0),      // r6 = r1
            insn(0x61, 2, 6, 0, 0),      // r2 = ctx->data
            insn(0x61, 3, 6, 4, 0),      // r3 = ctx->data_end
            insn(0x1f, 3, 2, 0, 0),      // r3 -= r2
            insn(0xbf, 7, 3, 0, 0),      // r7 = r3 (frame length)
            insn(0x62, 10, 0, -4, 0),    // *(u32 *)(r10 - 4) = 0
            insn(0x18, 1, 1, 0, map_fd), // r1 = map (BPF_PSEUDO_MAP_FD)
            insn(0, 0, 0, 0, 0),
            insn(0xbf, 2, 10, 0, 0),   // r2 = r10
            insn(0x07, 2, 0, 0, -4),   // r2 += -4
            insn(0x85, 0, 0, 0, 1),    // call bpf_map_lookup_elem
            insn(0x15, 0, 0, 9, 0),    // if r0 == 0 goto pass
            insn(0xb7, 1, 0, 0, 1),    // r1 = 1
            insn(0xdb, 0, 1, 0, 0),    // lock *(u64 *)(r0 + 0) += r1   frames
            insn(0xdb, 0, 7, 8, 0),    // lock *(u64 *)(r0 + 8) += r7   bytes
            insn(0xb5, 7, 0, 2, 1514), // if r7 <= 1514 goto +2
            insn(0xb7, 1, 0, 0, 1),    // r1 = 1
            insn(0xdb, 0, 1, 16, 0),   // lock *(u64 *)(r0 + 16) += r1  over 1514
            insn(0x79, 1, 0, 24, 0),   // r1 = *(u64 *)(r0 + 24)
            insn(0xbd, 7, 1, 1, 0),    // if r7 <= r1 goto +1
            insn(0x7b, 0, 7, 24, 0),   // *(u64 *)(r0 + 24) = r7      longest (racy: a probe)
            insn(0xb7, 0, 0, 0, 2),    // pass: r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0),    // exit
        ];
        let license = b"GPL\0";
        let mut log = vec![0u8; 65536];
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, prog.len() as u32);
        put_u64(&mut attr, 8, prog.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        put_u32(&mut attr, 24, 1);
        put_u32(&mut attr, 28, log.len() as u32);
        put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        attr[48..48 + 11].copy_from_slice(b"vxdp_tcount");
        put_u32(&mut attr, 68, BPF_XDP);
        let prog_fd = match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => fd as i32,
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                bail!(
                    "loading the counting XDP program: {e}\n{}",
                    String::from_utf8_lossy(&log[..end])
                );
            }
        };
        // SAFETY: as above.
        let prog = Arc::new(unsafe { OwnedFd::from_raw_fd(prog_fd) });
        Ok(Self { map, prog })
    }

    /// Attaches to `dev` in `ns` (the link is made in a thread inside the
    /// namespace, where the ifindex means `dev`).
    pub fn attach(&self, ns: &Netns, dev: &str, mode: XdpMode) -> Result<XdpLink> {
        let dev = std::ffi::CString::new(dev)?;
        let prog = self.prog.clone();
        let flags: u32 = match mode {
            XdpMode::Generic => 1 << 1,
            XdpMode::Driver => 1 << 2,
        };
        let fd = ns.enter(move || -> Result<OwnedFd> {
            // SAFETY: a C string for the lookup.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            ensure!(ifindex != 0, "no interface {dev:?}");
            let mut attr = [0u8; 128];
            put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
            put_u32(&mut attr, 4, ifindex);
            put_u32(&mut attr, 8, BPF_XDP);
            put_u32(&mut attr, 12, flags);
            let fd = bpf(BPF_LINK_CREATE, &mut attr).with_context(|| {
                format!("attaching the counting XDP program to {dev:?} ({mode:?})")
            })?;
            // SAFETY: a new fd the kernel just returned.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        })??;
        Ok(XdpLink(fd))
    }

    /// Zeroes the counters.
    pub fn reset(&self) -> Result<()> {
        let key = 0u32;
        let value = [0u64; 4];
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, self.map.as_raw_fd() as u32);
        put_u64(&mut attr, 8, &key as *const u32 as u64);
        put_u64(&mut attr, 16, value.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).context("zeroing the counter map")?;
        Ok(())
    }

    pub fn counts(&self) -> Result<XdpCounts> {
        let key = 0u32;
        let mut value = [0u64; 4];
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, self.map.as_raw_fd() as u32);
        put_u64(&mut attr, 8, &key as *const u32 as u64);
        put_u64(&mut attr, 16, value.as_mut_ptr() as u64);
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("reading the counter map")?;
        Ok(XdpCounts {
            frames: value[0],
            bytes: value[1],
            over_1514: value[2],
            longest: value[3],
        })
    }
}

/// What the packet socket saw of frames received on the port.
#[derive(Debug, Clone, Copy, Default)]
pub struct SkbCounts {
    pub frames: u64,
    pub bytes: u64,
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: CHECKSUM_PARTIAL, the L4 checksum
    /// field holds only the pseudo-header sum.
    pub partial_csum: u64,
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: CHECKSUM_UNNECESSARY.
    pub csum_valid: u64,
    /// GSO socket buffers (gso_type not NONE): one "frame" of many segments.
    pub gso: u64,
    pub gso_bytes: u64,
    pub longest: u64,
    pub largest_gso_size: u64,
    /// Frames the socket itself dropped (receive buffer full).
    pub socket_drops: u64,
}

/// An AF_PACKET socket with `PACKET_VNET_HDR` counting what a port receives.
pub struct SkbProbe {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Result<SkbCounts>>,
}

const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_STATISTICS: libc::c_int = 6;

impl SkbProbe {
    pub fn start(ns: &Netns, dev: &str) -> Result<Self> {
        let dev = std::ffi::CString::new(dev)?;
        let fd = ns.enter(move || -> Result<OwnedFd> {
            // SAFETY: plain socket calls on a fresh fd with valid arguments.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((libc::ETH_P_ALL as u16).to_be()),
                );
                ensure!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let fd = OwnedFd::from_raw_fd(fd);
                let one: libc::c_int = 1;
                let set = |level, name, v: &libc::c_int| {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        level,
                        name,
                        v as *const _ as *const libc::c_void,
                        4,
                    )
                };
                ensure!(
                    set(libc::SOL_PACKET, PACKET_VNET_HDR, &one) == 0,
                    "PACKET_VNET_HDR: {}",
                    std::io::Error::last_os_error()
                );
                let rcvbuf: libc::c_int = 32 << 20;
                ensure!(
                    set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf) == 0,
                    "SO_RCVBUFFORCE: {}",
                    std::io::Error::last_os_error()
                );
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200_000,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                let ifindex = libc::if_nametoindex(dev.as_ptr());
                ensure!(ifindex != 0, "no interface {dev:?}");
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                sll.sll_ifindex = ifindex as i32;
                ensure!(
                    libc::bind(
                        fd.as_raw_fd(),
                        &sll as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32
                    ) == 0,
                    "binding the packet socket: {}",
                    std::io::Error::last_os_error()
                );
                Ok(fd)
            }
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || -> Result<SkbCounts> {
            let mut c = SkbCounts::default();
            let mut buf = vec![0u8; 256 * 1024];
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: buf and sll are valid for the sizes given.
                let (n, sll) = unsafe {
                    let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                    let n = libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                        &mut sll as *mut _ as *mut libc::sockaddr,
                        &mut len,
                    );
                    (n, sll)
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                        continue;
                    }
                    bail!("reading the packet socket: {e}");
                }
                if sll.sll_pkttype == libc::PACKET_OUTGOING || (n as usize) < 10 {
                    continue;
                }
                // struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
                let (flags, gso_type) = (buf[0], buf[1]);
                let gso_size = u16::from_ne_bytes([buf[4], buf[5]]);
                let len = n as u64 - 10;
                c.frames += 1;
                c.bytes += len;
                c.longest = c.longest.max(len);
                c.partial_csum += u64::from(flags & 1 != 0);
                c.csum_valid += u64::from(flags & 2 != 0);
                if gso_type != 0 {
                    c.gso += 1;
                    c.gso_bytes += len;
                    c.largest_gso_size = c.largest_gso_size.max(u64::from(gso_size));
                }
            }
            let mut stats = [0u32; 2];
            let mut len = 8u32;
            // SAFETY: tpacket_stats is two u32s.
            unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_STATISTICS,
                    stats.as_mut_ptr() as *mut libc::c_void,
                    &mut len,
                );
            }
            c.socket_drops = u64::from(stats[1]);
            Ok(c)
        });
        Ok(Self { stop, handle })
    }

    /// Stops counting (after the socket's next read timeout) and returns
    /// the counts.
    pub fn finish(self) -> Result<SkbCounts> {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("packet socket thread panicked"))?
    }
}

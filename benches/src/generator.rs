//! The benchmark's traffic generators: userspace sockets that hand
//! pre-built 64-byte UDP frames to a network interface, as a guest's driver
//! would, in large batches.
//!
//! - [`Kind::AfXdp`] (the default): an AF_XDP socket in copy mode bound to
//!   queue 0 of the interface. Frames live in the socket's UMEM; each
//!   `sendto` makes the kernel build a socket buffer per queued descriptor
//!   and transmit it directly on the device (no qdisc).
//! - [`Kind::AfPacket`]: an AF_PACKET socket with `PACKET_QDISC_BYPASS`,
//!   frames sent with `sendmmsg`, for comparison.
//!
//! The kernel's live-frames `BPF_PROG_TEST_RUN`, which the benchmark used
//! before, is refused (EPERM) on current kernels of our machines.
//!
//! Packet `n` of a run belongs to flow `n % flows` (see [`FlowFrames`]);
//! the sequence carries on across calls until the traffic is set again, so
//! the flow-setup benchmark can send its flows in several runs.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::wire::{FRAME_LEN, OFF_IP_CSUM, OFF_IP_DST, OFF_UDP_CSUM};

/// Which socket sends the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// AF_XDP socket, copy mode, frames from its UMEM
    #[value(name = "afxdp")]
    AfXdp,
    /// AF_PACKET socket with PACKET_QDISC_BYPASS and sendmmsg
    #[value(name = "afpacket")]
    AfPacket,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::AfXdp => "afxdp",
            Kind::AfPacket => "afpacket",
        }
    }

    pub fn describe(self) -> String {
        match self {
            Kind::AfXdp => {
                format!("AF_XDP socket, copy mode, queue 0, {BATCH} frames queued per sendto")
            }
            Kind::AfPacket => {
                format!("AF_PACKET socket, PACKET_QDISC_BYPASS, {BATCH} frames per sendmmsg")
            }
        }
    }
}

/// Frames queued per system call.
pub const BATCH: usize = 256;

/// Flow `f`'s frame: the varying port is `template port + f % ports_per_dst`,
/// the destination `template destination + f / ports_per_dst`; checksums
/// updated incrementally from the template's (RFC 1624).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFrames {
    pub template: [u8; FRAME_LEN],
    pub flows: u32,
    pub ports_per_dst: u32,
    /// Offset of the port that varies (source or destination port).
    pub port_off: usize,
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// RFC 1624: checksum `check` after 16-bit words `old[i]` became `new[i]`.
fn csum_replace(check: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = u32::from(!check);
    for (o, n) in old.iter().zip(new) {
        sum += u32::from(!o) + u32::from(*n);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl FlowFrames {
    /// Writes flow `flow`'s frame into `out` (at least [`FRAME_LEN`] bytes).
    pub fn write(&self, flow: u32, out: &mut [u8]) {
        let t = &self.template;
        out[..FRAME_LEN].copy_from_slice(t);
        let ppd = self.ports_per_dst.max(1);
        let (port_step, dst_step) = ((flow % ppd) as u16, flow / ppd);
        if port_step == 0 && dst_step == 0 {
            return;
        }
        let old_port = be16(t, self.port_off);
        let new_port = old_port.wrapping_add(port_step);
        let old_dst = [be16(t, OFF_IP_DST), be16(t, OFF_IP_DST + 2)];
        let dst = (u32::from(old_dst[0]) << 16 | u32::from(old_dst[1])).wrapping_add(dst_step);
        let new_dst = [(dst >> 16) as u16, dst as u16];
        let ip_csum = csum_replace(be16(t, OFF_IP_CSUM), &old_dst, &new_dst);
        let mut udp_csum = csum_replace(
            be16(t, OFF_UDP_CSUM),
            &[old_dst[0], old_dst[1], old_port],
            &[new_dst[0], new_dst[1], new_port],
        );
        // A computed 0 is sent as 0xffff (0 means "no checksum").
        if udp_csum == 0 {
            udp_csum = 0xffff;
        }
        put16(out, self.port_off, new_port);
        put16(out, OFF_IP_DST, new_dst[0]);
        put16(out, OFF_IP_DST + 2, new_dst[1]);
        put16(out, OFF_IP_CSUM, ip_csum);
        put16(out, OFF_UDP_CSUM, udp_csum);
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Frames the socket handed to the device (AF_XDP: completed
    /// descriptors; AF_PACKET: messages sendmmsg accepted).
    pub frames: u64,
}

/// A generator socket, open on one interface and ready to send. It is
/// opened once per interface and kept: the setup cost stays out of timed
/// runs, and an AF_XDP socket's queue stays busy for a while after close.
pub enum Socket {
    Xdp(Xsk),
    Packet(OwnedFd, u32),
}

/// Opens a `kind` socket on interface `ifindex` of the calling thread's
/// namespace.
pub fn open(kind: Kind, ifindex: u32) -> Result<Socket> {
    Ok(match kind {
        Kind::AfXdp => Socket::Xdp(Xsk::open(ifindex)?),
        Kind::AfPacket => Socket::Packet(open_af_packet()?, ifindex),
    })
}

impl Socket {
    /// Sends `count` frames, packet `first + i` being flow `(first + i) %
    /// flows`; returns once the kernel took every one.
    pub fn send(&mut self, frames: &FlowFrames, first: u64, count: u64) -> Result<Sent> {
        match self {
            Socket::Xdp(x) => x.send(frames, first, count),
            Socket::Packet(fd, ifindex) => send_af_packet(fd, *ifindex, frames, first, count),
        }
    }
}

fn os_err(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", io::Error::last_os_error())
}

// ---- AF_XDP ------------------------------------------------------------
// Constants and structures of <linux/if_xdp.h>.

const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
/// Linux 6.17+: how many descriptors one `sendto` may turn into socket
/// buffers (default 32). Older kernels refuse it; `sendto` then returns
/// EAGAIN after 32 and is called again.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
const XDP_COPY: u16 = 1 << 1;
const XDP_PGOFF_TX_RING: libc::off_t = 0x8000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: libc::off_t = 0x1_8000_0000;

#[repr(C)]
#[derive(Default)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default, Debug)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct XdpDesc {
    addr: u64,
    len: u32,
    options: u32,
}

/// Descriptors in the TX and completion rings; also the most frames in
/// flight.
const RING: u32 = 4096;
/// UMEM chunk size.
const CHUNK: usize = 2048;
/// UMEM chunks (32 MiB): enough for [`chunks_for`] any flow count.
const MAX_CHUNKS: u32 = 16_384;

/// A memory mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: Option<libc::c_int>, len: usize, offset: libc::off_t, what: &str) -> Result<Self> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping; the kernel validates fd and offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_err(&format!("mmap of the {what}")));
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).context("mmap returned null")?,
            len,
        })
    }

    fn at<T>(&self, off: u64) -> *mut T {
        assert!(off as usize + size_of::<T>() <= self.len);
        // SAFETY: in bounds (checked above).
        unsafe { self.ptr.as_ptr().add(off as usize).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `new` with this length.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A ring's shared producer and consumer indices.
struct RingIdx {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
}

impl RingIdx {
    fn new(map: &Mapping, off: &RingOffset) -> Self {
        Self {
            producer: map.at::<AtomicU32>(off.producer),
            consumer: map.at::<AtomicU32>(off.consumer),
        }
    }
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into a live mapping owned alongside this struct.
        unsafe { &*self.producer }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
}

/// An AF_XDP socket with its UMEM, TX and completion rings.
pub struct Xsk {
    // Field order: the rings are unmapped before the socket closes.
    tx: Mapping,
    tx_idx: RingIdx,
    tx_desc: u64,
    /// Keeps the completion ring mapped for `cq_idx`.
    _cq: Mapping,
    cq_idx: RingIdx,
    umem: Mapping,
    /// The traffic whose frames the chunks hold.
    holding: Option<FlowFrames>,
    /// The flow each chunk holds (`u32::MAX`: none yet).
    holds: Vec<u32>,
    fd: OwnedFd,
}

// SAFETY: the raw pointers point into mappings the struct owns; the rings
// are only touched through `&mut self`, so by one thread at a time.
unsafe impl Send for Xsk {}
unsafe impl Sync for Xsk {}

fn setsockopt<T>(fd: libc::c_int, opt: libc::c_int, v: &T, what: &str) -> Result<()> {
    // SAFETY: `v` is a valid T for the call's duration.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_err(what));
    }
    Ok(())
}

impl Xsk {
    fn open(ifindex: u32) -> Result<Self> {
        // SAFETY: plain socket creation.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_err("socket(AF_XDP)"));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new(None, MAX_CHUNKS as usize * CHUNK, 0, "UMEM")?;
        let reg = UmemReg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: CHUNK as u32,
            ..Default::default()
        };
        setsockopt(raw, XDP_UMEM_REG, &reg, "registering the AF_XDP UMEM")?;
        // The fill ring is required by bind even for a socket that only
        // sends.
        setsockopt(raw, XDP_UMEM_FILL_RING, &64u32, "sizing the fill ring")?;
        setsockopt(
            raw,
            XDP_UMEM_COMPLETION_RING,
            &RING,
            "sizing the completion ring",
        )?;
        setsockopt(raw, XDP_TX_RING, &RING, "sizing the TX ring")?;
        let mut off = MmapOffsets::default();
        let mut len = size_of::<MmapOffsets>() as libc::socklen_t;
        // SAFETY: `off` is large enough for the kernel's structure.
        if unsafe {
            libc::getsockopt(
                raw,
                SOL_XDP,
                XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &mut len,
            )
        } != 0
        {
            return Err(os_err("reading the AF_XDP ring offsets"));
        }
        let tx = Mapping::new(
            Some(raw),
            (off.tx.desc + u64::from(RING) * size_of::<XdpDesc>() as u64) as usize,
            XDP_PGOFF_TX_RING,
            "TX ring",
        )?;
        let cq = Mapping::new(
            Some(raw),
            (off.cr.desc + u64::from(RING) * 8) as usize,
            XDP_UMEM_PGOFF_COMPLETION_RING,
            "completion ring",
        )?;
        // Best effort: newer kernels take a larger per-call budget.
        let _ = setsockopt(raw, XDP_MAX_TX_SKB_BUDGET, &(BATCH as u32), "tx budget");
        let addr = SockaddrXdp {
            family: libc::AF_XDP as u16,
            flags: XDP_COPY,
            ifindex,
            queue_id: 0,
            shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a valid sockaddr_xdp.
        if unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast(),
                size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        } != 0
        {
            return Err(os_err(&format!(
                "binding the AF_XDP socket to queue 0 of ifindex {ifindex} (copy mode)"
            )));
        }
        Ok(Self {
            tx_idx: RingIdx::new(&tx, &off.tx),
            tx_desc: off.tx.desc,
            cq_idx: RingIdx::new(&cq, &off.cr),
            tx,
            _cq: cq,
            umem,
            holding: None,
            holds: vec![u32::MAX; MAX_CHUNKS as usize],
            fd,
        })
    }

    /// Queues and sends `count` frames; returns once the kernel has
    /// completed every one of them.
    fn send(&mut self, frames: &FlowFrames, first: u64, count: u64) -> Result<Sent> {
        let flows = u64::from(frames.flows.max(1));
        if self.holding.as_ref() != Some(frames) {
            self.holds.fill(u32::MAX);
            self.holding = Some(frames.clone());
        }
        let chunks = chunks_for(frames.flows);
        let fd = self.fd.as_raw_fd();
        let (mut queued, mut completed) = (0u64, 0u64);
        let mut tx_prod = self.tx_idx.producer().load(Ordering::Relaxed);
        let mut cq_cons = self.cq_idx.consumer().load(Ordering::Relaxed);
        let mut idle_since: Option<Instant> = None;
        while completed < count {
            // Descriptors the kernel is done with.
            let cq_prod = self.cq_idx.producer().load(Ordering::Acquire);
            let done = cq_prod.wrapping_sub(cq_cons);
            if done > 0 {
                cq_cons = cq_prod;
                self.cq_idx.consumer().store(cq_cons, Ordering::Release);
                completed += u64::from(done);
                idle_since = None;
            }
            // Queue up to a batch more, within the ring and the UMEM.
            let in_flight = queued - completed;
            let room = (u64::from(RING) - in_flight).min(u64::from(chunks) - in_flight);
            let n = room.min(count - queued).min(BATCH as u64);
            for _ in 0..n {
                let seq = first + queued;
                let chunk = (seq % u64::from(chunks)) as u32;
                let flow = (seq % flows) as u32;
                let addr = u64::from(chunk) * CHUNK as u64;
                if self.holds[chunk as usize] != flow {
                    // SAFETY: the chunk lies inside the UMEM and is not in
                    // flight (at most `chunks` frames are).
                    let buf = unsafe {
                        std::slice::from_raw_parts_mut(self.umem.at::<u8>(addr), FRAME_LEN)
                    };
                    frames.write(flow, buf);
                    self.holds[chunk as usize] = flow;
                }
                let slot = u64::from(tx_prod & (RING - 1));
                let desc = self
                    .tx
                    .at::<XdpDesc>(self.tx_desc + slot * size_of::<XdpDesc>() as u64);
                // SAFETY: a slot of the TX ring we own until the producer
                // index passes it.
                unsafe {
                    desc.write(XdpDesc {
                        addr,
                        len: FRAME_LEN as u32,
                        options: 0,
                    })
                };
                tx_prod = tx_prod.wrapping_add(1);
                queued += 1;
            }
            if n > 0 {
                self.tx_idx.producer().store(tx_prod, Ordering::Release);
            }
            if queued > completed {
                // SAFETY: a kick with no data; the kernel sends what the TX
                // ring holds.
                let rc = unsafe {
                    libc::sendto(
                        fd,
                        std::ptr::null(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null(),
                        0,
                    )
                };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        // Budget used up or device busy: kick again.
                        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => {}
                        _ => bail!("sendto on the AF_XDP socket: {e}"),
                    }
                }
            }
            if done == 0 && n == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                ensure!(
                    since.elapsed() < Duration::from_secs(5),
                    "the AF_XDP socket completed nothing for 5 s ({completed} of {count} sent, \
                     {} queued): the device takes no frames",
                    queued - completed
                );
            }
        }
        Ok(Sent { frames: completed })
    }
}

/// UMEM chunks used for `flows` flows: a multiple of the flow count of at
/// least [`RING`] when that fits, so each chunk always holds one flow's
/// frame and is written once; otherwise [`RING`] chunks rewritten as they
/// are reused.
fn chunks_for(flows: u32) -> u32 {
    let flows = flows.max(1);
    if flows <= MAX_CHUNKS {
        RING.div_ceil(flows) * flows
    } else {
        RING
    }
}

// ---- AF_PACKET -----------------------------------------------------------

const PACKET_QDISC_BYPASS: libc::c_int = 20;

fn open_af_packet() -> Result<OwnedFd> {
    // SAFETY: plain socket creation; protocol 0 receives nothing.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os_err("socket(AF_PACKET)"));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: an int option.
    if unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(os_err("setting PACKET_QDISC_BYPASS"));
    }
    Ok(fd)
}

fn send_af_packet(
    fd: &OwnedFd,
    ifindex: u32,
    frames: &FlowFrames,
    first: u64,
    count: u64,
) -> Result<Sent> {
    // SAFETY: zeroed sockaddr_ll, then filled in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    let flows = u64::from(frames.flows.max(1));
    let mut bufs = vec![[0u8; FRAME_LEN]; BATCH];
    let mut sent = 0u64;
    let mut idle_since: Option<Instant> = None;
    while sent < count {
        let n = (count - sent).min(BATCH as u64) as usize;
        for (i, buf) in bufs.iter_mut().enumerate().take(n) {
            frames.write(((first + sent + i as u64) % flows) as u32, buf);
        }
        let mut iov: Vec<libc::iovec> = bufs[..n]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: FRAME_LEN,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: zeroed msghdr, then filled in.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (&raw mut sll).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: `msgs` points at live buffers for the call.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    ensure!(
                        since.elapsed() < Duration::from_secs(5),
                        "the AF_PACKET socket sent nothing for 5 s ({sent} of {count}): {e}"
                    );
                    continue;
                }
                _ => bail!("sendmmsg on the AF_PACKET socket: {e}"),
            }
        }
        idle_since = None;
        sent += rc as u64;
    }
    Ok(Sent { frames: sent })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use vxdp_testkit::packet::{Frame, Packet};

    use super::*;
    use crate::wire::{OFF_UDP_DPORT, OFF_UDP_SPORT};

    fn template(src: SocketAddrV4, dst: SocketAddrV4) -> [u8; FRAME_LEN] {
        let payload = [0u8; FRAME_LEN - 14 - 20 - 8];
        Packet::udp(src, dst)
            .macs([0x52, 0x54, 0, 0, 0, 0x0a], [0x52, 0x54, 0, 0, 1, 1])
            .payload(&payload)
            .build()
            .try_into()
            .unwrap()
    }

    /// The incremental checksum updates give what a receiver computes,
    /// across the port range and into the next destination.
    #[test]
    fn flow_frames_have_correct_headers_and_checksums() {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 122, 10), 1024);
        let dst = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 9);
        let frames = FlowFrames {
            template: template(src, dst),
            flows: 70_000,
            ports_per_dst: 64_512,
            port_off: OFF_UDP_SPORT,
        };
        let mut out = [0u8; FRAME_LEN];
        for n in [0u32, 1, 2, 64_511, 64_512, 64_513, 69_999] {
            frames.write(n, &mut out);
            let f = Frame(&out);
            f.check_checksums(false)
                .unwrap_or_else(|e| panic!("frame {n}: {e}"));
            let (port, dst) = (
                1024 + n % 64_512,
                Ipv4Addr::new(203, 0, 113, 10 + (n / 64_512) as u8),
            );
            assert_eq!((u32::from(f.src_port()), f.dst()), (port, dst), "frame {n}");
            assert_eq!(f.dst_port(), 9);
        }
        // Replies: the destination port varies.
        let reply = FlowFrames {
            template: template(
                dst,
                SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 10_000),
            ),
            flows: 3,
            ports_per_dst: 64_512,
            port_off: OFF_UDP_DPORT,
        };
        for n in 0..3u16 {
            reply.write(u32::from(n), &mut out);
            let f = Frame(&out);
            f.check_checksums(false)
                .unwrap_or_else(|e| panic!("reply frame {n}: {e}"));
            assert_eq!((f.src_port(), f.dst_port()), (9, 10_000 + n));
        }
    }

    #[test]
    fn chunks_hold_whole_flow_cycles_when_small() {
        assert_eq!(chunks_for(1), RING);
        assert_eq!(chunks_for(10_000), 10_000);
        assert_eq!(chunks_for(3_000), 6_000);
        assert_eq!(chunks_for(1_000_000), RING);
        for flows in 1..=MAX_CHUNKS + 1 {
            assert!(chunks_for(flows) <= MAX_CHUNKS, "{flows} flows");
        }
    }
}

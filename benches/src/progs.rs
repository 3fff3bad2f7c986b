//! The harness's eBPF programs (`benches/ebpf`) on the userspace side:
//! loading, the generator's configuration and live-frame runs, the sink's
//! counter, and running work on a thread inside a network namespace pinned
//! to one CPU.

use std::{
    ffi::CString,
    fs::File,
    net::SocketAddrV4,
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray, PerCpuValues},
    programs::{
        SchedClassifier, TcAttachType, TestRun, TestRunAttrs, TestRunOptions, Xdp,
        xdp::{XdpLinkId, XdpMode},
    },
    util::nr_cpus,
};
use vxdp_tests::progtest::{Mac, Packet};

use crate::wire::{CeilingConfig, FRAME_LEN, GenConfig, VARY_DST_PORT, VARY_SRC_PORT};

// SAFETY: #[repr(C)], explicitly padded (sizes asserted in wire.rs), every
// bit pattern valid.
unsafe impl aya::Pod for GenConfig {}
unsafe impl aya::Pod for CeilingConfig {}

pub const PROG_GEN: &str = "bench_gen";
pub const PROG_SINK: &str = "bench_sink";
pub const PROG_CEILING_XDP: &str = "bench_ceiling_xdp";
pub const PROG_CEILING_TC: &str = "bench_ceiling_tc";
pub const PROG_EMPTY_XDP: &str = "bench_empty_xdp";

pub const XDP_DROP: u32 = 1;
pub const XDP_TX: u32 = 3;

/// Frames per live-frame batch (the kernel's default).
const LIVE_BATCH: u32 = 64;

fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vxdp-bench-ebpf"))
}

/// Runs `f` on a thread that entered network namespace `ns` (and is pinned
/// to `cpu` when given). Only that thread changes namespace.
pub fn in_netns<T: Send>(
    ns: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::scope(|s| {
        // Named so that `perf report --comm vxdp-bench-ns` finds the work.
        std::thread::Builder::new()
            .name("vxdp-bench-ns".into())
            .spawn_scoped(s, move || -> Result<T> {
                let file =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "setns {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                if let Some(cpu) = cpu {
                    pin_to_cpu(cpu)?;
                }
                f()
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
    })
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The ifindex of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {name} in this namespace"),
        i => Ok(i),
    }
}

/// What the generator sends: a 64-byte UDP frame per packet, flows cycling.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub flows: u32,
    /// Distinct ports per destination address before the next address.
    pub ports_per_dst: u32,
    /// Vary the destination port (replies to NAT ports) instead of the
    /// source port.
    pub vary_dst_port: bool,
}

impl Traffic {
    /// The frame of flow 0.
    pub fn frame(&self) -> Vec<u8> {
        let payload = [0u8; FRAME_LEN - 14 - 20 - 8];
        let f = Packet::udp(self.src, self.dst)
            .macs(self.eth_src, self.eth_dst)
            .payload(&payload)
            .build();
        assert_eq!(f.len(), FRAME_LEN);
        f
    }

    fn config(&self, verdict: u32) -> GenConfig {
        let mut frame = [0u8; 64];
        frame[..FRAME_LEN].copy_from_slice(&self.frame());
        GenConfig {
            frame,
            flows: self.flows.max(1),
            ports_per_dst: self.ports_per_dst.max(1),
            vary: if self.vary_dst_port {
                VARY_DST_PORT
            } else {
                VARY_SRC_PORT
            },
            verdict,
        }
    }
}

/// One loaded copy of the harness's programs (one per topology, so their
/// configuration and counters are the topology's own).
pub struct BenchProgs {
    ebpf: Ebpf,
    /// XDP attachments: (namespace, interface, program, link).
    links: Vec<(String, String, &'static str, XdpLinkId)>,
}

/// How long a generator run took: wall clock, and the CPU time spent on it
/// (the generating thread, which also runs the softirq work its frames
/// cause, plus that CPU's ksoftirqd when the kernel deferred work to it).
/// On a shared machine the CPU time excludes time other tasks took.
#[derive(Clone, Copy, Debug)]
pub struct RunTime {
    pub wall: Duration,
    pub cpu: Duration,
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The pid of `ksoftirqd/<cpu>`.
fn ksoftirqd(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// utime + stime of `pid` (clock ticks of 1/100 s).
fn task_time(pid: Option<u32>) -> Duration {
    let ticks = pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

impl BenchProgs {
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(object()).context("loading the benchmark's eBPF object")?;
        for name in [PROG_GEN, PROG_SINK, PROG_CEILING_XDP, PROG_EMPTY_XDP] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("loading {name} (verifier)"))?;
        }
        let p: &mut SchedClassifier = ebpf
            .program_mut(PROG_CEILING_TC)
            .context("no program bench_ceiling_tc")?
            .try_into()?;
        p.load().context("loading bench_ceiling_tc (verifier)")?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
        })
    }

    /// Attaches XDP program `prog` in native mode to `iface` in `ns` (no-op
    /// when already attached there).
    pub fn attach(&mut self, prog: &'static str, ns: &str, iface: &str) -> Result<()> {
        if self
            .links
            .iter()
            .any(|(n, f, p, _)| n == ns && f == iface && *p == prog)
        {
            return Ok(());
        }
        let p: &mut Xdp = self.ebpf.program_mut(prog).context("program")?.try_into()?;
        let id = in_netns(ns, None, || {
            p.attach(ifindex(iface)?, XdpMode::Driver)
                .with_context(|| format!("attaching {prog} to {iface} in {ns} (native XDP)"))
        })?;
        self.links
            .push((ns.to_string(), iface.to_string(), prog, id));
        Ok(())
    }

    /// Attaches TC program `prog` at ingress of `iface` in `ns` (a TCX link,
    /// held until this object is dropped).
    pub fn attach_tc(&mut self, prog: &'static str, ns: &str, iface: &str) -> Result<()> {
        let p: &mut SchedClassifier = self.ebpf.program_mut(prog).context("program")?.try_into()?;
        in_netns(ns, None, || {
            p.attach(ifindex(iface)?, TcAttachType::Ingress)
                .with_context(|| format!("attaching {prog} to {iface} in {ns} (TC ingress)"))
        })?;
        Ok(())
    }

    /// Detaches `prog` from `iface` in `ns` if attached.
    pub fn detach(&mut self, prog: &'static str, ns: &str, iface: &str) -> Result<()> {
        while let Some(i) = self
            .links
            .iter()
            .position(|(n, f, p, _)| n == ns && f == iface && *p == prog)
        {
            let (_, _, _, id) = self.links.remove(i);
            let p: &mut Xdp = self.ebpf.program_mut(prog).context("program")?.try_into()?;
            p.detach(id)
                .with_context(|| format!("detaching {prog} from {iface}"))?;
        }
        Ok(())
    }

    pub fn set_ceiling(&mut self, cfg: CeilingConfig) -> Result<()> {
        let mut map: Array<_, CeilingConfig> = Array::try_from(
            self.ebpf
                .map_mut("CEILING_CONFIG")
                .context("CEILING_CONFIG")?,
        )?;
        map.set(0, &cfg, 0)?;
        Ok(())
    }

    /// Configures the generator and restarts its sequence at flow 0.
    pub fn set_traffic(&mut self, t: &Traffic, verdict: u32) -> Result<()> {
        let mut map: Array<_, GenConfig> =
            Array::try_from(self.ebpf.map_mut("GEN_CONFIG").context("GEN_CONFIG")?)?;
        map.set(0, &t.config(verdict), 0)?;
        self.reset_sequence()
    }

    /// Restarts the generator's sequence at flow 0.
    pub fn reset_sequence(&mut self) -> Result<()> {
        let mut seq: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut("GEN_SEQ").context("GEN_SEQ")?)?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?.get() as usize;
        let zero = PerCpuValues::try_from(vec![0u64; cpus])?;
        seq.set(0, zero, 0)?;
        Ok(())
    }

    /// Frames the sink has counted so far (all CPUs).
    pub fn sink_count(&self) -> Result<u64> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK_COUNT").context("SINK_COUNT")?)?;
        Ok(map.get(&0, 0)?.iter().sum())
    }

    pub fn xdp(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    pub fn tc(&self, name: &str) -> Result<&SchedClassifier> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    /// Generates `count` frames as if received on `iface` in `ns` and sent
    /// back out of it (`XDP_TX`), on a thread pinned to `cpu`; everything
    /// the frames cause (forwarding, NAT, the sink) runs on that CPU in the
    /// same call.
    pub fn generate(
        &self,
        ns: &str,
        iface: &str,
        count: u32,
        cpu: usize,
        traffic: &Traffic,
    ) -> Result<RunTime> {
        let p = self.xdp(PROG_GEN)?;
        let frame = traffic.frame();
        let softirqd = ksoftirqd(cpu);
        in_netns(ns, Some(cpu), || {
            let ifindex = ifindex(iface)?;
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex.
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            if std::env::var_os("VXDP_BENCH_DEBUG").is_some() {
                let mut out = vec![0u8; 256];
                let r = p.test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::new()
                })?;
                eprintln!(
                    "[debug] gen on {iface}: verdict {} frame {:02x?}",
                    r.return_value,
                    &out[..r.data_size_out as usize]
                );
            }
            let (soft0, cpu0) = (task_time(softirqd), thread_cpu_time());
            let started = Instant::now();
            p.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
                ..TestRunOptions::new()
            })
            .with_context(|| {
                format!("BPF_PROG_TEST_RUN (live frames) of {PROG_GEN} on {iface} in {ns}")
            })?;
            let wall = started.elapsed();
            let cpu = thread_cpu_time() - cpu0 + (task_time(softirqd) - soft0);
            ensure!(
                wall > Duration::ZERO && cpu > Duration::ZERO,
                "no time elapsed"
            );
            Ok(RunTime { wall, cpu })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vxdp_tests::progtest::Frame;

    use super::*;

    /// Runs the generator once on a copy of `traffic`'s frame (no live
    /// frames: the output comes back) and returns what it wrote.
    fn generate_one(progs: &BenchProgs, traffic: &Traffic) -> Vec<u8> {
        let p = progs.xdp(PROG_GEN).unwrap();
        let frame = traffic.frame();
        let mut out = vec![0u8; 256];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN of bench_gen (needs root)");
        assert_eq!(r.return_value, XDP_TX, "generator verdict");
        out.truncate(r.data_size_out as usize);
        out
    }

    /// The generator's incremental checksum updates give what a receiver
    /// computes, across the port range and into the next destination.
    #[test]
    fn generated_frames_have_correct_headers_and_checksums() {
        // One CPU, so the per-CPU sequence is the one this thread advances.
        pin_to_cpu(0).unwrap();
        let mut progs = BenchProgs::load().expect("loading the benchmark programs (needs root)");
        let traffic = Traffic {
            eth_src: [0x52, 0x54, 0, 0, 0, 0x0a],
            eth_dst: [0x52, 0x54, 0, 0, 1, 1],
            src: SocketAddrV4::new(Ipv4Addr::new(192, 168, 122, 10), 1024),
            dst: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 9),
            flows: 70_000,
            ports_per_dst: 64_512,
            vary_dst_port: false,
        };
        progs.set_traffic(&traffic, XDP_TX).unwrap();
        for n in 0..64_514u32 {
            let out = generate_one(&progs, &traffic);
            if ![0, 1, 2, 64_511, 64_512, 64_513].contains(&n) {
                continue;
            }
            let f = Frame(&out);
            f.check_checksums(false)
                .unwrap_or_else(|e| panic!("frame {n}: {e}"));
            let (port, dst) = (
                1024 + n % 64_512,
                Ipv4Addr::new(203, 0, 113, 10 + (n / 64_512) as u8),
            );
            assert_eq!((f.src_port() as u32, f.dst()), (port, dst), "frame {n}");
            assert_eq!(
                (f.eth_src(), f.eth_dst(), f.dst_port()),
                (traffic.eth_src, traffic.eth_dst, 9)
            );
        }

        // Replies: the destination port varies.
        let reply = Traffic {
            src: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 9),
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 10_000),
            flows: 3,
            vary_dst_port: true,
            ..traffic
        };
        progs.set_traffic(&reply, XDP_TX).unwrap();
        for n in 0..4u16 {
            let out = generate_one(&progs, &reply);
            let f = Frame(&out);
            f.check_checksums(false)
                .unwrap_or_else(|e| panic!("reply frame {n}: {e}"));
            assert_eq!(
                (f.src_port(), f.dst_port()),
                (9, 10_000 + n % 3),
                "reply frame {n}"
            );
        }
    }
}

//! The harness's eBPF programs (`benches/ebpf`) on the userspace side:
//! loading, the sink's counter, the ceiling's configuration; the generator's
//! runs (a socket of [`crate::generator`]) timed on a thread inside a network
//! namespace pinned to one CPU.

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
    maps::{Array, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp,
        xdp::{XdpLinkId, XdpMode},
    },
};
use vxdp_testkit::packet::{Mac, Packet};

use crate::{
    generator::{self, FlowFrames},
    wire::{CeilingConfig, FRAME_LEN, OFF_UDP_DPORT, OFF_UDP_SPORT},
};

// SAFETY: #[repr(C)], explicitly padded (size asserted in wire.rs), every
// bit pattern valid.
unsafe impl aya::Pod for CeilingConfig {}

pub const PROG_SINK: &str = "bench_sink";
pub const PROG_CEILING_XDP: &str = "bench_ceiling_xdp";
pub const PROG_CEILING_TC: &str = "bench_ceiling_tc";
pub const PROG_EMPTY_XDP: &str = "bench_empty_xdp";

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

    /// The generator's frames for every flow.
    pub fn frames(&self) -> FlowFrames {
        FlowFrames {
            template: self.frame().try_into().expect("FRAME_LEN bytes"),
            flows: self.flows.max(1),
            ports_per_dst: self.ports_per_dst.max(1),
            port_off: if self.vary_dst_port {
                OFF_UDP_DPORT
            } else {
                OFF_UDP_SPORT
            },
        }
    }
}

/// One loaded copy of the harness's programs (one per topology, so their
/// configuration and counters are the topology's own).
pub struct BenchProgs {
    ebpf: Ebpf,
    /// XDP attachments: (namespace, interface, program, link).
    links: Vec<(String, String, &'static str, XdpLinkId)>,
    /// The generator's socket kind.
    generator: generator::Kind,
    /// What the generator sends, and the number of its next packet.
    traffic: Option<FlowFrames>,
    seq: u64,
    /// Generator sockets opened so far: (namespace, interface, socket).
    sockets: Vec<(String, String, generator::Socket)>,
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

/// CPU time spent on a run from now on: the calling thread's, plus that of
/// the softirq thread of the CPU it is pinned to (the kernel defers
/// network work there under load). On a shared machine it leaves out the
/// time other tasks took.
pub struct CpuClock {
    softirqd: Option<u32>,
    soft0: Duration,
    cpu0: Duration,
}

impl CpuClock {
    /// Starts on the calling thread, pinned to `cpu`.
    pub fn start(cpu: usize) -> Self {
        let softirqd = ksoftirqd(cpu);
        Self {
            softirqd,
            soft0: task_time(softirqd),
            cpu0: thread_cpu_time(),
        }
    }

    /// CPU time since [`CpuClock::start`]; call it on the same thread.
    pub fn elapsed(&self) -> Duration {
        thread_cpu_time() - self.cpu0 + (task_time(self.softirqd) - self.soft0)
    }
}

impl BenchProgs {
    pub fn load(generator: generator::Kind) -> Result<Self> {
        let mut ebpf = Ebpf::load(object()).context("loading the benchmark's eBPF object")?;
        for name in [PROG_SINK, PROG_CEILING_XDP, PROG_EMPTY_XDP] {
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
            generator,
            traffic: None,
            seq: 0,
            sockets: Vec::new(),
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

    pub fn generator(&self) -> generator::Kind {
        self.generator
    }

    /// Sets what the generator sends and restarts its sequence at flow 0.
    pub fn set_traffic(&mut self, t: &Traffic) {
        self.traffic = Some(t.frames());
        self.seq = 0;
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

    /// Sends the next `count` frames of the traffic set last out of
    /// `iface` in `ns`, from a thread pinned to `cpu`. The socket is opened
    /// on first use and kept; the run ends once the kernel has taken every
    /// frame. Everything a frame causes on the way (forwarding, NAT, the
    /// sink) runs on that CPU: in the sending thread's system call, or in
    /// that CPU's softirq thread when the kernel defers it there.
    pub fn generate(&mut self, ns: &str, iface: &str, count: u32, cpu: usize) -> Result<RunTime> {
        let frames = self
            .traffic
            .clone()
            .context("no traffic set for the generator")?;
        let (kind, first) = (self.generator, self.seq);
        let i = match self
            .sockets
            .iter()
            .position(|(n, f, _)| n == ns && f == iface)
        {
            Some(i) => i,
            None => {
                let socket = in_netns(ns, None, || {
                    generator::open(kind, ifindex(iface)?).with_context(|| {
                        format!("opening the {} generator on {iface} in {ns}", kind.name())
                    })
                })?;
                self.sockets.push((ns.into(), iface.into(), socket));
                self.sockets.len() - 1
            }
        };
        let socket = &mut self.sockets[i].2;
        let time = in_netns(ns, Some(cpu), || {
            let clock = CpuClock::start(cpu);
            let started = Instant::now();
            let sent = socket
                .send(&frames, first, u64::from(count))
                .with_context(|| format!("{} generator on {iface} in {ns}", kind.name()))?;
            let wall = started.elapsed();
            let cpu = clock.elapsed();
            ensure!(
                sent.frames == u64::from(count),
                "the generator sent {} of {count} frames",
                sent.frames
            );
            ensure!(
                wall > Duration::ZERO && cpu > Duration::ZERO,
                "no time elapsed"
            );
            Ok(RunTime { wall, cpu })
        })?;
        self.seq += u64::from(count);
        Ok(time)
    }
}

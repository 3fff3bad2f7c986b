//! A real virtual machine for end-to-end tests: QEMU (TCG) boots the tiny
//! guest `cargo xtask setup` builds in `target/vm-guest/` (Debian's cloud
//! kernel, virtio-net, busybox), with its virtio-net NIC on a tap opened the
//! way libvirt has QEMU open it (`-netdev tap,ifname=…,script=no,
//! downscript=no,vhost=off`).
//!
//! The guest's init (tests/data/vm/init) logs the kernel to ttyS0 (a file,
//! shown when something fails) and serves ttyS1 as a command channel on
//! QEMU's stdin/stdout: [`Vm::run`] writes `ID COMMAND`, the guest answers
//! `@@BEGIN ID`, the output, `@@END ID STATUS`. Steps run one at a time, so
//! results are read deterministically, each with its own timeout.
//!
//! QEMU runs inside a network namespace (`ip netns exec`, which execs it,
//! so the child is QEMU itself) and is killed and reaped on drop, whatever
//! the test's outcome.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::Netns;

/// The guest image `cargo xtask setup` builds.
pub struct VmImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl VmImage {
    /// `$VXDP_VM_IMAGE` or `target/vm-guest`; fails naming the way to build
    /// it when it is missing.
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os("VXDP_VM_IMAGE") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm-guest"),
        };
        let image = Self {
            kernel: dir.join("vmlinuz"),
            initramfs: dir.join("initramfs.gz"),
        };
        for f in [&image.kernel, &image.initramfs] {
            ensure!(
                f.is_file(),
                "the real-VM guest image is missing ({} not found): run `cargo xtask setup` \
                 (it builds target/vm-guest), or point VXDP_VM_IMAGE at a directory holding vmlinuz and initramfs.gz",
                f.display()
            );
        }
        Ok(image)
    }
}

/// What a guest command printed (stdout and stderr) and its exit status.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    pub status: i32,
    pub output: String,
}

/// The DHCP lease the guest's udhcpc script reported.
#[derive(Debug, Clone)]
pub struct Lease {
    pub ip: String,
    pub prefix: String,
    pub router: String,
    pub dns: String,
    pub server: String,
}

/// A running guest.
pub struct Vm {
    /// QEMU, when this harness started it ([`Vm::boot`]); libvirt's
    /// domains ([`Vm::attach`]) are stopped through libvirt.
    child: Option<Child>,
    stdin: Box<dyn Write + Send>,
    lines: Receiver<String>,
    console: PathBuf,
    qemu_stderr: PathBuf,
    /// Every line sent on and read from the command channel, timed (next
    /// to the console log), for the diagnostics of a command that got no
    /// answer.
    transcript: PathBuf,
    started: Instant,
    next_id: u32,
    /// The tap the NIC sits on (in the namespace QEMU runs in).
    pub tap: String,
    pub mac: String,
}

/// Virtio-net feature bits (virtio spec 1.2 §5.1.3) worth naming in a
/// report of what the guest negotiated.
/// How long a quick guest shell command (`cat`, `ip addr`, starting a
/// background job) may take to answer. It answers in milliseconds on an idle
/// machine; under TCG on a loaded CI machine, with the guest busy receiving,
/// its console can be starved for many seconds, and a failure here must mean
/// a hung guest, not a slow one. Waiting longer costs nothing when it answers.
pub const GUEST_CMD: Duration = Duration::from_secs(45);

const VIRTIO_NET_FEATURES: &[(usize, &str)] = &[
    (0, "CSUM (guest may send partial checksums)"),
    (1, "GUEST_CSUM (guest accepts partial checksums)"),
    (2, "CTRL_GUEST_OFFLOADS"),
    (5, "MAC"),
    (7, "GUEST_TSO4"),
    (8, "GUEST_TSO6"),
    (9, "GUEST_ECN"),
    (10, "GUEST_UFO"),
    (11, "HOST_TSO4 (guest may send TSO frames)"),
    (12, "HOST_TSO6"),
    (13, "HOST_ECN"),
    (14, "HOST_UFO"),
    (15, "MRG_RXBUF"),
    (16, "STATUS"),
    (17, "CTRL_VQ"),
    (22, "MQ"),
    (29, "EVENT_IDX"),
    (32, "VERSION_1"),
    (54, "GUEST_USO4"),
    (55, "GUEST_USO6"),
    (56, "HOST_USO"),
];

impl Vm {
    /// Boots the guest in `ns` with its NIC on `tap` (which must exist
    /// there) and MAC `mac`; waits for the command channel. `logs` is a
    /// directory for the console and QEMU's stderr.
    pub fn boot(ns: &Netns, tap: &str, mac: &str, logs: &Path, within: Duration) -> Result<Self> {
        let image = VmImage::locate()?;
        std::fs::create_dir_all(logs)?;
        let console = logs.join(format!("{tap}-console.log"));
        let qemu_stderr = logs.join(format!("{tap}-qemu.stderr"));
        let stderr_file = std::fs::File::create(&qemu_stderr)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "qemu-system-x86_64"])
            .args(["-nodefaults", "-no-user-config", "-machine", "pc,accel=tcg", "-cpu", "max", "-m", "256"])
            .args(["-display", "none", "-no-reboot", "-monitor", "none"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .arg("-chardev")
            .arg(format!("file,id=console,path={}", console.display()))
            .args(["-serial", "chardev:console"])
            .args(["-chardev", "stdio,id=cmd,signal=off", "-serial", "chardev:cmd"])
            .args(["-netdev", &format!("tap,id=net0,ifname={tap},script=no,downscript=no,vhost=off")])
            // romfile=: no iPXE option ROM, the kernel is booted directly.
            .args(["-device", &format!("virtio-net-pci,netdev=net0,mac={mac},romfile=")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .context("starting qemu-system-x86_64 through `ip netns exec` (is qemu-system-x86 installed? `cargo xtask setup` installs it)")?;
        let stdin = child.stdin.take().context("QEMU's stdin")?;
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        Self::from_channel(
            Some(child),
            Box::new(stdin),
            stdout,
            console,
            qemu_stderr,
            tap,
            mac,
            within,
        )
    }

    /// Takes over the command channel of a guest someone else started
    /// (libvirt: a `<serial type='unix'>` on ttyS1 connecting to a socket
    /// the test listens on), whose console log is `console` and QEMU's log
    /// `qemu_log`; waits for the guest's `@@READY`. The NIC with `mac` is
    /// on `tap`.
    pub fn attach(
        channel: std::os::unix::net::UnixStream,
        console: &Path,
        qemu_log: &Path,
        tap: &str,
        mac: &str,
        within: Duration,
    ) -> Result<Self> {
        let reader = channel.try_clone()?;
        Self::from_channel(
            None,
            Box::new(channel),
            reader,
            console.to_path_buf(),
            qemu_log.to_path_buf(),
            tap,
            mac,
            within,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn from_channel(
        child: Option<Child>,
        stdin: Box<dyn Write + Send>,
        stdout: impl std::io::Read + Send + 'static,
        console: PathBuf,
        qemu_stderr: PathBuf,
        tap: &str,
        mac: &str,
        within: Duration,
    ) -> Result<Self> {
        let (tx, lines) = channel();
        let transcript = console.with_file_name(format!("{tap}-channel.log"));
        let started = Instant::now();
        let log = std::fs::File::create(&transcript)
            .with_context(|| format!("creating {}", transcript.display()))?;
        std::thread::spawn(move || {
            let mut log = log;
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        let _ = writeln!(log, "{:9.3} < {line}", started.elapsed().as_secs_f64());
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let vm = Self {
            child,
            stdin,
            lines,
            console,
            qemu_stderr,
            transcript,
            started,
            next_id: 0,
            tap: tap.into(),
            mac: mac.into(),
        };
        let start = Instant::now();
        loop {
            let line = vm
                .next_line(start + within)
                .with_context(|| format!("waiting for the guest to boot (within {within:?})"))?;
            if let Some(rest) = line.strip_prefix("@@READY ") {
                eprintln!(
                    "[vm {tap}] guest up after {:.1} s: {rest}",
                    start.elapsed().as_secs_f64()
                );
                ensure!(
                    rest.contains(&format!("eth0={mac}")),
                    "the guest's eth0 is not the NIC with MAC {mac}: {rest}\n{}",
                    vm.diagnostics()
                );
                return Ok(vm);
            }
        }
    }

    fn next_line(&self, deadline: Instant) -> Result<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => {
                bail!("no answer from the guest in time\n{}", self.diagnostics())
            }
            Err(RecvTimeoutError::Disconnected) => bail!(
                "QEMU's output ended (did QEMU exit?)\n{}",
                self.diagnostics()
            ),
        }
    }

    /// The end of the kernel console and QEMU's stderr, for error messages.
    pub fn diagnostics(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        format!(
            "--- guest console ({}), last lines:\n{}\n--- QEMU log:\n{}\n--- command channel ({}, seconds since boot), last lines:\n{}",
            self.console.display(),
            tail(&self.console),
            tail(&self.qemu_stderr),
            self.transcript.display(),
            tail(&self.transcript)
        )
    }

    /// Runs one shell command line in the guest (stdin /dev/null) and
    /// returns its output and status; fails when no answer comes `within`.
    pub fn run(&mut self, cmd: &str, within: Duration) -> Result<GuestOutput> {
        ensure!(!cmd.contains('\n'), "guest commands are one line: {cmd:?}");
        self.next_id += 1;
        let id = self.next_id;
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.transcript)
        {
            let _ = writeln!(
                log,
                "{:9.3} > {id} {cmd}",
                self.started.elapsed().as_secs_f64()
            );
        }
        writeln!(self.stdin, "{id} {cmd}").context("writing to the guest's command channel")?;
        self.stdin.flush()?;
        let deadline = Instant::now() + within;
        let begin = format!("@@BEGIN {id}");
        let end = format!("@@END {id} ");
        let mut output = String::new();
        let mut started = false;
        loop {
            let line = self.next_line(deadline).with_context(|| {
                format!("guest command `{cmd}` (timeout {within:?}); output so far:\n{output}")
            })?;
            if line == begin {
                started = true;
            } else if let Some(status) = line.strip_prefix(&end) {
                return Ok(GuestOutput {
                    status: status.trim().parse().context("status")?,
                    output,
                });
            } else if started {
                output.push_str(&line);
                output.push('\n');
            }
        }
    }

    /// [`Vm::run`], failing unless the command exits 0.
    pub fn check(&mut self, cmd: &str, within: Duration) -> Result<String> {
        let out = self.run(cmd, within)?;
        ensure!(
            out.status == 0,
            "guest command `{cmd}` exited with {}:\n{}",
            out.status,
            out.output
        );
        Ok(out.output)
    }

    /// Runs busybox udhcpc on eth0 and returns the lease it configured.
    pub fn dhcp(&mut self) -> Result<Lease> {
        let out = self.run(
            "udhcpc -i eth0 -f -q -n -t 5 -T 2 -s /etc/udhcpc.script",
            Duration::from_secs(30),
        )?;
        ensure!(
            out.status == 0,
            "the guest got no DHCP lease (udhcpc exited {}):\n{}",
            out.status,
            out.output
        );
        let line = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix("@@LEASE "))
            .with_context(|| {
                format!(
                    "udhcpc succeeded but its script reported no lease:\n{}",
                    out.output
                )
            })?;
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_string()
        };
        Ok(Lease {
            ip: field("ip"),
            prefix: field("mask"),
            router: field("router"),
            dns: field("dns"),
            server: field("server"),
        })
    }

    /// The guest kernel's count of TCP segments dropped for a bad checksum
    /// (`Tcp: InCsumErrors` in /proc/net/snmp).
    pub fn tcp_checksum_errors(&mut self) -> Result<u64> {
        let snmp = self.check("grep '^Tcp:' /proc/net/snmp", GUEST_CMD)?;
        let mut rows = snmp
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        let (names, values) = (
            rows.next().context("no Tcp header")?,
            rows.next().context("no Tcp values")?,
        );
        let i = names
            .iter()
            .position(|n| *n == "InCsumErrors")
            .context("no InCsumErrors in /proc/net/snmp")?;
        Ok(values.get(i).context("short Tcp row")?.parse()?)
    }

    /// The virtio-net features the guest's driver negotiated, by name (from
    /// /sys/bus/virtio/devices/*/features, one character per bit).
    pub fn negotiated_features(&mut self) -> Result<Vec<String>> {
        let out = self.check(
            "for d in /sys/bus/virtio/devices/*; do [ \"$(cat $d/device)\" = 0x0001 ] && cat $d/features; done",
            GUEST_CMD,
        )?;
        let bits = out
            .lines()
            .next()
            .context("no virtio network device in the guest's sysfs")?
            .trim();
        ensure!(
            bits.chars().all(|c| c == '0' || c == '1') && !bits.is_empty(),
            "unexpected features string {bits:?}"
        );
        Ok(VIRTIO_NET_FEATURES
            .iter()
            .filter(|(bit, _)| bits.as_bytes().get(*bit) == Some(&b'1'))
            .map(|(_, name)| (*name).to_string())
            .collect())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// MD5 of `data` as lowercase hex, by the same tool the guest uses (busybox
/// md5sum there, coreutils md5sum here).
pub fn md5_hex(data: &[u8]) -> Result<String> {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting md5sum")?;
    let mut stdin = child.stdin.take().context("md5sum stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("md5sum writer panicked"))??;
    ensure!(out.status.success(), "md5sum failed");
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("md5sum printed nothing")?
        .to_string())
}

/// The first word of the guest's `md5sum FILE` output line.
pub fn md5_of_output(output: &str) -> Result<String> {
    output
        .lines()
        .find_map(|l| {
            let w = l.split_whitespace().next()?;
            (w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit())).then(|| w.to_string())
        })
        .with_context(|| format!("no md5 sum in {output:?}"))
}

/// A TCP receiver in `ns` that reads exactly `len` bytes from the first
/// client, then closes. `received` counts bytes as they arrive, so a caller
/// can tell a stalled transfer from a slow one.
pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<Result<(Vec<u8>, SocketAddr)>>,
}

impl Sink {
    pub fn start(ns: &Netns, bind: &str, len: usize) -> Result<Self> {
        let bind = bind.to_string();
        let listener = ns.enter(move || TcpListener::bind(bind))??;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let handle = std::thread::spawn(move || -> Result<(Vec<u8>, SocketAddr)> {
            use std::io::Read as _;
            let (mut s, peer) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                let n = s.read(&mut buf[got..])?;
                ensure!(n > 0, "the sender closed after {got} of {len} bytes");
                got += n;
                counter.store(got, Ordering::Relaxed);
            }
            Ok((buf, peer))
        });
        Ok(Self {
            addr,
            received,
            handle,
        })
    }

    /// Waits until `len` bytes arrived; fails when nothing arrives for
    /// `stall` (then the receiving thread is left to time out by itself).
    pub fn wait(self, len: usize, stall: Duration) -> Result<(Vec<u8>, SocketAddr)> {
        let mut last = (0, Instant::now());
        while !self.handle.is_finished() {
            let now = self.received.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > stall {
                bail!("transfer stalled: {now} of {len} bytes arrived, then nothing for {stall:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("sink thread panicked"))?
    }
}

/// A TCP sender in `ns`: the first client to connect to the returned
/// address gets `payload`, then the connection is closed.
pub fn source(ns: &Netns, bind: &str, payload: Vec<u8>) -> Result<SocketAddr> {
    let bind = bind.to_string();
    let listener = ns.enter(move || TcpListener::bind(bind))??;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || -> Result<()> {
        let (mut s, _) = listener.accept()?;
        // Bounded, so a stalled transfer ends this thread too.
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(&payload)?;
        Ok(())
    });
    Ok(addr)
}

/// Connects from `ns` to `addr`, retrying for `within` (a guest's listener
/// may take a moment to start), sends `payload` and closes.
pub fn send_to(ns: &Netns, addr: SocketAddr, payload: Vec<u8>, within: Duration) -> Result<()> {
    let stream = ns.enter(move || -> Result<TcpStream> {
        let start = Instant::now();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => return Ok(s),
                Err(e) if start.elapsed() > within => bail!("connecting to {addr}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })??;
    std::thread::spawn(move || -> Result<()> {
        let mut stream = stream;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(&payload)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    Ok(())
}

impl Vm {
    /// Starts `cmd` in the background in the guest with its output going
    /// to `file`; [`Vm::wait_received`] follows it.
    pub fn start_receive(&mut self, cmd: &str, file: &str) -> Result<()> {
        self.check(
            &format!("rm -f {file} {file}.rc; ( {cmd} > {file} 2>{file}.err; echo $? > {file}.rc ) </dev/null >/dev/null 2>&1 &"),
            GUEST_CMD,
        )?;
        Ok(())
    }

    /// Polls `file`'s size until the command [`Vm::start_receive`] started
    /// ends; fails when the size stops growing for `stall` (and kills it).
    /// Returns (exit status, md5, size).
    pub fn wait_received(&mut self, file: &str, stall: Duration) -> Result<(i32, String, usize)> {
        const POLL: Duration = Duration::from_secs(20);
        let mut last = (usize::MAX, Instant::now());
        let mut unanswered = 0;
        loop {
            // A poll that takes long is not a stall: only a size that stops
            // growing is (`stall` is measured between answers). A poll that
            // gets no answer at all is asked again: CI twice saw a TCG
            // guest receiving a download leave a poll unanswered (10 s, then
            // 45 s) and answer the next command; six unanswered polls in a
            // row (two minutes) fail the wait, with the channel's transcript.
            let poll = format!("cat {file}.rc 2>/dev/null; echo size $(wc -c < {file})");
            let out = match self.check(&poll, POLL) {
                Ok(out) => {
                    unanswered = 0;
                    out
                }
                Err(e) if unanswered < 5 => {
                    unanswered += 1;
                    eprintln!(
                        "[vm {}] poll {unanswered} of {file} unanswered, asking again: {e:#}",
                        self.tap
                    );
                    continue;
                }
                Err(e) => {
                    return Err(e.context(format!("six polls of {file} in a row got no answer")));
                }
            };
            let size: usize = out
                .lines()
                .find_map(|l| l.strip_prefix("size "))
                .and_then(|s| s.trim().parse().ok())
                .with_context(|| format!("no size in {out:?}"))?;
            if let Some(rc) = out.lines().next().filter(|l| !l.starts_with("size ")) {
                let rc: i32 = rc
                    .trim()
                    .parse()
                    .with_context(|| format!("exit status {rc:?}"))?;
                let sum = md5_of_output(
                    &self.check(&format!("md5sum {file}"), Duration::from_secs(60))?,
                )?;
                return Ok((rc, sum, size));
            }
            if size != last.0 {
                last = (size, Instant::now());
            } else if last.1.elapsed() > stall {
                let err = self.run(&format!("cat {file}.err; killall nc; true"), GUEST_CMD)?;
                bail!(
                    "transfer into the guest stalled at {size} bytes (nothing more for {stall:?}) {}",
                    err.output.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

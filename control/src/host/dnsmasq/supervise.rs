//! Keeping one network's dnsmasq running without a daemon.
//!
//! `spawn` starts `vxdp dnsmasq-supervise NETWORK` in a new session (so its
//! process group holds the supervisor, dnsmasq, dnsmasq's script helper and
//! hook runs). The supervisor runs dnsmasq with `--keep-in-foreground` and,
//! when it exits for any reason, starts it again after a backoff that
//! doubles from 250 ms up to [`MAX_RESTART_DELAY`] and resets once dnsmasq
//! has run for a minute. `stop` sends SIGTERM to the whole session and
//! escalates to SIGKILL after a bounded wait.
//!
//! dnsmasq never outlives its supervisor. It starts as root and switches
//! to its own user, and the kernel clears a parent-death signal on any
//! credential change, so `PR_SET_PDEATHSIG` only covers its start. A guard
//! (`vxdp dnsmasq-guard`, one per dnsmasq run) holds a pidfd of dnsmasq and
//! the read end of a pipe whose only write end the supervisor holds: when
//! the supervisor ends, however it ends, the kernel closes that end, the
//! guard reads EOF and signals dnsmasq through the pidfd (never a reused
//! pid). The guard ends by itself when dnsmasq does.
//!
//! dnsmasq logs to its stderr (`log-facility=-`), which the supervisor
//! copies into `log`, rotated to `log.1` past [`LOG_LIMIT`] bytes, so the
//! state directory never grows without bound and dnsmasq's own words
//! (e.g. why it refused to start) are there without a syslog.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{DnsmasqError, Invocation, Paths, io_err};

/// Longest pause between a dnsmasq exit and its restart.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(4);
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(250);
/// dnsmasq running this long counts as healthy: the backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Size at which the log is rotated to `log.1`.
pub const LOG_LIMIT: u64 = 1 << 20;

/// The hidden verb the supervisor runs as.
pub const SUPERVISE_VERB: &str = "dnsmasq-supervise";
/// The hidden verb of the guard that ends dnsmasq when the supervisor dies.
pub const GUARD_VERB: &str = "dnsmasq-guard";
/// The guard's file descriptor for dnsmasq's pidfd (its stdin is the pipe).
const GUARD_PIDFD: libc::c_int = 3;

fn find_dnsmasq() -> Result<PathBuf, DnsmasqError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file())
        .ok_or(DnsmasqError::NotInstalled)
}

/// Process state from /proc/PID/stat: None when gone, Some('Z') for a zombie.
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid in `pid_file` if that process is alive and its command line
/// mentions `marker` (pid files can outlive their process, pids get reused).
pub fn live_pid(pid_file: &Path, marker: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    if pid <= 1 || !alive(pid) {
        return None;
    }
    cmdline(pid)
        .iter()
        .any(|a| a.contains(marker))
        .then_some(pid)
}

/// The network's supervisor, if it runs: the pid file's process must be
/// `vxdp … dnsmasq-supervise NETWORK` for this state directory, so a reused
/// pid (another network's supervisor, anything else) is never signalled.
pub fn live_supervisor(paths: &Paths, network: &str) -> Option<i32> {
    let pid = live_pid(&paths.supervisor_pid(), SUPERVISE_VERB)?;
    let args = cmdline(pid);
    let state_dir = paths.dir.parent()?.parent()?.to_string_lossy().into_owned();
    let ours = args.last().is_some_and(|a| a == network)
        && args.contains(&state_dir)
        && args.iter().any(|a| a == SUPERVISE_VERB);
    ours.then_some(pid)
}

/// What the supervisor writes to the log when dnsmasq exits.
const ENDED: &str = "dnsmasq ended";

/// Starts the supervisor in its own session; its output goes to the log.
/// Returns the log's length before the supervisor wrote anything.
pub fn spawn(inv: &Invocation, paths: &Paths, network: &str) -> Result<u64, DnsmasqError> {
    find_dnsmasq()?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())
        .map_err(io_err(&paths.log()))?;
    let log_start = log.metadata().map_err(io_err(&paths.log()))?.len();
    let log2 = log.try_clone().map_err(io_err(&paths.log()))?;
    let mut cmd = Command::new(&inv.exe);
    cmd.arg("--state-dir")
        .arg(&inv.state_dir)
        .arg("--bpffs")
        .arg(&inv.bpffs)
        .arg(SUPERVISE_VERB)
        // Never read as an option, whatever the name.
        .arg("--")
        .arg(network)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| DnsmasqError::Spawn {
        network: network.into(),
        source,
    })?;
    let pid = child.id();
    // Not waited for: the supervisor outlives this command (init reaps it).
    drop(child);
    super::write_file(&paths.supervisor_pid(), &format!("{pid}\n"), 0o644)?;
    Ok(log_start)
}

/// The log written since `offset`.
fn log_since(paths: &Paths, offset: u64) -> String {
    let log = fs::read(paths.log()).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
    String::from_utf8_lossy(&log[start..]).into_owned()
}

/// Waits until dnsmasq has written its pid file and runs; fails as soon as
/// the first dnsmasq exits (a configuration dnsmasq refuses, a port in use).
pub fn wait_ready(paths: &Paths, network: &str, log_start: u64) -> Result<i32, DnsmasqError> {
    let start = Instant::now();
    loop {
        if let Some(pid) = live_pid(&paths.pid(), "dnsmasq") {
            return Ok(pid);
        }
        let supervisor_up = live_supervisor(paths, network).is_some();
        let log = log_since(paths, log_start);
        if !supervisor_up || log.contains(ENDED) || start.elapsed() > READY_TIMEOUT {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("compile time options"))
                .collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n");
            return Err(DnsmasqError::NotReady {
                network: network.into(),
                secs: start.elapsed().as_secs(),
                log: paths.log(),
                tail,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends the supervisor's session (supervisor, dnsmasq, hook runs) and any
/// dnsmasq left by a supervisor that died; waits until they are gone.
pub fn stop(paths: &Paths, network: &str) -> Result<(), DnsmasqError> {
    let supervisor = live_supervisor(paths, network);
    let dnsmasq = live_pid(&paths.pid(), "dnsmasq");
    let conf = paths.conf().to_string_lossy().into_owned();
    // Only a dnsmasq started with our configuration file is ours to end.
    let dnsmasq = dnsmasq.filter(|pid| cmdline(*pid).iter().any(|a| a.contains(&conf)));
    let signal = |sig| {
        if let Some(pid) = supervisor {
            // The supervisor leads its session: -pid is its process group.
            unsafe { libc::kill(-pid, sig) };
        }
        if let Some(pid) = dnsmasq {
            unsafe { libc::kill(pid, sig) };
        }
    };
    let gone = || supervisor.is_none_or(|p| !alive(p)) && dnsmasq.is_none_or(|p| !alive(p));
    signal(libc::SIGTERM);
    let start = Instant::now();
    while !gone() && start.elapsed() < STOP_TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone() {
        signal(libc::SIGKILL);
        let start = Instant::now();
        while !gone() && start.elapsed() < STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !gone() {
            return Err(DnsmasqError::Stuck {
                network: network.into(),
                pid: supervisor.or(dnsmasq).unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// The log file, rotated past [`LOG_LIMIT`]; shared by the supervisor and
/// the threads copying dnsmasq's output.
struct Log {
    path: PathBuf,
    file: Option<File>,
}

impl Log {
    fn open(path: PathBuf) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        Log { path, file }
    }

    fn line(&mut self, text: &str) {
        self.line_bytes(text.as_bytes());
    }

    /// One line as the program wrote it (any bytes, not only UTF-8), with
    /// a newline added when it has none.
    fn line_bytes(&mut self, line: &[u8]) {
        if self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.len() >= LOG_LIMIT)
        {
            let _ = fs::rename(&self.path, self.path.with_extension("1"));
            *self = Log::open(self.path.clone());
        }
        if let Some(f) = &mut self.file {
            // Nowhere better to report a failing log write.
            let _ = f.write_all(line);
            if !line.ends_with(b"\n") {
                let _ = f.write_all(b"\n");
            }
        }
    }
}

/// Copies `src` into the log a line at a time until EOF. Bytes, not text:
/// a line that is not UTF-8 (a guest's host name, a hook's output) is kept
/// as written and does not stop the copy.
fn copy_lines(src: impl std::io::Read, log: &Mutex<Log>) {
    let mut src = BufReader::new(src);
    let mut line = Vec::new();
    loop {
        line.clear();
        match src.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                if let Ok(mut log) = log.lock() {
                    log.line_bytes(&line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Copies dnsmasq's output (and its lease hook's) into the log until EOF,
/// i.e. until dnsmasq and its script helper have both exited.
fn copy_output(src: impl std::io::Read + Send + 'static, log: Arc<Mutex<Log>>) {
    std::thread::spawn(move || copy_lines(src, &log));
}

/// A running guard and the write end of its pipe.
struct Guard {
    child: std::process::Child,
    _pipe: std::os::fd::OwnedFd,
}

impl Guard {
    /// Starts the guard of the dnsmasq process `pid` (a child of this
    /// supervisor, so the pid is still ours until we wait for it).
    fn spawn(state_dir: &Path, network: &str, pid: u32) -> std::io::Result<Guard> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let last = || std::io::Error::last_os_error();
        // SAFETY: plain syscalls; each fd returned is owned exactly once.
        let (pidfd, read, write) = unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
            if pidfd < 0 {
                return Err(last());
            }
            let pidfd = OwnedFd::from_raw_fd(pidfd as libc::c_int);
            let mut ends = [0; 2];
            if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
                return Err(last());
            }
            (
                pidfd,
                OwnedFd::from_raw_fd(ends[0]),
                OwnedFd::from_raw_fd(ends[1]),
            )
        };
        // This very binary, even when an upgrade replaced the file since.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(
            std::env::current_exe()
                .map(|p| p.into_os_string())
                .unwrap_or_else(|_| "vxdp".into()),
        )
        .arg("--state-dir")
        .arg(state_dir)
        .arg(GUARD_VERB)
        .arg("--")
        .arg(network)
        .stdin(Stdio::from(read))
        .current_dir("/");
        let raw = pidfd.as_raw_fd();
        // SAFETY: dup2/fcntl are async-signal-safe and touch no memory.
        unsafe {
            cmd.pre_exec(move || {
                // The pidfd is close-on-exec: give the guard a copy at its
                // fixed number (dup2 onto itself would keep the flag).
                if raw == GUARD_PIDFD {
                    if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, GUARD_PIDFD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Guard {
            child,
            _pipe: write,
        })
    }

    /// After dnsmasq ended: the guard ends by itself (its pidfd turned
    /// readable); wait for it, killing it if it does not.
    fn end(mut self) {
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guard's body (`vxdp dnsmasq-guard NETWORK`, stdin the supervisor's
/// pipe, fd 3 dnsmasq's pidfd): waits until dnsmasq ends (then it has
/// nothing to do) or the pipe reports EOF (the supervisor is gone: end
/// dnsmasq, SIGTERM then SIGKILL after a bounded wait).
pub fn run_guard() -> Result<(), DnsmasqError> {
    let pidfd = GUARD_PIDFD;
    let poll = |fds: &mut [libc::pollfd], timeout_ms: libc::c_int| -> libc::c_int {
        loop {
            // SAFETY: `fds` is a valid slice of pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return n;
            }
        }
    };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if poll(&mut fds, -1) < 0 {
            break;
        }
        if fds[1].revents != 0 {
            // dnsmasq ended.
            return Ok(());
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
    }
    // The supervisor is gone.
    let signal = |sig: libc::c_int| {
        // SAFETY: pidfd_send_signal with no siginfo; the pidfd names exactly
        // the dnsmasq process the supervisor started.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    };
    signal(libc::SIGTERM);
    let mut fds = [libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let waited = poll(&mut fds, STOP_TIMEOUT.as_millis() as libc::c_int);
    if waited == 0 {
        signal(libc::SIGKILL);
    }
    Ok(())
}

/// The supervisor's body (`vxdp dnsmasq-supervise NETWORK`): runs dnsmasq
/// until the supervisor is killed. Returns only on a setup error.
pub fn run_supervisor(state_dir: &Path, network: &str) -> Result<(), DnsmasqError> {
    let paths = Paths::new(state_dir, network);
    let dnsmasq = find_dnsmasq()?;
    let supervisor = std::process::id() as i32;
    let log = Arc::new(Mutex::new(Log::open(paths.log())));
    let say = |text: String| {
        if let Ok(mut l) = log.lock() {
            l.line(&format!("[vxdp] {network}: {text}"));
        }
    };
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        // A stale pid file would make a dead dnsmasq look started.
        let _ = fs::remove_file(paths.pid());
        let started = Instant::now();
        let mut cmd = Command::new(&dnsmasq);
        cmd.arg(format!("--conf-file={}", paths.conf().display()))
            .arg("--keep-in-foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl/getppid/_exit are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Until dnsmasq switches to its user (which clears this) and
                // the guard runs: dnsmasq dies with its supervisor.
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != supervisor {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let status = match cmd.spawn() {
            Ok(mut child) => {
                if let Some(out) = child.stdout.take() {
                    copy_output(out, log.clone());
                }
                if let Some(err) = child.stderr.take() {
                    copy_output(err, log.clone());
                }
                let guard = Guard::spawn(state_dir, network, child.id());
                if let Err(e) = &guard {
                    say(format!(
                        "could not start dnsmasq's guard ({e}): a killed supervisor would leave this dnsmasq running"
                    ));
                }
                let status = child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                if let Ok(guard) = guard {
                    guard.end();
                }
                status
            }
            Err(e) => format!("could not start {}: {e}", dnsmasq.display()),
        };
        if started.elapsed() >= HEALTHY_AFTER {
            delay = FIRST_RESTART_DELAY;
        }
        say(format!(
            "{ENDED} ({status}) after {:.1} s; restarting in {} ms",
            started.elapsed().as_secs_f64(),
            delay.as_millis()
        ));
        std::thread::sleep(delay);
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_copy_keeps_going_past_lines_that_are_not_utf8() {
        let dir = std::env::temp_dir().join(format!("vxdp-log-bytes-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let log = Mutex::new(Log::open(path.clone()));
        let output: &[u8] = b"dnsmasq: started\nDHCPACK 10.0.0.5 52:54:00:00:00:01 caf\xe9\xff\nlater line\nno newline at the end";
        copy_lines(output, &log);
        drop(log);
        let copied = fs::read(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let mut want = output.to_vec();
        want.push(b'\n');
        assert_eq!(copied, want, "{}", String::from_utf8_lossy(&copied));
    }

    #[test]
    fn log_rotates_past_the_limit() {
        let dir = std::env::temp_dir().join(format!("vxdp-log-rotate-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut log = Log::open(path.clone());
        let line = "x".repeat(1023);
        for _ in 0..(LOG_LIMIT / 1024 + 10) {
            log.line(&line);
        }
        let rotated = fs::metadata(path.with_extension("1"))
            .expect("log.1 after the limit")
            .len();
        let current = fs::metadata(&path).unwrap().len();
        assert!(
            (LOG_LIMIT..LOG_LIMIT + 1024).contains(&rotated),
            "log.1 has {rotated} bytes"
        );
        assert!(current < 64 * 1024, "the new log has {current} bytes");
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! `vxdp serve` as a child process of a test, with the topology's state and
//! pin directories, its stderr in a log file, killed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::topology::NatTopology;

/// A `vxdp serve` process, SIGKILLed on drop if still running.
pub struct Serve {
    pub child: Child,
    pub log: PathBuf,
}

impl Serve {
    /// `bin --netns <the topology's hypervisor>`: the usual start of the
    /// command [`Serve::spawn`] completes.
    pub fn command(topo: &NatTopology, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--netns").arg(&topo.hyp.name);
        cmd
    }

    /// Spawns `cmd` (the binary, or a wrapper running it, with any options
    /// before the state directory) with the topology's paths and
    /// `serve --reconcile-interval 1s <serve_args>`, the environment
    /// `extra_env` and stderr in `<state dir>/serve-<tag>.log`.
    pub fn spawn(
        topo: &NatTopology,
        mut cmd: Command,
        serve_args: &[&str],
        tag: &str,
        extra_env: &[(&str, &Path)],
    ) -> Result<Self> {
        let log = topo.state_dir.join(format!("serve-{tag}.log"));
        std::fs::create_dir_all(&topo.state_dir)?;
        cmd.arg("--state-dir")
            .arg(&topo.state_dir)
            .arg("--bpffs")
            .arg(&topo.bpffs)
            .args(["serve", "--reconcile-interval", "1s"])
            .args(serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting vxdp serve")?;
        Ok(Self { child, log })
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the process and waits (at most 10 s) for it to exit.
    pub fn signal(&mut self, sig: i32) -> Result<ExitStatus> {
        // Our own child, by its pid.
        if unsafe { libc::kill(self.child.id() as i32, sig) } != 0 {
            bail!(
                "kill({}, {sig}): {}",
                self.child.id(),
                std::io::Error::last_os_error()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "vxdp serve did not exit within 10 s of signal {sig}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

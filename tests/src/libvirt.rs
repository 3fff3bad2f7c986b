//! libvirt's own network driver as a reference: `libvirtd` (Debian's
//! libvirt-daemon-system) started inside a test's network namespace and a
//! private mount namespace (DESIGN.md §7 item 5), so its sockets, state,
//! configuration and logs live in a temporary directory and nothing is
//! written to the host's.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::testbed::{Netns, run};

/// The mount setup run inside `unshare -m --propagation private`: private
/// copies over /run, /etc/libvirt (without the packaged network
/// definitions: the tests create their own),
/// /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, then libvirtd
/// in the foreground (`exec`, so the child is libvirtd itself).
const START: &str = r#"set -e
T="$1"
mkdir -p "$T/run" "$T/etc" "$T/lib" "$T/log" "$T/cache"
cp -a /etc/libvirt/. "$T/etc/"
rm -f "$T"/etc/qemu/networks/autostart/*.xml "$T"/etc/qemu/networks/*.xml
mount --bind "$T/run" /run
mount --bind "$T/etc" /etc/libvirt
mount --bind "$T/lib" /var/lib/libvirt
mount --bind "$T/log" /var/log/libvirt
mount --bind "$T/cache" /var/cache/libvirt
exec libvirtd
"#;

/// A running libvirtd; its networks are destroyed and it is stopped on drop.
pub struct Libvirtd {
    child: Child,
    dir: PathBuf,
    started: Vec<String>,
}

impl Libvirtd {
    /// Starts libvirtd in `ns` and waits until `virsh` answers.
    pub fn start(ns: &Netns) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{}-libvirt", ns.name));
        std::fs::create_dir_all(&dir)?;
        let script = dir.join("start.sh");
        std::fs::write(&script, START)?;
        let log = std::fs::File::create(dir.join("libvirtd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "unshare", "-m", "--propagation", "private", "sh"])
            .arg(&script)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting libvirtd (apt-get install libvirt-daemon-system libvirt-clients)")?;
        let mut d = Self { child, dir, started: Vec::new() };
        let start = Instant::now();
        loop {
            if d.virsh_status(&["net-list", "--all"])?.status.success() {
                return Ok(d);
            }
            if let Some(status) = d.child.try_wait()? {
                bail!("libvirtd exited ({status}): {}", d.log());
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("libvirtd did not answer within 20 s: {}", d.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }

    fn virsh_status(&self, args: &[&str]) -> Result<std::process::Output> {
        let pid = self.child.id().to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-m", "-n", "virsh", "-c", "qemu:///system"])
            .args(args)
            .output()
            .context("running virsh (apt-get install libvirt-clients)")
    }

    /// `virsh <args>` against this libvirtd; fails with virsh's stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let out = self.virsh_status(args)?;
        if !out.status.success() {
            bail!("virsh {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Starts a transient network from `xml` (`virsh net-create`).
    pub fn net_create(&mut self, name: &str, xml: &str) -> Result<()> {
        let file = self.dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml)?;
        self.virsh(&["net-create", file.to_str().context("path")?])?;
        self.started.push(name.to_string());
        Ok(())
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // Destroy networks first, or their dnsmasq outlives libvirtd.
        for name in std::mem::take(&mut self.started) {
            let _ = self.virsh_status(&["net-destroy", &name]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = run("rm", &["-rf", self.dir.to_str().unwrap_or("/nonexistent")]);
    }
}

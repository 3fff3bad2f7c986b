//! The libvirt network XML corpus (`tests/data/xml/{valid,invalid}`) and a
//! throwaway "host" namespace for running `vxdp` net-* verbs against it.
//!
//! The host namespace looks like a small hypervisor: `eth0` (uplink,
//! 198.51.100.2/24 and 2001:db8:0:2::2/64, default routes via .1 and
//! 2001:db8:0:2::1), two spare NICs `eth1`/`eth2` (veth
//! ends, for macvtap-style definitions) and a host bridge `br0`. The libvirt
//! differential test builds the same devices in libvirtd's namespace, so both
//! sides judge the corpus on equal terms.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, ensure};

use vxdp_testkit::{Netns, run_vxdp, succeeded};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/xml")
}

/// The `*.xml` files of `valid` or `invalid`, sorted.
pub fn corpus_files(kind: &str) -> Result<Vec<PathBuf>> {
    let dir = corpus_dir().join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "xml"));
    files.sort();
    Ok(files)
}

/// `invalid/EXPECTED`: file name → the element or attribute path the error must name.
pub fn expected_faults() -> Result<BTreeMap<String, String>> {
    let path = corpus_dir().join("invalid/EXPECTED");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (file, element) = line
            .split_once('\t')
            .with_context(|| format!("{}: bad line {line:?}", path.display()))?;
        out.insert(file.to_string(), element.to_string());
    }
    Ok(out)
}

/// The `<name>` of a corpus file (the definition's network name).
pub fn network_name(xml: &str) -> Option<String> {
    let start = xml.find("<name>")? + "<name>".len();
    let end = xml[start..].find("</name>")? + start;
    Some(xml[start..end].to_string())
}

/// Gives namespace `ns` the devices of a small hypervisor (see the module docs).
pub fn add_host_devices(ns: &Netns) -> Result<()> {
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "wan0",
    ])?;
    ns.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "peer1",
    ])?;
    ns.ip(&[
        "link", "add", "eth2", "type", "veth", "peer", "name", "peer2",
    ])?;
    ns.ip(&["link", "add", "br0", "type", "bridge"])?;
    for dev in ["eth0", "wan0", "eth1", "peer1", "eth2", "peer2", "br0"] {
        ns.ip(&["link", "set", dev, "up"])?;
    }
    ns.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
    ns.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
    // A global IPv6 address for NAT66 (<nat ipv6='yes'>) to masquerade to.
    ns.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:0:2::2/64",
        "dev",
        "eth0",
        "nodad",
    ])?;
    ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:0:2::1"])?;
    Ok(())
}

/// A host namespace with vxdp's state directory and pins private to it.
pub struct VxdpHost {
    pub ns: Netns,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub work: PathBuf,
}

impl VxdpHost {
    pub fn new(tag: &str) -> Result<Self> {
        ensure!(
            unsafe { libc::geteuid() } == 0,
            "these tests need root (network namespaces, BPF)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("vx{tag}{}-{n}", std::process::id());
        let ns = Netns::new(format!("{prefix}-host"))?;
        let host = Self {
            state_dir: std::env::temp_dir().join(format!("{prefix}-state")),
            bpffs: PathBuf::from("/sys/fs/bpf").join(format!("{prefix}-pins")),
            work: std::env::temp_dir().join(format!("{prefix}-work")),
            ns,
        };
        vxdp_control::dataplane::ensure_bpffs(&host.bpffs)?;
        std::fs::create_dir_all(&host.work)?;
        add_host_devices(&host.ns)?;
        Ok(host)
    }

    /// Runs `vxdp` in the namespace with this host's paths, whatever the outcome.
    pub fn vxdp_status(&self, args: &[&str]) -> Result<Output> {
        run_vxdp(&self.ns.name, &self.state_dir, &self.bpffs, args)
    }

    /// Runs `vxdp`, failing with its stderr when it fails; returns stdout.
    pub fn vxdp(&self, args: &[&str]) -> Result<String> {
        let out = succeeded(args, self.vxdp_status(args)?)?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Writes `text` to a file under this host's work directory.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.work.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// Stops and undefines every network vxdp knows here (best effort).
    pub fn clean_networks(&self) {
        if let Ok(out) = self.vxdp(&["net-list", "--all"]) {
            for line in out.lines().skip(1) {
                if let Some(name) = line.split_whitespace().next() {
                    let _ = self.vxdp_status(&["net-destroy", name]);
                    let _ = self.vxdp_status(&["net-undefine", name]);
                }
            }
        }
    }
}

impl Drop for VxdpHost {
    fn drop(&mut self) {
        self.clean_networks();
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Every file under `dir` (recursively) with its content, for before/after
/// comparisons. Missing directory: empty.
pub fn tree_snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let ft = e.file_type()?;
            if ft.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                stack.push(p);
            } else if ft.is_file() && !dir.starts_with("/sys/fs/bpf") {
                out.insert(p.clone(), std::fs::read(&p)?);
            } else {
                out.insert(p, b"<entry>".to_vec());
            }
        }
    }
    Ok(out)
}

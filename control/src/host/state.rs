//! The state directory: one record per started network, written atomically
//! (temporary file, fsync, rename), and a lock so two `vxdp` commands never
//! change the host at the same time.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt state record: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A guest port plugged into a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub dev: String,
    pub ifindex: u32,
    /// The guest's MAC when given (libvirt's `<mac address>`).
    pub mac: Option<String>,
    /// vxdp created this tap (`attach-interface --xml`) and removes it when
    /// the port is unplugged.
    #[serde(default)]
    pub created_tap: bool,
    /// The guest's static IPv4 address when given (`--ip`): enforced as its
    /// only source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// The guest's static IPv6 address when given (`--ip`): enforced as its
    /// only global IPv6 source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// The guest may serve its network (router advertisements, DHCP and
    /// DHCPv6 server messages): `attach-interface --allow-services`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub services_allowed: bool,
    /// The port is the hypervisor's (libvirt's tap), plugged because it
    /// appeared on the network's bridge (`vxdp serve`) or by the libvirt
    /// hook: it is unplugged, and forgotten, when it leaves the bridge or
    /// goes away. Ports plugged by `attach-interface` are kept and plugged
    /// in again when they come back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_bridge: bool,
    /// The `<bandwidth>` the port is shaped to: its `<interface>`'s, or
    /// else its portgroup's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<crate::model::bandwidth::Bandwidth>,
    /// The portgroup the port joined (`<source portgroup>`, or the
    /// network's default portgroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portgroup: Option<String>,
    /// Port forwards into the guest (`<portForward>`, `vxdp port-forward
    /// add`): kept with the port, written to `VXDP_FORWARDS` whenever the
    /// port is plugged or reconciled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<crate::model::forward::PortForward>,
    /// The port's choice of the guest XDP program (`attach-interface
    /// --guest-xdp on|off`); `None`: the global `--guest-xdp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_xdp: Option<bool>,
}

/// What vxdp did to the host for one started network: enough to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub id: u32,
    pub mode: String,
    pub bridge: String,
    pub bridge_ifindex: u32,
    pub uplink: String,
    pub uplink_ifindex: u32,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub nat_first: Ipv4Addr,
    pub nat_last: Ipv4Addr,
    pub nat_ports: (u16, u16),
    pub ports: Vec<PortRecord>,
    /// The definition the network was started from.
    pub xml: String,
    /// The IPv6 `<ip>` (address on the bridge, prefix), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<(std::net::Ipv6Addr, u8)>,
    /// A direct (macvtap-like) network's devices (name, ifindex); empty
    /// for every other mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub direct_nics: Vec<(String, u32)>,
    /// NAT66 (`<nat ipv6='yes'>`): the uplink address IPv6 is masqueraded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat6: Option<std::net::Ipv6Addr>,
}

impl NetworkRecord {
    /// Whether the network is a direct (macvtap-like) one.
    pub fn is_direct(&self) -> bool {
        crate::model::mode::from_name(&self.mode).is_some_and(crate::model::mode::is_direct)
    }
}

/// Host settings vxdp changed, restored when its last network stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub ip_forward_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_forward_before: Option<String>,
}

/// Settings a command was given that later commands keep
/// (`<state-dir>/settings.json`): a reconcile by a command or a daemon
/// started without the option must not undo them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// `--guest-xdp`: the guest XDP program on tap ports without a choice
    /// of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_xdp: Option<bool>,
}

/// The kept settings under `root` (none kept: the defaults). Read without
/// the lock: the file is replaced atomically.
pub fn read_settings(root: &Path) -> Result<Settings, StateError> {
    let path = root.join("settings.json");
    if !path.exists() {
        return Ok(Settings::default());
    }
    read_json(&path)
}

/// Keeps `settings` under `root` (created if missing).
pub fn save_settings(root: &Path, settings: &Settings) -> Result<(), StateError> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    write_json_atomic(&root.join("settings.json"), settings)
}

/// How long a command waits for another one holding the state directory.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub struct StateDir {
    root: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Opens (creating) the state directory and takes its lock, waiting at
    /// most [`LOCK_WAIT`] while another vxdp command holds it.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        let run = root.join("run");
        fs::create_dir_all(&run).map_err(io_err(&run))?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // Bounded: another vxdp (or, by mistake, this process through a
        // second handle) holding the lock must give an error, not a hang.
        let started = std::time::Instant::now();
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(StateError::Io {
                    path: lock_path,
                    source: err,
                });
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(StateError::Io {
                    path: lock_path,
                    source: io::Error::other(format!(
                        "still locked by another vxdp command after {} s",
                        LOCK_WAIT.as_secs()
                    )),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// The state directory itself (definitions live under `networks/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join("run").join(format!("{name}.json"))
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>, StateError> {
        read_networks(&self.root)
    }

    pub fn network(&self, name: &str) -> Result<Option<NetworkRecord>, StateError> {
        let path = self.record_path(name);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    pub fn save_network(&self, rec: &NetworkRecord) -> Result<(), StateError> {
        write_json_atomic(&self.record_path(&rec.name), rec)
    }

    pub fn remove_network(&self, name: &str) -> Result<(), StateError> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn host(&self) -> Result<HostRecord, StateError> {
        let path = self.root.join("host.json");
        if !path.exists() {
            return Ok(HostRecord::default());
        }
        read_json(&path)
    }

    pub fn save_host(&self, rec: &HostRecord) -> Result<(), StateError> {
        write_json_atomic(&self.root.join("host.json"), rec)
    }

    pub fn remove_host(&self) -> Result<(), StateError> {
        let path = self.root.join("host.json");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
        path: path.into(),
        source,
    })
}

/// The started networks' records under `root`, without the lock: for
/// readers that must not wait for a command holding it (the daemon's
/// metrics). Records are replaced atomically, so each one read is whole;
/// one removed meanwhile is left out.
pub fn read_networks(root: &Path) -> Result<Vec<NetworkRecord>, StateError> {
    let run = root.join("run");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&run) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&run)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(&run))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            match read_json(&path) {
                Ok(rec) => out.push(rec),
                Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    out.sort_by_key(|r: &NetworkRecord| r.id);
    Ok(out)
}

/// Writes `value` so that a crash leaves either the old or the new file,
/// never a partial one.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.into(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new content: temporary file in the same directory, fsync, rename, fsync of
/// the directory (so the rename itself is durable).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    if let Some(dir) = path.parent() {
        let d = File::open(dir).map_err(io_err(dir))?;
        d.sync_all().map_err(io_err(dir))?;
    }
    Ok(())
}

//! The undo journal of a change to the host. Every step of `net-start` and
//! `attach-interface` that changes the host first records how to revert it
//! (write-ahead), in memory and in a journal file under the state
//! directory; if a later step fails, the steps run in reverse, so a failed
//! start or plug leaves nothing behind. If the process dies instead (kill
//! -9, a power cut), the journal stays: the next command that takes the
//! state directory's lock, or the next reconcile pass, finds it — under the
//! lock, a journal can only be a dead process's — and runs it, so a retry
//! or `vxdp serve` starts from a host without the half-made change.
//!
//! Every step is idempotent and tolerates its object being gone already:
//! a step may be recorded just before the change it reverts was made.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataplane::{self, Maps, Pins};
use crate::host::netlink::Netlink;
use crate::host::{dnsmasq, state::StateError, sysctl, tap};

/// One revertible change, as data (so it survives the process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Remove every pinned vxdp object (the change loaded the dataplane).
    Unload,
    /// Put the forwarding sysctls back and forget the saved host state.
    RestoreHost {
        ip_forward: Option<String>,
        ipv6_forward: Option<String>,
        host_file: PathBuf,
    },
    /// Delete the bridge vxdp created under this name.
    DeleteBridge { name: String },
    /// Delete the tap vxdp created under this name.
    DeleteTap { name: String },
    /// Zero network `id`'s entry (and its NAT66 entry, its rate limits).
    ClearNetwork { id: u32 },
    /// Remove subnet entries (address and prefix as the maps key them).
    RemoveSubnets {
        v4: Option<(u32, u32)>,
        v6: Option<([u8; 16], u32)>,
    },
    /// Remove a static route's `VXDP_ROUTES` entry (address and prefix as
    /// the map keys them).
    RemoveRoute { v4: (u32, u32) },
    /// Detach the uplink programs from `ifindex`.
    DetachUplink { ifindex: u32 },
    /// Detach (unpin) the links at these pin paths.
    DetachLinks { paths: Vec<PathBuf> },
    /// Stop network's dnsmasq and its supervisor.
    StopDnsmasq { network: String },
    /// Remove guest port `ifindex`'s endpoint entry (and its MAC entries,
    /// its outbound rate limit, flows and port forwards).
    RemoveEndpoint { ifindex: u32 },
    /// Remove the root qdisc vxdp gave `ifindex` (inbound shaping).
    ClearQdisc { ifindex: u32 },
    /// Take `ifindex` out of its bridge.
    NoMaster { ifindex: u32 },
    /// Remove the direct device entry of `ifindex`.
    RemoveDirectNic { ifindex: u32 },
    /// Remove guest port `port` from its direct device.
    RemoveDirectPort { port: u32 },
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// What the change was, for the log of a recovery.
    what: String,
    pins: PathBuf,
    state_dir: PathBuf,
    steps: Vec<Step>,
}

/// The steps of one change, in the order they were recorded. Dropped
/// without [`Undo::commit`] or [`Undo::run`] (an early return), its journal
/// stays and the next command reverts the change.
pub struct Undo {
    journal: Journal,
    file: Option<PathBuf>,
}

/// Where the journals of unfinished changes live.
fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("undo")
}

impl Undo {
    /// An undo list for `what` (e.g. "net-start default"), journaled under
    /// `state_dir` (whose lock the caller holds). The journal is written at
    /// once: a state directory that cannot take it (read-only, full) stops
    /// the change before it touches the host.
    pub fn journaled(state_dir: &Path, pins: &Pins, what: &str) -> Result<Self, StateError> {
        let name: String = what
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let undo = Self {
            journal: Journal {
                what: what.to_owned(),
                pins: pins.root.clone(),
                state_dir: state_dir.to_path_buf(),
                steps: Vec::new(),
            },
            file: Some(dir(state_dir).join(format!("{name}.json"))),
        };
        let file = undo.file.as_deref().expect("journaled");
        write_atomic(file, &undo.journal).map_err(|source| StateError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        Ok(undo)
    }

    /// An undo list kept in memory only (a repair that has nothing to
    /// revert after a crash).
    pub fn in_memory(pins: &Pins) -> Self {
        Self {
            journal: Journal {
                what: "repair".to_owned(),
                pins: pins.root.clone(),
                state_dir: PathBuf::new(),
                steps: Vec::new(),
            },
            file: None,
        }
    }

    /// Records a step; the journal file is rewritten (atomically) before
    /// this returns, so the change it reverts may be made next.
    pub fn push(&mut self, step: Step) {
        self.journal.steps.push(step);
        if let Some(file) = &self.file
            && let Err(e) = write_atomic(file, &self.journal)
        {
            // The in-memory list still reverts a failure; only a crash
            // would leave this change behind.
            log::warn!(
                "{}: cannot write the undo journal {}: {e}",
                self.journal.what,
                file.display()
            );
        }
    }

    /// The change succeeded: nothing to revert, the journal goes.
    pub fn commit(self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Reverts every recorded step, last first; the journal goes.
    pub async fn run(self, nl: &Netlink) {
        let pins = Pins::new(self.journal.pins.clone());
        for step in self.journal.steps.iter().rev() {
            if let Err(e) = revert(step, &pins, &self.journal.state_dir, nl).await {
                log::warn!("{}: undoing {step:?}: {e}", self.journal.what);
            }
        }
        self.commit();
    }
}

/// Runs the journals that dead processes left (the caller holds the state
/// directory's lock, so no live process owns one). Returns what each was.
pub async fn recover(state_dir: &Path, nl: &Netlink) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return done;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue; // a temporary file of an interrupted write
        }
        let journal: Journal = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(j) => j,
            Err(e) => {
                log::warn!("unreadable undo journal {}: {e}; removed", path.display());
                let _ = std::fs::remove_file(&path);
                continue;
            }
        };
        log::info!(
            "reverting the unfinished `{}` of a vxdp that died ({} steps)",
            journal.what,
            journal.steps.len()
        );
        let what = journal.what.clone();
        Undo {
            journal,
            file: Some(path),
        }
        .run(nl)
        .await;
        done.push(what);
    }
    done
}

fn write_atomic(file: &Path, journal: &Journal) -> std::io::Result<()> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = file.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(journal).map_err(std::io::Error::other)?;
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, file)
}

async fn revert(step: &Step, pins: &Pins, state_dir: &Path, nl: &Netlink) -> Result<(), String> {
    let maps = || Maps::open(pins).ok();
    match step {
        Step::Unload => dataplane::unload(pins).map_err(|e| e.to_string())?,
        Step::RestoreHost {
            ip_forward,
            ipv6_forward,
            host_file,
        } => {
            if let Some(v) = ip_forward {
                let _ = sysctl::write(sysctl::IP_FORWARD, v);
            }
            if let Some(v) = ipv6_forward {
                let _ = sysctl::write(sysctl::IPV6_FORWARD, v);
            }
            let _ = std::fs::remove_file(host_file);
        }
        Step::DeleteBridge { name } => {
            if let Some(link) = nl.link_by_name(name).await.map_err(|e| e.to_string())? {
                nl.delete_link(link.index)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Step::DeleteTap { name } => {
            if nl
                .link_by_name(name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                tap::delete(name).map_err(|e| e.to_string())?;
            }
        }
        Step::ClearNetwork { id } => {
            if let Some(m) = maps() {
                let _ = m.set_network(*id, &Default::default());
                let _ = m.set_nat6(*id, &Default::default());
                let _ = m.remove_network_rate_limits(*id);
            }
        }
        Step::RemoveSubnets { v4, v6 } => {
            if let Some(m) = maps() {
                if let Some((a, p)) = v4 {
                    let _ = m.remove_subnet(*a, *p);
                }
                if let Some((a, p)) = v6 {
                    let _ = m.remove_subnet6(*a, *p);
                }
            }
        }
        Step::RemoveRoute { v4: (a, p) } => {
            if let Some(m) = maps() {
                let _ = m.remove_route(*a, *p);
            }
        }
        Step::DetachUplink { ifindex } => {
            dataplane::detach_uplink(pins, *ifindex).map_err(|e| e.to_string())?
        }
        Step::DetachLinks { paths } => {
            for p in paths {
                let _ = dataplane::detach(p);
            }
        }
        Step::StopDnsmasq { network } => {
            dnsmasq::stop(state_dir, network).map_err(|e| e.to_string())?
        }
        Step::RemoveEndpoint { ifindex } => {
            if let Some(m) = maps() {
                let _ = m.remove_endpoint(*ifindex);
            }
        }
        Step::ClearQdisc { ifindex } => {
            nl.clear_root_qdisc(*ifindex)
                .await
                .map_err(|e| e.to_string())?;
        }
        Step::NoMaster { ifindex } => {
            if nl
                .link_by_index(*ifindex)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                nl.set_nomaster(*ifindex).await.map_err(|e| e.to_string())?;
            }
        }
        Step::RemoveDirectNic { ifindex } => {
            if let Some(m) = maps() {
                let _ = m.remove_direct_nic(*ifindex);
            }
        }
        Step::RemoveDirectPort { port } => {
            if let Some(m) = maps() {
                let _ = m.unplug_direct_port(*port);
            }
        }
    }
    Ok(())
}

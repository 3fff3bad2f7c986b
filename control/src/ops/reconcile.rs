//! Bringing the host back in line with the started networks' records: the
//! dataplane loaded (or the pinned one adopted), every network's bridge and
//! map entries present, every guest port plugged into its bridge with the
//! guest-port program attached, every uplink with its XDP program. Used by
//! `vxdp load` (once) and `vxdp serve` (every reconcile period).
//!
//! Reconcile only repairs what is missing or broken; what is in place is
//! left alone (an attached program keeps its link, a map entry is not
//! rewritten), so running it costs a few syscalls and never disturbs flows.
//!
//! Guest ports (taps, veths) are created by the hypervisor, not by vxdp:
//! when one is gone, reconcile reports it and plugs it in again once an
//! interface of that name reappears. Bridges are vxdp's own (a deleted one
//! is recreated as `net-start` creates it) except in host bridge mode: the
//! operator's bridge is never created, set up or changed, only reported
//! missing. Every mode is repaired with the same builders `net-start` uses
//! (`plan::network_config`, `write_subnets`, `configure_bridge`,
//! `port_endpoint`), so a repair writes exactly what a start would.

use std::{collections::HashSet, path::Path};

use crate::{
    dataplane::pinned,
    dataplane::{self, DataplaneError, Maps},
    host::Context,
    host::netlink::Netlink,
    host::state::{NetworkRecord, StateDir},
    modes::{Realization, plan, shared::Repairs},
    ops::error::OpsError,
};

/// File in the state directory that says "the dataplane was unloaded on
/// purpose (`vxdp unload`)": reconcile then does not load it again until
/// `vxdp load` (or starting a network) brings it back.
pub const UNLOADED_MARKER: &str = "dataplane-unloaded";

/// Whether `vxdp unload` left the dataplane out on purpose.
pub fn unloaded_on_purpose(state_dir: &Path) -> bool {
    state_dir.join(UNLOADED_MARKER).exists()
}

/// Loads the dataplane unless its pins exist (then they are adopted: same
/// programs, same maps, conntrack kept). Returns whether it loaded.
pub fn load_or_adopt(ctx: &Context) -> Result<bool, DataplaneError> {
    let loaded = dataplane::ensure_loaded(&ctx.pins, &ctx.load)?;
    let marker = ctx.state_dir.join(UNLOADED_MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|source| DataplaneError::Io {
            path: marker,
            source,
        })?;
    }
    Ok(loaded)
}

/// Reverts the changes of `vxdp` commands that died half-way (under the
/// state directory's lock, so none is still running); returns what each
/// command was.
pub async fn recover(ctx: &Context) -> Result<Vec<String>, OpsError> {
    Ok(crate::modes::shared::lock_for_change(ctx).await?.2)
}

/// One pass over every started network. With `load`, a missing dataplane is
/// loaded first (unless `vxdp unload` removed it on purpose).
pub async fn reconcile(ctx: &Context, load: bool) -> Result<Repairs, OpsError> {
    let mut repairs = Repairs::default();
    // A start or plug that died half-way is reverted before anything is
    // compared.
    let (state, nl, reverted) = crate::modes::shared::lock_for_change(ctx).await?;
    for what in reverted {
        repairs.note(format!(
            "reverted the unfinished `{what}` of a vxdp that died"
        ));
    }
    let records = state.networks()?;
    if !ctx.pins.is_loaded() {
        if !load || records.is_empty() || unloaded_on_purpose(&ctx.state_dir) {
            return Ok(repairs);
        }
        load_or_adopt(ctx)?;
        repairs.note(format!(
            "loaded the dataplane under {}",
            ctx.pins.root.display()
        ));
    }
    let maps = Maps::open(&ctx.pins)?;
    let mut in_use = HashSet::new();
    let all = records.clone();
    for mut rec in records {
        let before = rec.clone();
        if let Err(e) =
            reconcile_network(ctx, &state, &nl, &maps, &mut rec, &all, &mut repairs).await
        {
            // One broken network does not stop the others' repairs.
            repairs.note(format!("{}: {e}", rec.name));
        }
        in_use.insert(rec.uplink_ifindex);
        in_use.extend(rec.direct_nics.iter().map(|(_, i)| *i));
        in_use.extend(rec.ports.iter().map(|p| p.ifindex));
        if rec != before {
            state.save_network(&rec)?;
        }
    }
    prune_port_counters(&maps, &in_use);
    Ok(repairs)
}

async fn reconcile_network(
    ctx: &Context,
    state: &StateDir,
    nl: &Netlink,
    maps: &Maps,
    rec: &mut NetworkRecord,
    all: &[NetworkRecord],
    repairs: &mut Repairs,
) -> Result<(), OpsError> {
    let others: Vec<NetworkRecord> = all.iter().filter(|r| r.id != rec.id).cloned().collect();
    let plan = plan::plan(
        &rec.xml,
        &format!("{}/run/{}.json", ctx.state_dir.display(), rec.name),
    )?;
    crate::modes::shared::ensure_forwarding(state, &plan, repairs)?;
    Ok(Realization::of(plan.mode)
        .reconcile(ctx, nl, maps, rec, &plan, &others, repairs)
        .await?)
}

/// Drops per-port counters of interfaces no network uses any more (so a
/// reused ifindex starts from zero).
fn prune_port_counters(maps: &Maps, in_use: &HashSet<u32>) {
    let Ok(mut counters) = maps.port_counters() else {
        return;
    };
    let stale: Vec<_> = counters
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !in_use.contains(&k.ifindex))
        .collect();
    for key in stale {
        let _ = counters.remove(&key);
    }
}

/// `vxdp unload`: detaches every pinned link, removes every pin (programs
/// and maps go with their last reference) and marks the dataplane as
/// unloaded on purpose so `vxdp serve` does not load it again. Bridges, ports
/// and the started networks' records stay: the kernel bridge path keeps
/// switching, and `vxdp load` brings the fast path back.
pub fn unload(ctx: &Context) -> Result<pinned::PinnedIds, DataplaneError> {
    let _state = StateDir::open(&ctx.state_dir).map_err(|e| DataplaneError::Io {
        path: ctx.state_dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let ids = if ctx.pins.root.exists() {
        pinned::pinned_ids(&ctx.pins).unwrap_or_default()
    } else {
        pinned::PinnedIds::default()
    };
    let links_dir = ctx.pins.root.join("links");
    if let Ok(rd) = std::fs::read_dir(&links_dir) {
        for entry in rd.flatten() {
            dataplane::detach(&entry.path())?;
        }
    }
    dataplane::unload(&ctx.pins)?;
    let marker = ctx.state_dir.join(UNLOADED_MARKER);
    std::fs::write(
        &marker,
        "removed by `vxdp unload`; `vxdp load` brings the dataplane back\n",
    )
    .map_err(|source| DataplaneError::Io {
        path: marker,
        source,
    })?;
    Ok(ids)
}

//! Persistent network definitions and the virsh-like lifecycle around them:
//! `net-define`, `net-undefine`, `net-start NAME`, `net-autostart`, `autostart`,
//! `net-list --all`, `net-info`, `net-dumpxml`.
//!
//! Definitions live in the state directory as `networks/<name>.xml` (the
//! definition as vxdp writes it back, generated defaults included) and
//! `networks/<name>.autostart` (an empty marker). Both are written atomically
//! ([`crate::host::state::write_atomic`]) under the state directory's lock, so a
//! crash leaves the old or the new definition, never a partial one.
//!
//! Defining checks the new definition against every other defined or running
//! network (name and UUID unique, no overlapping subnet, no shared bridge
//! name) and fills in what libvirt generates: a UUID, a `52:54:00` bridge MAC
//! and the first free `virbrN` bridge name.

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::{
    host::netlink::Netlink,
    host::state::{NetworkRecord, StateDir, StateError, write_atomic},
    host::{Context, random},
    modes::plan,
    ops::{error::OpsError, lifecycle},
    xml::{self, ForwardMode, NetworkDef},
};

/// One network as `net-list --all` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkStatus {
    pub name: String,
    pub uuid: Option<String>,
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
    pub bridge: Option<String>,
    pub mode: String,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn defs_dir(state: &StateDir) -> PathBuf {
    state.root().join("networks")
}

fn def_path(state: &StateDir, name: &str) -> PathBuf {
    defs_dir(state).join(format!("{name}.xml"))
}

fn autostart_path(state: &StateDir, name: &str) -> PathBuf {
    defs_dir(state).join(format!("{name}.autostart"))
}

/// Reads the stored definition of `name`, if there is one.
pub fn load(state: &StateDir, name: &str) -> Result<Option<NetworkDef>, OpsError> {
    let path = def_path(state, name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e).into()),
    };
    Ok(Some(xml::parse_network(
        &text,
        &path.display().to_string(),
    )?))
}

/// Every stored definition, sorted by name.
pub fn load_all(state: &StateDir) -> Result<Vec<NetworkDef>, OpsError> {
    load_all_in(state.root())
}

/// Name and mode of every defined network that is not in `running`,
/// without the state directory's lock (definitions are replaced
/// atomically): for the daemon's metrics, which must not wait for it.
pub fn defined_not_running(
    state_dir: &Path,
    running: &[crate::host::state::NetworkRecord],
) -> Result<Vec<(String, String)>, OpsError> {
    Ok(load_all_in(state_dir)?
        .into_iter()
        .filter(|def| !running.iter().any(|r| r.name == def.name))
        .map(|def| (def.name.clone(), mode_name(&def)))
        .collect())
}

fn load_all_in(state_dir: &Path) -> Result<Vec<NetworkDef>, OpsError> {
    let dir = state_dir.join("networks");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e).into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(&dir))?.path();
        // Leftover `*.xml.tmp` files of an interrupted write are not definitions.
        if path.extension().is_some_and(|e| e == "xml") {
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                // Undefined meanwhile (a reader without the lock).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e).into()),
            };
            out.push(xml::parse_network(&text, &path.display().to_string())?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_autostart(state: &StateDir, name: &str) -> bool {
    autostart_path(state, name).exists()
}

fn remove_file(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// True when the network has its own Linux bridge that vxdp creates
/// (libvirt's "bridge-like" networks: nat, route, open, isolated).
fn has_managed_bridge(def: &NetworkDef) -> bool {
    match &def.forward {
        None => true,
        Some(f) => matches!(
            f.mode,
            ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open
        ),
    }
}

/// A random (version 4) UUID in libvirt's lower-case hyphenated form.
fn new_uuid() -> Result<String, OpsError> {
    let mut b: [u8; 16] = random::bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The subnets of a definition as (network address, prefix).
fn subnets(def: &NetworkDef) -> Vec<(IpAddr, u8)> {
    def.ips.iter().map(|ip| (ip.network(), ip.prefix)).collect()
}

fn overlap(a: (IpAddr, u8), b: (IpAddr, u8)) -> bool {
    if a.0.is_ipv4() != b.0.is_ipv4() {
        return false;
    }
    let p = a.1.min(b.1);
    xml::IpDef::new(a.0, p).contains(b.0)
}

/// The networks a new definition must not clash with: every stored
/// definition and every running network, except those named `name`
/// (which the new definition replaces or belongs to).
fn others(state: &StateDir, name: &str) -> Result<Vec<NetworkDef>, OpsError> {
    let mut out: Vec<NetworkDef> = load_all(state)?
        .into_iter()
        .filter(|d| d.name != name)
        .collect();
    for rec in state.networks()? {
        if rec.name == name || out.iter().any(|d| d.name == rec.name) {
            continue;
        }
        out.push(running_def(&rec)?);
    }
    Ok(out)
}

fn running_def(rec: &NetworkRecord) -> Result<NetworkDef, OpsError> {
    Ok(xml::parse_network(
        &rec.xml,
        &format!("running network '{}'", rec.name),
    )?)
}

fn conflict(file: &str, element: &str, reason: String) -> OpsError {
    plan::invalid(file, element, reason).into()
}

/// Checks `def` against the other networks and fills libvirt's generated
/// defaults. `existing` is the stored or running definition of the same
/// name, if any: its UUID must match, and it keeps its generated values.
async fn complete(
    state: &StateDir,
    nl: &Netlink,
    mut def: NetworkDef,
    existing: Option<&NetworkDef>,
    file: &str,
) -> Result<NetworkDef, OpsError> {
    if def.uuid.is_none() {
        // libvirt generates a fresh UUID for a definition without one, so
        // redefining a network from a file without <uuid> is refused as a
        // name clash, exactly like `virsh net-define`.
        def.uuid = Some(new_uuid()?);
    }
    if let (Some(old), Some(uuid)) = (existing, &def.uuid)
        && old.uuid.as_ref() != Some(uuid)
    {
        return Err(conflict(
            file,
            "/network/name",
            format!(
                "network '{}' already exists with uuid {} (value '{}'); give that <uuid> to redefine it, or another name",
                def.name,
                old.uuid.as_deref().unwrap_or("?"),
                uuid
            ),
        ));
    }
    let others = others(state, &def.name)?;
    for o in &others {
        if o.uuid.is_some() && o.uuid == def.uuid {
            return Err(conflict(
                file,
                "/network/uuid",
                format!(
                    "uuid {} is already used by network '{}'",
                    def.uuid.as_deref().unwrap_or(""),
                    o.name
                ),
            ));
        }
        for (i, s) in subnets(&def).into_iter().enumerate() {
            if let Some(t) = subnets(o).into_iter().find(|t| overlap(s, *t)) {
                return Err(conflict(
                    file,
                    &format!("/network/ip[{}]@address", i + 1),
                    format!(
                        "subnet {}/{} overlaps network '{}' ({}/{})",
                        s.0, s.1, o.name, t.0, t.1
                    ),
                ));
            }
        }
        // Several `<forward mode='bridge'>` networks may share one host
        // bridge (e.g. with different portgroups); a bridge vxdp creates is
        // the network's own.
        let shared_host_bridge = !has_managed_bridge(&def) && !has_managed_bridge(o);
        if let (Some(a), Some(b), false) = (&def.bridge.name, &o.bridge.name, shared_host_bridge)
            && a == b
        {
            return Err(conflict(
                file,
                "/network/bridge@name",
                format!("bridge name '{a}' is already used by network '{}'", o.name),
            ));
        }
    }
    if has_managed_bridge(&def) {
        if def.bridge.name.is_none() {
            def.bridge.name = match existing.and_then(|e| e.bridge.name.clone()) {
                Some(b) => Some(b),
                None => Some(free_bridge_name(nl, &others).await?),
            };
        }
        if def.mac.is_none() {
            def.mac = match existing.and_then(|e| e.mac) {
                Some(m) => Some(m),
                None => Some(random::libvirt_mac()?.octets()),
            };
        }
    }
    Ok(def)
}

/// The first `virbrN` that no other network names and no link uses.
async fn free_bridge_name(nl: &Netlink, others: &[NetworkDef]) -> Result<String, OpsError> {
    for n in 0..4096 {
        let candidate = format!("virbr{n}");
        if others
            .iter()
            .any(|o| o.bridge.name.as_deref() == Some(&candidate))
        {
            continue;
        }
        if nl.link_by_name(&candidate).await?.is_none() {
            return Ok(candidate);
        }
    }
    Err(conflict(
        "",
        "/network/bridge@name",
        "no free virbrN bridge name (virbr0..virbr4095 all taken)".into(),
    ))
}

/// `vxdp net-define`: validates `xml_text`, checks it against the other
/// networks, fills the generated defaults and stores it. A running network
/// of the same name keeps running with its old definition; the new one
/// applies at its next start. Nothing is written when any check fails.
pub async fn define(ctx: &Context, xml_text: &str, file: &str) -> Result<NetworkDef, OpsError> {
    // Validation first: an invalid file does not even create the state directory.
    let def = xml::parse_network(xml_text, file)?;
    let state = StateDir::open(&ctx.state_dir)?;
    let nl = Netlink::connect()?;
    let existing = match load(&state, &def.name)? {
        Some(d) => Some(d),
        None => state
            .network(&def.name)?
            .map(|r| running_def(&r))
            .transpose()?,
    };
    let def = complete(&state, &nl, def, existing.as_ref(), file).await?;
    let dir = defs_dir(&state);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    write_atomic(&def_path(&state, &def.name), xml::to_xml(&def).as_bytes())?;
    Ok(def)
}

/// `vxdp net-undefine`: removes the stored definition and its autostart
/// flag. A running network keeps running, as a transient one.
pub fn undefine(ctx: &Context, name: &str) -> Result<(), OpsError> {
    let state = StateDir::open(&ctx.state_dir)?;
    if load(&state, name)?.is_none() {
        return Err(OpsError::NotDefined(name.into()));
    }
    remove_file(&autostart_path(&state, name))?;
    remove_file(&def_path(&state, name))?;
    sync_dir(&defs_dir(&state))?;
    Ok(())
}

/// `vxdp net-autostart [--disable]`: only persistent networks autostart.
pub fn set_autostart(ctx: &Context, name: &str, enable: bool) -> Result<(), OpsError> {
    let state = StateDir::open(&ctx.state_dir)?;
    if load(&state, name)?.is_none() {
        return Err(if state.network(name)?.is_some() {
            OpsError::Transient(name.into())
        } else {
            OpsError::NotDefined(name.into())
        });
    }
    let path = autostart_path(&state, name);
    if enable {
        write_atomic(&path, b"")?;
    } else {
        remove_file(&path)?;
        sync_dir(&defs_dir(&state))?;
    }
    Ok(())
}

/// `vxdp net-start NAME`: starts a defined network.
pub async fn start_defined(ctx: &Context, name: &str) -> Result<NetworkRecord, OpsError> {
    let def = {
        let state = StateDir::open(&ctx.state_dir)?;
        if state.network(name)?.is_some() {
            return Err(OpsError::already_started(name));
        }
        load(&state, name)?.ok_or_else(|| OpsError::NotDefined(name.into()))?
        // The lock is released here: `lifecycle::start` takes it again.
    };
    let source = def_path_display(ctx, name);
    plan::check_supported(&def, &source)?;
    check_running_conflicts(ctx, &def, &source)?;
    lifecycle::start(ctx, &xml::to_xml(&def), &source).await
}

fn def_path_display(ctx: &Context, name: &str) -> String {
    ctx.state_dir
        .join("networks")
        .join(format!("{name}.xml"))
        .display()
        .to_string()
}

/// Conflicts that only matter for starting: a running network with the same
/// bridge or an overlapping subnet (definitions may overlap while only one runs).
fn check_running_conflicts(ctx: &Context, def: &NetworkDef, file: &str) -> Result<(), OpsError> {
    let state = StateDir::open(&ctx.state_dir)?;
    for rec in state.networks()? {
        if rec.name == def.name {
            return Err(OpsError::already_started(&def.name));
        }
        let other = running_def(&rec)?;
        if def.bridge.name.is_some() && def.bridge.name.as_deref() == Some(rec.bridge.as_str()) {
            return Err(conflict(
                file,
                "/network/bridge@name",
                format!(
                    "bridge '{}' is used by running network '{}'",
                    rec.bridge, rec.name
                ),
            ));
        }
        for (i, s) in subnets(def).into_iter().enumerate() {
            if let Some(t) = subnets(&other).into_iter().find(|t| overlap(s, *t)) {
                return Err(conflict(
                    file,
                    &format!("/network/ip[{}]@address", i + 1),
                    format!(
                        "subnet {}/{} overlaps running network '{}' ({}/{})",
                        s.0, s.1, rec.name, t.0, t.1
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `vxdp net-create FILE`: starts a transient network. Checked against every
/// defined and running network like `net-define`, with the same generated
/// defaults; a stored definition of the same name must carry the same UUID
/// (then this starts it with the given definition, which is not stored).
pub async fn create(ctx: &Context, xml_text: &str, file: &str) -> Result<NetworkRecord, OpsError> {
    let def = xml::parse_network(xml_text, file)?;
    plan::check_supported(&def, file)?;
    let def = {
        let state = StateDir::open(&ctx.state_dir)?;
        if state.network(&def.name)?.is_some() {
            return Err(OpsError::already_started(&def.name));
        }
        let nl = Netlink::connect()?;
        let mut def = def;
        let stored = load(&state, &def.name)?;
        if def.uuid.is_none() {
            def.uuid = stored.as_ref().and_then(|s| s.uuid.clone());
        }
        complete(&state, &nl, def, stored.as_ref(), file).await?
    };
    lifecycle::start(ctx, &xml::to_xml(&def), file).await
}

/// Every network, defined or running, sorted by name.
pub fn status_all(ctx: &Context) -> Result<Vec<NetworkStatus>, OpsError> {
    let state = StateDir::open(&ctx.state_dir)?;
    let running = state.networks()?;
    let mut out = Vec::new();
    for def in load_all(&state)? {
        let rec = running.iter().find(|r| r.name == def.name);
        out.push(NetworkStatus {
            active: rec.is_some(),
            persistent: true,
            autostart: is_autostart(&state, &def.name),
            bridge: rec
                .map(bridge_or_devices)
                .or_else(|| def.bridge.name.clone()),
            mode: mode_name(&def),
            uuid: def.uuid.clone(),
            name: def.name,
        });
    }
    for rec in &running {
        if out.iter().any(|s| s.name == rec.name) {
            continue;
        }
        let def = running_def(rec)?;
        out.push(NetworkStatus {
            name: rec.name.clone(),
            uuid: def.uuid.clone(),
            active: true,
            persistent: false,
            autostart: false,
            bridge: Some(bridge_or_devices(rec)),
            mode: mode_name(&def),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `net-list`/`net-info` show as the bridge: a direct network's
/// devices instead (it has no bridge).
fn bridge_or_devices(rec: &crate::host::state::NetworkRecord) -> String {
    if rec.direct_nics.is_empty() {
        rec.bridge.clone()
    } else {
        rec.direct_nics
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn mode_name(def: &NetworkDef) -> String {
    match def.mode() {
        Some(m) => crate::model::mode::name(m, true).into(),
        None => def
            .forward
            .as_ref()
            .map_or("isolated", |f| f.mode.as_str())
            .into(),
    }
}

/// `vxdp net-dumpxml`: the running definition of an active network (unless
/// `inactive`), otherwise the stored one.
pub fn dumpxml(ctx: &Context, name: &str, inactive: bool) -> Result<String, OpsError> {
    let state = StateDir::open(&ctx.state_dir)?;
    if !inactive && let Some(rec) = state.network(name)? {
        return Ok(rec.xml);
    }
    match load(&state, name)? {
        Some(def) => Ok(xml::to_xml(&def)),
        None if state.network(name)?.is_some() => Err(OpsError::Transient(name.into())),
        None => Err(OpsError::NotDefined(name.into())),
    }
}

/// Starts every autostart network that is not running (`vxdp autostart`; the
/// daemon calls this at boot). Returns the networks started and, per
/// network, the error that stopped it; one failure does not stop the others.
pub async fn autostart(ctx: &Context) -> Result<(Vec<String>, Vec<(String, OpsError)>), OpsError> {
    let names: Vec<String> = {
        let state = StateDir::open(&ctx.state_dir)?;
        let running = state.networks()?;
        load_all(&state)?
            .into_iter()
            .filter(|d| is_autostart(&state, &d.name) && running.iter().all(|r| r.name != d.name))
            .map(|d| d.name)
            .collect()
    };
    let mut started = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        match start_defined(ctx, &name).await {
            Ok(_) => started.push(name),
            Err(e) => failed.push((name, e)),
        }
    }
    Ok((started, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = new_uuid().unwrap();
        let b = new_uuid().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(
            xml::parse_network(
                &format!("<network><name>n</name><uuid>{a}</uuid></network>"),
                "t"
            )
            .is_ok()
        );
    }

    #[test]
    fn overlap_is_by_shorter_prefix_and_family() {
        let v4 = |s: &str, p| (s.parse::<IpAddr>().unwrap(), p);
        assert!(overlap(v4("10.0.0.0", 8), v4("10.1.0.0", 16)));
        assert!(overlap(v4("10.1.0.0", 16), v4("10.0.0.0", 8)));
        assert!(!overlap(v4("10.1.0.0", 16), v4("10.2.0.0", 16)));
        assert!(!overlap(v4("10.0.0.0", 8), v4("::", 0)));
        assert!(overlap(v4("2001:db8::", 64), v4("2001:db8::", 48)));
        assert!(!overlap(v4("2001:db8:1::", 64), v4("2001:db8:2::", 64)));
    }

    #[test]
    fn only_bridge_like_modes_get_a_bridge() {
        let mut d = xml::parse_network("<network><name>n</name></network>", "t").unwrap();
        assert!(has_managed_bridge(&d));
        for mode in ForwardMode::ALL {
            d.forward = Some(xml::ForwardDef {
                mode,
                ..Default::default()
            });
            assert_eq!(
                has_managed_bridge(&d),
                matches!(
                    mode,
                    ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open
                )
            );
        }
    }
}

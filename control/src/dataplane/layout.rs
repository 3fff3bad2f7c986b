//! Which map layout a pinned dataplane has, and what this vxdp does about
//! one that is not its own: the one place that knows the layout history.
//!
//! A dataplane outlives the vxdp that pinned it (an upgrade adopts the
//! running one, keeping conntrack). Its maps keep the key and value sizes,
//! and the set of maps, of the vxdp that created them. So every change to
//! the pinned maps (a map added, removed or retyped, a key or value type in
//! `common` resized or reinterpreted) bumps [`CURRENT`] and gets a line in
//! [`HISTORY`]; what an older layout lacks is asked here
//! ([`Layout::has`]), never by probing for a map elsewhere.
//!
//! The version is pinned with the maps as the symlink `<root>/layout`
//! (bpffs holds pins, directories and symlinks, not files), whose target
//! reads `vxdp-layout <MAGIC> <version>`. Dataplanes pinned before the
//! marker existed have none; their version is inferred from the maps they
//! have. At adopt:
//! - the current layout is used as it is;
//! - an older one is used with the features it lacks turned off (ports get
//!   no MAC entries, NAT networks no IPv6), and the way to the current one
//!   is logged: stop its networks, `vxdp unload`, `vxdp load`;
//! - a newer or foreign one is refused with that way out: this vxdp would
//!   misread its maps.

use std::{io, path::PathBuf};

use vxdp_common::names;

use super::Pins;

/// Says "this is a vxdp dataplane's layout marker" ("VXDP").
pub const MAGIC: u32 = 0x5658_4450;

/// The layout this vxdp loads. Bump it with every layout change.
pub const CURRENT: u32 = 12;

/// What each layout version added, oldest first. Versions before the
/// marker (5) are told by the maps they have.
pub const HISTORY: [(u32, &str); 12] = [
    (1, "the first pinned layout"),
    (2, "VXDP_PORT_COUNTERS: counters per guest port"),
    (
        3,
        "VXDP_MACS: guest ports reach each other without the bridge",
    ),
    (
        4,
        "VXDP_NAT6 and VXDP_CONNTRACK6: IPv6 in NAT networks (NAT66)",
    ),
    (
        5,
        "VXDP_DIRECT_NICS and VXDP_DIRECT_PORTS: direct networks; the layout marker",
    ),
    (
        6,
        "VXDP_FLOW_QUOTAS: per-guest and per-network flow limits (admission control)",
    ),
    (
        7,
        "VXDP_CONNTRACK and VXDP_CONNTRACK6 values carry TCP sequence records (40 and 56 bytes)",
    ),
    (
        8,
        "VXDP_RATE_LIMITS: guest ports' outbound rate limits (<bandwidth>)",
    ),
    (
        9,
        "VXDP_FORWARDS: port forwards into NAT networks (<portForward>); VXDP_GUEST_JUMP has slot 4 (hairpin)",
    ),
    (10, "VXDP_ROUTES: static <route>s and their gateway guests"),
    (
        11,
        "VXDP_HOST_CONFIG and the cgroup socket programs: port forwards used from the host itself",
    ),
    (
        12,
        "VXDP_GUEST_XDP_JUMP and vxdp_guest_xdp: the guest port programs as XDP on taps (--guest-xdp)",
    ),
];

/// A feature that depends on the pinned layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `VXDP_PORT_COUNTERS`: counters per guest port.
    PortCounters,
    /// `VXDP_MACS`: the port-to-port path.
    MacTable,
    /// `VXDP_NAT6`, `VXDP_CONNTRACK6`: IPv6 in NAT networks.
    Nat66,
    /// `VXDP_DIRECT_NICS`, `VXDP_DIRECT_PORTS`: direct networks.
    Direct,
    /// `VXDP_FLOW_QUOTAS`: per-guest and per-network flow limits.
    FlowQuotas,
    /// `VXDP_RATE_LIMITS`: guest ports' outbound rate limits.
    RateLimits,
    /// `VXDP_FORWARDS`: port forwards into NAT networks.
    PortForwards,
    /// `VXDP_ROUTES`: static `<route>`s via a guest.
    StaticRoutes,
    /// `VXDP_HOST_CONFIG` and the cgroup socket programs: port forwards
    /// used from the host itself.
    HostForwards,
    /// `VXDP_GUEST_XDP_JUMP`, `vxdp_guest_xdp`: XDP on tap guest ports.
    GuestXdp,
}

impl Feature {
    pub const ALL: [Feature; 10] = [
        Feature::PortCounters,
        Feature::MacTable,
        Feature::Nat66,
        Feature::Direct,
        Feature::FlowQuotas,
        Feature::RateLimits,
        Feature::PortForwards,
        Feature::StaticRoutes,
        Feature::HostForwards,
        Feature::GuestXdp,
    ];
}

impl Feature {
    /// The first layout with this feature.
    pub const fn since(self) -> u32 {
        match self {
            Feature::PortCounters => 2,
            Feature::MacTable => 3,
            Feature::Nat66 => 4,
            Feature::Direct => 5,
            Feature::FlowQuotas => 6,
            Feature::RateLimits => 8,
            Feature::PortForwards => 9,
            Feature::StaticRoutes => 10,
            Feature::HostForwards => 11,
            Feature::GuestXdp => 12,
        }
    }

    pub const fn describe(self) -> &'static str {
        match self {
            Feature::PortCounters => "counters per guest port (VXDP_PORT_COUNTERS)",
            Feature::MacTable => "the MAC table (VXDP_MACS)",
            Feature::Nat66 => "IPv6 in NAT networks (no VXDP_NAT6 map)",
            Feature::Direct => "direct networks (VXDP_DIRECT_NICS)",
            Feature::FlowQuotas => "flow limits per guest and network (VXDP_FLOW_QUOTAS)",
            Feature::RateLimits => "guest ports' outbound rate limits (VXDP_RATE_LIMITS)",
            Feature::PortForwards => "port forwards (VXDP_FORWARDS)",
            Feature::StaticRoutes => "static routes via a guest (VXDP_ROUTES)",
            Feature::HostForwards => "port forwards used from the host itself (VXDP_HOST_CONFIG)",
            Feature::GuestXdp => "XDP on tap guest ports (VXDP_GUEST_XDP_JUMP)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "map {name} pinned under {pins} has another layout ({what}): it was pinned by an older vxdp; stop its networks and run `vxdp unload` then `vxdp load` to load the current dataplane"
    )]
    OlderMap {
        name: &'static str,
        pins: PathBuf,
        what: String,
    },
    #[error(
        "the dataplane pinned under {pins} (map layout {version}) predates {}: stop its networks and run `vxdp unload` then `vxdp load` (or restart them) to load the current one (layout {CURRENT})",
        feature.describe()
    )]
    Lacks {
        pins: PathBuf,
        version: u32,
        feature: Feature,
    },
    #[error(
        "the dataplane pinned under {pins} has map layout {version}, newer than this vxdp's ({CURRENT}): use the vxdp that pinned it, or stop its networks and run `vxdp unload` then `vxdp load`"
    )]
    Newer { pins: PathBuf, version: u32 },
    #[error(
        "{pins}/layout names {found:?}, not a vxdp map layout: this is not a vxdp dataplane (or a damaged one); stop its networks and run `vxdp unload` then `vxdp load`, or pass another --bpffs"
    )]
    Foreign { pins: PathBuf, found: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The layout of a pinned dataplane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: u32,
    /// Whether the version was read from the marker (else inferred).
    pub marked: bool,
}

impl Layout {
    pub const fn current() -> Self {
        Self {
            version: CURRENT,
            marked: true,
        }
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.version >= feature.since()
    }

    /// The features this layout lacks.
    pub fn lacks(&self) -> Vec<Feature> {
        Feature::ALL.into_iter().filter(|f| !self.has(*f)).collect()
    }

    /// `Ok` when the layout has `feature`, else the error naming the way out.
    pub fn require(&self, pins: &Pins, feature: Feature) -> Result<(), LayoutError> {
        if self.has(feature) {
            Ok(())
        } else {
            Err(LayoutError::Lacks {
                pins: pins.root.clone(),
                version: self.version,
                feature,
            })
        }
    }
}

/// The marker's target for `version`.
pub fn marker(version: u32) -> String {
    format!("vxdp-layout {MAGIC:08x} {version}")
}

fn parse_marker(text: &str) -> Option<u32> {
    let mut words = text.split(' ');
    let ok = words.next() == Some("vxdp-layout")
        && words.next().and_then(|m| u32::from_str_radix(m, 16).ok()) == Some(MAGIC);
    let version = words.next()?.parse().ok().filter(|v| *v > 0)?;
    (ok && words.next().is_none()).then_some(version)
}

/// Pins the current layout's marker (at load, next to the maps).
pub fn write(pins: &Pins) -> Result<(), LayoutError> {
    let path = pins.layout_marker();
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(LayoutError::Io { path, source }),
    }
    std::os::unix::fs::symlink(marker(CURRENT), &path)
        .map_err(|source| LayoutError::Io { path, source })
}

/// The layout pinned under `pins` (which must be loaded): from the marker,
/// or for a dataplane pinned before markers, from the maps it has. A newer
/// or foreign marker is an error.
pub fn detect(pins: &Pins) -> Result<Layout, LayoutError> {
    let path = pins.layout_marker();
    match std::fs::read_link(&path) {
        Ok(target) => {
            let found = target.to_string_lossy().into_owned();
            match parse_marker(&found) {
                Some(version) if version > CURRENT => Err(LayoutError::Newer {
                    pins: pins.root.clone(),
                    version,
                }),
                Some(version) => Ok(Layout {
                    version,
                    marked: true,
                }),
                None => Err(LayoutError::Foreign {
                    pins: pins.root.clone(),
                    found,
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(infer(pins)),
        // A regular file or directory there is not ours either.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(LayoutError::Foreign {
            pins: pins.root.clone(),
            found: "(not a symlink)".into(),
        }),
        Err(source) => Err(LayoutError::Io { path, source }),
    }
}

/// The version of an unmarked dataplane, from the maps each version added.
fn infer(pins: &Pins) -> Layout {
    let has = |name| pins.map(name).exists();
    let version = if !has(names::MAP_PORT_COUNTERS) {
        1
    } else if !has(names::MAP_MACS) {
        2
    } else if !(has(names::MAP_NAT6) && has(names::MAP_CONNTRACK6)) {
        3
    } else if !(has(names::MAP_DIRECT_NICS) && has(names::MAP_DIRECT_PORTS)) {
        4
    } else {
        5
    };
    Layout {
        version,
        marked: false,
    }
}

/// Checks the layout of a dataplane about to be adopted: refuses a newer
/// or foreign one, and logs what an older one lacks and the way to the
/// current one.
pub fn adopt(pins: &Pins) -> Result<Layout, LayoutError> {
    let layout = detect(pins)?;
    let lacks = layout.lacks();
    if !lacks.is_empty() {
        log::warn!(
            "the dataplane pinned under {} has map layout {} (this vxdp's is {CURRENT}), without {}; stop its networks and run `vxdp unload` then `vxdp load` to load the current one",
            pins.root.display(),
            layout.version,
            lacks
                .iter()
                .map(|f| f.describe())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(layout)
}

/// The error for a map whose key or value size is not this vxdp's.
pub fn older_map(name: &'static str, pins: &Pins, size: usize, expected: usize) -> LayoutError {
    LayoutError::OlderMap {
        name,
        pins: pins.root.clone(),
        what: format!("{size}-byte keys or values where this vxdp uses {expected}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pin root in a plain directory: detection only looks at names.
    fn pins_with(tag: &str, maps: &[&str], marker: Option<&str>) -> (Pins, PathBuf) {
        let dir = std::env::temp_dir().join(format!("vxdp-layout-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pins = Pins::new(&dir);
        std::fs::create_dir_all(pins.maps_dir()).unwrap();
        for m in maps {
            std::fs::write(pins.map(m), b"").unwrap();
        }
        if let Some(m) = marker {
            std::os::unix::fs::symlink(m, pins.layout_marker()).unwrap();
        }
        (pins, dir)
    }

    #[test]
    fn the_current_marker_round_trips() {
        assert_eq!(parse_marker(&marker(CURRENT)), Some(CURRENT));
        assert_eq!(HISTORY.last().map(|h| h.0), Some(CURRENT));
    }

    #[test]
    fn unmarked_dataplanes_are_dated_by_their_maps() {
        let all = [
            names::MAP_PORT_COUNTERS,
            names::MAP_MACS,
            names::MAP_NAT6,
            names::MAP_CONNTRACK6,
            names::MAP_DIRECT_NICS,
            names::MAP_DIRECT_PORTS,
        ];
        for (n, version) in [(0, 1), (1, 2), (2, 3), (3, 3), (4, 4), (5, 4), (6, 5)] {
            let maps = &all[..n];
            let (pins, dir) = pins_with(&format!("u{version}-{}", maps.len()), maps, None);
            let l = detect(&pins).unwrap();
            std::fs::remove_dir_all(dir).unwrap();
            assert_eq!((l.version, l.marked), (version, false), "{maps:?}");
            for f in Feature::ALL {
                assert_eq!(l.has(f), version >= f.since(), "{maps:?} {f:?}");
            }
        }
    }

    #[test]
    fn older_newer_and_foreign_markers() {
        let (pins, dir) = pins_with("old", &[], Some(&marker(2)));
        let l = detect(&pins).unwrap();
        assert_eq!((l.version, l.marked), (2, true));
        assert!(l.has(Feature::PortCounters) && !l.has(Feature::MacTable));
        let e = l.require(&pins, Feature::Nat66).unwrap_err().to_string();
        assert!(e.contains("layout 2") && e.contains("vxdp unload"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();

        let (pins, dir) = pins_with("new", &[], Some(&marker(CURRENT + 1)));
        let e = detect(&pins).unwrap_err();
        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(e, LayoutError::Newer { version, .. } if version == CURRENT + 1));

        for foreign in [
            "vxdp-layout 12345678 3",
            "something else",
            "vxdp-layout 56584450 0",
        ] {
            let (pins, dir) = pins_with("foreign", &[], Some(foreign));
            let e = detect(&pins).unwrap_err();
            std::fs::remove_dir_all(dir).unwrap();
            assert!(matches!(e, LayoutError::Foreign { .. }), "{foreign}: {e}");
            assert!(e.to_string().contains("vxdp unload"), "{e}");
        }
    }
}

//! The one answer to "what mode is this network": libvirt's `<forward
//! mode>` values, the mode vxdp realizes for a definition (the codes of
//! `vxdp_common::mode` the programs read), its name in `net-list` and the
//! state records, and whether it is a direct (macvtap-like) network.

use std::fmt;

use vxdp_common::mode;

/// `<forward mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ForwardMode {
    #[default]
    Nat,
    Route,
    Open,
    Bridge,
    Private,
    Vepa,
    Passthrough,
    Hostdev,
}

impl ForwardMode {
    pub const ALL: [ForwardMode; 8] = [
        ForwardMode::Nat,
        ForwardMode::Route,
        ForwardMode::Open,
        ForwardMode::Bridge,
        ForwardMode::Private,
        ForwardMode::Vepa,
        ForwardMode::Passthrough,
        ForwardMode::Hostdev,
    ];

    /// The XML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Nat => "nat",
            ForwardMode::Route => "route",
            ForwardMode::Open => "open",
            ForwardMode::Bridge => "bridge",
            ForwardMode::Private => "private",
            ForwardMode::Vepa => "vepa",
            ForwardMode::Passthrough => "passthrough",
            ForwardMode::Hostdev => "hostdev",
        }
    }

    /// Exact, case-sensitive match on the XML spelling.
    pub fn from_xml(s: &str) -> Option<ForwardMode> {
        ForwardMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Modes where guests attach to something that is not a libvirt-managed bridge;
    /// libvirt refuses `<ip>`, `<mac>`, `<domain>`, `<dns>` and `<route>` for them.
    pub fn is_direct(self) -> bool {
        matches!(
            self,
            ForwardMode::Bridge
                | ForwardMode::Private
                | ForwardMode::Vepa
                | ForwardMode::Passthrough
                | ForwardMode::Hostdev
        )
    }
}

impl fmt::Display for ForwardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The vxdp mode (one of `vxdp_common::mode`) of a definition with
/// `<forward mode=forward>` (`None`: no `<forward>`) that does or does not
/// name a `<bridge>`: `<forward mode='bridge'>` is a host bridge with a
/// bridge name and a direct network without. `None` for a mode vxdp does
/// not realize (`hostdev`).
pub fn of(forward: Option<ForwardMode>, names_bridge: bool) -> Option<u32> {
    Some(match forward {
        None => mode::ISOLATED,
        Some(ForwardMode::Nat) => mode::NAT,
        Some(ForwardMode::Route) => mode::ROUTE,
        Some(ForwardMode::Open) => mode::OPEN,
        Some(ForwardMode::Bridge) if names_bridge => mode::BRIDGE,
        Some(ForwardMode::Bridge) => mode::DIRECT_BRIDGE,
        Some(ForwardMode::Vepa) => mode::DIRECT_VEPA,
        Some(ForwardMode::Private) => mode::DIRECT_PRIVATE,
        Some(ForwardMode::Passthrough) => mode::DIRECT_PASSTHROUGH,
        Some(ForwardMode::Hostdev) => return None,
    })
}

/// Whether `m` is a direct (macvtap-like) mode: no bridge, the NIC is the
/// network's layer 2.
pub fn is_direct(m: u32) -> bool {
    vxdp_common::mode_direct(m)
}

/// The mode's name as `net-list` and the state records show it: `nat`,
/// `route`, `open`, `bridge`, `direct-bridge`, `direct-vepa`,
/// `direct-private`, `direct-passthrough`, and `isolated` or — without
/// any `<ip>` — `very-isolated`.
pub fn name(m: u32, has_ip: bool) -> &'static str {
    match m {
        mode::NAT => "nat",
        mode::ROUTE => "route",
        mode::OPEN => "open",
        mode::BRIDGE => "bridge",
        mode::DIRECT_BRIDGE => "direct-bridge",
        mode::DIRECT_VEPA => "direct-vepa",
        mode::DIRECT_PRIVATE => "direct-private",
        mode::DIRECT_PASSTHROUGH => "direct-passthrough",
        _ if has_ip => "isolated",
        _ => "very-isolated",
    }
}

/// The mode a [`name`] names.
pub fn from_name(s: &str) -> Option<u32> {
    [
        mode::NAT,
        mode::ROUTE,
        mode::OPEN,
        mode::BRIDGE,
        mode::DIRECT_BRIDGE,
        mode::DIRECT_VEPA,
        mode::DIRECT_PRIVATE,
        mode::DIRECT_PASSTHROUGH,
    ]
    .into_iter()
    .find(|m| name(*m, true) == s)
    .or(matches!(s, "isolated" | "very-isolated").then_some(mode::ISOLATED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_has_one_name_and_back() {
        for f in ForwardMode::ALL {
            for bridge in [false, true] {
                let Some(m) = of(Some(f), bridge) else {
                    assert_eq!(f, ForwardMode::Hostdev);
                    continue;
                };
                assert_eq!(from_name(name(m, true)), Some(m), "{f} {bridge}");
                // Only <forward mode='bridge'> turns on a <bridge name>.
                let host_bridge = f == ForwardMode::Bridge && bridge;
                assert_eq!(is_direct(m), f.is_direct() && !host_bridge, "{f} {bridge}");
            }
        }
        assert_eq!(name(of(None, false).unwrap(), false), "very-isolated");
        assert_eq!(from_name("very-isolated"), Some(mode::ISOLATED));
        assert_eq!(from_name("hostdev"), None);
    }
}

//! Port forwards into NAT networks, as libvirt's domain `<portForward>`
//! describes them (the passt backend's element): a protocol, an optional
//! public address and inbound device, and port ranges, each mapped to the
//! guest's ports from `to` on, or excluded.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// `<portForward proto>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => vxdp_common::PROTO_TCP,
            Proto::Udp => vxdp_common::PROTO_UDP,
        }
    }
}

/// `<range start end to exclude>`: public ports `start..=end` (`end` =
/// `start` when absent), forwarded to the guest's `to..` (the same ports
/// when absent), or taken out of the element's other ranges (`exclude`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude: bool,
}

/// Why a range is not valid (libvirt's rules, and what a guest port can
/// hold): the attribute at fault and the reason.
pub fn range_problem(r: &PortRange) -> Option<(&'static str, String)> {
    if r.start == 0 {
        return Some(("start", "port 0 cannot be forwarded".into()));
    }
    if r.end < r.start {
        return Some((
            "end",
            format!(
                "end {} is below start {} (a range is start..end)",
                r.end, r.start
            ),
        ));
    }
    if r.exclude && r.to.is_some() {
        return Some((
            "to",
            "an excluded range forwards nothing: 'to' has no meaning there".into(),
        ));
    }
    if let Some(to) = r.to {
        if to == 0 {
            return Some(("to", "guest port 0 cannot receive".into()));
        }
        if to as u32 + (r.end - r.start) as u32 > 65535 {
            return Some((
                "to",
                format!("to {to} + {} ports runs past 65535", r.end - r.start + 1),
            ));
        }
    }
    None
}

/// One `<portForward>` of a guest port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub proto: Proto,
    /// The public address (`address`); `None`: the network's NAT address
    /// (the uplink's, followed when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Only what arrives on this interface (`dev`); `None`: the network's
    /// uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    pub ranges: Vec<PortRange>,
}

impl PortForward {
    /// The forwarded (public port, guest port) pairs, in ascending public
    /// order: every port of the forwarding ranges that no excluded range
    /// holds. A port two forwarding ranges hold is an error (see
    /// [`PortForward::overlap`]), checked before this is used.
    pub fn mappings(&self) -> Vec<(u16, u16)> {
        let excluded = |p: u16| {
            self.ranges
                .iter()
                .any(|r| r.exclude && (r.start..=r.end).contains(&p))
        };
        let mut out: Vec<(u16, u16)> = self
            .ranges
            .iter()
            .filter(|r| !r.exclude)
            .flat_map(|r| {
                let to = r.to.unwrap_or(r.start);
                (r.start..=r.end).map(move |p| (p, to + (p - r.start)))
            })
            .filter(|(p, _)| !excluded(*p))
            .collect();
        out.sort_unstable();
        out
    }

    /// A public port two of this element's forwarding ranges both hold.
    pub fn overlap(&self) -> Option<u16> {
        let fwd: Vec<&PortRange> = self.ranges.iter().filter(|r| !r.exclude).collect();
        for (i, a) in fwd.iter().enumerate() {
            for b in &fwd[i + 1..] {
                if a.start <= b.end && b.start <= a.end {
                    return Some(a.start.max(b.start));
                }
            }
        }
        None
    }

    /// `2022->22, 5000-5020->6000-6020 except 5010-5015`, for listings.
    pub fn describe_ranges(&self) -> String {
        let one = |s: u16, e: u16| {
            if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            }
        };
        let mut parts = Vec::new();
        for r in self.ranges.iter().filter(|r| !r.exclude) {
            let mut t = one(r.start, r.end);
            if let Some(to) = r.to {
                t.push_str(&format!("->{}", one(to, to + (r.end - r.start))));
            }
            parts.push(t);
        }
        let ex: Vec<String> = self
            .ranges
            .iter()
            .filter(|r| r.exclude)
            .map(|r| one(r.start, r.end))
            .collect();
        let mut s = parts.join(", ");
        if !ex.is_empty() {
            s.push_str(&format!(" except {}", ex.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u16, end: u16, to: Option<u16>, exclude: bool) -> PortRange {
        PortRange {
            start,
            end,
            to,
            exclude,
        }
    }

    #[test]
    fn ranges_map_to_guest_ports_minus_exclusions() {
        // The example: 2022 → 22; 5000-5020 → 6000-6020 except
        // 5010-5015.
        let f = PortForward {
            proto: Proto::Tcp,
            address: None,
            dev: None,
            ranges: vec![
                r(2022, 2022, Some(22), false),
                r(5000, 5020, Some(6000), false),
                r(5010, 5015, None, true),
            ],
        };
        let m = f.mappings();
        assert_eq!(m.len(), 1 + 21 - 6);
        assert_eq!(m[0], (2022, 22));
        assert!(m.contains(&(5000, 6000)) && m.contains(&(5009, 6009)));
        assert!(m.contains(&(5016, 6016)) && m.contains(&(5020, 6020)));
        assert!(!m.iter().any(|(p, _)| (5010..=5015).contains(p)));
        assert_eq!(f.overlap(), None);
        assert_eq!(
            f.describe_ranges(),
            "2022->22, 5000-5020->6000-6020 except 5010-5015"
        );
    }

    #[test]
    fn without_to_the_guest_port_is_the_public_one() {
        let f = PortForward {
            proto: Proto::Udp,
            address: None,
            dev: None,
            ranges: vec![r(53, 54, None, false)],
        };
        assert_eq!(f.mappings(), vec![(53, 53), (54, 54)]);
    }

    #[test]
    fn overlapping_forwarding_ranges_are_found() {
        let f = PortForward {
            proto: Proto::Tcp,
            address: None,
            dev: None,
            ranges: vec![r(100, 200, None, false), r(150, 160, Some(1), false)],
        };
        assert_eq!(f.overlap(), Some(150));
    }

    #[test]
    fn bad_ranges_say_why() {
        assert_eq!(range_problem(&r(0, 0, None, false)).unwrap().0, "start");
        let (at, why) = range_problem(&r(10, 9, None, false)).unwrap();
        assert!(at == "end" && why.contains("below"), "{why}");
        assert_eq!(range_problem(&r(10, 10, Some(5), true)).unwrap().0, "to");
        let (at, why) = range_problem(&r(10, 20, Some(65530), false)).unwrap();
        assert!(at == "to" && why.contains("65535"), "{why}");
        assert_eq!(range_problem(&r(10, 20, Some(0), false)).unwrap().0, "to");
        assert_eq!(range_problem(&r(10, 20, Some(65525), false)), None);
    }
}

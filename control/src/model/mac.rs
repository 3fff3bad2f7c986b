//! MAC addresses, read and written the way libvirt does: six groups of two
//! hex digits separated by colons, written in lower case.

use std::{fmt, str::FromStr};

/// A MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("expected a MAC address like 52:54:00:12:34:56")]
    Syntax,
    #[error("multicast MAC address; a unicast address is required")]
    Multicast,
}

impl Mac {
    /// Parses `xx:xx:xx:xx:xx:xx` (libvirt's `uniMacAddr` syntax: exactly
    /// two hex digits per group, either case). Multicast addresses parse;
    /// [`Mac::unicast`] refuses them where a guest or bridge MAC is needed.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let mut mac = [0u8; 6];
        let mut groups = s.split(':');
        for byte in &mut mac {
            let g = groups.next().ok_or(MacError::Syntax)?;
            if g.len() != 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacError::Syntax);
            }
            *byte = u8::from_str_radix(g, 16).map_err(|_| MacError::Syntax)?;
        }
        if groups.next().is_some() {
            return Err(MacError::Syntax);
        }
        Ok(Self(mac))
    }

    /// [`Mac::parse`], then refuses a multicast (group) address: a guest's
    /// or a bridge's MAC must be unicast.
    pub fn parse_unicast(s: &str) -> Result<Self, MacError> {
        Self::parse(s)?.unicast()
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// `self` when it is unicast.
    pub fn unicast(self) -> Result<Self, MacError> {
        if self.is_multicast() {
            Err(MacError::Multicast)
        } else {
            Ok(self)
        }
    }

    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The guest MAC behind a tap libvirt created: libvirt gives the tap
    /// the guest's MAC with the first byte replaced by `fe` (`fa` when the
    /// guest's own first byte is `fe`), so the bridge never takes the
    /// guest's address. The first byte is lost; vxdp assumes libvirt's
    /// default prefix, `52` (52:54:00:…), and `fe` for a tap in `fa`. Any
    /// other tap MAC is read the same way (first byte `52`): the port still
    /// gets exactly one guest MAC, and a guest whose MAC differs needs the
    /// hook (`vxdp libvirt-hook`) or `vxdp attach-interface --mac`.
    pub fn guest_of_libvirt_tap(tap: [u8; 6]) -> Self {
        let mut guest = tap;
        guest[0] = if tap[0] == 0xfa { 0xfe } else { 0x52 };
        Self(guest)
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Self {
        Self(b)
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        Self::parse(s)
    }
}

/// Lower-case, colon-separated, as libvirt writes it.
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_syntax_only() {
        assert_eq!(
            Mac::parse("52:54:00:AB:cd:0f"),
            Ok(Mac([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]))
        );
        for bad in [
            "1:2:3:4:5:6",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52-54-00-ab-cd-ef",
            "52:54:00:ab:cd:+1",
            "52:54:00:ab:cd:0g",
            "",
            "52:54:00:ab:cd:ef:",
        ] {
            assert_eq!(Mac::parse(bad), Err(MacError::Syntax), "{bad}");
        }
    }

    #[test]
    fn unicast_is_checked_apart() {
        let m = Mac::parse("01:00:5e:00:00:01").unwrap();
        assert!(m.is_multicast());
        assert_eq!(m.unicast(), Err(MacError::Multicast));
        assert_eq!(
            Mac::parse_unicast("ff:ff:ff:ff:ff:ff"),
            Err(MacError::Multicast)
        );
        assert!(Mac::parse_unicast("52:54:00:00:00:01").is_ok());
    }

    #[test]
    fn guest_mac_from_libvirt_tap_mac() {
        let tap = |s| Mac::parse(s).unwrap().octets();
        assert_eq!(
            Mac::guest_of_libvirt_tap(tap("fe:54:00:12:34:56")).to_string(),
            "52:54:00:12:34:56"
        );
        assert_eq!(
            Mac::guest_of_libvirt_tap(tap("fa:16:3e:00:00:01")).to_string(),
            "fe:16:3e:00:00:01"
        );
        // Never multicast, whatever the port's MAC.
        assert!(!Mac::guest_of_libvirt_tap(tap("01:00:5e:00:00:01")).is_multicast());
    }

    #[test]
    fn written_as_libvirt_writes_it() {
        let m = Mac([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(m.to_string().parse::<Mac>(), Ok(m));
    }
}

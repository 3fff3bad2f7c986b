//! Address arithmetic: prefix masks and prefix overlap.

use std::net::IpAddr;

/// The IPv4 netmask of `/prefix`, host order.
pub fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

/// The IPv6 netmask of `/prefix`.
pub fn prefix_mask6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// Whether two prefixes share an address: same family, and equal under
/// the shorter prefix.
pub fn overlaps((a, ap): (IpAddr, u8), (b, bp): (IpAddr, u8)) -> bool {
    let p = ap.min(bp);
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            a.to_bits() & prefix_mask(p) == b.to_bits() & prefix_mask(p)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            a.to_bits() & prefix_mask6(p) == b.to_bits() & prefix_mask6(p)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_overlap() {
        assert_eq!(
            (prefix_mask(0), prefix_mask(24), prefix_mask(32)),
            (0, 0xffff_ff00, u32::MAX)
        );
        assert_eq!((prefix_mask6(0), prefix_mask6(128)), (0, u128::MAX));
        let p = |s: &str, l| (s.parse::<IpAddr>().unwrap(), l);
        assert!(overlaps(p("10.0.0.0", 8), p("10.1.0.0", 16)));
        assert!(overlaps(p("10.1.0.0", 16), p("10.0.0.0", 8)));
        assert!(!overlaps(p("10.1.0.0", 16), p("10.2.0.0", 16)));
        assert!(!overlaps(p("10.0.0.0", 8), p("::", 0)));
        assert!(overlaps(p("2001:db8::", 64), p("2001:db8::", 48)));
        assert!(!overlaps(p("2001:db8:1::", 64), p("2001:db8:2::", 64)));
    }
}

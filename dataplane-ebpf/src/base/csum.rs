//! Internet checksum arithmetic, shared by the XDP side of [`super::ctx`]
//! and the ICMP error translation, which patch checksum fields themselves.

/// RFC 1624 incremental update: HC' = ~(~HC + ~m + m'), on 16-bit words as
/// they sit in memory (one's complement sums do not care about byte order as
/// long as every word is read the same way). `wide`: `from`/`to` are 32-bit.
#[inline(always)]
pub fn update(check: u16, from: u32, to: u32, wide: bool) -> u16 {
    let mut sum: u32 = (!check) as u32;
    if wide {
        sum += (!(from as u16)) as u32 + (!((from >> 16) as u16)) as u32;
        sum += (to & 0xffff) + (to >> 16);
    } else {
        sum += (!(from as u16)) as u32 + (to & 0xffff);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

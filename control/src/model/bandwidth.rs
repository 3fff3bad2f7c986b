//! `<bandwidth>` (libvirt's QoS element, on a network, a portgroup or a
//! domain `<interface>`): the rates a guest port is shaped to, and what
//! they become on the host.
//!
//! Units are libvirt's: `average`, `peak` and `floor` in kilobytes per
//! second, `burst` in kibibytes. libvirt hands the rates to `tc` as
//! `<n>kbps`, which tc reads as 1000 bytes per second (and the burst as
//! `<n>kb`, 1024 bytes), so that is what vxdp applies too.
//!
//! Directions are the guest's: `inbound` is what the guest receives (the
//! port's transmit side on the host), `outbound` what it sends.

use roxmltree::Node;

use vxdp_common::RateLimit;

/// An HTB class's rates, as `tc class add ... htb rate R ceil C burst B
/// cburst CB` gives them (bytes and bytes per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbRate {
    pub rate: u64,
    pub ceil: u64,
    pub burst: u64,
    pub cburst: u64,
}

/// Bytes per second of one unit of `average`/`peak`/`floor` (tc's `kbps`).
pub const RATE_UNIT: u64 = 1000;
/// Bytes of one unit of `burst` (tc's `kb`).
pub const BURST_UNIT: u64 = 1024;

/// `<inbound>` or `<outbound>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    pub average: u64,
    pub peak: Option<u64>,
    pub burst: Option<u64>,
    pub floor: Option<u64>,
}

/// A `<bandwidth>` element; `None` directions are not shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Bandwidth {
    pub inbound: Option<Rate>,
    pub outbound: Option<Rate>,
}

impl Bandwidth {
    /// Reads a `<bandwidth>` node whose values the XML layer has checked
    /// already (libvirt's rules: `average` given and at least 1).
    pub fn from_node(node: Node) -> Bandwidth {
        let rate = |name: &str| {
            node.children()
                .find(|c| c.has_tag_name(name))
                .map(|d| {
                    let get = |a: &str| d.attribute(a).and_then(|v| v.parse::<u64>().ok());
                    Rate {
                        average: get("average").unwrap_or(0),
                        peak: get("peak"),
                        burst: get("burst"),
                        floor: get("floor"),
                    }
                })
                .filter(|r| r.average > 0)
        };
        Bandwidth {
            inbound: rate("inbound"),
            outbound: rate("outbound"),
        }
    }

    /// Reads a serialised `<bandwidth>` (a [`crate::xml::RawElement`]).
    pub fn from_xml(xml: &str) -> Option<Bandwidth> {
        let doc = roxmltree::Document::parse(xml).ok()?;
        let b = Bandwidth::from_node(doc.root_element());
        (!b.is_empty()).then_some(b)
    }

    /// No direction shaped (libvirt drops such a `<bandwidth/>`).
    pub fn is_empty(&self) -> bool {
        self.inbound.is_none() && self.outbound.is_none()
    }

    /// The guest's outbound limit as a token bucket: `average`, and
    /// `burst` or else one second of `average` (libvirt's police action
    /// takes the same default). `peak` does not apply, as with libvirt.
    pub fn outbound_limit(&self) -> Option<RateLimit> {
        self.outbound.map(|r| {
            let burst = r.burst.unwrap_or(r.average).saturating_mul(BURST_UNIT);
            RateLimit::new(r.average.saturating_mul(RATE_UNIT), burst)
        })
    }

    /// A network-wide inbound limit as a token bucket (the network's
    /// `<bandwidth><inbound>`): `average`, and `burst` or else one second
    /// of `average`. libvirt shapes the bridge with HTB (`peak` its ceil);
    /// vxdp's fast paths pass the bridge, so the network is policed at
    /// `average` where frames reach its guests.
    pub fn inbound_limit(&self) -> Option<RateLimit> {
        self.inbound.map(|r| {
            let burst = r.burst.unwrap_or(r.average).saturating_mul(BURST_UNIT);
            RateLimit::new(r.average.saturating_mul(RATE_UNIT), burst)
        })
    }

    /// The guest's inbound shaping as an HTB class: `rate` is `average`,
    /// `ceil` is `peak` (else `average`), `burst` as given or else what tc
    /// computes when none is given (a jiffy at the rate plus an MTU).
    pub fn inbound_htb(&self) -> Option<HtbRate> {
        self.inbound.map(|r| {
            let rate = r.average.saturating_mul(RATE_UNIT);
            let ceil = r
                .peak
                .map_or(rate, |p| p.saturating_mul(RATE_UNIT))
                .max(rate);
            let default_burst = |bps: u64| bps / 1000 + 1600;
            let burst = r
                .burst
                .map_or(default_burst(rate), |b| b.saturating_mul(BURST_UNIT));
            HtbRate {
                rate,
                ceil,
                burst,
                cburst: if ceil == rate {
                    burst
                } else {
                    default_burst(ceil)
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_a_bucket_and_an_htb_class() {
        let b = Bandwidth::from_xml(
            "<bandwidth><inbound average='1000' peak='2000' burst='64'/><outbound average='500'/></bandwidth>",
        )
        .unwrap();
        assert_eq!(
            b.inbound,
            Some(Rate {
                average: 1000,
                peak: Some(2000),
                burst: Some(64),
                floor: None
            })
        );
        let htb = b.inbound_htb().unwrap();
        assert_eq!(
            (htb.rate, htb.ceil, htb.burst, htb.cburst),
            (1_000_000, 2_000_000, 65_536, 3_600)
        );
        // 500 kB/s: 2000 ns per byte; burst defaults to 500 KiB = 1.024 s.
        let l = b.outbound_limit().unwrap();
        assert_eq!(l.cost_ns(1), 2000);
        assert_eq!(l.burst_ns, 1_024_000_000);
        assert_eq!(Bandwidth::from_xml("<bandwidth/>"), None);
    }
}

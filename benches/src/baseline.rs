//! The "no figure worse than today's" target: every target ratio of
//! this run next to the same ratio computed from a reference full run's
//! figures (`benches/baseline/*.json`, taken from docs/performance.md's
//! table of that run), judged with a noise tolerance.
//!
//! Ratios, not absolute figures, are compared: absolute rates move by 4×
//! with the load of this shared machine, ratios of interleaved
//! repetitions by about ±15 % (docs/performance.md, "Noise"). A ratio whose
//! target is a minimum is worse when it falls below the reference's by
//! more than [`TOLERANCE`]; one whose target is a maximum when it rises
//! above it by more than that. The reference is the first full run of the
//! AF_XDP generator: the live-frames generator's runs before it (up to
//! 2026-11-23) had a floor 20× lower, so their rate ratios are not
//! comparable with any run of today's generator.

use anyhow::{Context, Result};

use crate::report::{BaselineRow, Report};

/// How much worse than the reference a ratio may be before it counts as a
/// regression: the spread of ratios between full runs on this machine.
pub const TOLERANCE: f64 = 0.15;

const REFERENCE: (&str, &str) = ("2026-12-06", include_str!("../baseline/2026-12-06.json"));

/// The reference run's figures as a report (no comparisons).
fn reference() -> Result<Report> {
    let doc: serde_json::Value =
        serde_json::from_str(REFERENCE.1).context("parsing the benchmark's reference run")?;
    let mut r = Report::default();
    let figures = doc["figures"]
        .as_object()
        .context("the reference run has no \"figures\" object")?;
    for (id, f) in figures {
        let samples: Vec<f64> = f["samples"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let value = f["value"]
            .as_f64()
            .with_context(|| format!("reference figure {id} has no value"))?;
        r.reference_figure(id, value, samples);
    }
    Ok(r)
}

/// Adds a baseline row for every comparison of `r` (after its targets are
/// recorded).
pub fn judge(r: &mut Report) -> Result<()> {
    let mut then = reference()?;
    let mut rows = Vec::new();
    for c in &r.comparisons {
        then.compare(
            &c.name,
            &c.numerator,
            &c.denominator,
            c.target_min,
            c.target_max,
        );
        let before = then.comparisons.last().and_then(|t| t.ratio);
        rows.push(BaselineRow::judge(
            &c.name,
            c.ratio,
            before,
            c.target_min.is_some(),
            c.target_max.is_some(),
            TOLERANCE,
        ));
    }
    r.meta("baseline_run", REFERENCE.0);
    r.baseline = rows;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_run_parses_and_has_its_forwarding_figures() {
        let r = reference().unwrap();
        for id in [
            "forward.nat.1flow.vxdp.mpps",
            "forward.nat.1flow.kernel.mpps",
            "forward.nat.1flow.vxdp.ns_over_floor",
            "flows.vxdp.setup_per_s",
            "tcp.nat.vxdp.gbps",
        ] {
            assert!(r.value(id).is_some_and(|v| v > 0.0), "{id}");
        }
        // Paired samples: NAT 1 flow, vxdp / kernel, as printed then.
        let mut r = r;
        r.compare(
            "x",
            "forward.nat.1flow.vxdp.mpps",
            "forward.nat.1flow.kernel.mpps",
            Some(6.0),
            None,
        );
        let ratio = r.comparisons[0].ratio.unwrap();
        assert!((1.9..2.4).contains(&ratio), "{ratio}");
    }
}

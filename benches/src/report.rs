//! Figures, comparisons with targets, the terminal table and the JSON file.

use std::collections::BTreeMap;

use serde::Serialize;

/// One measured quantity: the median of its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub label: String,
    pub unit: &'static str,
    /// Median of `samples`; `null` when not available.
    pub value: Option<f64>,
    pub samples: Vec<f64>,
    /// Why there is no value (e.g. vxdp has no route mode yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_available: Option<String>,
}

/// A ratio with its target: `ratio = numerator / denominator` (median of
/// the per-repetition ratios), met when `ratio >= min` (or `<= max`).
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub name: String,
    pub numerator: String,
    pub denominator: String,
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_max: Option<f64>,
    /// `null` when a figure is not available or there is no target.
    pub met: Option<bool>,
}

#[derive(Default, Debug, Serialize)]
pub struct Report {
    pub meta: BTreeMap<String, serde_json::Value>,
    pub figures: BTreeMap<String, Figure>,
    pub comparisons: Vec<Comparison>,
    /// Every comparison against the same ratio of the reference run
    /// (`baseline`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub baseline: Vec<BaselineRow>,
}

/// A ratio of this run next to the reference run's.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineRow {
    pub name: String,
    pub now: Option<f64>,
    pub reference: Option<f64>,
    /// `Some(false)`: worse than the reference by more than the tolerance
    /// (lower when the target is a minimum, higher when it is a maximum);
    /// `null` without both ratios or without a target (no "better").
    pub met: Option<bool>,
}

impl BaselineRow {
    pub fn judge(
        name: &str,
        now: Option<f64>,
        reference: Option<f64>,
        higher_is_better: bool,
        lower_is_better: bool,
        tolerance: f64,
    ) -> Self {
        let met = match (now, reference) {
            (Some(n), Some(r)) if higher_is_better => Some(n >= r * (1.0 - tolerance)),
            (Some(n), Some(r)) if lower_is_better => Some(n * (1.0 - tolerance) <= r),
            _ => None,
        };
        Self {
            name: name.into(),
            now,
            reference,
            met,
        }
    }
}

pub fn median(samples: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

impl Report {
    pub fn meta(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.meta.insert(key.into(), value.into());
    }

    /// Adds a sample to figure `id` (created on first use).
    pub fn sample(&mut self, id: &str, label: &str, unit: &'static str, v: f64) {
        let f = self.figures.entry(id.into()).or_insert_with(|| Figure {
            label: label.into(),
            unit,
            value: None,
            samples: Vec::new(),
            not_available: None,
        });
        f.samples.push(v);
        f.value = median(&f.samples);
    }

    /// A figure of the reference run: its median and samples as printed.
    pub fn reference_figure(&mut self, id: &str, value: f64, samples: Vec<f64>) {
        self.figures.insert(
            id.into(),
            Figure {
                label: id.into(),
                unit: "",
                value: Some(value),
                samples,
                not_available: None,
            },
        );
    }

    pub fn not_available(&mut self, id: &str, label: &str, unit: &'static str, why: &str) {
        self.figures.insert(
            id.into(),
            Figure {
                label: label.into(),
                unit,
                value: None,
                samples: Vec::new(),
                not_available: Some(why.into()),
            },
        );
    }

    pub fn value(&self, id: &str) -> Option<f64> {
        self.figures.get(id).and_then(|f| f.value)
    }

    /// Records `num / den` against a target.
    pub fn compare(
        &mut self,
        name: &str,
        num: &str,
        den: &str,
        min: Option<f64>,
        max: Option<f64>,
    ) {
        // Interleaved repetitions: the median of the per-repetition ratios
        // (each pair measured moments apart); the ratio of the medians when
        // the sample counts differ.
        let (fa, fb) = (self.figures.get(num), self.figures.get(den));
        let paired = match (fa, fb) {
            (Some(a), Some(b)) if a.samples.len() == b.samples.len() && !a.samples.is_empty() => {
                median(
                    &a.samples
                        .iter()
                        .zip(&b.samples)
                        .filter(|(_, y)| **y > 0.0)
                        .map(|(x, y)| x / y)
                        .collect::<Vec<_>>(),
                )
            }
            _ => None,
        };
        let ratio = paired.or(match (self.value(num), self.value(den)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        });
        let has_target = min.is_some() || max.is_some();
        let met = ratio
            .filter(|_| has_target)
            .map(|r| min.is_none_or(|m| r >= m) && max.is_none_or(|m| r <= m));
        self.comparisons.push(Comparison {
            name: name.into(),
            numerator: num.into(),
            denominator: den.into(),
            ratio,
            target_min: min,
            target_max: max,
            met,
        });
    }

    /// Figures that should have a value and do not, or are not positive.
    pub fn missing(&self) -> Vec<String> {
        self.figures
            .iter()
            .filter(|(_, f)| {
                f.not_available.is_none() && !f.value.is_some_and(|v| v > 0.0 && v.is_finite())
            })
            .map(|(id, f)| format!("{id} ({}): {:?}", f.label, f.samples))
            .collect()
    }

    /// The table printed on the terminal (and pasted into the README): one
    /// row per measured thing, its related figures side by side, the
    /// samples of its first figure last.
    pub fn table(&self) -> String {
        const SUFFIXES: [&str; 8] = [
            "mpps",
            "ns_per_pkt",
            "ns_over_floor",
            "wall_mpps",
            "wall_pps",
            "delivered_share",
            "net",
            "repeat",
        ];
        let mut groups: Vec<(String, Vec<(&str, &Figure)>)> = Vec::new();
        for (id, f) in &self.figures {
            let (group, metric) = match id.rsplit_once('.') {
                Some((g, m)) if SUFFIXES.contains(&m) => (g.to_string(), m),
                _ => (id.clone(), ""),
            };
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push((metric, f)),
                None => groups.push((group, vec![(metric, f)])),
            }
        }
        let mut out = String::new();
        let mut section = String::new();
        for (group, mut members) in groups {
            let order = |m: &str| {
                [
                    "",
                    "mpps",
                    "ns_per_pkt",
                    "ns_over_floor",
                    "net",
                    "repeat",
                    "wall_mpps",
                    "wall_pps",
                    "delivered_share",
                ]
                .iter()
                .position(|x| *x == m)
            };
            members.sort_by_key(|(m, _)| order(m));
            let s = group.split('.').next().unwrap_or("");
            if s != section {
                section = s.to_string();
                out.push_str(&format!("-- {section}\n"));
            }
            let (_, first) = members[0];
            let label = first.label.split(" [").next().unwrap_or(&first.label);
            let cells: Vec<String> = members
                .iter()
                .map(|(m, f)| {
                    let v = fmt_value(f.value);
                    match *m {
                        "wall_mpps" => format!("wall {v} Mpps"),
                        "wall_pps" => format!("wall {v} pps"),
                        "delivered_share" => {
                            format!("{:.0}% delivered", f.value.unwrap_or(0.0) * 100.0)
                        }
                        "net" => format!("net {v} {}", f.unit),
                        "ns_over_floor" => format!("{v} ns over floor"),
                        "repeat" => format!("repeat-run {v} {}", f.unit),
                        _ => format!("{v} {}", f.unit),
                    }
                })
                .collect();
            let samples = match &first.not_available {
                Some(why) => format!("not available: {why}"),
                None => format!(
                    "[{}]",
                    first
                        .samples
                        .iter()
                        .map(|v| fmt_value(Some(*v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            };
            out.push_str(&format!("{label:<64} {}  {samples}\n", cells.join(" | ")));
        }
        out.push_str("-- targets (ratio = first / second)\n");
        for c in &self.comparisons {
            let target = match (c.target_min, c.target_max) {
                (Some(m), _) => format!(">= {m}"),
                (_, Some(m)) => format!("<= {m}"),
                _ => "-".into(),
            };
            let met = match (c.met, c.ratio) {
                (Some(true), _) => "met",
                (Some(false), _) => "MISSED",
                (None, Some(_)) => "(no target)",
                (None, None) => "n/a",
            };
            let ratio = c.ratio.map_or("n/a".into(), |r| format!("{r:.2}x"));
            out.push_str(&format!(
                "{:<64} {:>7}  target {:<7} {}\n",
                c.name, ratio, target, met
            ));
        }
        if !self.baseline.is_empty() {
            let run = self
                .meta
                .get("baseline_run")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            out.push_str(&format!(
                "-- no ratio worse than the reference run's ({run}; worse = by more than {:.0} %)\n",
                crate::baseline::TOLERANCE * 100.0
            ));
            let unreferenced = self
                .baseline
                .iter()
                .filter(|b| b.reference.is_none())
                .count();
            if unreferenced > 0 {
                out.push_str(&format!(
                    "({unreferenced} ratios have no figures in the reference run: not listed)\n"
                ));
            }
            for b in self.baseline.iter().filter(|b| b.reference.is_some()) {
                let fmt = |r: Option<f64>| r.map_or("n/a".into(), |r| format!("{r:.2}x"));
                let met = match (b.met, b.now) {
                    (Some(true), _) => "met",
                    (Some(false), _) => "MISSED",
                    (None, None) => "n/a",
                    (None, Some(_)) => "(no target)",
                };
                out.push_str(&format!(
                    "{:<64} {:>7}  then {:>7}  {}\n",
                    b.name,
                    fmt(b.now),
                    fmt(b.reference),
                    met
                ));
            }
        }
        out
    }
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_string(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratios_pair_repetitions_and_judge_targets() {
        let mut r = Report::default();
        for (a, b) in [(6.0, 1.0), (3.0, 1.0), (14.0, 2.0)] {
            r.sample("x.vxdp", "vxdp", "Mpps", a);
            r.sample("x.kernel", "kernel", "Mpps", b);
        }
        r.compare("x", "x.vxdp", "x.kernel", Some(6.0), None);
        r.compare("y", "x.vxdp", "x.kernel", None, Some(2.0));
        r.compare("z", "x.vxdp", "x.kernel", None, None);
        r.not_available("w.vxdp", "vxdp route", "Mpps", "no route mode");
        r.compare("w", "w.vxdp", "x.kernel", Some(6.0), None);
        // Per-repetition ratios 6, 3, 7: median 6.
        assert_eq!(r.comparisons[0].ratio, Some(6.0));
        assert_eq!(r.comparisons[0].met, Some(true));
        assert_eq!(r.comparisons[1].met, Some(false));
        assert_eq!(r.comparisons[2].met, None, "no target, no verdict");
        assert_eq!((r.comparisons[3].ratio, r.comparisons[3].met), (None, None));
        assert!(
            r.missing().is_empty(),
            "a not-available figure is not missing"
        );
        r.sample("v.kernel", "kernel", "Mpps", 0.0);
        assert_eq!(r.missing().len(), 1, "a zero figure is missing");
        assert!(r.table().contains("not available: no route mode"));
    }

    #[test]
    fn baseline_rows_allow_the_tolerance_and_follow_the_target_direction() {
        let j = |now, then, min, max| BaselineRow::judge("x", now, then, min, max, 0.15).met;
        // A minimum target: lower is worse.
        assert_eq!(j(Some(1.8), Some(2.0), true, false), Some(true));
        assert_eq!(j(Some(1.6), Some(2.0), true, false), Some(false));
        assert_eq!(j(Some(3.0), Some(2.0), true, false), Some(true));
        // A maximum target: higher is worse.
        assert_eq!(j(Some(1.1), Some(1.0), false, true), Some(true));
        assert_eq!(j(Some(1.2), Some(1.0), false, true), Some(false));
        // Nothing to judge.
        assert_eq!(j(Some(1.0), None, true, false), None);
        assert_eq!(j(Some(1.0), Some(1.0), false, false), None);
        let mut r = Report::default();
        r.baseline.push(BaselineRow::judge(
            "a / b",
            Some(1.0),
            Some(2.0),
            true,
            false,
            0.15,
        ));
        assert!(r.table().contains("MISSED"), "{}", r.table());
    }
}

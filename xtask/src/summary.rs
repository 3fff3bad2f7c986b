//! Totals for `cargo xtask test`, gathered from libtest's output lines as
//! they stream past, so the end of a long run says what happened without
//! scrolling back.

use std::time::Duration;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestSummary {
    /// Test binaries (and doc-test runs) that reported a result line.
    pub binaries: u32,
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    pub failed_names: Vec<String>,
}

impl TestSummary {
    /// Feeds one line of `cargo test`'s stdout.
    pub fn line(&mut self, line: &str) {
        // `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; ...`
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.binaries += 1;
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(count)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(count) = count.parse::<u32>() else {
                    continue;
                };
                match what {
                    "passed" => self.passed += count,
                    "failed" => self.failed += count,
                    "ignored" => self.ignored += count,
                    _ => {}
                }
            }
        // `test some::name ... FAILED`
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            self.failed_names.push(name.to_owned());
        }
    }

    /// The lines printed after the run.
    pub fn report(&self, elapsed: Duration) -> Vec<String> {
        let secs = elapsed.as_secs();
        let time = format!("{}m{:02}s", secs / 60, secs % 60);
        if self.binaries == 0 {
            return vec![format!(
                "[test] no test results seen ({time}); see the errors above"
            )];
        }
        let mut lines = vec![format!(
            "[test] {} passed, {} failed, {} ignored in {} test targets ({time})",
            self.passed, self.failed, self.ignored, self.binaries
        )];
        lines.extend(
            self.failed_names
                .iter()
                .map(|n| format!("[test] FAILED: {n}")),
        );
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_results_and_collects_failures() {
        let mut s = TestSummary::default();
        for line in [
            "running 3 tests",
            "test a::one ... ok",
            "test a::two ... FAILED",
            "test a::three ... ignored, needs root",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 1.00s",
        ] {
            s.line(line);
        }
        assert_eq!(
            s,
            TestSummary {
                binaries: 2,
                passed: 6,
                failed: 1,
                ignored: 1,
                failed_names: vec!["a::two".to_owned()],
            }
        );
        let report = s.report(Duration::from_secs(125));
        assert_eq!(
            report[0],
            "[test] 6 passed, 1 failed, 1 ignored in 2 test targets (2m05s)"
        );
        assert_eq!(report[1], "[test] FAILED: a::two");
    }

    #[test]
    fn no_results_is_reported() {
        let report = TestSummary::default().report(Duration::from_secs(3));
        assert!(report[0].contains("no test results"));
    }
}

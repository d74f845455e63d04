//! Collecting failures and printing them as one readable report.

use std::collections::BTreeMap;
use std::fmt;

/// How many failures of one check on one fixture the report spells out.
const SHOWN_PER_GROUP: usize = 4;

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The fixture it is about, if any.
    pub fixture: Option<String>,
    /// The check (`golden`, `malformed input`...).
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// Every failure of one run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub failures: Vec<Failure>,
}

impl Report {
    /// Records a failure.
    pub fn fail(&mut self, fixture: Option<&str>, check: &'static str, detail: impl Into<String>) {
        self.failures.push(Failure {
            fixture: fixture.map(str::to_owned),
            check,
            detail: detail.into(),
        });
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as text, headed with the vendor.
    pub fn render(&self, vendor: &str, crate_dir: &str) -> String {
        Rendered {
            report: self,
            vendor,
            crate_dir,
        }
        .to_string()
    }
}

struct Rendered<'a> {
    report: &'a Report,
    vendor: &'a str,
    crate_dir: &'a str,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failures = &self.report.failures;
        writeln!(
            f,
            "the {} plugin fails the conformance kit: {} failed check{} (fixtures in {}/fixtures)",
            self.vendor,
            failures.len(),
            if failures.len() == 1 { "" } else { "s" },
            self.crate_dir
        )?;
        let mut groups: BTreeMap<(Option<&str>, &str), Vec<&str>> = BTreeMap::new();
        for failure in failures {
            groups
                .entry((failure.fixture.as_deref(), failure.check))
                .or_default()
                .push(&failure.detail);
        }
        for ((fixture, check), details) in groups {
            writeln!(f)?;
            match fixture {
                Some(fixture) => writeln!(f, "[{fixture}] {check}:")?,
                None => writeln!(f, "{check}:")?,
            }
            for detail in details.iter().take(SHOWN_PER_GROUP) {
                let mut lines = detail.lines();
                writeln!(f, "  - {}", lines.next().unwrap_or(""))?;
                for line in lines {
                    writeln!(f, "    {line}")?;
                }
            }
            if details.len() > SHOWN_PER_GROUP {
                writeln!(
                    f,
                    "  ... and {} more like these",
                    details.len() - SHOWN_PER_GROUP
                )?;
            }
        }
        Ok(())
    }
}

/// Where two texts first differ, with the line before for context.
pub(crate) fn first_difference(expected: &str, actual: &str) -> String {
    let expected_lines: Vec<&str> = expected.lines().collect();
    let actual_lines: Vec<&str> = actual.lines().collect();
    let at = expected_lines
        .iter()
        .zip(&actual_lines)
        .position(|(e, a)| e != a)
        .unwrap_or(expected_lines.len().min(actual_lines.len()));
    let line = |lines: &[&str], i: usize| {
        lines
            .get(i)
            .map_or_else(|| "<end of file>".to_owned(), |l| l.trim_end().to_owned())
    };
    let mut out = format!("first difference at line {}:", at + 1);
    if at > 0 {
        out.push_str(&format!("\n    {}", line(&expected_lines, at - 1)));
    }
    out.push_str(&format!(
        "\nexpected: {}\nactual:   {}",
        line(&expected_lines, at),
        line(&actual_lines, at)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_line_is_named() {
        let diff = first_difference("a\nb\nc\n", "a\nB\nc\n");
        assert!(diff.starts_with("first difference at line 2:"), "{diff}");
        assert!(diff.contains("expected: b"));
        assert!(diff.contains("actual:   B"));
        let shorter = first_difference("a\nb\n", "a\n");
        assert!(shorter.contains("actual:   <end of file>"), "{shorter}");
    }

    #[test]
    fn reports_group_and_cap_repeated_failures() {
        let mut report = Report::default();
        for i in 0..10 {
            report.fail(Some("f1"), "malformed input", format!("case {i}"));
        }
        report.fail(None, "registry", "missing");
        let text = report.render("demo", "/x");
        assert!(text.contains("11 failed checks"), "{text}");
        assert!(text.contains("[f1] malformed input:"));
        assert!(text.contains("... and 6 more like these"));
        assert!(text.contains("registry:\n  - missing"));
    }
}

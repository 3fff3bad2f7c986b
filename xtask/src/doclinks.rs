//! The documentation's links and file references, checked by `cargo xtask
//! lint` (and by this crate's unit tests, so `cargo test` runs it too):
//!
//! - every relative link in a Markdown file of the repository (README.md,
//!   docs/, any other `*.md` outside target/) points to an existing file,
//!   and its `#anchor`, if any, to a heading of that file (GitHub's
//!   anchors);
//! - every repository path written as code (`` `tests/tests/nat_e2e.rs` ``)
//!   exists, so a moved or renamed file cannot leave the docs behind;
//! - every drop reason of `common/` is in the table of docs/security.md.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

/// Top-level directories whose paths, written as code, must exist.
const CHECKED_ROOTS: [&str; 9] = [
    "common/",
    "control/",
    "dataplane-ebpf/",
    "xtask/",
    "tests/",
    "benches/",
    "packaging/",
    "docs/",
    "testkit/",
];

/// Every problem found under `root`, one line each (file: what).
pub fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    markdown_files(root, root, &mut files);
    files.sort();
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else {
            problems.push(format!("{}: unreadable", file.display()));
            continue;
        };
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        let prose = without_code_blocks(&text);
        for link in links(&prose) {
            if let Err(e) = resolve(root, file, &link) {
                problems.push(format!("{rel}: link ({link}): {e}"));
            }
        }
        for path in code_paths(&prose) {
            if !root.join(path.trim_end_matches('/')).exists() {
                problems.push(format!("{rel}: `{path}` does not exist"));
            }
        }
    }
    problems.extend(drop_reasons_documented(root));
    problems
}

fn markdown_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            let top = path.parent() == Some(root);
            if name.starts_with('.') || (top && name == "target") {
                continue;
            }
            markdown_files(root, &path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The text with fenced code blocks blanked out (links and headings in
/// them are not links and headings).
fn without_code_blocks(text: &str) -> String {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return "";
            }
            if fenced { "" } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Destinations of inline links `[text](dest)` and of reference
/// definitions `[label]: dest`, outside inline code.
fn links(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(i) = trimmed.find("]: ")
        {
            out.push(
                trimmed[i + 3..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            continue;
        }
        let line = without_inline_code(line);
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            let dest = after[..end].split_whitespace().next().unwrap_or("");
            out.push(dest.to_string());
            rest = &after[end..];
        }
    }
    out
}

fn without_inline_code(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// Checks one link destination of `file`.
fn resolve(root: &Path, file: &Path, dest: &str) -> Result<(), String> {
    if dest.is_empty() {
        return Err("empty destination".into());
    }
    if dest.contains("://") || dest.starts_with("mailto:") {
        return Ok(());
    }
    let (path, anchor) = match dest.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (dest, None),
    };
    let target = if path.is_empty() {
        file.to_path_buf()
    } else if let Some(abs) = path.strip_prefix('/') {
        root.join(abs)
    } else {
        file.parent().unwrap_or(root).join(path)
    };
    if !target.exists() {
        return Err(format!("{} does not exist", target.display()));
    }
    let Some(anchor) = anchor else { return Ok(()) };
    if target.extension().is_none_or(|e| e != "md") {
        return Ok(());
    }
    let text = fs::read_to_string(&target).map_err(|e| e.to_string())?;
    if anchors(&text).contains(anchor) {
        Ok(())
    } else {
        Err(format!("no heading #{anchor} in {}", target.display()))
    }
}

/// The anchors GitHub gives a document's headings: lowercased, everything
/// but letters, digits, `-`, `_` and spaces dropped, spaces turned into
/// `-`; a repeated anchor gets `-1`, `-2`, ...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in without_code_blocks(text).lines() {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let base = slug(title.trim());
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

fn slug(title: &str) -> String {
    title
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Inline code spans that are repository paths under [`CHECKED_ROOTS`]
/// (no wildcards, braces or placeholders).
fn code_paths(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose.lines() {
        for (i, span) in line.split('`').enumerate() {
            let plain = span
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
            if i % 2 == 1 && plain && CHECKED_ROOTS.iter().any(|r| span.starts_with(r)) {
                out.push(span.to_string());
            }
        }
    }
    out
}

/// Each `DropReason` name of common/src/counters.rs must appear, as code,
/// in docs/security.md (its drop-reasons table).
fn drop_reasons_documented(root: &Path) -> Vec<String> {
    let counters = root.join("common/src/counters.rs");
    let security = root.join("docs/security.md");
    let (Ok(code), Ok(doc)) = (fs::read_to_string(&counters), fs::read_to_string(&security)) else {
        return vec![format!(
            "cannot read {} and {} to compare their drop reasons",
            counters.display(),
            security.display()
        )];
    };
    code.lines()
        .filter_map(|l| {
            let (_, after) = l.split_once("DropReason::")?;
            let (_, name) = after.split_once("=> \"")?;
            name.split('"').next()
        })
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .map(|name| format!("docs/security.md: drop reason `{name}` is not in the table"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_github() {
        let a = anchors(
            "# vxdp\n## The daemon: `vxdp serve`, metrics\n### Security model — guests\n\
             ```\n# not a heading\n```\n## Two\n## Two\n#nope\n",
        );
        for want in [
            "vxdp",
            "the-daemon-vxdp-serve-metrics",
            "security-model--guests",
            "two",
            "two-1",
        ] {
            assert!(a.contains(want), "{want} missing from {a:?}");
        }
        assert!(!a.contains("not-a-heading"));
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn links_and_code_paths_are_found_outside_code() {
        let text = without_code_blocks(
            "See [a](docs/a.md#x) and [b](https://example.org) `[c](no.md)`.\n\
             [ref]: docs/b.md\n```\n[d](fenced.md)\n```\n\
             Run `tests/tests/nat_e2e.rs`, not `tests/tests/*_prog.rs` nor `target/x`.",
        );
        assert_eq!(
            links(&text),
            ["docs/a.md#x", "https://example.org", "docs/b.md"]
        );
        assert_eq!(code_paths(&text), ["tests/tests/nat_e2e.rs"]);
    }

    #[test]
    fn broken_links_are_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-doclinks-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("docs")).unwrap();
        fs::write(dir.join("docs/a.md"), "# A\n## Here\n").unwrap();
        fs::write(
            dir.join("README.md"),
            "[ok](docs/a.md#here) [gone](docs/b.md) [bad](docs/a.md#there) `docs/c.md`\n",
        )
        .unwrap();
        let problems = check(&dir);
        let _ = fs::remove_dir_all(&dir);
        let text = problems.join("\n");
        assert!(text.contains("(docs/b.md)"), "{text}");
        assert!(text.contains("no heading #there"), "{text}");
        assert!(text.contains("`docs/c.md` does not exist"), "{text}");
        assert!(!text.contains("#here"), "{text}");
    }

    /// The repository's own documentation.
    #[test]
    fn the_documentation_links_resolve() {
        let problems = check(crate::cmd::workspace_root());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

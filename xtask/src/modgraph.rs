//! `cargo xtask modgraph`: the module dependency graph of a crate, read
//! from its sources, and a check that it has no cycle.
//!
//! The module tree comes from `mod name;` declarations, starting at the
//! crate root (`lib.rs` or `main.rs`). A reference is any path that starts
//! with `crate::`, `super::` or `self::` (in `use` trees too, braces
//! expanded); it names the deepest module of the tree that is a prefix of the
//! path. `#[cfg(test)] mod tests` blocks are left out: tests may reach
//! anywhere.
//!
//! "Imports only go downward" is checked level by level: an edge between two
//! modules counts between the two *siblings* under their lowest common
//! ancestor (a reference from `ops::ports` to `host::tap` is an edge
//! `ops -> host` among the root's children). References between a module
//! and its own ancestors or descendants are the tree itself, not edges. A
//! cycle among the siblings of any level is an error, printed with the
//! source lines that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A module path below the crate root, e.g. `["host", "dnsmasq"]`.
type ModPath = Vec<String>;

/// One module backed by a file.
#[derive(Debug)]
struct Module {
    path: ModPath,
    file: PathBuf,
}

/// Where one edge between siblings comes from.
#[derive(Debug, Clone)]
struct Site {
    file: PathBuf,
    line: usize,
    text: String,
}

/// The crates the check covers, relative to the workspace root.
pub const CRATES: &[(&str, &str)] = &[
    ("vxdp-control (library)", "control/src/lib.rs"),
    ("vxdp (binary)", "control/src/main.rs"),
    ("vxdp-dataplane-ebpf", "dataplane-ebpf/src/main.rs"),
];

pub struct Graph {
    pub name: String,
    /// parent module path -> (from sibling, to sibling) -> sites.
    levels: BTreeMap<ModPath, BTreeMap<(String, String), Vec<Site>>>,
    modules: Vec<ModPath>,
}

pub fn analyse(name: &str, root: &Path) -> anyhow::Result<Graph> {
    let mut modules = Vec::new();
    collect(root, Vec::new(), true, &mut modules)?;
    let known: BTreeSet<ModPath> = modules.iter().map(|m| m.path.clone()).collect();
    let mut levels: BTreeMap<ModPath, BTreeMap<(String, String), Vec<Site>>> = BTreeMap::new();
    for m in &modules {
        let text = std::fs::read_to_string(&m.file)
            .with_context(|| format!("reading {}", m.file.display()))?;
        let text = without_test_module(&strip_comments(&text));
        for (line, target) in references(&text, &m.path) {
            let target = deepest_known(&known, &target);
            let common = m
                .path
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == m.path.len() || common == target.len() {
                continue; // ancestor or descendant: the tree, not an edge
            }
            let parent = m.path[..common].to_vec();
            let key = (m.path[common].clone(), target[common].clone());
            levels
                .entry(parent)
                .or_default()
                .entry(key)
                .or_default()
                .push(Site {
                    file: m.file.clone(),
                    line,
                    text: text.lines().nth(line - 1).unwrap_or("").trim().to_owned(),
                });
        }
    }
    Ok(Graph {
        name: name.to_owned(),
        levels,
        modules: known.into_iter().collect(),
    })
}

/// The graph of every crate in [`CRATES`], read below `root`.
pub fn analyse_all(root: &Path) -> anyhow::Result<Vec<Graph>> {
    CRATES
        .iter()
        .map(|(name, file)| analyse(name, &root.join(file)))
        .collect()
}

/// An error naming every cycle of `graphs` with the lines that make it
/// (`cargo xtask modgraph` and `cargo xtask lint` fail with it).
pub fn check(graphs: &[Graph]) -> anyhow::Result<()> {
    let cycles: Vec<String> = graphs
        .iter()
        .flat_map(|g| g.cycles().into_iter().map(|c| format!("{}: {c}", g.name)))
        .collect();
    if !cycles.is_empty() {
        bail!(
            "{} module cycle(s); imports must only go downward (`cargo xtask modgraph` shows \
             the graph):\n{}",
            cycles.len(),
            cycles.join("")
        );
    }
    Ok(())
}

impl Graph {
    /// Every cycle among siblings, as `parent: a -> b -> a` with the sites.
    pub fn cycles(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (parent, edges) in &self.levels {
            let mut adj: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for (a, b) in edges.keys() {
                adj.entry(a).or_default().insert(b);
            }
            for scc in strongly_connected(&adj) {
                if scc.len() < 2 {
                    continue;
                }
                let mut s = format!(
                    "cycle among the children of {}: {}\n",
                    display_path(parent),
                    scc.join(", ")
                );
                for ((a, b), sites) in edges {
                    if scc.contains(&a.as_str()) && scc.contains(&b.as_str()) {
                        let site = &sites[0];
                        let _ = writeln!(
                            s,
                            "  {a} -> {b}: {}:{}: {}{}",
                            site.file.display(),
                            site.line,
                            site.text,
                            if sites.len() > 1 {
                                format!(" (and {} more)", sites.len() - 1)
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                out.push(s);
            }
        }
        out
    }

    /// A Mermaid flowchart per level that has edges.
    pub fn mermaid(&self) -> String {
        let mut s = format!("### {}\n\n", self.name);
        for (parent, edges) in &self.levels {
            let _ = writeln!(s, "Children of `{}`:\n", display_path(parent));
            s.push_str("```mermaid\nflowchart TD\n");
            for (a, b) in edges.keys() {
                let _ = writeln!(s, "  {a} --> {b}");
            }
            s.push_str("```\n\n");
        }
        s
    }

    pub fn text(&self) -> String {
        let mut s = format!("{}: {} modules\n", self.name, self.modules.len());
        for (parent, edges) in &self.levels {
            let _ = writeln!(s, "  under {}:", display_path(parent));
            let mut by_from: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (a, b) in edges.keys() {
                by_from.entry(a).or_default().push(b);
            }
            for (a, bs) in by_from {
                let _ = writeln!(s, "    {a} -> {}", bs.join(", "));
            }
        }
        s
    }
}

fn display_path(p: &[String]) -> String {
    if p.is_empty() {
        "crate".to_owned()
    } else {
        format!("crate::{}", p.join("::"))
    }
}

fn is_mod_rs(file: &Path, root: bool) -> bool {
    root || file.file_name().is_some_and(|n| n == "mod.rs")
}

/// Walks `mod name;` declarations from `file`.
fn collect(file: &Path, path: ModPath, root: bool, out: &mut Vec<Module>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let text = strip_comments(&text);
    let dir = if is_mod_rs(file, root) {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    for name in mod_declarations(&text) {
        if name == "tests" {
            continue; // a file of unit tests: tests may reach anywhere
        }
        let a = dir.join(format!("{name}.rs"));
        let b = dir.join(&name).join("mod.rs");
        let child = if a.exists() {
            a
        } else if b.exists() {
            b
        } else {
            bail!(
                "{}: `mod {name};` but neither {} nor {} exists",
                file.display(),
                a.display(),
                b.display()
            );
        };
        let mut p = path.clone();
        p.push(name);
        collect(&child, p, false, out)?;
    }
    out.push(Module {
        path,
        file: file.to_path_buf(),
    });
    Ok(())
}

/// `mod name;` (not `mod name { ... }`), with any visibility.
fn mod_declarations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut t = line.trim();
        if t.starts_with("#[") {
            // An attribute on the same line: `#[cfg(test)] mod x;`
            match t.find(']') {
                Some(i) => t = t[i + 1..].trim(),
                None => continue,
            }
        }
        for vis in ["pub(crate) ", "pub(super) ", "pub "] {
            if let Some(rest) = t.strip_prefix(vis) {
                t = rest.trim_start();
            }
        }
        if let Some(rest) = t.strip_prefix("mod ")
            && let Some(name) = rest.trim().strip_suffix(';')
        {
            let name = name.trim();
            if name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// Replaces comments and string/char literal contents with spaces, keeping
/// line numbers.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { '\n' } else { ' ' };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#")) {
            // Raw string: r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' && !prev_is_ident(b, i) {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                out.push('"');
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    out.push(blank(b[j]));
                    j += 1;
                }
                out.push('"');
                i = (j + close.len()).min(b.len());
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(b[i]));
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if b[i] == b'\'' && is_char_literal(b, i) {
            // 'x' or '\n' or '\u{..}': blank it; lifetimes are left alone.
            let end = b[i + 1..]
                .iter()
                .position(|&c| c == b'\'')
                .map(|p| i + 1 + p + 1)
                .unwrap_or(b.len());
            for _ in i..end {
                out.push(' ');
            }
            i = end;
        } else {
            // Copy one UTF-8 character.
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn is_char_literal(b: &[u8], i: usize) -> bool {
    if b.get(i + 1) == Some(&b'\\') {
        return true;
    }
    // 'x' : the next-but-one byte closes it (ASCII); lifetimes ('a) do not.
    if b.get(i + 2) == Some(&b'\'') {
        return true;
    }
    // A multi-byte character.
    b.get(i + 1).is_some_and(|&c| c >= 0x80)
}

/// Drops `#[cfg(test)] mod tests { ... }` blocks (braces balanced; comments
/// and strings are already blanked), keeping line numbers.
fn without_test_module(text: &str) -> String {
    let mut out = text.to_owned();
    let mut from = 0;
    while let Some(p) = out[from..].find("#[cfg(test)]") {
        let start = from + p;
        let after = out[start + "#[cfg(test)]".len()..].trim_start();
        let is_mod = after.starts_with("mod ") || after.starts_with("pub mod ");
        let brace = out[start..].find(['{', ';']).map(|q| start + q);
        match (is_mod, brace) {
            (true, Some(open)) if out.as_bytes()[open] == b'{' => {
                let mut depth = 0;
                let mut end = out.len();
                for (k, c) in out[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let blanked: String = out[start..end]
                    .chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' })
                    .collect();
                out.replace_range(start..end, &blanked);
                from = start + blanked.len();
            }
            _ => from = start + 1,
        }
    }
    out
}

/// Every module path referenced from the module at `here`, with its line.
/// `self::` is the module itself and `super::` its parent (a file's inline
/// modules other than tests are not modelled).
fn references(text: &str, here: &[String]) -> Vec<(usize, ModPath)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_path_start = !prev_is_ident(b, i) && !prev_is_colon(b, i);
        let mut base: Option<ModPath> = None;
        let mut j = i;
        if at_path_start && b[i..].starts_with(b"crate::") {
            base = Some(Vec::new());
            j += "crate::".len();
        } else if at_path_start && b[i..].starts_with(b"self::") {
            base = Some(here.to_vec());
            j += "self::".len();
        } else if at_path_start && b[i..].starts_with(b"super::") {
            let mut p = here.to_vec();
            while b[j..].starts_with(b"super::") {
                p.pop();
                j += "super::".len();
            }
            base = Some(p);
        }
        let Some(base) = base else {
            i += 1;
            continue;
        };
        let line = text[..i].matches('\n').count() + 1;
        let (paths, end) = parse_tree(b, j);
        for q in paths {
            let mut full = base.clone();
            full.extend(q);
            out.push((line, full));
        }
        i = end.max(i + 1);
    }
    out
}

fn prev_is_colon(b: &[u8], i: usize) -> bool {
    i > 0 && b[i - 1] == b':'
}

/// Parses a path or use tree at `i`: `a::b::C`, `a::{b, c::{d, e}}`.
/// Returns the expanded paths (segments only, no `self`) and the end.
fn parse_tree(b: &[u8], mut i: usize) -> (Vec<ModPath>, usize) {
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let mut prefix: ModPath = Vec::new();
    loop {
        skip_ws(&mut i);
        if i < b.len() && b[i] == b'{' {
            i += 1;
            let mut all = Vec::new();
            loop {
                skip_ws(&mut i);
                if i >= b.len() {
                    break;
                }
                if b[i] == b'}' {
                    i += 1;
                    break;
                }
                if b[i] == b',' {
                    i += 1;
                    continue;
                }
                let (sub, end) = parse_tree(b, i);
                if end == i {
                    i += 1; // unexpected byte: move on
                    continue;
                }
                for s in sub {
                    let mut p = prefix.clone();
                    p.extend(s);
                    all.push(p);
                }
                i = end;
                // `as name`
                skip_ws(&mut i);
                if b[i..].starts_with(b"as ") {
                    i += 3;
                    skip_ws(&mut i);
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            return (all, i);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            return (
                if prefix.is_empty() {
                    vec![]
                } else {
                    vec![prefix]
                },
                i,
            );
        }
        let seg = std::str::from_utf8(&b[start..i]).unwrap();
        if seg != "self" {
            prefix.push(seg.to_owned());
        }
        if b[i..].starts_with(b"::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The longest prefix of `path` that is a module of the tree.
fn deepest_known(known: &BTreeSet<ModPath>, path: &[String]) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
        .unwrap_or_default()
}

/// Tarjan's strongly connected components.
fn strongly_connected<'a>(adj: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct St<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        on: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, adj: &BTreeMap<&'a str, BTreeSet<&'a str>>, st: &mut St<'a>) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on.insert(v);
        for &w in adj.get(v).into_iter().flatten() {
            if !st.index.contains_key(w) {
                visit(w, adj, st);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            comp.sort();
            st.out.push(comp);
        }
    }
    let mut st = St {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = adj
        .iter()
        .flat_map(|(a, bs)| std::iter::once(*a).chain(bs.iter().copied()))
        .collect();
    for v in nodes {
        if !st.index.contains_key(v) {
            visit(v, adj, &mut st);
        }
    }
    st.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(src: &str, here: &[&str]) -> Vec<String> {
        let here: Vec<String> = here.iter().map(|s| s.to_string()).collect();
        references(&without_test_module(&strip_comments(src)), &here)
            .into_iter()
            .map(|(_, p)| p.join("::"))
            .collect()
    }

    #[test]
    fn use_trees_are_expanded() {
        let r = refs(
            "use crate::{a::{b, c::D}, e};\nfn f() { crate::g::h(); }",
            &["x"],
        );
        assert_eq!(r, ["a::b", "a::c::D", "e", "g::h"]);
    }

    #[test]
    fn super_and_self_resolve_against_the_module() {
        assert_eq!(refs("use super::y::Z;", &["a", "b"]), ["a::y::Z"]);
        assert_eq!(refs("use super::super::q;", &["a", "b"]), ["q"]);
        assert_eq!(refs("use self::k;", &["a"]), ["a::k"]);
    }

    #[test]
    fn comments_strings_and_test_modules_are_ignored() {
        let src = "// crate::a\n/* crate::b */\nconst S: &str = \"crate::c\";\n\
                   #[cfg(test)]\nmod tests { use crate::d; }\nuse crate::e;";
        assert_eq!(refs(src, &["x"]), ["e"]);
    }

    #[test]
    fn cycles_are_found_among_siblings() {
        let mut adj: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        adj.entry("a").or_default().insert("b");
        adj.entry("b").or_default().insert("c");
        adj.entry("c").or_default().insert("a");
        adj.entry("c").or_default().insert("d");
        let sccs: Vec<_> = strongly_connected(&adj)
            .into_iter()
            .filter(|c| c.len() > 1)
            .collect();
        assert_eq!(sccs, vec![vec!["a", "b", "c"]]);
    }
}

//! The pinned Rust toolchain: read from the workspace's `rust-version` (the
//! single place it is written), installed with rustup, used as
//! `cargo +<version>` for every build xtask starts.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, run_captured};

/// Needed: aya-build builds the eBPF crate with `-Z build-std=core`;
/// `cargo xtask test` (and `lint`) runs rustfmt and clippy.
const REQUIRED_COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];
/// Wanted for development, but their absence must not stop a build.
const OPTIONAL_COMPONENTS: &[&str] = &[];

/// The pinned toolchain, e.g. `1.98.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain(String);

impl Toolchain {
    /// Reads `rust-version` under `[workspace.package]` in the workspace's
    /// Cargo.toml.
    pub fn from_workspace() -> anyhow::Result<Self> {
        let path = cmd::workspace_root().join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let version = parse_workspace_rust_version(&text)
            .with_context(|| format!("finding the toolchain pin in {}", path.display()))?;
        Ok(Self(version))
    }

    pub fn version(&self) -> &str {
        &self.0
    }

    /// `cargo +<version>` (through the rustup proxy), ready for arguments.
    pub fn cargo(&self) -> Command {
        let mut cargo = command("cargo");
        cargo.arg(format!("+{}", self.0));
        cargo
    }

    /// Setup step: install the toolchain and its components if missing.
    /// Returns what it did, for the progress line.
    pub fn ensure_installed(&self) -> anyhow::Result<String> {
        let v = &self.0;
        let mut done = Vec::new();
        if !self.is_installed()? {
            crate::setup::note("installing with rustup (about a minute)");
            run_captured(command("rustup").args([
                "toolchain",
                "install",
                v,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            done.push("installed".to_owned());
        }

        let mut installed = self.installed_components()?;
        for &component in REQUIRED_COMPONENTS {
            if !has_component(&installed, component) {
                run_captured(command("rustup").args([
                    "component",
                    "add",
                    component,
                    "--toolchain",
                    v,
                ]))?;
                done.push(format!("added {component}"));
            }
        }
        let mut unavailable = Vec::new();
        for &component in OPTIONAL_COMPONENTS {
            if !has_component(&installed, component) {
                let mut add = command("rustup");
                add.args(["component", "add", component, "--toolchain", v]);
                match run_captured(&mut add) {
                    Ok(_) => done.push(format!("added {component}")),
                    Err(_) => unavailable.push(component),
                }
            }
        }
        installed = self.installed_components()?;
        for &component in REQUIRED_COMPONENTS {
            if !has_component(&installed, component) {
                bail!("rustup reports success but toolchain {v} still lacks {component}");
            }
        }

        let mut outcome = if done.is_empty() {
            "ok (already installed)".to_owned()
        } else {
            format!("ok ({})", done.join(", "))
        };
        if !unavailable.is_empty() {
            // Optional: say so on the same line, do not fail.
            outcome.push_str(&format!(
                "; warning: could not add {} (optional)",
                unavailable.join(", ")
            ));
        }
        Ok(outcome)
    }

    fn is_installed(&self) -> anyhow::Result<bool> {
        let out = run_captured(command("rustup").args(["toolchain", "list"]))?;
        Ok(lists_toolchain(
            &String::from_utf8_lossy(&out.stdout),
            &self.0,
        ))
    }

    fn installed_components(&self) -> anyhow::Result<String> {
        let out = run_captured(command("rustup").args([
            "component",
            "list",
            "--toolchain",
            &self.0,
            "--installed",
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The `rust-version = "..."` line of `[workspace.package]`. A plain line
/// scan is enough for our own Cargo.toml and keeps xtask free of a TOML
/// parser.
fn parse_workspace_rust_version(manifest: &str) -> anyhow::Result<String> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line.split('#').next().unwrap_or("").trim() == "[workspace.package]";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "rust-version" {
            continue;
        }
        let value = value.split('#').next().unwrap_or("").trim();
        let version = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .with_context(|| format!("rust-version is not a quoted string: {value}"))?;
        // rustup needs a full release number; `1.98` would mean "latest 1.98.x"
        // to rustup but not to aya-build, so insist on the exact pin.
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            bail!("rust-version \"{version}\" is not a full release number like \"1.98.0\"");
        }
        return Ok(version.to_owned());
    }
    bail!("no `rust-version = \"...\"` line under [workspace.package]")
}

/// Whether `rustup toolchain list` output names the toolchain (listed as
/// `1.98.0-x86_64-unknown-linux-gnu`, possibly followed by `(default)`).
fn lists_toolchain(list: &str, version: &str) -> bool {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| name == version || name.starts_with(&format!("{version}-")))
}

/// Whether `rustup component list --installed` output has the component,
/// listed bare (`rust-src`) or with the host triple
/// (`clippy-x86_64-unknown-linux-gnu`). The triple is taken from `rustc`'s
/// line, which every installed toolchain has, so that `rust` never matches
/// `rust-std-...`.
fn has_component(list: &str, component: &str) -> bool {
    let names: Vec<&str> = list.lines().map(str::trim).collect();
    let triple = names.iter().find_map(|n| n.strip_prefix("rustc-"));
    names.iter().any(|&name| {
        name == component || triple.is_some_and(|t| name == format!("{component}-{t}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_workspace_pin() {
        let manifest = r#"
[workspace]
members = ["a"]
rust-version = "0.0.1"

[workspace.package]
version = "0.1.0"
# The toolchain pin.
rust-version = "1.98.0"   # comment

[package]
rust-version = "1.85"
"#;
        assert_eq!(parse_workspace_rust_version(manifest).unwrap(), "1.98.0");
    }

    #[test]
    fn rejects_missing_or_partial_pins() {
        assert!(
            parse_workspace_rust_version(
                "[workspace.package]\nversion = \"1\"\n[package]\nrust-version = \"1.98.0\""
            )
            .is_err()
        );
        assert!(
            parse_workspace_rust_version("[workspace.package]\nrust-version = \"1.98\"").is_err()
        );
        assert!(
            parse_workspace_rust_version("[workspace.package]\nrust-version = 1.98.0").is_err()
        );
    }

    #[test]
    fn the_real_workspace_has_a_pin() {
        let toolchain = Toolchain::from_workspace().unwrap();
        assert_eq!(toolchain.version().split('.').count(), 3);
    }

    #[test]
    fn finds_toolchains_in_rustup_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    1.98.0-x86_64-unknown-linux-gnu\n";
        assert!(lists_toolchain(list, "1.98.0"));
        assert!(!lists_toolchain(list, "1.98.1"));
        assert!(!lists_toolchain(list, "1.9"));
    }

    #[test]
    fn finds_components() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-src\n\
                    rust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        assert!(has_component(list, "clippy"));
        assert!(!has_component(list, "rustfmt"));
        assert!(!has_component(list, "rust"));
        assert!(!has_component(list, "std-x86_64-unknown-linux-gnu"));
    }
}

//! `cargo xtask man`: the man pages and shell completions, written by the
//! built `vxdp` itself (`vxdp generate-docs`) from its clap definitions.
//! xtask does not link the control crate: it must start on a fresh machine
//! before the eBPF toolchain exists.

use std::{fs, path::Path};

use anyhow::{Context as _, ensure};

use crate::cmd::{command, run_captured};

/// Where `--install` puts each completion file.
const INSTALLED_COMPLETIONS: [(&str, &str); 3] = [
    (
        "vxdp.bash",
        "/usr/local/share/bash-completion/completions/vxdp",
    ),
    ("_vxdp", "/usr/local/share/zsh/site-functions/_vxdp"),
    (
        "vxdp.fish",
        "/usr/local/share/fish/vendor_completions.d/vxdp.fish",
    ),
];
const INSTALLED_MAN1: &str = "/usr/local/share/man/man1";

/// Writes `out/man1/*.1` and `out/completions/*` with `vxdp`, then installs
/// them under /usr/local/share when asked; prints how to read them.
pub fn generate(vxdp: &Path, out: &Path, install: bool) -> anyhow::Result<()> {
    ensure!(
        vxdp.is_file(),
        "{} not found (the build should have made it)",
        vxdp.display()
    );
    let man1 = out.join("man1");
    let completions = out.join("completions");
    // Stale pages of verbs that no longer exist must not linger.
    for dir in [&man1, &completions] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let written = run_captured(
        command(&vxdp.to_string_lossy())
            .arg("generate-docs")
            .arg("--man")
            .arg(&man1)
            .arg("--completions")
            .arg(&completions),
    )?;
    let files = String::from_utf8_lossy(&written.stdout);
    let pages = files.lines().filter(|l| l.ends_with(".1")).count();
    println!(
        "[man] {pages} man pages in {}, completions in {}",
        man1.display(),
        completions.display()
    );
    if !install {
        println!(
            "[man] read them with `man -l {}` or `MANPATH={}: man vxdp`; \
             `cargo xtask man --install` puts them under /usr/local/share",
            man1.join("vxdp.1").display(),
            out.display()
        );
        return Ok(());
    }
    fs::create_dir_all(INSTALLED_MAN1)?;
    for entry in fs::read_dir(&man1)? {
        let page = entry?.path();
        let name = page.file_name().context("a man page without a name")?;
        fs::copy(&page, Path::new(INSTALLED_MAN1).join(name))?;
    }
    for (file, installed) in INSTALLED_COMPLETIONS {
        let to = Path::new(installed);
        fs::create_dir_all(to.parent().context("completion path without a directory")?)?;
        fs::copy(completions.join(file), to)
            .with_context(|| format!("installing {}", to.display()))?;
    }
    println!(
        "[man] installed {pages} pages into {INSTALLED_MAN1} and the completions \
         (bash, zsh, fish) under /usr/local/share: `man vxdp` works now"
    );
    Ok(())
}

//! `cargo xtask deb`: the package builds, lintian is clean (the xtask
//! fails otherwise), and unpacked into a throwaway directory it holds the
//! binary, the unit, the default configuration (a conffile), the rules
//! and the dashboard, with md5sums that match. Its maintainer scripts,
//! run where systemd appears to be PID 1 (a private mount namespace with a
//! tmpfs /run holding /run/systemd/system, and stand-ins for systemctl and
//! the deb-systemd tools that log their arguments), only `daemon-reload`
//! on install and upgrade — never a start, stop or restart — and stop and
//! disable `vxdp.service` only on removal. The package, and `cargo xtask
//! man`, carry a man page for every verb that renders with `man -l`, and a
//! bash completion that completes the verbs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::vxdp_bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn xtask_deb_builds_a_lintian_clean_package_with_safe_maintainer_scripts() -> Result<()> {
    let tmp = TempDir(std::env::temp_dir().join(format!("vxdp-deb-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The debug binary (the release one takes minutes to build); lintian
    // runs inside the xtask and fails it on any tag not overridden.
    let out = run(Command::new(&cargo)
        .args(["run", "--quiet", "-p", "xtask", "--", "deb", "--binary"])
        .arg(vxdp_bin()?)
        .arg("--out-dir")
        .arg(&tmp.0)
        .current_dir(root()))?;
    let deb = PathBuf::from(
        out.lines()
            .last()
            .context("cargo xtask deb printed nothing")?
            .trim(),
    );
    ensure!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "no package at {}",
        deb.display()
    );

    // Control fields.
    let field = |name: &str| -> Result<String> {
        Ok(run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))?
            .trim()
            .to_string())
    };
    ensure!(field("Package")? == "vxdp", "package name");
    let depends = field("Depends")?;
    ensure!(
        depends.contains("libc6") && depends.contains("dnsmasq-base"),
        "Depends: {depends}"
    );
    // Everything owned by root.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
    ensure!(
        listing
            .lines()
            .all(|l| l.split_whitespace().nth(1) == Some("root/root")),
        "files not owned by root:\n{listing}"
    );

    let x = tmp.0.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let ctl = tmp.0.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl))?;

    let packaging = root().join("packaging");
    for (installed, source) in [
        ("lib/systemd/system/vxdp.service", "systemd/vxdp.service"),
        ("etc/default/vxdp", "default/vxdp"),
        (
            "usr/share/vxdp/prometheus/vxdp-rules.yml",
            "prometheus/vxdp-rules.yml",
        ),
        (
            "usr/share/vxdp/grafana/vxdp-dashboard.json",
            "grafana/vxdp-dashboard.json",
        ),
    ] {
        let a = std::fs::read(x.join(installed))
            .with_context(|| format!("{installed} missing from the package"))?;
        ensure!(
            a == std::fs::read(packaging.join(source))?,
            "{installed} differs from packaging/{source}"
        );
    }
    for doc in ["README.md", "copyright", "changelog.gz"] {
        ensure!(
            x.join("usr/share/doc/vxdp").join(doc).is_file(),
            "usr/share/doc/vxdp/{doc} missing"
        );
    }
    ensure!(
        std::fs::read_to_string(ctl.join("conffiles"))?.trim() == "/etc/default/vxdp",
        "conffiles"
    );
    // The packaged binary runs and is stripped of its symbols.
    let bin = x.join("usr/bin/vxdp");
    let help = run(Command::new(&bin).arg("--help"))?;
    ensure!(
        help.contains("serve"),
        "vxdp --help does not list serve:\n{help}"
    );
    let syms = Command::new("nm").arg(&bin).output()?;
    ensure!(
        String::from_utf8_lossy(&syms.stderr).contains("no symbols"),
        "usr/bin/vxdp is not stripped"
    );
    // Man pages for every verb, the completions and the docs.
    check_man_pages(&bin, &x.join("usr/share/man/man1"), ".1.gz")?;
    check_bash_completion(&x.join("usr/share/bash-completion/completions/vxdp"))?;
    for installed in [
        "usr/share/zsh/vendor-completions/_vxdp",
        "usr/share/fish/vendor_completions.d/vxdp.fish",
        "usr/share/doc/vxdp/docs/architecture.md",
    ] {
        ensure!(x.join(installed).is_file(), "{installed} missing");
    }
    // md5sums matches the files.
    run(Command::new("md5sum")
        .args(["--check", "--quiet"])
        .arg(ctl.join("md5sums"))
        .current_dir(&x))?;
    // (The unit itself is verified by ops_systemd; the packaged one is the same file.)

    // The maintainer scripts, with systemd seemingly running.
    let log = tmp.0.join("calls.log");
    let fake = tmp.0.join("fakebin");
    std::fs::create_dir_all(&fake)?;
    for tool in ["systemctl", "deb-systemd-invoke", "deb-systemd-helper"] {
        let path = fake.join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho \"{tool} $*\" >> '{}'\n", log.display()),
        )?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let script = |name: &str, args: &[&str]| -> Result<Vec<String>> {
        let _ = std::fs::remove_file(&log);
        let inner = format!(
            "mount -t tmpfs none /run && mkdir -p /run/systemd/system && PATH='{}':/usr/sbin:/usr/bin:/sbin:/bin exec sh -e '{}' {}",
            fake.display(),
            ctl.join(name).display(),
            args.join(" ")
        );
        run(Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &inner]))?;
        Ok(std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect())
    };
    let reload = vec!["systemctl --system daemon-reload".to_string()];
    ensure!(
        script("postinst", &["configure"])? == reload,
        "fresh install: {:?}",
        script("postinst", &["configure"])?
    );
    ensure!(
        script("postinst", &["configure", "0.0.9"])? == reload,
        "upgrade: {:?}",
        script("postinst", &["configure", "0.0.9"])?
    );
    ensure!(
        script("prerm", &["upgrade", "0.1.1"])?.is_empty(),
        "prerm on upgrade acted: {:?}",
        script("prerm", &["upgrade", "0.1.1"])?
    );
    ensure!(
        script("postrm", &["upgrade", "0.1.1"])? == reload,
        "postrm on upgrade: {:?}",
        script("postrm", &["upgrade", "0.1.1"])?
    );
    let removal = script("prerm", &["remove"])?;
    ensure!(
        removal
            == [
                "deb-systemd-invoke stop vxdp.service",
                "deb-systemd-helper disable vxdp.service"
            ],
        "prerm remove: {removal:?}"
    );
    let purge = script("postrm", &["purge"])?;
    ensure!(
        purge
            == [
                "systemctl --system daemon-reload",
                "deb-systemd-helper purge vxdp.service"
            ],
        "postrm purge: {purge:?}"
    );
    // Nothing anywhere restarts or starts the service.
    for name in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(ctl.join(name))?;
        let code: Vec<_> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        ensure!(
            !code.iter().any(|l| l.contains("restart")
                || l.contains(" start")
                || l.contains("try-restart")),
            "{name} starts or restarts something:\n{text}"
        );
    }
    Ok(())
}

/// `cargo xtask man --out DIR`: the pages and completions of the built
/// binary, readable with `man -l`.
#[test]
fn xtask_man_writes_a_page_per_verb_and_completions() -> Result<()> {
    let tmp = TempDir(std::env::temp_dir().join(format!("vxdp-man-{}", std::process::id())));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .args(["run", "--quiet", "-p", "xtask", "--", "man", "--out"])
        .arg(&tmp.0)
        .current_dir(root()))?;
    check_man_pages(&vxdp_bin()?, &tmp.0.join("man1"), ".1")?;
    check_bash_completion(&tmp.0.join("completions/vxdp.bash"))?;
    for f in ["_vxdp", "vxdp.fish"] {
        ensure!(tmp.0.join("completions").join(f).is_file(), "{f} missing");
    }
    Ok(())
}

/// The verbs `bin` lists in `--help` (`net-define`, ...), nested ones as
/// `conntrack-list`; `help` left out.
fn verbs(bin: &Path, path: &[String]) -> Result<Vec<String>> {
    let help = run(Command::new(bin).args(path).arg("--help"))?;
    let mut out = Vec::new();
    let listed = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_string)
        .collect::<Vec<_>>();
    for verb in listed {
        let mut sub = path.to_vec();
        sub.push(verb);
        out.push(sub.join("-"));
        out.extend(verbs(bin, &sub)?);
    }
    Ok(out)
}

/// Every verb of `bin` has a page `vxdp-<verb><ext>` in `dir` (and `vxdp`
/// has `vxdp<ext>`), and each renders with `man -l` without a warning,
/// naming its command.
fn check_man_pages(bin: &Path, dir: &Path, ext: &str) -> Result<()> {
    let verbs = verbs(bin, &[])?;
    ensure!(
        verbs.iter().any(|v| v == "net-define") && verbs.iter().any(|v| v == "conntrack-list"),
        "unexpected verb list: {verbs:?}"
    );
    let mut pages = vec!["vxdp".to_string()];
    pages.extend(verbs.iter().map(|v| format!("vxdp-{v}")));
    for page in &pages {
        let file = dir.join(format!("{page}{ext}"));
        ensure!(file.is_file(), "no man page {}", file.display());
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&file)
            .env("MANWIDTH", "80")
            .output()
            .context("running man (Debian package man-db; cargo xtask setup installs it)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && warnings.trim().is_empty(),
            "man -l {} failed or warned ({}):\n{warnings}",
            file.display(),
            out.status
        );
        ensure!(
            text.contains("NAME") && text.contains("SYNOPSIS") && text.contains(page.as_str()),
            "{} does not render as {page}'s page:\n{text}",
            file.display()
        );
    }
    // No page for the hidden verbs.
    for hidden in ["dnsmasq-supervise", "generate-docs"] {
        ensure!(
            !dir.join(format!("vxdp-{hidden}{ext}")).exists(),
            "hidden verb {hidden} has a man page"
        );
    }
    Ok(())
}

/// The bash completion loads, registers for `vxdp` and completes its verbs.
fn check_bash_completion(file: &Path) -> Result<()> {
    let script = format!(
        "source '{}' && complete -p vxdp && COMP_WORDS=(vxdp net-de) COMP_CWORD=1 && \
         _vxdp vxdp net-de vxdp && echo \"completed: ${{COMPREPLY[*]}}\"",
        file.display()
    );
    let out = run(Command::new("bash").arg("-c").arg(script))?;
    ensure!(
        out.lines()
            .any(|l| l.starts_with("complete ") && l.contains("-F _vxdp") && l.ends_with(" vxdp")),
        "the bash completion does not register for vxdp:\n{out}"
    );
    let completed = out
        .lines()
        .find_map(|l| l.strip_prefix("completed: "))
        .context("no completion printed")?;
    ensure!(
        completed.split_whitespace().any(|w| w == "net-define")
            && completed.split_whitespace().any(|w| w == "net-destroy")
            && !completed.contains("net-start"),
        "`vxdp net-de<TAB>` completed to: {completed}"
    );
    Ok(())
}

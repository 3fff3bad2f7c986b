//! `cargo xtask deb`: the Debian package, staged in a directory tree and
//! built with `dpkg-deb --build` (no debhelper). Contents: the `vxdp`
//! binary (stripped), the systemd unit, `/etc/default/vxdp` (a conffile),
//! the Prometheus rules and the Grafana dashboard under /usr/share/vxdp,
//! the README, copyright and changelog, and maintainer scripts that never
//! start, stop or restart `vxdp serve` on install or upgrade (only
//! `daemon-reload`; on removal `vxdp serve` is stopped, the pinned
//! dataplane stays). The result must be lintian clean apart from
//! `packaging/debian/lintian-overrides`, each override explained there.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};

use crate::cmd::{command, run_captured, workspace_root};

/// Options of `cargo xtask deb`.
pub struct DebOptions {
    /// The binary to package (already built).
    pub binary: PathBuf,
    /// Where the .deb is written.
    pub out_dir: PathBuf,
    /// Run lintian on the result (fails on any tag not overridden).
    pub lintian: bool,
}

const PACKAGE: &str = "vxdp";

/// Builds the package; returns its path.
pub fn build(opts: &DebOptions) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let packaging = root.join("packaging");
    ensure!(
        opts.binary.is_file(),
        "{} not found (build it first)",
        opts.binary.display()
    );
    let version = workspace_version(&root.join("Cargo.toml"))?;
    let arch =
        String::from_utf8(run_captured(command("dpkg").arg("--print-architecture"))?.stdout)?
            .trim()
            .to_string();

    fs::create_dir_all(&opts.out_dir)?;
    let stage = opts
        .out_dir
        .join(format!("{PACKAGE}_{version}_{arch}.staging"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }

    let bin = stage.join("usr/bin/vxdp");
    install(&opts.binary, &bin, 0o755)?;
    run_captured(
        command("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&bin),
    )?;
    install(
        &packaging.join("systemd/vxdp.service"),
        &stage.join("lib/systemd/system/vxdp.service"),
        0o644,
    )?;
    install(
        &packaging.join("default/vxdp"),
        &stage.join("etc/default/vxdp"),
        0o644,
    )?;
    let share = stage.join("usr/share/vxdp");
    install(
        &packaging.join("prometheus/vxdp-rules.yml"),
        &share.join("prometheus/vxdp-rules.yml"),
        0o644,
    )?;
    install(
        &packaging.join("prometheus/vxdp-rules.test.yml"),
        &share.join("prometheus/vxdp-rules.test.yml"),
        0o644,
    )?;
    install(
        &packaging.join("grafana/vxdp-dashboard.json"),
        &share.join("grafana/vxdp-dashboard.json"),
        0o644,
    )?;
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    install(
        &packaging.join("debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    write_gzip(&doc.join("changelog.gz"), changelog(&version).as_bytes())?;
    install(
        &packaging.join("debian/lintian-overrides"),
        &stage.join("usr/share/lintian/overrides").join(PACKAGE),
        0o644,
    )?;

    let control = stage.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &packaging.join("debian").join(script),
            &control.join(script),
            0o755,
        )?;
    }
    write(&control.join("conffiles"), "/etc/default/vxdp\n", 0o644)?;
    let md5 = md5sums(&stage)?;
    write(&control.join("md5sums"), &md5, 0o644)?;
    let depends = shlib_depends(&bin)?;
    let installed_kib = installed_size_kib(&stage)?;
    write(
        &control.join("control"),
        &format!(
            "Package: {PACKAGE}\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: vxdp developers <vxdp@lists.example.org>\n\
             Installed-Size: {installed_kib}\n\
             Depends: {depends}, dnsmasq-base, iproute2\n\
             Suggests: prometheus\n\
             Section: net\n\
             Priority: optional\n\
             Description: XDP/eBPF dataplane for libvirt-style virtual networks\n \
             vxdp re-implements libvirt's virtual network modes (NAT, routed, open,\n \
             isolated, host bridge, macvtap-like direct) with XDP and TC programs:\n \
             the vxdp command defines, starts and inspects networks, and vxdp serve\n \
             (vxdp.service) reconciles them and exports Prometheus metrics.\n \
             .\n \
             Also ships Prometheus recording and alerting rules and a Grafana\n \
             dashboard under /usr/share/vxdp.\n"
        ),
        0o644,
    )?;

    let deb = opts.out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run_captured(
        command("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&stage)?;
    if opts.lintian {
        lintian(&deb)?;
    }
    Ok(deb)
}

/// `lintian` on the package: any tag that is not overridden fails.
fn lintian(deb: &Path) -> anyhow::Result<()> {
    let out = command("lintian")
        .args([
            "--fail-on",
            "error,warning,info,pedantic",
            "--info",
            "--pedantic",
            "--display-level",
            ">=pedantic",
        ])
        .arg(deb)
        .output()
        .context("running lintian (Debian package lintian; cargo xtask setup installs it)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success()
        || text
            .lines()
            .any(|l| l.starts_with(['E', 'W', 'I', 'P']) && l.contains(": "))
    {
        bail!(
            "lintian is not clean on {} ({}):\n{text}",
            deb.display(),
            out.status
        );
    }
    Ok(())
}

fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let dir = to.parent().context("install target without a directory")?;
    fs::create_dir_all(dir)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().context("file without a directory")?)?;
    fs::write(to, text)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n` (no name or timestamp, so the package is reproducible).
fn write_gzip(to: &Path, data: &[u8]) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().context("file without a directory")?)?;
    let mut gz = command("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    gz.stdin.take().context("gzip stdin")?.write_all(data)?;
    let out = gz.wait_with_output()?;
    ensure!(out.status.success(), "gzip failed");
    fs::write(to, out.stdout)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A one-entry native changelog for this version.
fn changelog(version: &str) -> String {
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Package built by cargo xtask deb; see /usr/share/doc/vxdp/README.md.\n\n \
         -- vxdp developers <vxdp@lists.example.org>  Thu, 01 Jan 2026 00:00:00 +0000\n"
    )
}

/// `md5sum` of every file outside DEBIAN/, paths relative to the root.
fn md5sums(stage: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    walk(stage, &mut files)?;
    files.retain(|f| !f.starts_with(stage.join("DEBIAN")));
    files.sort();
    let rel: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(stage).map(|p| p.display().to_string()))
        .collect::<Result<_, _>>()?;
    let out = run_captured(command("md5sum").args(&rel).current_dir(stage))?;
    Ok(String::from_utf8(out.stdout)?)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn installed_size_kib(stage: &Path) -> anyhow::Result<u64> {
    let mut files = Vec::new();
    walk(stage, &mut files)?;
    let bytes: u64 = files
        .iter()
        .filter(|f| !f.starts_with(stage.join("DEBIAN")))
        .map(|f| f.metadata().map(|m| m.len()))
        .sum::<Result<_, _>>()?;
    Ok(bytes.div_ceil(1024))
}

/// The library packages the binary links against, as `dpkg-shlibdeps`
/// computes them (it needs a `debian/control` in its working directory).
fn shlib_depends(bin: &Path) -> anyhow::Result<String> {
    let tmp = std::env::temp_dir().join(format!("vxdp-shlibdeps-{}", std::process::id()));
    fs::create_dir_all(tmp.join("debian"))?;
    fs::write(
        tmp.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let out = run_captured(
        command("dpkg-shlibdeps")
            .arg("-O")
            .arg(fs::canonicalize(bin)?)
            .current_dir(&tmp),
    );
    let _ = fs::remove_dir_all(&tmp);
    let text = String::from_utf8(out?.stdout)?;
    let deps = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends:\n{text}"))?;
    Ok(deps.trim().to_string())
}

fn workspace_version(cargo_toml: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(cargo_toml)?;
    let mut in_package = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_package = l == "[workspace.package]";
        } else if in_package && let Some(v) = l.strip_prefix("version") {
            return Ok(v
                .trim_start_matches([' ', '='])
                .trim()
                .trim_matches('"')
                .to_string());
        }
    }
    bail!(
        "no version in [workspace.package] of {}",
        cargo_toml.display()
    )
}

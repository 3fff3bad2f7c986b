//! The tiny guest the real-VM tests boot under QEMU (testkit/src/vm.rs):
//! Debian's cloud kernel, its virtio-net modules and a busybox-static
//! userland in a gzipped newc initramfs, built from apt packages only and
//! cached under `target/vm-guest/`.
//!
//! Both packages are fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into target/, never installed: on this machine installing
//! `linux-image-cloud-amd64` pulls in initramfs-tools, whose postinst hook
//! runs update-initramfs and writes /boot (the host's boot must not change
//! for a test kernel), and `busybox-static` would replace the host's
//! `busybox` package, which udhcpc (used by the namespace tests) depends on.
//!
//! The step is keyed by the two package versions and the guest scripts'
//! contents (`target/vm-guest/stamp`): an unchanged key is a no-op.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};

use crate::cmd::{command, run_captured, workspace_root};
use crate::setup::note;

/// The metapackage that follows Debian's current cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";
const BUSYBOX: &str = "busybox-static";

/// virtio-net and its dependencies, in the order init loads them.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The guest's scripts, owned by the tests that speak their protocol.
const INIT: &str = "tests/data/vm/init";
const UDHCPC_SCRIPT: &str = "tests/data/vm/udhcpc.script";

/// Where the image lives: `vmlinuz`, `initramfs.gz`, `stamp`.
pub fn image_dir() -> PathBuf {
    workspace_root().join("target/vm-guest")
}

/// The setup step: builds the image unless the stamp says it is current.
pub fn ensure() -> anyhow::Result<String> {
    let dir = image_dir();
    let init = read(&workspace_root().join(INIT))?;
    let udhcpc = read(&workspace_root().join(UDHCPC_SCRIPT))?;
    let kernel_pkg = kernel_package()?;
    let kernel_ver = candidate_version(&kernel_pkg)?;
    let busybox_ver = candidate_version(BUSYBOX)?;
    let key = format!(
        "{kernel_pkg}={kernel_ver} {BUSYBOX}={busybox_ver} scripts={:016x} modules={}\n",
        fnv1a(&[init.as_slice(), udhcpc.as_slice()].concat()),
        MODULES.join(",")
    );
    let stamp = dir.join("stamp");
    let built = ["vmlinuz", "initramfs.gz"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if built && std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        return Ok(format!(
            "ok (cached: {kernel_pkg} {kernel_ver}, busybox {busybox_ver})"
        ));
    }
    // A half-built image must not look current.
    let _ = std::fs::remove_file(&stamp);
    let debs = dir.join("debs");
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    note(&format!(
        "downloading {kernel_pkg} {kernel_ver} and {BUSYBOX} {busybox_ver}"
    ));
    let kernel_deb = download(&debs, &kernel_pkg, &kernel_ver)?;
    let busybox_deb = download(&debs, BUSYBOX, &busybox_ver)?;
    note("unpacking");
    let kroot = unpacked.join("kernel");
    let broot = unpacked.join("busybox");
    for (deb, to) in [(&kernel_deb, &kroot), (&busybox_deb, &broot)] {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        run_captured(command("dpkg-deb").arg("-x").arg(deb).arg(to))?;
    }
    let (release, vmlinuz) = find_vmlinuz(&kroot)?;
    let busybox = broot.join("bin/busybox");
    anyhow::ensure!(
        busybox.is_file(),
        "{BUSYBOX} has no bin/busybox (looked in {})",
        busybox.display()
    );

    note("building initramfs");
    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "root",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console before init mounts devtmpfs.
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, &init);
    cpio.file("etc/udhcpc.script", 0o755, &udhcpc);
    cpio.file("bin/busybox", 0o755, &read(&busybox)?);
    let modules_dir = kroot.join("lib/modules").join(&release);
    for m in MODULES {
        let ko = module_bytes(&modules_dir, m)?;
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &ko);
    }
    let gz = gzip(&cpio.finish())?;

    write_atomically(&dir.join("vmlinuz"), &read(&vmlinuz)?)?;
    write_atomically(&dir.join("initramfs.gz"), &gz)?;
    let _ = std::fs::remove_dir_all(&unpacked);
    write_atomically(&stamp, key.as_bytes())?;
    Ok(format!(
        "ok (built {}: kernel {release}, busybox {busybox_ver}, initramfs {} KiB)",
        dir.display(),
        gz.len() / 1024
    ))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// `apt-cache` output for `args`; runs `apt-get update` once when the
/// package lists do not know `package` (fresh containers have none).
fn apt_cache(args: &[&str], package: &str) -> anyhow::Result<String> {
    let query = || -> anyhow::Result<String> {
        let out = run_captured(command("apt-cache").args(args).arg(package))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    match query() {
        Ok(text) if !text.trim().is_empty() && !text.contains("Candidate: (none)") => Ok(text),
        _ => {
            note("apt-get update");
            run_captured(
                command("apt-get")
                    .arg("update")
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            query().with_context(|| {
                format!("apt-cache does not know {package} even after apt-get update")
            })
        }
    }
}

/// The versioned kernel package the metapackage depends on
/// (`linux-image-6.1.0-57-cloud-amd64`).
fn kernel_package() -> anyhow::Result<String> {
    let text = apt_cache(&["depends"], KERNEL_META)?;
    parse_kernel_depends(&text).with_context(|| {
        format!("`apt-cache depends {KERNEL_META}` names no linux-image package:\n{text}")
    })
}

fn parse_kernel_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_owned)
}

fn candidate_version(package: &str) -> anyhow::Result<String> {
    let text = apt_cache(&["policy"], package)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| v != "(none)")
        .with_context(|| {
            format!("no installable version of {package} (`apt-cache policy {package}`):\n{text}")
        })
}

/// `apt-get download PACKAGE=VERSION` into `dir`; returns the .deb's path.
fn download(dir: &Path, package: &str, version: &str) -> anyhow::Result<PathBuf> {
    let found = |dir: &Path| -> anyhow::Result<Option<PathBuf>> {
        // apt names the file PACKAGE_VERSION_ARCH.deb with ':' escaped as %3a.
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(Some(dir.join(name)));
            }
        }
        Ok(None)
    };
    if let Some(deb) = found(dir)? {
        return Ok(deb);
    }
    run_captured(
        command("apt-get")
            .current_dir(dir)
            .args(["download", &format!("{package}={version}")]),
    )?;
    found(dir)?.with_context(|| {
        format!(
            "`apt-get download {package}={version}` left no .deb in {}",
            dir.display()
        )
    })
}

/// The kernel image and its release (`boot/vmlinuz-<release>`).
fn find_vmlinuz(root: &Path) -> anyhow::Result<(String, PathBuf)> {
    let boot = root.join("boot");
    for e in std::fs::read_dir(&boot).with_context(|| format!("listing {}", boot.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((release.to_owned(), boot.join(&name)));
        }
    }
    bail!(
        "the kernel package has no boot/vmlinuz-* (looked in {})",
        boot.display()
    )
}

/// Module `name`'s object, decompressed when the package ships it as
/// `.ko.xz` or `.ko.zst` (busybox's insmod takes plain objects).
fn module_bytes(modules_dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut found = None;
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let file = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else if [".ko", ".ko.xz", ".ko.zst"]
                .iter()
                .any(|ext| file == format!("{name}{ext}"))
            {
                found = Some(e.path());
            }
        }
    }
    let Some(path) = found else {
        bail!(
            "module {name} is not in the kernel package (looked under {}); if this kernel has it built in, \
             drop it from MODULES in xtask/src/guest_image.rs and from tests/data/vm/init",
            modules_dir.display()
        );
    };
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        _ => return read(&path),
    };
    Ok(run_captured(command(tool).arg("-dc").arg(&path))?.stdout)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = command("gzip")
        .args(["-n", "-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("running gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))?
        .context("feeding gzip")?;
    anyhow::ensure!(out.status.success(), "gzip failed: {}", out.status);
    Ok(out.stdout)
}

/// 64-bit FNV-1a: a stable content hash for the cache key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A cpio archive in the "newc" format the kernel unpacks as initramfs
/// (Documentation/driver-api/early-userspace/buffer-format.rst).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        self.entry(path, 0o040_755, 2, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, 0o100_000 | perm, 1, (0, 0), data);
    }

    fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, 0o020_000 | perm, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let size = u32::try_from(data.len()).expect("initramfs member under 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("short name");
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"abc");
        let out = c.finish();
        // Header (110 bytes) + "init\0" padded to 116, data padded to 120.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[6..14], b"00000001", "inode");
        assert_eq!(&out[14..22], b"000081ed", "regular file 0755");
        assert_eq!(&out[54..62], b"00000003", "file size");
        assert_eq!(&out[94..102], b"00000005", "name size with NUL");
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(&out[120..126], b"070701", "trailer starts 4-aligned");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn finds_the_versioned_kernel_package() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            parse_kernel_depends(text).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        let alt = "x\n |Depends: linux-image-6.1.0-57-cloud-amd64-unsigned\n  Depends: other\n";
        assert_eq!(
            parse_kernel_depends(alt).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        assert_eq!(parse_kernel_depends("x\n  Depends: kmod\n"), None);
    }

    #[test]
    fn init_loads_the_modules_in_the_packaged_order() {
        let init = std::fs::read_to_string(workspace_root().join(INIT)).unwrap();
        assert!(
            init.contains(&format!("for m in {}; do", MODULES.join(" "))),
            "tests/data/vm/init must insmod exactly MODULES, in order"
        );
    }
}

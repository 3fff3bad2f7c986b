//! Builds the eBPF programs (dataplane-ebpf) with aya-build, so a plain
//! `cargo build` of the control plane builds everything.
//!
//! The eBPF build runs `rustup run <toolchain> cargo build -Z build-std=core
//! --target bpfel-unknown-none`. The toolchain is the workspace's pinned
//! `rust-version` (its LLVM must match bpf-linker's); `RUSTC_BOOTSTRAP=1`
//! lets that stable toolchain take `-Z build-std`.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let toolchain = std::env::var("CARGO_PKG_RUST_VERSION")
        .context("CARGO_PKG_RUST_VERSION not set: the workspace must declare rust-version")?;
    if which("bpf-linker").is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH; run `cargo xtask setup` (it installs bpf-linker \
             0.13.0 built against LLVM 22)"
        ));
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "vxdp-dataplane-ebpf")
        .ok_or_else(|| anyhow!("package vxdp-dataplane-ebpf not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // The eBPF crate depends on common; aya-build only watches its own root.
    println!("cargo:rerun-if-changed={}", root.join("../common").as_str());
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

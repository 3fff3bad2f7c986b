//! Builds the harness's eBPF programs (`benches/ebpf`) with aya-build, the
//! same way control's build.rs builds the dataplane: the workspace's pinned
//! toolchain (its LLVM matches bpf-linker's) with `RUSTC_BOOTSTRAP=1` for
//! `-Z build-std`.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let toolchain = std::env::var("CARGO_PKG_RUST_VERSION")
        .context("CARGO_PKG_RUST_VERSION not set: the workspace must declare rust-version")?;
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "vxdp-bench-ebpf")
        .ok_or_else(|| anyhow!("package vxdp-bench-ebpf not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // The eBPF crate includes src/wire.rs from this crate.
    println!("cargo:rerun-if-changed=src/wire.rs");
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

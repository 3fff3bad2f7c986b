//! `cargo xtask`: the project's entry points for setting up a machine,
//! building, testing and running the demo.
//!
//! xtask itself runs on whatever toolchain is active (it must work on a fresh
//! machine before the pinned one exists); everything it builds runs as
//! `cargo +<pin>`, the pin being the workspace's `rust-version`.

mod cmd;
mod deb;
mod doclinks;
mod guest_image;
mod man;
mod modgraph;
mod setup;
mod summary;
mod toolchain;

use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::cmd::{CommandFailed, display, run_inherited, run_teed};
use crate::summary::TestSummary;
use crate::toolchain::Toolchain;

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Set up, build, test and demo vxdp with the workspace's pinned toolchain",
    long_about = "Set up, build, test and demo vxdp with the workspace's pinned toolchain.\n\n\
        The toolchain is the `rust-version` under [workspace.package] in the workspace \
        Cargo.toml; every build runs as `cargo +<that version>`. All commands need root: \
        setup installs packages and mounts bpffs, and the tests load eBPF programs and \
        create network namespaces. build, test and demo run setup first (a fast no-op \
        once done).\n\n\
        When a command xtask starts fails, xtask names it and exits with its status."
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install everything building and testing needs (idempotent)
    #[command(
        long_about = "Install everything building and testing needs (idempotent).\n\n\
        Steps, each skipped when already done:\n  \
        1. apt packages (LLVM 22, build tools, network test tools, QEMU, libvirt for the \
        differential test), with one `apt-get update` only if something is missing; while \
        apt installs, a temporary /usr/sbin/policy-rc.d (unless one exists) stops packages \
        from starting services such as libvirtd in the root namespace\n  \
        2. the pinned Rust toolchain with rust-src, clippy and rustfmt\n  \
        3. bpf-linker 0.13.0 built against LLVM 22 (cargo install; 1-2 minutes)\n  \
        4. the bpf filesystem at /sys/fs/bpf\n  \
        5. the real-VM tests' guest image in target/vm-guest (Debian's cloud kernel and its \
        virtio-net modules, busybox-static, a gzipped cpio initramfs): downloaded with \
        `apt-get download` and unpacked there, never installed; rebuilt only when a package \
        version or the guest's scripts change\n\n\
        Prints one line per step; on failure names the step, the command and the end of its \
        stderr. Needs root and a Debian-like system (apt, dpkg)."
    )]
    Setup,

    /// Differential fuzzing of `vxdp net-define` against libvirt 9.0 (long run; needs root)
    #[command(
        long_about = "Run setup and build, then the libvirt_diff fuzz test with many mutants: each mutant of the valid XML corpus (elements and attributes dropped, added, duplicated or moved, forward modes switched, out-of-range and malformed values) goes to `virsh net-define --validate` in a private libvirtd and to `vxdp net-define`; both must define it or both refuse it (vxdp naming the element), except for the explained cases listed in tests/tests/libvirt_diff.rs. Disagreements are printed with the document. The test suite runs the same test with 150 mutants."
    )]
    LibvirtFuzz {
        /// How many mutants
        #[arg(long, default_value_t = 2000)]
        mutants: usize,
        /// Generator seed (the run prints it; the same seed repeats a run)
        #[arg(long, default_value_t = 0x5eed_0017)]
        seed: u64,
    },

    /// Run setup, then build the workspace (the eBPF programs included)
    #[command(
        long_about = "Run setup, then `cargo +<pin> build` in the workspace root.\n\n\
        That builds the workspace's default members. The eBPF crate is not one of them (it \
        cannot be built for the host): control's build script builds it with aya-build, so \
        this builds everything."
    )]
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
    },

    /// Check formatting (rustfmt), lints (clippy, warnings are errors) and the docs' links
    #[command(
        long_about = "Run `cargo +<pin> fmt --all --check`, then `cargo +<pin> clippy` over the \
        userspace crates (control, common, xtask, tests, benches; every target) with \
        `-D warnings`, then `cargo xtask modgraph`'s check (no import cycle between the \
        modules of control and the eBPF crate), then checks the documentation: every relative link of README.md and \
        docs/ (file and #anchor) resolves, every repository path written as code exists, \
        every drop reason is in docs/security.md. The eBPF crates are formatted too but not \
        linted: clippy's host build cannot compile them. `cargo xtask test` runs this first (skip with \
        --no-lint). Fix formatting with `cargo +<pin> fmt --all`."
    )]
    Lint,

    /// Print the module dependency graph of control and the eBPF crate; fail on a cycle
    #[command(
        long_about = "Read the module trees of vxdp-control (library and binary) and \
        vxdp-dataplane-ebpf from their sources (`mod` declarations from the crate root; \
        references are paths starting with crate::, super:: or self::, use trees included; \
        `#[cfg(test)] mod tests` blocks are ignored) and print, level by level, which \
        sibling module uses which. A reference between two modules counts between their \
        ancestors directly under the lowest common ancestor; references to a module's own \
        ancestors or descendants are the tree, not edges. Exits 1 and prints each cycle with \
        the source lines that make it when the siblings of any level form a cycle. \
        `cargo xtask lint` (and so `cargo xtask test`) runs this check. Needs neither root nor a \
        build."
    )]
    Modgraph {
        /// Print Mermaid flowcharts (for docs/architecture.md) instead of text
        #[arg(long)]
        mermaid: bool,
    },

    /// Run setup, then style checks, every test of the workspace and the quick benchmark (needs root)
    #[command(
        long_about = "Run setup, then `cargo xtask lint` (rustfmt and clippy; skip with \
        --no-lint), then `cargo +<pin> test -- --test-threads=2` in the workspace \
        root, which tests all the workspace's default members, then `cargo xtask bench \
        --quick` (fails when a benchmark figure is missing or not positive; it asserts no \
        speed).\n\n\
        Arguments after `--` go to cargo test; a second `--` separates the test harness's \
        arguments (`--test-threads=2` is left out when you set --test-threads yourself). \
        Examples:\n  \
        cargo xtask test -- nat            (only tests whose name contains `nat`)\n  \
        cargo xtask test -- -p vxdp-tests -- --nocapture\n  \
        cargo xtask test -- --no-fail-fast\n\n\
        Prints a summary of passed, failed and ignored tests at the end and exits with \
        cargo test's status (or the benchmark's when only it fails)."
    )]
    Test {
        /// Skip the quick benchmark after the tests
        #[arg(long)]
        no_bench: bool,
        /// Skip the style checks (rustfmt and clippy) before the tests
        #[arg(long)]
        no_lint: bool,
        /// Arguments for cargo test (after `--`)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO_TEST_ARGS"
        )]
        args: Vec<String>,
    },

    /// Run setup and build, then load the vxdp dataplane into the host (needs root)
    #[command(
        long_about = "Run setup and build, then `vxdp [--netns NS] load [VXDP_ARGS]` with the \
        freshly built target/debug/vxdp.\n\n\
        Loads and pins the eBPF programs and maps (or adopts the pinned ones), then attaches \
        them to every started network's guest ports and uplink. Arguments after `--` go to \
        vxdp, e.g. `-- --bpffs /sys/fs/bpf/mine --state-dir /tmp/state`."
    )]
    Load {
        /// Network namespace (a name under /run/netns) whose interfaces to attach to
        #[arg(long)]
        netns: Option<String>,
        /// Arguments for vxdp (after `--`)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "VXDP_ARGS"
        )]
        args: Vec<String>,
    },

    /// Remove every vxdp program, link, map and pin (needs root; no build)
    #[command(
        long_about = "Run `vxdp [--netns NS] unload [VXDP_ARGS]` with $VXDP_BIN or \
        target/debug/vxdp; nothing is set up or built first.\n\n\
        Detaches every pinned link and removes every pin, so no vxdp program, map or link \
        remains in the kernel. Bridges and guest ports stay and keep switching in the kernel; \
        `cargo xtask load` brings the fast path back. Arguments after `--` go to vxdp."
    )]
    Unload {
        /// Network namespace (a name under /run/netns) the dataplane runs in
        #[arg(long)]
        netns: Option<String>,
        /// Arguments for vxdp (after `--`)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "VXDP_ARGS"
        )]
        args: Vec<String>,
    },

    /// Run setup and build, then benchmark vxdp against the kernel path (needs root)
    #[command(
        long_about = "Run setup and build, then the benchmark: vxdp side by side with the \
        kernel path libvirt builds (bridge + iptables-nft masquerade + conntrack), in throwaway \
        network namespaces, all forwarding work pinned to one CPU, interleaved repetitions, \
        medians. Prints a table with the targets (met or missed), every target ratio against \
        the reference run's (benches/baseline/; MISSED when worse by more than 15 %), and \
        writes every figure, the kernel version and the CPU model to \
        target/vxdp-bench/latest.json.\n\n\
        The full run takes about 16 minutes here (1,000,000 flows, iperf3, taps, 5 repetitions); --quick \
        takes about 3 minutes. Arguments after `--` go to the benchmark binary, e.g. \
        `cargo xtask bench -- --only program,forward --cpu 0` (see `-- --help`)."
    )]
    Bench {
        /// A reduced run (what `cargo xtask test` runs)
        #[arg(long)]
        quick: bool,
        /// Arguments for the benchmark binary (after `--`)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "BENCH_ARGS"
        )]
        args: Vec<String>,
    },

    /// Fuzz every dataplane program through BPF_PROG_TEST_RUN (needs root)
    #[command(
        long_about = "Run setup, then the fuzz test (tests/tests/fuzz_prog.rs) with \
        --frames frames per program (default 1,000,000; `cargo xtask test` runs 20,000): \
        valid frames of every protocol the programs parse, truncated at every length, and \
        seeded random mutations of them, through every program in every network mode, \
        checking that no run fails, every verdict is a known one, no guest frame with a \
        source its port may not use is forwarded, and every rewritten frame's checksums are \
        valid. Prints the seed; --seed replays a run. Takes a few minutes per million frames."
    )]
    Fuzz {
        /// Frames per program
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// PRNG seed (decimal or 0x-hex; default: from the clock, printed)
        #[arg(long)]
        seed: Option<String>,
    },

    /// Run setup, build the release binary, then the Debian package (lintian-checked)
    #[command(
        long_about = "Run setup, `cargo +<pin> build --release -p vxdp-control --bin vxdp` \
        (unless --binary is given), then stage the package tree (binary, systemd unit, \
        /etc/default/vxdp, Prometheus rules and Grafana dashboard under /usr/share/vxdp, \
        docs, maintainer scripts from packaging/debian) and build it with `dpkg-deb \
        --build`. Runs lintian on the result and fails on any tag not overridden in \
        packaging/debian/lintian-overrides. Prints the package's path.\n\n\
        The maintainer scripts never start, stop or restart vxdp.service on install or \
        upgrade (only `systemctl daemon-reload`); removal stops `vxdp serve`, leaving the \
        pinned dataplane loaded."
    )]
    Deb {
        /// Package this binary instead of building the release one
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
        /// Directory for the .deb (default target/debian)
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
        /// Do not run lintian
        #[arg(long)]
        no_lintian: bool,
    },

    /// Build vxdp, then write its man pages and shell completions (needs root)
    #[command(
        long_about = "Run setup, `cargo +<pin> build -p vxdp-control --bin vxdp`, then \
        `target/debug/vxdp generate-docs`, which writes the man pages generated from the \
        command's own definitions (vxdp.1 and one page per verb: vxdp-net-define.1, \
        vxdp-conntrack-list.1, ...) into OUT/man1 and bash, zsh and fish completions \
        (vxdp.bash, _vxdp, vxdp.fish) into OUT/completions. OUT is target/man unless --out \
        is given.\n\n\
        Read the pages in place with `man -l target/man/man1/vxdp.1` or \
        `MANPATH=$PWD/target/man: man vxdp`, load the completions with `source \
        target/man/completions/vxdp.bash`. With --install the pages go to \
        /usr/local/share/man/man1 and the completions to \
        /usr/local/share/bash-completion/completions/vxdp, \
        /usr/local/share/zsh/site-functions/_vxdp and \
        /usr/local/share/fish/vendor_completions.d/vxdp.fish; `man vxdp` then works \
        everywhere. The Debian package (`cargo xtask deb`) installs the same files."
    )]
    Man {
        /// Directory to write man1/ and completions/ into (default target/man)
        #[arg(long, value_name = "OUT")]
        out: Option<std::path::PathBuf>,
        /// Also install them under /usr/local/share (man pages, completions)
        #[arg(long)]
        install: bool,
    },

    /// Run setup and build, then the vxdp demo (needs root)
    #[command(long_about = "Run setup and build, then the demo: \
        `cargo +<pin> run --quiet -p vxdp-tests --bin vxdp-demo`.\n\n\
        Arguments after `--` go to the demo binary.")]
    Demo {
        /// Arguments for the demo binary (after `--`)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "DEMO_ARGS"
        )]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // Hand on a failed child's own status (101 from cargo test, ...).
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<CommandFailed>())
                .map_or(1, CommandFailed::exit_code);
            ExitCode::from(code)
        }
    }
}

/// The effective user id, from /proc (xtask has no libc dependency).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn run(task: Task) -> anyhow::Result<()> {
    // Reading sources needs neither root nor setup.
    if let Task::Modgraph { mermaid } = task {
        return modgraph(mermaid);
    }
    // Every command needs root; say so once instead of letting apt, the
    // BPF loader and every namespace test fail one by one.
    if let Some(uid) = effective_uid().filter(|&u| u != 0) {
        anyhow::bail!(
            "cargo xtask needs root (it installs packages, mounts bpffs, loads eBPF programs and \
             creates network namespaces); running as uid {uid}: run it as root, e.g. \
             `sudo -E env PATH=$PATH cargo xtask test`"
        );
    }
    // Unloading must work on a host where setup cannot run (and fast).
    if let Task::Unload { netns, args } = &task {
        return vxdp_verb("unload", netns.as_deref(), args);
    }
    let toolchain = Toolchain::from_workspace()?;
    setup::run(&toolchain)?;
    match task {
        Task::Setup => Ok(()),
        Task::Load { netns, args } => {
            build(&toolchain, false)?;
            vxdp_verb("load", netns.as_deref(), &args)
        }
        Task::Unload { .. } => unreachable!("handled above"),
        Task::Build { release } => build(&toolchain, release),
        Task::Lint => lint(&toolchain),
        Task::Modgraph { .. } => unreachable!("handled above"),
        Task::Test {
            no_bench,
            no_lint,
            args,
        } => {
            // Style first: it takes a minute and fails fast, before the
            // quarter of an hour the tests take.
            if !no_lint {
                lint(&toolchain)?;
            }
            // The end-to-end tests run the real `vxdp` binary, which `cargo
            // test` alone does not build.
            build(&toolchain, false)?;
            let tested = test(&toolchain, &args);
            if no_bench {
                return tested;
            }
            // The benchmark runs even when a test failed: its figures are
            // reported either way, and the first failure decides the status.
            let benched = bench(&toolchain, true, &[]);
            tested.and(benched)
        }
        Task::Bench { quick, args } => {
            build(&toolchain, false)?;
            bench(&toolchain, quick, &args)
        }
        Task::Fuzz { frames, seed } => {
            let mut cargo = toolchain.cargo();
            cargo.args([
                "test",
                "-p",
                "vxdp-tests",
                "--test",
                "fuzz_prog",
                "--",
                "--nocapture",
                "--test-threads=1",
            ]);
            cargo.env("VXDP_FUZZ_FRAMES", frames.to_string());
            if let Some(seed) = seed {
                cargo.env("VXDP_FUZZ_SEED", seed);
            }
            announce("fuzz", &cargo);
            run_inherited(&mut cargo)
        }
        Task::LibvirtFuzz { mutants, seed } => {
            build(&toolchain, false)?;
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut cargo = toolchain.cargo();
            cargo.args([
                "test",
                "-p",
                "vxdp-tests",
                "--test",
                "libvirt_diff",
                "mutated_definitions",
                "--",
                "--nocapture",
                "--test-threads=1",
            ]);
            cargo.env("VXDP_BIN", root.join("target/debug/vxdp"));
            cargo.env("VXDP_FUZZ_MUTANTS", mutants.to_string());
            cargo.env("VXDP_FUZZ_SEED", seed.to_string());
            announce("libvirt-fuzz", &cargo);
            run_inherited(&mut cargo)
        }
        Task::Deb {
            binary,
            out_dir,
            no_lintian,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => {
                    let mut cargo = toolchain.cargo();
                    cargo.args(["build", "--release", "-p", "vxdp-control", "--bin", "vxdp"]);
                    announce("build", &cargo);
                    run_inherited(&mut cargo)?;
                    cmd::workspace_root().join("target/release/vxdp")
                }
            };
            let out_dir = out_dir.unwrap_or_else(|| cmd::workspace_root().join("target/debian"));
            let deb = deb::build(&deb::DebOptions {
                binary,
                out_dir,
                lintian: !no_lintian,
            })?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::Man { out, install } => {
            let mut cargo = toolchain.cargo();
            cargo.args(["build", "-p", "vxdp-control", "--bin", "vxdp"]);
            announce("build", &cargo);
            run_inherited(&mut cargo)?;
            let out = out.unwrap_or_else(|| cmd::workspace_root().join("target/man"));
            man::generate(
                &cmd::workspace_root().join("target/debug/vxdp"),
                &out,
                install,
            )
        }
        Task::Demo { args } => {
            build(&toolchain, false)?;
            let mut demo = toolchain.cargo();
            demo.args(["run", "--quiet", "-p", "vxdp-tests", "--bin", "vxdp-demo"]);
            if !args.is_empty() {
                demo.arg("--").args(&args);
            }
            announce("demo", &demo);
            run_inherited(&mut demo)
        }
    }
}

/// The vxdp binary xtask drives: $VXDP_BIN or the workspace's debug build.
fn vxdp_path() -> std::path::PathBuf {
    match std::env::var_os("VXDP_BIN") {
        Some(p) => p.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/vxdp"),
    }
}

/// `vxdp [--netns NS] <verb> <args>`, output passed through.
fn vxdp_verb(verb: &str, netns: Option<&str>, args: &[String]) -> anyhow::Result<()> {
    let bin = vxdp_path();
    anyhow::ensure!(
        bin.exists(),
        "{} not found: run `cargo xtask build` first (or set VXDP_BIN)",
        bin.display()
    );
    let mut vxdp = Command::new(bin);
    if let Some(ns) = netns {
        vxdp.args(["--netns", ns]);
    }
    vxdp.arg(verb).args(args);
    announce(verb, &vxdp);
    run_inherited(&mut vxdp)
}

fn build(toolchain: &Toolchain, release: bool) -> anyhow::Result<()> {
    let mut cargo = toolchain.cargo();
    // Not `--workspace`: that means all members, the eBPF crate included,
    // which cannot build for the host. The default members are the set.
    cargo.arg("build");
    if release {
        cargo.arg("--release");
    }
    announce("build", &cargo);
    run_inherited(&mut cargo)
}

/// Runs the benchmark binary (built by [`build`]) against the debug `vxdp`.
fn bench(toolchain: &Toolchain, quick: bool, args: &[String]) -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo = toolchain.cargo();
    cargo.args([
        "run",
        "--quiet",
        "-p",
        "vxdp-benches",
        "--bin",
        "vxdp-bench",
        "--",
    ]);
    if quick {
        cargo.arg("--quick");
    }
    cargo.args(args);
    cargo.env("VXDP_BIN", root.join("target/debug/vxdp"));
    announce("bench", &cargo);
    run_inherited(&mut cargo)?;
    println!("[bench] PASSED (every figure present and positive)");
    Ok(())
}

/// Prints the module graphs; an error names every cycle.
fn modgraph(mermaid: bool) -> anyhow::Result<()> {
    let graphs = modgraph::analyse_all(cmd::workspace_root())?;
    for graph in &graphs {
        if mermaid {
            print!("{}", graph.mermaid());
        } else {
            print!("{}", graph.text());
        }
    }
    modgraph::check(&graphs)?;
    println!("[modgraph] no module cycle");
    Ok(())
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the userspace
/// crates. The eBPF crates are excluded from clippy: they only build for
/// the bpfel target, through control's build script.
fn lint(toolchain: &Toolchain) -> anyhow::Result<()> {
    let mut fmt = toolchain.cargo();
    fmt.args(["fmt", "--all", "--check"]);
    announce("lint", &fmt);
    cmd::run_inherited(&mut fmt).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nformatting differs (diff above); run `cargo +{} fmt --all`",
            toolchain.version()
        )
    })?;
    let mut clippy = toolchain.cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "vxdp-dataplane-ebpf",
        "--exclude",
        "vxdp-bench-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    announce("lint", &clippy);
    cmd::run_inherited(&mut clippy)
        .map_err(|e| anyhow::anyhow!("{e:#}\nclippy found problems (listed above)"))?;
    modgraph::check(&modgraph::analyse_all(cmd::workspace_root())?)?;
    let problems = doclinks::check(cmd::workspace_root());
    if !problems.is_empty() {
        anyhow::bail!(
            "the documentation has broken links or references:\n  {}",
            problems.join("\n  ")
        );
    }
    println!(
        "[lint] PASSED (rustfmt and clippy clean, no module cycle, documentation links resolve)"
    );
    Ok(())
}

fn test(toolchain: &Toolchain, args: &[String]) -> anyhow::Result<()> {
    let mut cargo = test_command(toolchain, args);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cargo.env("VXDP_BIN", root.join("target/debug/vxdp"));
    announce("test", &cargo);
    let started = Instant::now();
    let mut summary = TestSummary::default();
    let result = run_teed(&mut cargo, |line| summary.line(line));
    for line in summary.report(started.elapsed()) {
        println!("{line}");
    }
    if result.is_ok() {
        println!("[test] PASSED");
    }
    result
}

/// `cargo +<pin> test <cargo args> -- [--test-threads=2] <harness args>`,
/// without `--workspace` for the same reason as in [`build`].
fn test_command(toolchain: &Toolchain, args: &[String]) -> Command {
    let (cargo_args, harness_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut cargo = toolchain.cargo();
    // Run every test binary even when one fails, so a run reports all
    // failures at once.
    cargo.args(["test", "--no-fail-fast"]);
    cargo.args(cargo_args).arg("--");
    // The end-to-end tests each build a set of namespaces; two at a time
    // matches the machine's two cores and keeps them from starving.
    if !harness_args.iter().any(|a| a.starts_with("--test-threads")) {
        cargo.arg("--test-threads=2");
    }
    cargo.args(harness_args);
    cargo
}

fn announce(task: &str, cmd: &Command) {
    println!("[{task}] {}", display(cmd));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn test_args(line: &[&str]) -> Vec<String> {
        let argv = std::iter::once("xtask").chain(line.iter().copied());
        match Cli::try_parse_from(argv).unwrap().command {
            Task::Test { args, .. } => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn test_line(args: &[&str]) -> String {
        let toolchain = Toolchain::from_workspace().unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        display(&test_command(&toolchain, &args))
            .replace(&format!("+{}", toolchain.version()), "+PIN")
    }

    #[test]
    fn test_arguments_pass_through() {
        assert_eq!(test_args(&["test"]), Vec::<String>::new());
        assert_eq!(test_args(&["test", "--", "nat"]), ["nat"]);
        assert_eq!(
            test_args(&["test", "--", "-p", "vxdp-tests", "--", "--nocapture"]),
            ["-p", "vxdp-tests", "--", "--nocapture"]
        );
    }

    #[test]
    fn test_command_lines() {
        assert_eq!(
            test_line(&[]),
            "cargo +PIN test --no-fail-fast -- --test-threads=2"
        );
        assert_eq!(
            test_line(&["nat"]),
            "cargo +PIN test --no-fail-fast nat -- --test-threads=2"
        );
        assert_eq!(
            test_line(&["-p", "vxdp-tests", "--", "--nocapture"]),
            "cargo +PIN test --no-fail-fast -p vxdp-tests -- --test-threads=2 --nocapture"
        );
        assert_eq!(
            test_line(&["--", "--test-threads=1"]),
            "cargo +PIN test --no-fail-fast -- --test-threads=1"
        );
    }
}

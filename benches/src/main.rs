//! `vxdp-bench` (run it with `cargo xtask bench [--quick]`): vxdp side by
//! side with the kernel path libvirt builds, in throwaway network
//! namespaces, measured in one run, interleaved, medians of repetitions.
//! Prints a table and writes every figure to a JSON file.

mod baseline;
mod flows;
mod forward;
mod generator;
mod progcost;
mod progs;
mod report;
mod tap;
mod taptcp;
mod tcp;
mod topo;
#[allow(dead_code)]
mod wire;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, ensure};
use clap::Parser;

use crate::{
    report::Report,
    topo::{GATEWAY, NotAvailable, OUTSIDE, Path, Topology},
};

#[derive(Parser, Debug)]
#[command(
    name = "vxdp-bench",
    about = "Benchmark vxdp against the kernel path libvirt builds (bridge + iptables-nft masquerade + conntrack)",
    long_about = "Benchmark vxdp against the kernel path libvirt builds (bridge + iptables-nft \
        masquerade + conntrack), in network namespaces this program creates and removes.\n\n\
        Sections, each repeated and interleaved across the paths, medians reported:\n  \
        program  per-program cost with BPF_PROG_TEST_RUN (vxdp's paths, the ceiling)\n  \
        forward  64-byte UDP rate guest -> outside, NAT replies and routed outside -> guest, \
        1 and 10k flows, sent by a socket generator on the sending namespace's interface \
        (AF_XDP copy mode by default, see --generator) and counted by an XDP sink, all on \
        one pinned CPU; each repetition also measures the floor (generator + sink on a bare \
        veth pair) and reports every path's cost over it\n  \
        tap      64-byte UDP through a tap written as QEMU's backend writes it (guest -> \
        outside, TC and XDP on the tap) and NAT replies redirected into the tap, read \
        back from its fd\n  \
        flows    new-flow setup rate and memory per flow\n  \
        tcp      iperf3 throughput guest -> outside and outside -> guest, and 1-byte \
        request/response latency\n  \
        taptcp   iperf3 bulk TCP both ways through a tap, a Linux stack with offloads on as \
        the guest and a relay copying its GSO frames as QEMU does, kernel vs vxdp TC vs \
        vxdp XDP\n\n\
        Needs root, the vxdp binary ($VXDP_BIN or target/debug/vxdp), iperf3, iptables, \
        conntrack, bpftool. Exits non-zero when a figure is missing or not positive."
)]
struct Cli {
    /// A reduced run (fewer repetitions, shorter runs; about 3 minutes)
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON (default: <workspace>/target/vxdp-bench/latest.json)
    #[arg(long)]
    out: Option<PathBuf>,
    /// The CPU all forwarding work is pinned to (default: the last one)
    #[arg(long)]
    cpu: Option<usize>,
    /// Only these sections (comma-separated:
    /// program,tap,taptcp,forward,flows,tcp)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these forwarding paths (comma-separated: kernel_nat, vxdp_nat,
    /// ceiling, ceiling_tc, kernel_route, vxdp_route), e.g. to profile one
    /// with perf; ratios need both sides
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// vxdp's conntrack table size (entries) for the forwarding and TCP
    /// figures (default: vxdp's default)
    #[arg(long, default_value_t = vxdp_common::DEFAULT_CONNTRACK_ENTRIES)]
    conntrack_entries: u32,
    /// The traffic generator's socket
    #[arg(long, value_enum, default_value_t = generator::Kind::AfXdp)]
    generator: generator::Kind,
}

/// Sizes of a run.
struct Plan {
    reps: usize,
    packets: u32,
    prog_calls: u32,
    prog_repeat: u32,
    kernel_flows: u32,
    vxdp_flows: u32,
    tcp_secs: u32,
    rr_count: u32,
    taptcp_secs: u32,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                packets: 50_000,
                prog_calls: 300,
                prog_repeat: 10_000,
                kernel_flows: 30_000,
                vxdp_flows: 60_000,
                tcp_secs: 1,
                rr_count: 1_000,
                taptcp_secs: 2,
            }
        } else {
            Self {
                reps: 5,
                packets: 500_000,
                prog_calls: 3_000,
                prog_repeat: 1_000_000,
                kernel_flows: 200_000,
                vxdp_flows: 1_000_000,
                tcp_secs: 5,
                rr_count: 10_000,
                taptcp_secs: 5,
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vxdp-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn wants(cli: &Cli, section: &str) -> bool {
    cli.only.is_empty() || cli.only.iter().any(|s| s == section)
}

fn progress(msg: &str) {
    println!("[bench] {msg}");
}

fn run(cli: Cli) -> Result<bool> {
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (network namespaces, BPF)"
    );
    let started = Instant::now();
    let plan = Plan::new(cli.quick);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cli.cpu.unwrap_or(ncpu - 1);
    let out = cli.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vxdp-bench/latest.json")
    });

    let mut r = Report::default();
    r.meta("date", sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    r.meta("mode", if cli.quick { "quick" } else { "full" });
    r.meta("kernel", sh("uname", &["-r"]));
    r.meta("cpu_model", cpu_model());
    r.meta("cpus", ncpu);
    r.meta("hostname", sh("hostname", &[]));
    r.meta("pinned_cpu", cpu);
    r.meta("repetitions", plan.reps);
    r.meta("packets_per_run", plan.packets);
    r.meta("frame_bytes", 64);
    r.meta(
        "nf_conntrack_max",
        sh("cat", &["/proc/sys/net/netfilter/nf_conntrack_max"]),
    );
    r.meta(
        "vxdp_commit",
        sh(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        ),
    );
    r.meta("load_average_at_start", sh("cat", &["/proc/loadavg"]));
    r.meta("vxdp_conntrack_entries", cli.conntrack_entries);
    r.meta("generator", cli.generator.describe());

    if wants(&cli, "program") {
        progress(&format!(
            "per-program cost: {} calls x {} reps on CPU {cpu}",
            plan.prog_calls, plan.reps
        ));
        progcost::run(plan.prog_calls, plan.prog_repeat, plan.reps, cpu, &mut r)?;
    }

    if wants(&cli, "tap") {
        progress(&format!(
            "tap writer and replies into the tap: {} reps on CPU {cpu}",
            plan.reps
        ));
        tap::run(plan.reps, plan.packets, cpu, cli.generator, &mut r)?;
    }

    if wants(&cli, "taptcp") {
        progress(&format!(
            "bulk TCP through a tap: {} s per iperf3 run x {} reps on CPU {cpu}",
            plan.taptcp_secs, plan.reps
        ));
        taptcp::run(plan.reps, plan.taptcp_secs, cpu, &mut r)?;
    }

    let needs_topologies = ["forward", "flows", "tcp"].iter().any(|s| wants(&cli, s));
    if needs_topologies {
        let mut topos: Vec<Topology> = Vec::new();
        let mut unavailable: Vec<(Path, String)> = Vec::new();
        for path in [
            Path::KernelNat,
            Path::VxdpNat,
            Path::Ceiling,
            Path::CeilingTc,
            Path::KernelRoute,
            Path::VxdpRoute,
        ] {
            if !cli.paths.is_empty() && !cli.paths.iter().any(|p| p == path.name()) {
                continue;
            }
            progress(&format!("building topology {}", path.name()));
            match Topology::new(path, cli.conntrack_entries, cli.generator) {
                Ok(t) => topos.push(t),
                Err(e) if e.downcast_ref::<NotAvailable>().is_some() => {
                    let why = format!("{}", e.downcast_ref::<NotAvailable>().unwrap());
                    progress(&format!("{}: not available: {why}", path.name()));
                    unavailable.push((path, why));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(t) = topos.first() {
            r.meta(
                "bridge_nf_call_iptables",
                topo::bridge_nf_call_iptables(&t.hyp),
            );
        }
        progress("waiting for the bridges' STP to forward");
        // The ceiling's XDP program redirects everything the guest sends,
        // ping included, and needs no bridge.
        for t in topos
            .iter()
            .filter(|t| !matches!(t.path, Path::Ceiling | Path::CeilingTc))
        {
            t.wait_ping(GATEWAY, std::time::Duration::from_secs(20))?;
            t.wait_ping(OUTSIDE, std::time::Duration::from_secs(10))?;
        }
        if wants(&cli, "forward") {
            forward_section(&mut topos, &unavailable, &plan, cpu, &mut r)?;
        }
        if wants(&cli, "flows") {
            flows_section(&mut topos, &plan, cpu, &mut r)?;
        }
        if wants(&cli, "tcp") {
            // Native XDP on the veths (the sinks) would slow TCP down.
            for t in topos.iter_mut() {
                t.sinks(false)?;
            }
            tcp_section(&topos, &unavailable, &plan, cpu, &mut r)?;
        }
        progress("tearing down");
    }

    targets(&mut r);
    taptcp::targets(&mut r);
    baseline::judge(&mut r)?;
    r.meta("elapsed_s", started.elapsed().as_secs());
    println!();
    println!(
        "vxdp benchmark, {} run, {}, kernel {}, {} ({} CPUs, work pinned to CPU {cpu})",
        r.meta["mode"].as_str().unwrap_or(""),
        r.meta["date"].as_str().unwrap_or(""),
        r.meta["kernel"].as_str().unwrap_or(""),
        r.meta["cpu_model"].as_str().unwrap_or(""),
        ncpu
    );
    if let Some(v) = r
        .meta
        .get("bridge_nf_call_iptables")
        .and_then(|v| v.as_str())
    {
        println!("bridge-nf-call-iptables in the test namespaces: {v}");
    }
    print!("{}", r.table());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("JSON: {}", out.display());
    let missing = r.missing();
    if !missing.is_empty() {
        eprintln!(
            "vxdp-bench: {} figure(s) missing or not positive:",
            missing.len()
        );
        for m in &missing {
            eprintln!("  {m}");
        }
        return Ok(false);
    }
    println!(
        "all {} figures present ({:.0} s)",
        r.figures.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

fn flows_label(flows: u32) -> &'static str {
    if flows == 1 { "1flow" } else { "10kflows" }
}

fn forward_section(
    topos: &mut [Topology],
    unavailable: &[(Path, String)],
    plan: &Plan,
    cpu: usize,
    r: &mut Report,
) -> Result<()> {
    for t in topos.iter_mut() {
        t.sinks(true)?;
    }
    for (path, why) in unavailable {
        for flows in [1, 10_000] {
            let mode = if path.is_nat() { "nat" } else { "route" };
            let id = format!(
                "forward.{mode}.{}.{}",
                flows_label(flows),
                if path.is_vxdp() { "vxdp" } else { "kernel" }
            );
            r.not_available(
                &format!("{id}.mpps"),
                &format!("{} guest->outside {flows} flow(s)", forward::label(*path)),
                "Mpps",
                why,
            );
            if !path.is_nat() {
                r.not_available(
                    &format!(
                        "forward.route_in.{}.{}.mpps",
                        flows_label(flows),
                        if path.is_vxdp() { "vxdp" } else { "kernel" }
                    ),
                    &format!("{} outside->guest {flows} flow(s)", forward::label(*path)),
                    "Mpps",
                    why,
                );
            }
        }
    }
    for rep in 0..plan.reps {
        // The floor of this repetition, which every path's cost is taken
        // over.
        let floor = match topos.first_mut() {
            Some(t) => {
                let rate = forward::floor(t, plan.packets, cpu)?;
                record(
                    r,
                    "forward.floor",
                    "floor: generator + sink drop on a bare veth pair",
                    &rate,
                );
                progress(&format!(
                    "rep {}/{} floor: {:.0} ns/pkt ({} of {} delivered)",
                    rep + 1,
                    plan.reps,
                    rate.ns_per_pkt(),
                    rate.delivered,
                    rate.sent
                ));
                (rate.delivered > 0).then(|| rate.ns_per_pkt())
            }
            None => None,
        };
        for flows in [1u32, 10_000] {
            for t in topos.iter_mut() {
                let (mode, who) = match t.path {
                    Path::KernelNat => ("nat", "kernel"),
                    Path::VxdpNat => ("nat", "vxdp"),
                    Path::KernelRoute => ("route", "kernel"),
                    Path::VxdpRoute => ("route", "vxdp"),
                    Path::Ceiling => ("ceiling", "xdp"),
                    Path::CeilingTc => ("ceiling", "tc"),
                };
                t.flush_conntrack()?;
                let rate = forward::run_one(t, flows, false, plan.packets, cpu)?;
                let id = format!("forward.{mode}.{}.{who}", flows_label(flows));
                let what = format!("{} guest->outside {flows} flow(s)", forward::label(t.path));
                record_over(r, &id, &what, &rate, floor);
                progress(&format!(
                    "rep {}/{} {what}: {:.3} Mpps ({} of {} delivered)",
                    rep + 1,
                    plan.reps,
                    rate.mpps(),
                    rate.delivered,
                    rate.sent
                ));
                if matches!(t.path, Path::KernelRoute | Path::VxdpRoute) {
                    let rate = forward::run_inbound(t, flows, plan.packets, cpu)?;
                    let id = format!("forward.route_in.{}.{who}", flows_label(flows));
                    let what = format!("{} outside->guest {flows} flow(s)", forward::label(t.path));
                    record_over(r, &id, &what, &rate, floor);
                    progress(&format!(
                        "rep {}/{} {what}: {:.3} Mpps ({} of {} delivered)",
                        rep + 1,
                        plan.reps,
                        rate.mpps(),
                        rate.delivered,
                        rate.sent
                    ));
                }
                if t.path.is_nat() {
                    let rate = forward::run_one(t, flows, true, plan.packets, cpu)?;
                    let id = format!("forward.reply.{}.{who}", flows_label(flows));
                    let what = format!(
                        "{} outside->guest replies {flows} flow(s)",
                        forward::label(t.path)
                    );
                    record_over(r, &id, &what, &rate, floor);
                    progress(&format!(
                        "rep {}/{} {what}: {:.3} Mpps ({} of {} delivered)",
                        rep + 1,
                        plan.reps,
                        rate.mpps(),
                        rate.delivered,
                        rate.sent
                    ));
                }
            }
        }
    }
    Ok(())
}

fn record(r: &mut Report, id: &str, what: &str, rate: &forward::Rate) {
    record_over(r, id, what, rate, None);
}

/// Records a rate's figures and, given the repetition's floor, its cost
/// over the floor: the forwarding work alone.
fn record_over(r: &mut Report, id: &str, what: &str, rate: &forward::Rate, floor_ns: Option<f64>) {
    if rate.delivered == 0 {
        // A missing figure: reported as such at the end.
        r.sample(&format!("{id}.mpps"), what, "Mpps", 0.0);
        return;
    }
    r.sample(&format!("{id}.mpps"), what, "Mpps", rate.mpps());
    r.sample(
        &format!("{id}.ns_per_pkt"),
        what,
        "ns/pkt",
        rate.ns_per_pkt(),
    );
    r.sample(
        &format!("{id}.delivered_share"),
        what,
        "fraction",
        rate.delivered as f64 / rate.sent as f64,
    );
    r.sample(
        &format!("{id}.wall_mpps"),
        &format!("{what} [wall clock]"),
        "Mpps",
        rate.wall_mpps(),
    );
    if let Some(floor) = floor_ns {
        r.sample(
            &format!("{id}.ns_over_floor"),
            what,
            "ns/pkt",
            rate.ns_per_pkt() - floor,
        );
    }
}

fn flows_section(topos: &mut [Topology], plan: &Plan, cpu: usize, r: &mut Report) -> Result<()> {
    // vxdp with a table sized for the flow count (2 entries per flow).
    let entries = (plan.vxdp_flows as u64 * 2 * 102 / 100) as u32;
    progress(&format!(
        "building topology vxdp_nat with a {entries}-entry conntrack table"
    ));
    let mut big = Topology::new(Path::VxdpNat, entries, topos[0].progs.generator())?;
    big.wait_ping(GATEWAY, std::time::Duration::from_secs(20))?;
    big.sinks(true)?;
    let kernel = topos
        .iter_mut()
        .find(|t| t.path == Path::KernelNat)
        .context("the flows section needs the kernel_nat path")?;
    kernel.sinks(true)?;
    for rep in 0..plan.reps {
        // The floor of this repetition: every new flow's time contains the
        // generator's own cost, which caps the rate ratio (a forwarder
        // costing nothing would reach only floor rate / kernel rate).
        let floor = forward::floor(kernel, plan.kernel_flows, cpu)?;
        let floor_ns = (floor.delivered > 0).then(|| floor.ns_per_pkt());
        if floor.delivered > 0 {
            r.sample(
                "flows.floor.per_s",
                "floor: generator + sink drop on a bare veth pair",
                "pkts/s",
                floor.delivered as f64 / floor.secs,
            );
        }
        // Kernel conntrack: its table is capped by the host's
        // nf_conntrack_max, which the benchmark must not change.
        let t = flows::traffic(kernel, plan.kernel_flows);
        flows::start(kernel, &t)?;
        let slab0 = flows::conntrack_slab_bytes()?;
        let rate = flows::setup(kernel, plan.kernel_flows, cpu)?;
        if let Some(f) = floor_ns.filter(|_| rate.delivered > 0) {
            r.sample(
                "flows.kernel.ns_over_floor",
                "kernel conntrack: ns per new flow over the floor",
                "ns/flow",
                rate.ns_per_pkt() - f,
            );
        }
        let held = flows::kernel_entries(kernel)?;
        let slab1 = flows::conntrack_slab_bytes()?;
        let what = format!("kernel conntrack: new flows ({} flows)", plan.kernel_flows);
        r.sample(
            "flows.kernel.setup_per_s",
            &what,
            "flows/s",
            rate.delivered as f64 / rate.secs,
        );
        r.sample(
            "flows.kernel.held",
            "kernel conntrack: flows held after setup",
            "flows",
            held as f64,
        );
        // A repetition where other tenants freed more than conntrack took
        // says nothing: it gives no sample.
        if held > 0 && slab1 > slab0 {
            r.sample(
                "flows.kernel.bytes_per_flow",
                "kernel conntrack: slab bytes per flow",
                "B",
                (slab1 - slab0) as f64 / held as f64,
            );
        }
        r.sample(
            "flows.kernel.nf_conn_bytes",
            "kernel conntrack: struct nf_conn (slab object)",
            "B",
            flows::nf_conn_bytes()? as f64,
        );
        progress(&format!(
            "rep {}/{} {what}: {:.0} flows/s, {held} held",
            rep + 1,
            plan.reps,
            rate.delivered as f64 / rate.secs
        ));

        // vxdp: the same first flows (like for like), then on to the full
        // count.
        let t = flows::traffic(&big, plan.vxdp_flows);
        let created0 = big.vxdp_counter("conntrack_created")?;
        flows::start(&mut big, &t)?;
        let first = flows::setup(&mut big, plan.kernel_flows, cpu)?;
        let rest = flows::setup(&mut big, plan.vxdp_flows - plan.kernel_flows, cpu)?;
        let created = big.vxdp_counter("conntrack_created")? - created0;
        if let Some(f) = floor_ns.filter(|_| first.delivered > 0) {
            r.sample(
                "flows.vxdp.ns_over_floor",
                &format!(
                    "vxdp: ns per new flow over the floor (first {})",
                    plan.kernel_flows
                ),
                "ns/flow",
                first.ns_per_pkt() - f,
            );
        }
        let what = format!("vxdp: new flows (first {})", plan.kernel_flows);
        r.sample(
            "flows.vxdp.setup_per_s",
            &what,
            "flows/s",
            first.delivered as f64 / first.secs,
        );
        let all = (first.delivered + rest.delivered) as f64 / (first.secs + rest.secs);
        r.sample(
            "flows.vxdp.setup_per_s_to_full",
            &format!("vxdp: new flows (all {})", plan.vxdp_flows),
            "flows/s",
            all,
        );
        r.sample(
            "flows.vxdp.created",
            "vxdp: flows created (conntrack_created)",
            "flows",
            created as f64,
        );
        progress(&format!(
            "rep {}/{} {what}: {:.0} flows/s; all {}: {all:.0} flows/s, {created} created",
            rep + 1,
            plan.reps,
            first.delivered as f64 / first.secs,
            plan.vxdp_flows
        ));
        if rep + 1 == plan.reps {
            let entries = flows::vxdp_entries(&big)?;
            let bytes = flows::vxdp_map_bytes(&big)?;
            let held = entries / 2;
            r.sample(
                "flows.vxdp.held",
                "vxdp: flows held (table entries / 2)",
                "flows",
                held as f64,
            );
            r.sample(
                "flows.vxdp.map_bytes",
                "vxdp: conntrack map memory (bpftool memlock)",
                "B",
                bytes as f64,
            );
            if held > 0 {
                r.sample(
                    "flows.vxdp.bytes_per_flow",
                    "vxdp: map bytes per flow held",
                    "B",
                    bytes as f64 / held as f64,
                );
            }
        }
    }
    // The big table is no longer needed.
    drop(big);
    Ok(())
}

fn tcp_section(
    topos: &[Topology],
    unavailable: &[(Path, String)],
    plan: &Plan,
    cpu: usize,
    r: &mut Report,
) -> Result<()> {
    for (path, why) in unavailable {
        let mode = if path.is_nat() { "nat" } else { "route" };
        r.not_available(
            &format!("tcp.{mode}.vxdp.gbps"),
            &format!("{} TCP throughput", forward::label(*path)),
            "Gbit/s",
            why,
        );
        r.not_available(
            &format!("tcp.{mode}.vxdp.gbps_in"),
            &format!("{} TCP throughput outside->guest", forward::label(*path)),
            "Gbit/s",
            why,
        );
        r.not_available(
            &format!("tcp.{mode}.vxdp.rr_us"),
            &format!("{} TCP request/response", forward::label(*path)),
            "us",
            why,
        );
    }
    let mut port = 5201u16;
    for rep in 0..plan.reps {
        for t in topos
            .iter()
            .filter(|t| !matches!(t.path, Path::Ceiling | Path::CeilingTc))
        {
            let (mode, who) = (
                if t.path.is_nat() { "nat" } else { "route" },
                if t.path.is_vxdp() { "vxdp" } else { "kernel" },
            );
            let gbps = tcp::iperf(t, plan.tcp_secs, cpu, port, false)?;
            let gbps_in = tcp::iperf(t, plan.tcp_secs, cpu, port + 1, true)?;
            port += 2;
            let rr = tcp::request_response(t, plan.rr_count, cpu)?;
            r.sample(
                &format!("tcp.{mode}.{who}.gbps"),
                &format!("{} TCP throughput (iperf3)", forward::label(t.path)),
                "Gbit/s",
                gbps,
            );
            r.sample(
                &format!("tcp.{mode}.{who}.gbps_in"),
                &format!(
                    "{} TCP throughput outside->guest (iperf3 -R)",
                    forward::label(t.path)
                ),
                "Gbit/s",
                gbps_in,
            );
            r.sample(
                &format!("tcp.{mode}.{who}.rr_us"),
                &format!("{} TCP 1-byte request/response", forward::label(t.path)),
                "us",
                rr,
            );
            progress(&format!(
                "rep {}/{} {}: {gbps:.2} Gbit/s out, {gbps_in:.2} Gbit/s in, round trip {rr:.1} us",
                rep + 1,
                plan.reps,
                t.path.name()
            ));
        }
    }
    Ok(())
}

/// The issue's targets as ratios of figures measured in this run.
fn targets(r: &mut Report) {
    for f in ["1flow", "10kflows"] {
        r.compare(
            &format!("NAT guest->outside {f}: vxdp / kernel"),
            &format!("forward.nat.{f}.vxdp.mpps"),
            &format!("forward.nat.{f}.kernel.mpps"),
            Some(6.0),
            None,
        );
        r.compare(
            &format!("NAT replies {f}: vxdp / kernel"),
            &format!("forward.reply.{f}.vxdp.mpps"),
            &format!("forward.reply.{f}.kernel.mpps"),
            Some(6.0),
            None,
        );
        r.compare(
            &format!("NAT guest->outside {f}: vxdp / ceiling"),
            &format!("forward.nat.{f}.vxdp.mpps"),
            &format!("forward.ceiling.{f}.xdp.mpps"),
            Some(0.7),
            None,
        );
        r.compare(
            &format!("ceiling at TC / ceiling at XDP {f}"),
            &format!("forward.ceiling.{f}.tc.mpps"),
            &format!("forward.ceiling.{f}.xdp.mpps"),
            None,
            None,
        );
        r.compare(
            &format!("NAT guest->outside {f}: vxdp / ceiling at TC"),
            &format!("forward.nat.{f}.vxdp.mpps"),
            &format!("forward.ceiling.{f}.tc.mpps"),
            None,
            None,
        );
        r.compare(
            &format!("routed {f}: vxdp / kernel"),
            &format!("forward.route.{f}.vxdp.mpps"),
            &format!("forward.route.{f}.kernel.mpps"),
            Some(6.0),
            None,
        );
        // Costs over the floor (the generator's own cost taken out): the
        // comparison that carries across machines.
        r.compare(
            &format!("NAT cost over floor {f}: kernel / vxdp"),
            &format!("forward.nat.{f}.kernel.ns_over_floor"),
            &format!("forward.nat.{f}.vxdp.ns_over_floor"),
            Some(6.0),
            None,
        );
        r.compare(
            &format!("NAT cost over floor {f}: ceiling / vxdp"),
            &format!("forward.ceiling.{f}.xdp.ns_over_floor"),
            &format!("forward.nat.{f}.vxdp.ns_over_floor"),
            Some(0.7),
            None,
        );
        r.compare(
            &format!("NAT replies cost over floor {f}: kernel / vxdp"),
            &format!("forward.reply.{f}.kernel.ns_over_floor"),
            &format!("forward.reply.{f}.vxdp.ns_over_floor"),
            Some(6.0),
            None,
        );
        r.compare(
            &format!("routed cost over floor {f}: kernel / vxdp"),
            &format!("forward.route.{f}.kernel.ns_over_floor"),
            &format!("forward.route.{f}.vxdp.ns_over_floor"),
            Some(6.0),
            None,
        );
        // "Routed both ways >= 6x".
        r.compare(
            &format!("routed outside->guest {f}: vxdp / kernel"),
            &format!("forward.route_in.{f}.vxdp.mpps"),
            &format!("forward.route_in.{f}.kernel.mpps"),
            Some(6.0),
            None,
        );
    }
    // 10,000 flows close to one: the same path's rate, and its cost over
    // the floor (one flow's over 10,000's), in the same repetitions.
    for (what, id) in [("NAT guest->outside", "nat"), ("NAT replies", "reply")] {
        r.compare(
            &format!("{what}: vxdp 10kflows / 1flow"),
            &format!("forward.{id}.10kflows.vxdp.mpps"),
            &format!("forward.{id}.1flow.vxdp.mpps"),
            Some(0.8),
            None,
        );
        r.compare(
            &format!("{what} cost over floor: vxdp 1flow / 10kflows"),
            &format!("forward.{id}.1flow.vxdp.ns_over_floor"),
            &format!("forward.{id}.10kflows.vxdp.ns_over_floor"),
            Some(0.8),
            None,
        );
    }
    tap::targets(r);
    r.compare(
        "test run, net: uplink XDP NAT hit / ceiling XDP",
        "program.uplink_xdp.reverse_nat_hit.net",
        "program.ceiling_xdp.net",
        None,
        Some(2.0),
    );
    r.compare(
        "test run, raw: uplink XDP NAT hit / ceiling XDP",
        "program.uplink_xdp.reverse_nat_hit",
        "program.ceiling_xdp",
        None,
        Some(2.0),
    );
    r.compare(
        "test run, net: guest TC NAT hit / ceiling XDP",
        "program.guest_tc.nat_hit.net",
        "program.ceiling_xdp.net",
        None,
        Some(2.0),
    );
    r.compare(
        "new-flow setup: vxdp / kernel",
        "flows.vxdp.setup_per_s",
        "flows.kernel.setup_per_s",
        Some(5.0),
        None,
    );
    // The forwarding work alone: the rate ratio above cannot exceed the
    // floor's rate over the kernel's, however cheap vxdp's flow setup.
    r.compare(
        "new-flow setup cost over floor: kernel / vxdp",
        "flows.kernel.ns_over_floor",
        "flows.vxdp.ns_over_floor",
        Some(5.0),
        None,
    );
    r.compare(
        "floor rate / kernel new-flow rate (the rate ratio's ceiling)",
        "flows.floor.per_s",
        "flows.kernel.setup_per_s",
        None,
        None,
    );
    r.compare(
        "bytes per flow: vxdp / kernel",
        "flows.vxdp.bytes_per_flow",
        "flows.kernel.bytes_per_flow",
        None,
        Some(1.0),
    );
    for mode in ["nat", "route"] {
        r.compare(
            &format!("TCP throughput {mode}: vxdp / kernel"),
            &format!("tcp.{mode}.vxdp.gbps"),
            &format!("tcp.{mode}.kernel.gbps"),
            Some(1.0),
            None,
        );
        r.compare(
            &format!("TCP throughput {mode} outside->guest: vxdp / kernel"),
            &format!("tcp.{mode}.vxdp.gbps_in"),
            &format!("tcp.{mode}.kernel.gbps_in"),
            Some(1.0),
            None,
        );
        r.compare(
            &format!("TCP round trip {mode}: vxdp / kernel"),
            &format!("tcp.{mode}.vxdp.rr_us"),
            &format!("tcp.{mode}.kernel.rr_us"),
            None,
            Some(1.0),
        );
    }
}

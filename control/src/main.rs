//! The `vxdp` command.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use vxdp_control::{
    dataplane::{LoadOptions, Maps, Pins},
    network::{self, Context},
    report,
};

/// vxdp: libvirt's virtual networks, forwarded and NATed by eBPF (XDP/TC).
///
/// Reads libvirt network XML, creates the bridge over netlink, loads and pins
/// the eBPF programs and fills their maps. The dataplane keeps running when
/// this command exits; `net-destroy` removes it again.
#[derive(Parser)]
#[command(name = "vxdp", version, propagate_version = true)]
struct Cli {
    /// Directory for vxdp's state (started networks, saved host settings).
    #[arg(long, global = true, default_value = "/var/lib/vxdp", env = "VXDP_STATE_DIR")]
    state_dir: PathBuf,
    /// Directory on a bpf filesystem where maps, programs and links are pinned.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/vxdp/v1", env = "VXDP_BPFFS")]
    bpffs: PathBuf,
    /// Run inside this network namespace (a name under /run/netns), like `ip -n`.
    /// Only the network namespace changes, so the bpf filesystem stays visible.
    #[arg(long, global = true, env = "VXDP_NETNS")]
    netns: Option<String>,
    /// Conntrack table size in entries (two per NATed flow); applies when the
    /// dataplane is first loaded.
    #[arg(long, global = true, default_value_t = vxdp_common::DEFAULT_CONNTRACK_ENTRIES)]
    conntrack_entries: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a (transient) network from a libvirt network XML file.
    ///
    /// Supported so far: <forward mode='nat'> (one IPv4 <ip>, <nat><address>/
    /// <port>), mode='route' and mode='open' (one IPv4 and/or one IPv6 <ip>),
    /// isolated networks (no <forward>; without <ip>: very isolated), host
    /// bridge (<forward mode='bridge'/> with <bridge name> of an existing
    /// bridge), with
    /// optional <forward dev>, <bridge name stp delay>, <mac>. The uplink is
    /// <forward dev> or the interface of the default route.
    NetCreate {
        /// The network XML file.
        file: PathBuf,
    },
    /// Check a network XML file without touching the host.
    NetValidate { file: PathBuf },
    /// Stop a network: unplug its ports, remove its bridge, flows and programs.
    NetDestroy { name: String },
    /// List the started networks.
    NetList,
    /// Plug an existing interface (tap or veth end) into a started network.
    AttachInterface {
        /// The network's name.
        #[arg(long)]
        network: String,
        /// The interface to plug in.
        #[arg(long)]
        dev: String,
        /// The guest's MAC address (libvirt's <mac address>), if known. The
        /// guest may then send only from this MAC (anti-spoofing).
        #[arg(long)]
        mac: Option<String>,
        /// The guest's static IPv4 address, if it has one. The guest may then
        /// send only from this address (anti-spoofing); it must lie in the
        /// network's subnet.
        #[arg(long)]
        ip: Option<String>,
    },
    /// Unplug an interface from a network.
    DetachInterface {
        #[arg(long)]
        network: String,
        #[arg(long)]
        dev: String,
    },
    /// Print the dataplane's counters (per network: actions and drop reasons).
    Stats {
        /// Only this network.
        network: Option<String>,
        /// Also show counters that are zero.
        #[arg(long)]
        all: bool,
    },
    /// Inspect or flush the NAT connection table.
    Conntrack {
        #[command(subcommand)]
        action: ConntrackCmd,
    },
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// List NAT flows (one line per flow).
    List { network: Option<String> },
    /// Remove the flows of a network.
    Flush { network: String },
}

fn enter_netns(name: &str) -> Result<()> {
    let path = PathBuf::from("/run/netns").join(name);
    let f = std::fs::File::open(&path)
        .with_context(|| format!("network namespace {name}: {} not found (ip netns list)", path.display()))?;
    use std::os::fd::AsRawFd;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("entering network namespace {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of causes on one line, without
            // the backtrace RUST_BACKTRACE would add.
            eprintln!("vxdp: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // Before the runtime starts threads, so every thread is in the namespace.
    if let Some(ns) = &cli.netns {
        enter_netns(ns)?;
    }
    let ctx = Context {
        state_dir: cli.state_dir.clone(),
        pins: Pins::new(&cli.bpffs),
        load: LoadOptions { conntrack_entries: cli.conntrack_entries, ..LoadOptions::default() },
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(cli.command, &ctx))
}

async fn run(command: Command, ctx: &Context) -> Result<()> {
    match command {
        Command::NetCreate { file } => {
            let text = read(&file)?;
            network::start(ctx, &text, &file.display().to_string()).await?;
        }
        Command::NetValidate { file } => {
            let text = read(&file)?;
            let plan = network::plan(&text, &file.display().to_string())?;
            println!("{}: network '{}' is valid", file.display(), plan.def.name);
        }
        Command::NetDestroy { name } => network::stop(ctx, &name).await?,
        Command::NetList => {
            println!("{:<16} {:<6} {:<8} {:<12} {:<12} {:<20} {}", "NAME", "MODE", "STATE", "BRIDGE", "UPLINK", "SUBNET", "PORTS");
            for r in network::list(ctx)? {
                let ports: Vec<_> = r.ports.iter().map(|p| p.dev.as_str()).collect();
                println!(
                    "{:<16} {:<6} {:<8} {:<12} {:<12} {:<20} {}",
                    r.name, r.mode, "active", r.bridge, r.uplink, format!("{}/{}", r.subnet, r.prefix), ports.join(",")
                );
            }
        }
        Command::AttachInterface { network, dev, mac, ip } => {
            network::attach_interface_with(ctx, &network, &dev, mac.as_deref(), ip.as_deref()).await?;
        }
        Command::DetachInterface { network, dev } => network::detach_interface(ctx, &network, &dev).await?,
        Command::Stats { network, all } => {
            let nets = selected(ctx, network.as_deref())?;
            let maps = Maps::open(&ctx.pins)?;
            let mut rows = Vec::new();
            for n in &nets {
                rows.extend(report::counter_rows(&n.name, &maps.counters(n.id)?, all));
            }
            rows.extend(report::counter_rows("(uplink)", &maps.counters(0)?, all));
            print!("{}", report::counters_table(&rows));
        }
        Command::Conntrack { action } => match action {
            ConntrackCmd::List { network } => {
                let nets = selected(ctx, network.as_deref())?;
                let maps = Maps::open(&ctx.pins)?;
                let id = network.as_ref().map(|_| nets[0].id);
                let entries = maps.conntrack_entries(id)?;
                let rows = report::flow_rows(&entries, &nets, report::monotonic_ns());
                print!("{}", report::flows_table(&rows));
            }
            ConntrackCmd::Flush { network } => {
                let rec = network::find(ctx, &network)?;
                let n = Maps::open(&ctx.pins)?.flush_conntrack(rec.id)?;
                println!("{network}: removed {n} conntrack entries");
            }
        },
    }
    Ok(())
}

fn selected(ctx: &Context, name: Option<&str>) -> Result<Vec<vxdp_control::state::NetworkRecord>> {
    Ok(match name {
        Some(n) => vec![network::find(ctx, n)?],
        None => network::list(ctx)?,
    })
}

fn read(file: &PathBuf) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

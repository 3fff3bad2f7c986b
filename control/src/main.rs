//! The `vxdp` command.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use vxdp_control::{
    dataplane::{LoadOptions, Maps, Pins},
    definitions,
    network::{self, Context},
    ports,
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
    /// Directory for vxdp's state (network definitions, started networks, saved host settings).
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
    /// Define a persistent network from a libvirt network XML file (not started).
    ///
    /// Accepts every definition libvirt accepts, in every forward mode, and
    /// stores it as <state-dir>/networks/NAME.xml (atomically). Checks it
    /// against every other defined or running network: name and UUID unique,
    /// no overlapping subnet, no shared bridge name. Fills in what libvirt
    /// generates: a UUID, a 52:54:00 bridge MAC and the first free virbrN.
    /// Redefining an existing network needs its <uuid> (as with virsh); a
    /// running network keeps its old definition until it is restarted.
    /// An invalid file changes nothing.
    NetDefine {
        /// The network XML file.
        file: PathBuf,
    },
    /// Remove a network's definition (and autostart flag). A running network
    /// keeps running as a transient one until `net-destroy`.
    NetUndefine {
        /// The network's name.
        name: String,
    },
    /// Start a defined network (see `net-define`).
    ///
    /// Supported so far: <forward mode='nat'> networks with one IPv4 <ip>,
    /// optional <forward dev>, <nat><address>/<port>, <bridge name stp delay>,
    /// <mac>. Anything else is refused with "not supported yet: <element>".
    /// The uplink is <forward dev> or the interface of the default route.
    NetStart {
        /// The network's name.
        name: String,
    },
    /// Start a transient network from a libvirt network XML file (not stored;
    /// gone after `net-destroy`). Same checks and limits as net-define and
    /// net-start.
    NetCreate {
        /// The network XML file.
        file: PathBuf,
    },
    /// Check a network XML file without touching the host or the state.
    ///
    /// Exits 0 when the file is valid libvirt network XML that this vxdp can
    /// also start; fails naming the element at fault when it is invalid, or
    /// with "not supported yet: <element>" when it is valid but uses
    /// something vxdp does not implement yet (net-define still accepts it).
    NetValidate {
        /// The network XML file.
        file: PathBuf,
    },
    /// Stop a network: unplug its ports, remove its bridge, flows and programs.
    /// A defined network keeps its definition and can be started again.
    NetDestroy {
        /// The network's name.
        name: String,
    },
    /// List networks as a table: name, state, autostart, persistent, then
    /// mode, bridge, subnet and plugged ports of running networks.
    NetList {
        /// Also list defined networks that are not running.
        #[arg(long)]
        all: bool,
    },
    /// Show a network's name, UUID, state, persistence, autostart and bridge.
    NetInfo {
        /// The network's name.
        name: String,
    },
    /// Print a network's XML: the running definition of an active network,
    /// otherwise the stored one (with the generated UUID, MAC and bridge).
    NetDumpxml {
        /// The network's name.
        name: String,
        /// Print the stored definition even when the network runs.
        #[arg(long)]
        inactive: bool,
    },
    /// Mark a defined network to be started by `vxdp autostart` (and by the
    /// daemon at boot), or unmark it with --disable.
    NetAutostart {
        /// The network's name.
        name: String,
        /// Stop autostarting the network.
        #[arg(long)]
        disable: bool,
    },
    /// Start every defined network marked with `net-autostart` that is not
    /// running. Keeps going when one fails; exits non-zero if any failed.
    Autostart,
    /// Plug a guest port into a started network.
    ///
    /// Either name an existing interface (tap or veth end) with --network and
    /// --dev, or give a domain <interface> XML with --xml, as in libvirt:
    /// type network (<source network>) or bridge (<source bridge> of a vxdp
    /// network), <mac address> (the guest's MAC; generated in 52:54:00 when
    /// absent), <model type> (informational), <target dev>. With --xml and no
    /// existing <target dev>, vxdp creates a persistent tap named <target dev>
    /// or the first free vnetN for the hypervisor to open, and removes it
    /// when the port is unplugged. Prints the device name.
    AttachInterface {
        /// The network's name.
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml")]
        network: Option<String>,
        /// The interface to plug in.
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml")]
        dev: Option<String>,
        /// The guest's MAC address (libvirt's <mac address>), if known.
        #[arg(long, conflicts_with = "xml")]
        mac: Option<String>,
        /// A domain <interface> XML file.
        #[arg(long)]
        xml: Option<PathBuf>,
    },
    /// Unplug a guest port from a network (by --network and --dev, or by the
    /// domain <interface> XML it was plugged with: <target dev>, else <mac>).
    /// A tap vxdp created for the port is removed.
    DetachInterface {
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml")]
        network: Option<String>,
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml")]
        dev: Option<String>,
        /// A domain <interface> XML file.
        #[arg(long)]
        xml: Option<PathBuf>,
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
        Command::NetDefine { file } => {
            let text = read(&file)?;
            let def = definitions::define(ctx, &text, &file.display().to_string()).await?;
            println!("Network {} defined from {}", def.name, file.display());
        }
        Command::NetUndefine { name } => {
            definitions::undefine(ctx, &name)?;
            println!("Network {name} has been undefined");
        }
        Command::NetStart { name } => {
            definitions::start_defined(ctx, &name).await?;
            println!("Network {name} started");
        }
        Command::NetCreate { file } => {
            let text = read(&file)?;
            let rec = definitions::create(ctx, &text, &file.display().to_string()).await?;
            println!("Network {} created from {}", rec.name, file.display());
        }
        Command::NetValidate { file } => {
            let text = read(&file)?;
            let source = file.display().to_string();
            let def = vxdp_control::xml::parse_network(&text, &source)?;
            match network::plan(&text, &source) {
                Ok(_) => println!("{source}: network '{}' is valid", def.name),
                Err(e @ network::NetworkError::NotSupported { .. }) => {
                    println!("{source}: network '{}' is valid libvirt network XML (net-define accepts it), but vxdp cannot start it yet", def.name);
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::NetDestroy { name } => {
            network::stop(ctx, &name).await?;
            println!("Network {name} destroyed");
        }
        Command::NetList { all } => {
            let running = network::list(ctx)?;
            println!(
                "{:<16} {:<8} {:<9} {:<10} {:<8} {:<12} {:<18} PORTS",
                "NAME", "STATE", "AUTOSTART", "PERSISTENT", "MODE", "BRIDGE", "SUBNET"
            );
            for s in definitions::status_all(ctx)? {
                if !all && !s.active {
                    continue;
                }
                let rec = running.iter().find(|r| r.name == s.name);
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                let subnet = rec.map(|r| format!("{}/{}", r.subnet, r.prefix)).unwrap_or_else(|| "-".into());
                let ports: Vec<_> = rec.map(|r| r.ports.iter().map(|p| p.dev.as_str()).collect()).unwrap_or_default();
                println!(
                    "{:<16} {:<8} {:<9} {:<10} {:<8} {:<12} {:<18} {}",
                    s.name,
                    if s.active { "active" } else { "inactive" },
                    yes_no(s.autostart),
                    yes_no(s.persistent),
                    s.mode,
                    s.bridge.as_deref().unwrap_or("-"),
                    subnet,
                    if ports.is_empty() { "-".to_string() } else { ports.join(",") }
                );
            }
        }
        Command::NetInfo { name } => {
            let s = definitions::status_all(ctx)?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| network::NetworkError::NotDefined(name.clone()))?;
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            println!("{:<15} {}", "Name:", s.name);
            println!("{:<15} {}", "UUID:", s.uuid.as_deref().unwrap_or("-"));
            println!("{:<15} {}", "Active:", yes_no(s.active));
            println!("{:<15} {}", "Persistent:", yes_no(s.persistent));
            println!("{:<15} {}", "Autostart:", yes_no(s.autostart));
            println!("{:<15} {}", "Mode:", s.mode);
            println!("{:<15} {}", "Bridge:", s.bridge.as_deref().unwrap_or("-"));
        }
        Command::NetDumpxml { name, inactive } => print!("{}", definitions::dumpxml(ctx, &name, inactive)?),
        Command::NetAutostart { name, disable } => {
            definitions::set_autostart(ctx, &name, !disable)?;
            println!("Network {name} {}", if disable { "unmarked as autostarted" } else { "marked as autostarted" });
        }
        Command::Autostart => {
            let (started, failed) = definitions::autostart(ctx).await?;
            for name in &started {
                println!("Network {name} started");
            }
            for (name, e) in &failed {
                eprintln!("vxdp: error: autostart of network {name} failed: {e}");
            }
            if !failed.is_empty() {
                bail!("{} of {} autostart networks failed to start", failed.len(), failed.len() + started.len());
            }
        }
        Command::AttachInterface { network, dev, mac, xml } => match (xml, network, dev) {
            (Some(file), _, _) => {
                let text = read(&file)?;
                let port = ports::attach_xml(ctx, &text, &file.display().to_string()).await?;
                println!("{}", port.dev);
            }
            (None, Some(network), Some(dev)) => {
                network::attach_interface(ctx, &network, &dev, mac.as_deref()).await?;
            }
            _ => bail!("give --xml FILE, or --network and --dev"),
        },
        Command::DetachInterface { network, dev, xml } => match (xml, network, dev) {
            (Some(file), _, _) => {
                let text = read(&file)?;
                let dev = ports::detach_xml(ctx, &text, &file.display().to_string()).await?;
                println!("{dev}");
            }
            (None, Some(network), Some(dev)) => network::detach_interface(ctx, &network, &dev).await?,
            _ => bail!("give --xml FILE, or --network and --dev"),
        },
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

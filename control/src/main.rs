//! The `vxdp` command.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use vxdp_control::host::tap::TapOwner;
use vxdp_control::{
    daemon,
    daemon::report,
    dataplane::pinned,
    dataplane::{LoadOptions, Maps, Pins},
    host::Context,
    host::dnsmasq,
    model::{
        forward::{PortForward, PortRange, Proto, range_problem},
        mac::Mac,
    },
    modes::plan::{self, PlanError},
    ops::{OpsError, definitions, forwards, lifecycle, networks, ports, reconcile},
};

/// libvirt's virtual networks, forwarded and NATed by eBPF (XDP/TC).
///
/// Reads libvirt network XML, creates the bridge over netlink, loads and pins
/// the eBPF programs and fills their maps. The dataplane keeps running when
/// this command exits; `net-destroy` removes it again.
#[derive(Parser)]
#[command(name = "vxdp", version, propagate_version = true)]
struct Cli {
    /// Directory for vxdp's state (network definitions, started networks, saved host settings).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/vxdp",
        env = "VXDP_STATE_DIR"
    )]
    state_dir: PathBuf,
    /// Directory on a bpf filesystem where maps, programs and links are pinned.
    #[arg(
        long,
        global = true,
        default_value = "/sys/fs/bpf/vxdp/v1",
        env = "VXDP_BPFFS"
    )]
    bpffs: PathBuf,
    /// Run inside this network namespace (a name under /run/netns), like `ip -n`.
    /// Only the network namespace changes, so the bpf filesystem stays visible.
    #[arg(long, global = true, env = "VXDP_NETNS")]
    netns: Option<String>,
    /// Conntrack table size in entries (two per NATed flow), for the IPv4 and
    /// the NAT66 (IPv6) table each; applies when the dataplane is first loaded.
    #[arg(long, global = true, default_value_t = vxdp_common::DEFAULT_CONNTRACK_ENTRIES)]
    conntrack_entries: u32,
    /// Most NAT flows one guest port may hold (0: no limit); a new flow over
    /// it is dropped and counted (guest_flow_limit), so one guest cannot
    /// fill the shared table and evict others' flows. Default: a quarter of
    /// the table's flows (conntrack entries / 8). Applies when the
    /// dataplane is first loaded; enforced while `vxdp serve` runs (it
    /// recounts the flows; without it counts go stale and limits lapse
    /// after 2 minutes).
    #[arg(long, global = true, value_name = "FLOWS")]
    max_flows_per_guest: Option<u32>,
    /// Most NAT flows one network may hold (0: no limit); over it new flows
    /// are dropped and counted (network_flow_limit). Default: half the
    /// table's flows (conntrack entries / 4). Applies when the dataplane is
    /// first loaded; enforced while `vxdp serve` runs.
    #[arg(long, global = true, value_name = "FLOWS")]
    max_flows_per_network: Option<u32>,
    /// Run the guest port programs as XDP on tap guest ports too (native
    /// XDP in the writer's context, before a socket buffer exists), with
    /// the TC program taking what XDP leaves to it: GSO frames, frames
    /// whose checksum the guest left to the host, rate-limited ports, and
    /// paths XDP cannot send on. `--guest-xdp` alone means on. The value
    /// given is kept in the state directory and holds for every later
    /// command and the daemon until another is given; never given: off
    /// (see docs/performance.md). A port's `attach-interface --port-xdp`
    /// overrides it. Applies when ports are plugged or their network is
    /// reconciled (`vxdp load`, the daemon's passes).
    #[arg(long, global = true, env = "VXDP_GUEST_XDP", value_name = "on|off",
          num_args = 0..=1, require_equals = true, default_missing_value = "on",
          hide_possible_values = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    guest_xdp: Option<bool>,
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
        #[arg(value_parser = network_name)]
        name: String,
    },
    /// Start a defined network (see `net-define`).
    ///
    /// Supported so far: <forward mode='nat'> (one IPv4 <ip>, <nat><address>/
    /// <port>; one IPv6 <ip> too, routed, or masqueraded with <nat
    /// ipv6='yes'>), mode='route' and mode='open' (one IPv4 and/or one IPv6 <ip>),
    /// isolated networks (no <forward>; without <ip>: very isolated), host
    /// bridge (<forward mode='bridge'/> with <bridge name> of an existing
    /// bridge), with
    /// optional <forward dev>, <bridge name stp delay>, <mac>. The uplink is
    /// <forward dev> or the interface of the default route. Direct
    /// (macvtap-like) networks:
    /// <forward mode='bridge|vepa|private|passthrough'> with <interface dev>
    /// (or <forward dev>, no <bridge name>): guests on that NIC with no
    /// bridge, switched by eBPF; the host reaches them through the NIC. Anything else is refused with "not
    /// supported yet: <element>".
    ///
    /// A network with an <ip> gets its own dnsmasq on its bridge (DHCP ranges,
    /// static <host>s, leases, <dns>, <domain>, <tftp root>, <bootp>,
    /// <dnsmasq:options>), kept running by a detached supervisor that restarts
    /// it within a few seconds if it dies. Its files (configuration, leases,
    /// pid files, log) are under <state-dir>/dnsmasq/<network>/.
    NetStart {
        /// The network's name.
        #[arg(value_parser = network_name)]
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
    /// Stop a network: stop its dnsmasq, unplug its ports, remove its bridge,
    /// flows and programs. A defined network keeps its definition and can be
    /// started again; the DHCP lease file is kept for the next start.
    NetDestroy {
        /// The network's name.
        #[arg(value_parser = network_name)]
        name: String,
    },
    /// List networks as a table: name, state, autostart, persistent, then
    /// mode, bridge (a direct network: its devices), subnet and plugged
    /// ports of running networks.
    NetList {
        /// Also list defined networks that are not running.
        #[arg(long)]
        all: bool,
    },
    /// Show a network's name, UUID, state, persistence, autostart, mode and
    /// bridge (a direct network: its devices).
    NetInfo {
        /// The network's name.
        #[arg(value_parser = network_name)]
        name: String,
    },
    /// Print a network's XML: the running definition of an active network,
    /// otherwise the stored one (with the generated UUID, MAC and bridge).
    NetDumpxml {
        /// The network's name.
        #[arg(value_parser = network_name)]
        name: String,
        /// Print the stored definition even when the network runs.
        #[arg(long)]
        inactive: bool,
    },
    /// Take libvirt network NAME over: vxdp defines and starts it from
    /// libvirt's definition (same name, UUID, bridge, MAC, addresses, DHCP,
    /// autostart), and libvirt keeps a network of that name and UUID as
    /// <forward mode='bridge'/> on the same bridge, so domains'
    /// <interface type='network'> keep working unchanged. Running domains'
    /// taps are plugged back. Through virsh only; refuses, naming the step
    /// and undoing the others, when a step fails.
    LibvirtAdopt {
        /// The libvirt network's name.
        #[arg(value_parser = network_name)]
        name: String,
        /// libvirt's connection URI.
        #[arg(long, env = "VXDP_LIBVIRT_URI", default_value = "qemu:///system")]
        connect: String,
    },
    /// Give an adopted network back to libvirt: vxdp stops and undefines
    /// it, libvirt gets its original definition, autostart flag and state
    /// back, running domains' taps go back on libvirt's bridge.
    LibvirtRelease {
        /// The network's name.
        #[arg(value_parser = network_name)]
        name: String,
        /// libvirt's connection URI.
        #[arg(long, env = "VXDP_LIBVIRT_URI", default_value = "qemu:///system")]
        connect: String,
    },
    /// libvirt's qemu hook: run from /etc/libvirt/hooks/qemu with libvirt's
    /// arguments (`exec vxdp libvirt-hook "$@"`) and the domain XML on
    /// stdin. At `started` (and `reconnect`) it plugs the domain's taps on
    /// vxdp networks with the exact MAC and the addresses of the
    /// interface's <ip> and <filterref> IP/IPV6 parameters; at `prepare`
    /// it checks those addresses (refusing the start when vxdp cannot
    /// enforce them); at `stopped`/`release` it unplugs the taps. Other
    /// domains and operations: nothing. Prints nothing on stdout (libvirt
    /// reads a hook's stdout as XML for some operations).
    LibvirtHook {
        /// The domain's name.
        domain: String,
        /// libvirt's operation: prepare, start, started, stopped, release, reconnect, ….
        operation: String,
        /// libvirt's sub-operation and extra argument (not used).
        #[arg(num_args = 0..=2)]
        rest: Vec<String>,
    },
    /// Mark a defined network to be started by `vxdp autostart` (and by the
    /// daemon at boot), or unmark it with --disable.
    NetAutostart {
        /// The network's name.
        #[arg(value_parser = network_name)]
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
    /// type network (<source network>), bridge (<source bridge> of a vxdp
    /// network) or direct (<source dev mode>: the direct network on that
    /// device, in that mode), <mac address> (the guest's MAC; generated in 52:54:00 when
    /// absent), <model type> (informational), <target dev>. With --xml and no
    /// existing <target dev>, vxdp creates a persistent tap named <target dev>
    /// or the first free vnetN for the hypervisor to open, and removes it
    /// when the port is unplugged. Prints the device name.
    AttachInterface {
        /// The network's name.
        #[arg(value_parser = network_name, long, required_unless_present = "xml", conflicts_with = "xml")]
        network: Option<String>,
        /// The interface to plug in.
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml")]
        dev: Option<String>,
        /// The guest's MAC address (libvirt's <mac address>), if known. The
        /// guest may then send only from this MAC (anti-spoofing).
        #[arg(long, conflicts_with = "xml", value_parser = guest_mac)]
        mac: Option<Mac>,
        /// The guest's static address: IPv4 and/or IPv6 (repeat --ip for
        /// both). The guest may then send only from it (anti-spoofing;
        /// IPv6 link-local and unspecified sources stay allowed for
        /// neighbour discovery); it must lie in the network's subnet or
        /// prefix. Without an IPv4 one, a static DHCP <host> or the guest's
        /// DHCP lease gives the IPv4 address.
        #[arg(long, conflicts_with = "xml", value_name = "ADDRESS")]
        ip: Vec<String>,
        /// Let the guest serve its network: send IPv6 router advertisements
        /// and redirects, DHCPv4 and DHCPv6 server messages. Without it
        /// they are dropped (reason rogue_service), as libvirt's
        /// clean-traffic filters do.
        #[arg(long, conflicts_with = "xml")]
        allow_services: bool,
        /// This port's choice of the guest XDP program (on or off), whatever
        /// the global --guest-xdp says; it has effect on taps only.
        #[arg(long, value_name = "on|off",
              value_parser = clap::builder::BoolishValueParser::new())]
        port_xdp: Option<bool>,
        /// A domain <interface> XML file.
        #[arg(long)]
        xml: Option<PathBuf>,
        /// Who may open a tap vxdp creates for --xml, as USER[:GROUP] (names
        /// or numeric ids; libvirt's qemu user and group): only that user,
        /// and with a GROUP only while in it, or a process with
        /// CAP_NET_ADMIN. Default: root.
        #[arg(long, requires = "xml", value_name = "USER[:GROUP]", value_parser = TapOwner::parse)]
        tap_owner: Option<TapOwner>,
    },
    /// Port forwards into a NAT network's guests (libvirt's <portForward>).
    ///
    /// Connections from the outside to the network's NAT address (the
    /// uplink's; or --address) and a forwarded TCP or UDP port reach the
    /// guest behind port --dev, at its IPv4 address (--ip or <ip> at
    /// attach, a static DHCP <host>, or its lease), translated in eBPF on
    /// the uplink; the guest's answers leave from the public address and
    /// port. Forwards are kept with the port (a restart and `vxdp serve`
    /// restore them). Refused, naming the conflict: a network that is not
    /// NAT, a public address inside a vxdp network, a public port another
    /// forward has or a host socket listens on.
    PortForward {
        #[command(subcommand)]
        action: PortForwardCmd,
    },
    /// Unplug a guest port from a network (by --network and --dev, or by the
    /// domain <interface> XML it was plugged with: <target dev>, else <mac>).
    /// A tap vxdp created for the port is removed.
    DetachInterface {
        /// The network's name.
        #[arg(value_parser = network_name, long, required_unless_present = "xml", conflicts_with = "xml")]
        network: Option<String>,
        /// The interface to unplug.
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml")]
        dev: Option<String>,
        /// A domain <interface> XML file.
        #[arg(long)]
        xml: Option<PathBuf>,
    },
    /// List a network's DHCP leases, like `virsh net-dhcp-leases`.
    ///
    /// Read from the network's dnsmasq lease file; expired leases are not
    /// shown. Expiry times are UTC ("never" for infinite leases).
    NetDhcpLeases {
        /// The network's name.
        #[arg(value_parser = network_name)]
        network: String,
        /// Only leases of this MAC address.
        #[arg(long, value_parser = any_mac)]
        mac: Option<Mac>,
    },
    /// (internal) Run and restart a network's dnsmasq; started by net-create.
    #[command(hide = true)]
    DnsmasqSupervise {
        #[arg(value_parser = network_name)]
        network: String,
    },
    /// (internal) Ends a network's dnsmasq when its supervisor dies; started
    /// by the supervisor.
    #[command(hide = true)]
    DnsmasqGuard {
        #[arg(value_parser = network_name)]
        network: String,
    },
    /// (internal) dnsmasq's lease hook: ACTION MAC IP [HOSTNAME].
    #[command(hide = true)]
    DhcpLeaseEvent {
        #[arg(value_parser = network_name)]
        network: String,
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// (internal) Write man pages and/or bash, zsh and fish completions
    /// generated from these definitions; `cargo xtask man` runs it.
    #[command(hide = true)]
    GenerateDocs {
        /// Directory for vxdp.1 and one page per verb.
        #[arg(long)]
        man: Option<PathBuf>,
        /// Directory for vxdp.bash, _vxdp (zsh) and vxdp.fish.
        #[arg(long)]
        completions: Option<PathBuf>,
    },
    /// Print the dataplane's counters (per network: actions and drop reasons).
    Stats {
        /// Only this network.
        #[arg(value_parser = network_name)]
        network: Option<String>,
        /// Also show counters that are zero.
        #[arg(long)]
        all: bool,
        /// Split by the interface packets arrived on (guest port or uplink),
        /// as the metrics' `interface` label does.
        #[arg(long, conflicts_with = "all")]
        by_interface: bool,
    },
    /// Inspect or flush the NAT connection table.
    Conntrack {
        #[command(subcommand)]
        action: ConntrackCmd,
    },
    /// Run the control-plane daemon: metrics, reconcile, conntrack expiry.
    ///
    /// Adopts the programs, maps and links pinned under --bpffs (loading them
    /// only when nothing is pinned), then every --reconcile-interval brings
    /// the host back in line with the started networks: recreates a deleted
    /// bridge, re-plugs a guest port that reappeared, re-attaches a program
    /// whose link was detached or unpinned, refills missing map entries; and
    /// removes conntrack flows idle past their timeout. Serves Prometheus
    /// metrics at http://<listen>/metrics, a read-only status page at
    /// http://<listen>/ and its data as JSON at /api/status. Tells systemd
    /// when it is ready (Type=notify). SIGTERM or SIGINT ends it; the
    /// dataplane keeps forwarding without it (restart or upgrade it at will).
    Serve {
        /// Address (inside --netns, if given) of the metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9465")]
        listen: std::net::SocketAddr,
        /// How often to reconcile and sweep conntrack, e.g. 10s, 500ms, 2m.
        #[arg(long, default_value = "10s", value_parser = parse_interval)]
        reconcile_interval: std::time::Duration,
    },
    /// Load (or adopt) the eBPF dataplane and attach it to every started network.
    ///
    /// The reverse of `vxdp unload`: loads and pins the programs and maps when
    /// nothing is pinned, then runs one reconcile pass (map entries, programs
    /// on guest ports and uplinks). Prints the kernel ids of what is pinned,
    /// as `bpftool prog|map|link show` lists them.
    Load,
    /// Remove every vxdp program, link, map and pin; keep bridges and ports.
    ///
    /// Detaches every pinned link and removes the pin directory (--bpffs), so
    /// nothing of vxdp stays in the kernel. Bridges, guest ports and the
    /// started networks' records stay: guests keep switching through the
    /// kernel bridge (slower, never broken; NAT to the outside then needs
    /// the kernel's own, e.g. an nftables masquerade rule vxdp does not add).
    /// `vxdp serve` does not load the dataplane again until `vxdp load`.
    /// Prints the ids of what was removed.
    Unload,
}

/// A network name as the XML module accepts it, so no name given on the
/// command line names a path outside the state directory.
fn network_name(s: &str) -> Result<String, String> {
    match vxdp_control::xml::network_name_problem(s) {
        Some(problem) => Err(problem),
        None => Ok(s.to_string()),
    }
}

/// `--mac` of a guest: libvirt's MAC syntax, unicast.
fn guest_mac(s: &str) -> Result<Mac, String> {
    Mac::parse_unicast(s).map_err(|e| format!("'{s}': {e}"))
}

/// A MAC to filter by: libvirt's MAC syntax.
fn any_mac(s: &str) -> Result<Mac, String> {
    Mac::parse(s).map_err(|e| format!("'{s}': {e}"))
}

/// Parses `10s`, `500ms`, `2m` or plain seconds.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a duration such as 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s or m)")),
    };
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(format!("'{s}': must be between 100ms and 24h"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Subcommand)]
enum PortForwardCmd {
    /// Forward public ports to a guest port of a NAT network.
    ///
    /// Give the ports with --proto and --range (and --exclude), or a
    /// <portForward> element with --xml, e.g.
    /// <portForward proto='tcp'><range start='2022' to='22'/><range
    /// start='5000' end='5020' to='6000'/><range start='5010' end='5015'
    /// exclude='yes'/></portForward>.
    Add {
        /// The NAT network's name.
        #[arg(value_parser = network_name)]
        network: String,
        /// The guest's port (as plugged with attach-interface).
        dev: String,
        /// tcp or udp.
        #[arg(long, required_unless_present = "xml", conflicts_with = "xml", value_parser = forward_proto)]
        proto: Option<Proto>,
        /// Public ports START[-END][:TO]: START..END forwarded to the
        /// guest's TO.. (the same ports without :TO). Repeatable.
        #[arg(long, value_name = "START[-END][:TO]", required_unless_present = "xml", conflicts_with = "xml", value_parser = forward_range)]
        range: Vec<PortRange>,
        /// Public ports START[-END] left out of the ranges. Repeatable.
        #[arg(long, value_name = "START[-END]", conflicts_with = "xml", value_parser = excluded_range)]
        exclude: Vec<PortRange>,
        /// The public IPv4 address (default: the network's NAT address, the
        /// uplink's, followed when it changes).
        #[arg(long, conflicts_with = "xml")]
        address: Option<std::net::Ipv4Addr>,
        /// Only connections arriving on this interface (default: the
        /// network's uplink).
        #[arg(long, conflicts_with = "xml")]
        in_dev: Option<String>,
        /// A <portForward> XML file.
        #[arg(long)]
        xml: Option<PathBuf>,
    },
    /// List the port forwards of the started networks: public address and
    /// ports, guest port and address, flows opened.
    List {
        /// Only this network's forwards.
        #[arg(value_parser = network_name)]
        network: Option<String>,
    },
    /// Remove a guest port's forwards (those of --proto, holding --port;
    /// all of the port's without them). Established connections keep
    /// their flows until they end or time out; new ones are refused.
    Remove {
        #[arg(value_parser = network_name)]
        network: String,
        dev: String,
        #[arg(long, value_parser = forward_proto)]
        proto: Option<Proto>,
        /// A public port the forward to remove holds.
        #[arg(long)]
        port: Option<u16>,
    },
}

fn forward_proto(s: &str) -> Result<Proto, String> {
    Proto::parse(s).ok_or_else(|| format!("'{s}': expected tcp or udp"))
}

/// `START[-END]` of `--range`/`--exclude`.
fn port_span(s: &str, whole: &str) -> Result<(u16, u16), String> {
    let num = |t: &str| {
        t.parse::<u16>()
            .map_err(|_| format!("'{whole}': '{t}' is not a port number (1-65535)"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok((num(a)?, num(b)?)),
        None => {
            let p = num(s)?;
            Ok((p, p))
        }
    }
}

fn forward_range(s: &str) -> Result<PortRange, String> {
    let (span, to) = match s.split_once(':') {
        Some((a, t)) => (
            a,
            Some(
                t.parse::<u16>()
                    .map_err(|_| format!("'{s}': '{t}' is not a port number (1-65535)"))?,
            ),
        ),
        None => (s, None),
    };
    let (start, end) = port_span(span, s)?;
    let r = PortRange {
        start,
        end,
        to,
        exclude: false,
    };
    match range_problem(&r) {
        Some((_, why)) => Err(format!("'{s}': {why}")),
        None => Ok(r),
    }
}

fn excluded_range(s: &str) -> Result<PortRange, String> {
    let (start, end) = port_span(s, s)?;
    let r = PortRange {
        start,
        end,
        to: None,
        exclude: true,
    };
    match range_problem(&r) {
        Some((_, why)) => Err(format!("'{s}': {why}")),
        None => Ok(r),
    }
}

#[derive(Subcommand)]
enum ConntrackCmd {
    /// List NAT flows (one line per flow): IPv4 NAT and NAT66 (IPv6
    /// addresses shown as [addr]:port; ICMP and ICMPv6 echo show the echo
    /// identifier as the port).
    List {
        /// Only this network's flows.
        #[arg(value_parser = network_name)]
        network: Option<String>,
    },
    /// Remove the flows (IPv4 and NAT66) of a network, or of every started network.
    ///
    /// Guests' connections through NAT break (their next packet starts a new
    /// flow, possibly with another NAT port).
    Flush {
        /// Only this network's flows.
        #[arg(value_parser = network_name)]
        network: Option<String>,
    },
}

/// The global guest XDP setting in effect: `given` (then kept in the state
/// directory for later commands), else the kept one, else off.
fn guest_xdp_setting(state_dir: &std::path::Path, given: Option<bool>) -> Result<bool> {
    use vxdp_control::host::state::{read_settings, save_settings};
    let mut settings = read_settings(state_dir)?;
    match given {
        Some(on) if settings.guest_xdp != Some(on) => {
            settings.guest_xdp = Some(on);
            save_settings(state_dir, &settings)?;
            Ok(on)
        }
        Some(on) => Ok(on),
        None => Ok(settings.guest_xdp.unwrap_or(false)),
    }
}

fn enter_netns(name: &str) -> Result<()> {
    let path = PathBuf::from("/run/netns").join(name);
    let f = std::fs::File::open(&path).with_context(|| {
        format!(
            "network namespace {name}: {} not found (ip netns list)",
            path.display()
        )
    })?;
    use std::os::fd::AsRawFd;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "entering network namespace {name}: {}",
            std::io::Error::last_os_error()
        );
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

/// Progress and warnings of the library and of this command go through
/// `log`, printed to stderr as `[vxdp] <message>`; shown by default
/// (`RUST_LOG` may change that, e.g. `RUST_LOG=vxdp_control=warn`).
fn init_logging() {
    use std::io::Write as _;
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("vxdp=info,vxdp_control=info"),
    )
    .format(|buf, record| writeln!(buf, "[vxdp] {}", record.args()))
    .init();
}

fn real_main() -> Result<()> {
    init_logging();
    let cli = Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit());
    if let Command::GenerateDocs { man, completions } = &cli.command {
        return generate_docs(man.as_deref(), completions.as_deref());
    }
    if matches!(cli.command, Command::Serve { .. }) {
        // Before any namespace changes: see prepare_notify.
        vxdp_control::daemon::prepare_notify();
    }
    // Before the runtime starts threads, so every thread is in the namespace.
    if let Some(ns) = &cli.netns {
        enter_netns(ns)?;
    }
    // Under `ip netns exec` the host's bpffs is hidden: find it (before any
    // thread starts; paths made absolute first, the working directory kept).
    let bpffs = std::path::absolute(&cli.bpffs).unwrap_or_else(|_| cli.bpffs.clone());
    let state_dir = std::path::absolute(&cli.state_dir).unwrap_or_else(|_| cli.state_dir.clone());
    match vxdp_control::dataplane::join_mount_ns_with_bpffs(&bpffs) {
        Ok(None) => {}
        Ok(Some(pid)) => {
            if matches!(cli.command, Command::Serve { .. }) {
                log::info!(
                    "{} is hidden in this mount namespace (ip netns exec?): using the mounts of process {pid}, where it is",
                    bpffs.display()
                );
            }
        }
        Err(e) => bail!(
            "{} is hidden in this mount namespace (ip netns exec?) and joining one where it is failed: {e}",
            bpffs.display()
        ),
    }
    let guest_xdp = guest_xdp_setting(&state_dir, cli.guest_xdp)?;
    let ctx = Context {
        state_dir,
        pins: Pins::new(&bpffs),
        load: LoadOptions {
            conntrack_entries: cli.conntrack_entries,
            flows_per_guest: cli.max_flows_per_guest,
            flows_per_network: cli.max_flows_per_network,
            guest_xdp,
            ..LoadOptions::default()
        },
    };
    // The dnsmasq helpers are synchronous and long-running (supervisor) or
    // run on every lease change (hook): no runtime for them.
    match &cli.command {
        Command::DnsmasqSupervise { network } => {
            dnsmasq::run_supervisor(&ctx.state_dir, network)?;
            return Ok(());
        }
        Command::DnsmasqGuard { .. } => {
            dnsmasq::run_guard()?;
            return Ok(());
        }
        Command::DhcpLeaseEvent { network, args } => {
            let msg = dnsmasq::apply_event(&ctx.state_dir, &ctx.pins, network, args)?;
            log::info!("{msg}");
            return Ok(());
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
            match plan::plan(&text, &source) {
                Ok(_) => println!("{source}: network '{}' is valid", def.name),
                Err(e @ PlanError::NotSupported { .. }) => {
                    println!(
                        "{source}: network '{}' is valid libvirt network XML (net-define accepts it), but vxdp cannot start it yet",
                        def.name
                    );
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::NetDestroy { name } => {
            lifecycle::stop(ctx, &name).await?;
            println!("Network {name} destroyed");
        }
        Command::NetList { all } => {
            let running = networks::list(ctx)?;
            println!(
                "{:<16} {:<8} {:<9} {:<10} {:<18} {:<12} {:<18} PORTS",
                "NAME", "STATE", "AUTOSTART", "PERSISTENT", "MODE", "BRIDGE", "SUBNET"
            );
            for s in definitions::status_all(ctx)? {
                if !all && !s.active {
                    continue;
                }
                let rec = running.iter().find(|r| r.name == s.name);
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                let subnet = rec
                    .filter(|r| !r.is_direct())
                    .map(|r| format!("{}/{}", r.subnet, r.prefix))
                    .unwrap_or_else(|| "-".into());
                let ports: Vec<_> = rec
                    .map(|r| r.ports.iter().map(|p| p.dev.as_str()).collect())
                    .unwrap_or_default();
                println!(
                    "{:<16} {:<8} {:<9} {:<10} {:<18} {:<12} {:<18} {}",
                    s.name,
                    if s.active { "active" } else { "inactive" },
                    yes_no(s.autostart),
                    yes_no(s.persistent),
                    s.mode,
                    s.bridge.as_deref().unwrap_or("-"),
                    subnet,
                    if ports.is_empty() {
                        "-".to_string()
                    } else {
                        ports.join(",")
                    }
                );
            }
        }
        Command::NetInfo { name } => {
            let s = definitions::status_all(ctx)?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| OpsError::NotDefined(name.clone()))?;
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            println!("{:<15} {}", "Name:", s.name);
            println!("{:<15} {}", "UUID:", s.uuid.as_deref().unwrap_or("-"));
            println!("{:<15} {}", "Active:", yes_no(s.active));
            println!("{:<15} {}", "Persistent:", yes_no(s.persistent));
            println!("{:<15} {}", "Autostart:", yes_no(s.autostart));
            println!("{:<15} {}", "Mode:", s.mode);
            println!("{:<15} {}", "Bridge:", s.bridge.as_deref().unwrap_or("-"));
        }
        Command::NetDumpxml { name, inactive } => {
            print!("{}", definitions::dumpxml(ctx, &name, inactive)?)
        }
        Command::LibvirtAdopt { name, connect } => {
            let virsh = vxdp_control::host::libvirt::Virsh::new(&connect);
            let plugged = vxdp_control::ops::libvirt::adopt(ctx, &virsh, &name).await?;
            println!("Network {name} adopted from libvirt ({connect})");
            for dev in plugged {
                println!("Plugged {dev} of a running domain");
            }
        }
        Command::LibvirtHook {
            domain,
            operation,
            rest: _,
        } => {
            use std::io::Read as _;
            // libvirt's full domain definition; a bound keeps a runaway
            // writer from growing this process.
            let mut xml = String::new();
            std::io::stdin()
                .take(16 << 20)
                .read_to_string(&mut xml)
                .map_err(|e| anyhow::anyhow!("reading the domain XML on stdin: {e}"))?;
            for a in vxdp_control::ops::libvirt::hook(ctx, &domain, &operation, &xml).await? {
                eprintln!(
                    "vxdp libvirt-hook {domain} {operation}: {}: {}: {}",
                    a.network, a.dev, a.what
                );
            }
        }
        Command::LibvirtRelease { name, connect } => {
            let virsh = vxdp_control::host::libvirt::Virsh::new(&connect);
            vxdp_control::ops::libvirt::release(ctx, &virsh, &name).await?;
            println!("Network {name} given back to libvirt ({connect})");
        }
        Command::NetAutostart { name, disable } => {
            definitions::set_autostart(ctx, &name, !disable)?;
            println!(
                "Network {name} {}",
                if disable {
                    "unmarked as autostarted"
                } else {
                    "marked as autostarted"
                }
            );
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
                bail!(
                    "{} of {} autostart networks failed to start",
                    failed.len(),
                    failed.len() + started.len()
                );
            }
        }
        Command::AttachInterface {
            network,
            dev,
            mac,
            ip,
            allow_services,
            port_xdp,
            xml,
            tap_owner,
        } => match (xml, network, dev) {
            (Some(file), _, _) => {
                let text = read(&file)?;
                let port = ports::attach_xml(
                    ctx,
                    &text,
                    &file.display().to_string(),
                    tap_owner.unwrap_or_default(),
                    port_xdp,
                )
                .await?;
                println!("{}", port.dev);
            }
            (None, Some(network), Some(dev)) => {
                ports::attach_interface_with(
                    ctx,
                    &network,
                    &dev,
                    mac,
                    &ip,
                    allow_services,
                    port_xdp,
                )
                .await
                .map_err(|e| match e {
                    // The library names the address; the option is ours.
                    OpsError::GuestAddress { .. } => anyhow::anyhow!("--ip {e}"),
                    e => e.into(),
                })?;
            }
            _ => bail!("give --xml FILE, or --network and --dev"),
        },
        Command::PortForward { action } => match action {
            PortForwardCmd::Add {
                network,
                dev,
                proto,
                range,
                exclude,
                address,
                in_dev,
                xml,
            } => {
                let fwd = match (xml, proto) {
                    (Some(file), _) => vxdp_control::xml::parse_port_forward(
                        &read(&file)?,
                        &file.display().to_string(),
                    )?,
                    (None, Some(proto)) => {
                        let fwd = PortForward {
                            proto,
                            address,
                            dev: in_dev,
                            ranges: range.into_iter().chain(exclude).collect(),
                        };
                        if let Some(p) = fwd.overlap() {
                            bail!("--range: two ranges forward port {p}");
                        }
                        fwd
                    }
                    (None, None) => bail!("give --proto and --range, or --xml FILE"),
                };
                if let Some(why) = forwards::add(ctx, &network, &dev, fwd).await? {
                    log::warn!("{network}: the forward is kept but waits: {why}");
                }
            }
            PortForwardCmd::List { network } => {
                let rows = forwards::list(ctx, network.as_deref())?;
                print!("{}", report::forwards_table(&rows));
            }
            PortForwardCmd::Remove {
                network,
                dev,
                proto,
                port,
            } => {
                let n = forwards::remove(ctx, &network, &dev, proto, port).await?;
                println!("{network}: removed {n} port forward(s) of {dev}");
            }
        },
        Command::DetachInterface { network, dev, xml } => match (xml, network, dev) {
            (Some(file), _, _) => {
                let text = read(&file)?;
                let dev = ports::detach_xml(ctx, &text, &file.display().to_string()).await?;
                println!("{dev}");
            }
            (None, Some(network), Some(dev)) => {
                ports::detach_interface(ctx, &network, &dev).await?
            }
            _ => bail!("give --xml FILE, or --network and --dev"),
        },
        Command::NetDhcpLeases { network, mac } => {
            let rec = networks::find(ctx, &network)?;
            let mac = mac.map(Mac::octets);
            let def = vxdp_control::xml::parse_network(&rec.xml, &rec.name)?;
            let leases = dnsmasq::read_leases(&ctx.state_dir, &network)?;
            print!(
                "{}",
                dnsmasq::leases::table(&def, &leases, mac.as_ref(), dnsmasq::leases::unix_now())
            );
        }
        Command::DnsmasqSupervise { .. }
        | Command::DnsmasqGuard { .. }
        | Command::DhcpLeaseEvent { .. }
        | Command::GenerateDocs { .. } => unreachable!("handled before the runtime starts"),
        Command::Stats {
            network,
            by_interface: true,
            ..
        } => {
            let nets = selected(ctx, network.as_deref())?;
            let maps = Maps::open(&ctx.pins)?;
            let all = networks::list(ctx)?;
            print!(
                "{}",
                vxdp_control::daemon::metrics::port_table(
                    &maps,
                    &all,
                    network.as_ref().map(|_| nets[0].id)
                )?
            );
        }
        Command::Stats { network, all, .. } => {
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
                let now = vxdp_control::dataplane::monotonic_ns();
                let mut rows = report::flow_rows(&entries, &nets, now);
                rows.extend(report::flow6_rows(
                    &maps.conntrack6_entries(id)?,
                    &nets,
                    now,
                ));
                print!("{}", report::flows_table(&rows));
            }
            ConntrackCmd::Flush { network } => {
                let maps = Maps::open(&ctx.pins)?;
                for rec in selected(ctx, network.as_deref())? {
                    let n = maps.flush_conntrack(rec.id)?;
                    println!("{}: removed {n} conntrack entries", rec.name);
                }
            }
        },
        Command::Serve {
            listen,
            reconcile_interval,
        } => {
            daemon::serve(
                ctx.clone(),
                daemon::ServeOptions {
                    listen,
                    reconcile_interval,
                },
            )
            .await?;
        }
        Command::Load => {
            for what in reconcile::recover(ctx).await? {
                println!("reverted the unfinished `{what}` of a vxdp that died");
            }
            let loaded = reconcile::load_or_adopt(ctx)?;
            println!(
                "{} the dataplane under {}",
                if loaded { "loaded" } else { "adopted" },
                ctx.pins.root.display()
            );
            let repairs = reconcile::reconcile(ctx, true).await?;
            for line in &repairs.lines {
                println!("  {line}");
            }
            print_ids(
                &pinned::pinned_ids(&ctx.pins)
                    .with_context(|| format!("reading {}", ctx.pins.root.display()))?,
            );
        }
        Command::Unload => {
            let ids = reconcile::unload(ctx)?;
            println!(
                "removed every vxdp program, map, link and pin under {}:",
                ctx.pins.root.display()
            );
            print_ids(&ids);
        }
    }
    Ok(())
}

/// The command line's definition with each verb's examples (`--help`, man).
fn cli_command() -> clap::Command {
    vxdp_control::docgen::with_examples(Cli::command())
}

/// `vxdp generate-docs`: touches nothing but the given directories.
fn generate_docs(
    man: Option<&std::path::Path>,
    completions: Option<&std::path::Path>,
) -> Result<()> {
    if man.is_none() && completions.is_none() {
        bail!("give --man DIR and/or --completions DIR");
    }
    let mut files = Vec::new();
    if let Some(dir) = man {
        files.extend(
            vxdp_control::docgen::write_man_pages(cli_command(), dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?,
        );
    }
    if let Some(dir) = completions {
        files.extend(
            vxdp_control::docgen::write_completions(cli_command(), dir)
                .with_context(|| format!("writing completions to {}", dir.display()))?,
        );
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn print_ids(ids: &pinned::PinnedIds) {
    for (path, id) in &ids.progs {
        println!("prog {id} {}", path.display());
    }
    for (path, id) in &ids.maps {
        println!("map {id} {}", path.display());
    }
    for (path, l) in &ids.links {
        // Only TC and XDP links are on an interface (the tracepoints' and
        // the cgroup socket programs' are not).
        let on_interface = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tc_") || n.starts_with("xdp_"));
        if on_interface {
            println!(
                "link {} {} (prog {}, ifindex {})",
                l.id,
                path.display(),
                l.prog_id,
                l.ifindex
            );
        } else {
            println!("link {} {} (prog {})", l.id, path.display(), l.prog_id);
        }
    }
}

fn selected(
    ctx: &Context,
    name: Option<&str>,
) -> Result<Vec<vxdp_control::host::state::NetworkRecord>> {
    Ok(match name {
        Some(n) => vec![networks::find(ctx, n)?],
        None => networks::list(ctx)?,
    })
}

fn read(file: &PathBuf) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{cli_command, parse_interval};

    #[test]
    fn cli_is_well_formed_and_every_example_parses() {
        cli_command().debug_assert();
        for (verb, examples) in vxdp_control::docgen::EXAMPLES {
            let path: Vec<&str> = verb.split_whitespace().collect();
            let mut cmd = cli_command();
            for p in &path {
                cmd = cmd
                    .find_subcommand(p)
                    .unwrap_or_else(|| panic!("examples for unknown verb '{verb}'"))
                    .clone();
            }
            for line in examples.lines() {
                let line = line.split(" #").next().unwrap().trim();
                // Only the first command of `a && b` / `a > file`.
                let line = line.split(['&', '>']).next().unwrap().trim();
                if !line.starts_with("vxdp ") {
                    continue;
                }
                let argv: Vec<&str> = line.split_whitespace().collect();
                match cli_command().try_get_matches_from(&argv) {
                    Ok(_) => {}
                    // Users and groups are looked up on this host.
                    Err(e)
                        if e.kind() == clap::error::ErrorKind::ValueValidation
                            && e.to_string().contains("--tap-owner") => {}
                    Err(e) => panic!("example of '{verb}' does not parse: {line}\n{e}"),
                }
            }
        }
    }

    #[test]
    fn reconcile_intervals_parse_with_units_and_bounds() {
        assert_eq!(parse_interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
        assert!(parse_interval("10h").unwrap_err().contains("unknown unit"));
        assert!(parse_interval("0s").unwrap_err().contains("between"));
        assert!(parse_interval("fast").unwrap_err().contains("'fast'"));
    }
}

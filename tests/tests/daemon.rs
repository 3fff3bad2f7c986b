//! `vxdp serve`, `vxdp load`/`unload` and `cargo xtask unload` end to end:
//! flows survive the daemon being killed and upgraded, /metrics passes
//! promtool and counts exactly, unload leaves nothing of vxdp in the kernel
//! while the bridge keeps working, reconcile repairs a detached program,
//! removed map entries and a deleted bridge in NAT, route and isolated
//! networks.
//!
//! The daemon runs inside the test's hypervisor namespace (`--netns`), its
//! metrics endpoint on that namespace's loopback; every test has its own
//! namespaces, state directory and bpffs pin directory.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_common::{ConntrackEntry, ConntrackKey, PROTO_TCP};
use vxdp_control::{
    dataplane::pinned::{self, PinnedIds},
    dataplane::{Maps, Pins},
    host::state::StateDir,
};
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, Serve, UPLINK_ADDR, fetch, pattern,
    serve_payload, vxdp_bin,
};
use vxdp_tests::matrix::{self, routed_xml};

/// The metrics endpoint: vxdp's default address, on the hypervisor
/// namespace's own loopback.
const METRICS: &str = "127.0.0.1:9465";

/// Programs the dataplane pins: the guest-port entry, the uplink's XDP
/// program, the guest port's tail calls (NAT, route, direct, NAT66, and the
/// uplink's TC program, which hairpin tail-calls), a direct network's NIC
/// ingress and egress programs, the bridges' egress program, the two
/// refused-redirect tracepoint programs, the cgroup socket programs (port
/// forwards from the host itself), and the guest port's XDP program
/// (`--guest-xdp`) with its tail calls.
const PINNED_PROGS: usize = vxdp_common::names::GUEST_JUMPS.len()
    + 7
    + vxdp_control::dataplane::host_sockets::PROGRAMS.len()
    + 1
    + vxdp_common::names::GUEST_XDP_JUMPS.len();

/// `vxdp serve` in the topology's hypervisor namespace (testkit's
/// [`Serve`]), started and ready when /metrics answers.
struct Daemon;

impl Daemon {
    fn start(topo: &NatTopology, bin: &Path, tag: &str) -> Result<Serve> {
        Self::ready(topo, Serve::command(topo, bin), tag)
    }

    /// Started as `ip netns exec <hyp> vxdp serve`: a mount namespace of
    /// its own, with a fresh sysfs on /sys that hides the host's bpffs.
    fn start_in_ip_netns_exec(topo: &NatTopology, bin: &Path, tag: &str) -> Result<Serve> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.hyp.name]).arg(bin);
        Self::ready(topo, cmd, tag)
    }

    /// Spawns `cmd` and waits until /metrics answers (at most 15 s).
    fn ready(topo: &NatTopology, cmd: Command, tag: &str) -> Result<Serve> {
        let mut d = Serve::spawn(topo, cmd, &[], tag, &[])?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "vxdp serve exited ({status}) before serving metrics:\n{}",
                    d.log()
                );
            }
            if scrape(&topo.hyp).is_ok() {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!(
                    "vxdp serve did not serve /metrics within 15 s:\n{}",
                    d.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// GET /metrics from inside the hypervisor namespace; the body on 200.
fn scrape(hyp: &Netns) -> Result<String> {
    scrape_within(hyp, Duration::from_secs(10))
}

/// [`scrape`], failing when the answer takes longer than `limit`.
fn scrape_within(hyp: &Netns, limit: Duration) -> Result<String> {
    let addr: SocketAddr = METRICS.parse()?;
    let mut stream =
        hyp.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
    stream.set_read_timeout(Some(limit))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .context("HTTP response without header end")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET /metrics: {head}\n{body}"
    );
    // hyper sends a fixed-length body for a full response; tolerate chunking.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16)?;
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        return Ok(out);
    }
    Ok(body.to_string())
}

/// Samples of the exposition: (name, labels) → value.
/// A metric sample's identity: its name and its labels.
type SampleKey = (String, BTreeMap<String, String>);

fn samples(text: &str) -> Result<BTreeMap<SampleKey, f64>> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("bad sample line {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .with_context(|| format!("bad labels in {line:?}"))?;
                let mut labels = BTreeMap::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .with_context(|| format!("bad label {pair:?}"))?;
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse()?);
    }
    Ok(out)
}

fn value(
    s: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.get(&(name.to_string(), want)).copied().unwrap_or(0.0)
}

fn pins(topo: &NatTopology) -> Pins {
    Pins::new(&topo.bpffs)
}

/// The guest port's ifindex as vxdp recorded it.
fn port_ifindex(topo: &NatTopology, dev: &str) -> Result<u32> {
    let rec = StateDir::open(&topo.state_dir)?
        .network("default")?
        .context("network default not recorded")?;
    Ok(rec
        .ports
        .iter()
        .find(|p| p.dev == dev)
        .with_context(|| format!("{dev} not recorded"))?
        .ifindex)
}

/// The NAT entries (both directions) of TCP flows to `server`, without the
/// last-seen time (it moves with every packet).
fn tcp_flow_entries(
    topo: &NatTopology,
    server: SocketAddr,
) -> Result<Vec<(ConntrackKey, ConntrackEntry)>> {
    let maps = Maps::open(&pins(topo))?;
    let port = server.port().to_be();
    let mut entries: Vec<_> = maps
        .conntrack_entries(None)?
        .into_iter()
        .filter(|(k, _)| k.proto == PROTO_TCP && (k.dst_port == port || k.src_port == port))
        .map(|(k, e)| {
            (
                k,
                // What moves with traffic (the time, the TCP sequence
                // records) aside: the same flow, the same mapping.
                ConntrackEntry {
                    last_seen_ns: 0,
                    tcp_end: 0,
                    tcp_ack: 0,
                    ..e
                },
            )
        })
        .collect();
    entries.sort_by_key(|(k, _)| (k.src_addr, k.dst_addr, k.src_port, k.dst_port));
    Ok(entries)
}

/// A TCP conversation guest → outside host: the guest sends a numbered line
/// every 100 ms and waits for its echo. Records the longest time between
/// two answered lines and any error (a reset, a timeout).
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Result<(usize, Duration)>>,
    server: SocketAddr,
}

impl Ticker {
    fn start(topo: &NatTopology) -> Result<Self> {
        let listener = topo
            .wan
            .enter(|| TcpListener::bind(format!("{OUTSIDE_HOST}:0")))??;
        let server = listener.local_addr()?;
        std::thread::spawn(move || -> Result<()> {
            let (s, _) = listener.accept()?;
            let mut w = s.try_clone()?;
            for line in BufReader::new(s).lines() {
                w.write_all(format!("{}\n", line?).as_bytes())?;
            }
            Ok(())
        });
        let mut stream = topo.guests[0]
            .ns
            .enter(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)))??;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || -> Result<(usize, Duration)> {
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            let mut n = 0usize;
            // Bounded: at most 10 minutes of ticks even if never stopped.
            while !stop2.load(Ordering::SeqCst) && n < 6000 {
                stream
                    .write_all(format!("tick {n}\n").as_bytes())
                    .with_context(|| format!("sending tick {n}"))?;
                let mut line = String::new();
                reader
                    .read_line(&mut line)
                    .with_context(|| format!("no echo of tick {n}"))?;
                ensure!(
                    line == format!("tick {n}\n"),
                    "echo of tick {n} was {line:?} (connection reset?)"
                );
                let now = Instant::now();
                max_gap = max_gap.max(now - last);
                last = now;
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((n, max_gap))
        });
        Ok(Self {
            stop,
            handle,
            server,
        })
    }

    fn finish(self) -> Result<(usize, Duration)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("ticker thread panicked"))?
    }
}

fn started_topology(tag: &str) -> Result<NatTopology> {
    let mut topo = NatTopology::new(tag, 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    Ok(topo)
}

fn same_objects(a: &PinnedIds, b: &PinnedIds) -> bool {
    a.progs == b.progs
        && a.maps == b.maps
        && a.links
            .iter()
            .map(|(p, l)| (p, l.id))
            .eq(b.links.iter().map(|(p, l)| (p, l.id)))
}

#[test]
fn flows_survive_daemon_kill_restart_and_upgrade() -> Result<()> {
    let topo = started_topology("dkill")?;
    let mut daemon = Daemon::start(&topo, &vxdp_bin()?, "first")?;
    let before = pinned::pinned_ids(&pins(&topo))?;
    ensure!(
        before.progs.len() == PINNED_PROGS && !before.links.is_empty(),
        "unexpected pins: {before:?}"
    );

    let ticker = Ticker::start(&topo)?;
    std::thread::sleep(Duration::from_millis(1500));
    let flow_before = tcp_flow_entries(&topo, ticker.server)?;
    ensure!(
        flow_before.len() == 2,
        "expected the flow's two conntrack entries, found {flow_before:?}"
    );

    // SIGKILL: no chance to clean up; a new daemon adopts the pins.
    daemon.signal(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_millis(500));
    let mut daemon = Daemon::start(&topo, &vxdp_bin()?, "restarted")?;
    ensure!(
        daemon.log().contains("adopted the pinned dataplane"),
        "restarted daemon did not adopt:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(1500));

    // Upgrade: SIGTERM, then a different binary (a copy at another path).
    let status = daemon.signal(libc::SIGTERM)?;
    ensure!(
        status.success(),
        "vxdp serve exited with {status} on SIGTERM:\n{}",
        daemon.log()
    );
    let new_bin = topo.state_dir.join("vxdp-upgraded");
    std::fs::copy(vxdp_bin()?, &new_bin)?;
    let daemon = Daemon::start(&topo, &new_bin, "upgraded")?;
    ensure!(
        daemon.log().contains("adopted the pinned dataplane"),
        "upgraded daemon did not adopt:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(1500));

    let flow_after = tcp_flow_entries(&topo, ticker.server)?;
    let (ticks, max_gap) = ticker.finish()?;
    let after = pinned::pinned_ids(&pins(&topo))?;
    ensure!(
        same_objects(&before, &after),
        "programs, maps or links were replaced:\nbefore {before:?}\nafter  {after:?}"
    );
    ensure!(ticks >= 30, "only {ticks} ticks went through");
    ensure!(
        max_gap < Duration::from_secs(1),
        "the connection stalled for {max_gap:?} (limit 1 s)"
    );
    ensure!(
        flow_before == flow_after,
        "the flow's conntrack entries changed:\nbefore {flow_before:?}\nafter  {flow_after:?}"
    );
    Ok(())
}

#[test]
fn metrics_pass_promtool_and_count_pings_exactly() -> Result<()> {
    let topo = started_topology("dmet")?;
    let _daemon = Daemon::start(&topo, &vxdp_bin()?, "metrics")?;

    let text0 = scrape(&topo.hyp)?;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian package prometheus; cargo xtask setup installs it)")?;
    promtool
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text0.as_bytes())?;
    let out = promtool.wait_with_output()?;
    ensure!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\non:\n{text0}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for family in [
        "vxdp_packets_total",
        "vxdp_bytes_total",
        "vxdp_drops_total",
        "vxdp_conntrack_entries",
        "vxdp_nat_port_exhausted_total",
        "vxdp_network_up",
    ] {
        ensure!(
            text0.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text0}"
        );
    }
    for typed in text0.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let family = typed.split(' ').next().unwrap_or_default();
        ensure!(
            text0.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }

    const N: u32 = 5;
    let guest = &topo.guests[0];
    let s0 = samples(&text0)?;
    let ping = guest.ns.exec(
        "ping",
        &["-c", &N.to_string(), "-i", "0.2", "-W", "1", OUTSIDE_HOST],
    )?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains(&format!("{N} received")),
        "pings were lost"
    );
    let s1 = samples(&scrape(&topo.hyp)?)?;
    // An echo request or reply of `ping` (56 data bytes) in an Ethernet
    // frame: 14 + 20 + 8 + 56 bytes.
    let frame = 98.0;
    for (interface, direction, action) in [
        (guest.port.as_str(), "from_guest", "snat_forwarded"),
        ("up0", "from_uplink", "dnat_forwarded"),
    ] {
        let labels = [
            ("network", "default"),
            ("interface", interface),
            ("direction", direction),
            ("action", action),
        ];
        let dp =
            value(&s1, "vxdp_packets_total", &labels) - value(&s0, "vxdp_packets_total", &labels);
        let db = value(&s1, "vxdp_bytes_total", &labels) - value(&s0, "vxdp_bytes_total", &labels);
        ensure!(
            dp == N as f64,
            "{interface} {action}: packets moved by {dp}, expected {N}"
        );
        ensure!(
            db == N as f64 * frame,
            "{interface} {action}: bytes moved by {db}, expected {}",
            N as f64 * frame
        );
    }
    ensure!(
        value(
            &s1,
            "vxdp_network_up",
            &[("network", "default"), ("mode", "nat")]
        ) == 1.0,
        "network not reported up"
    );
    ensure!(
        value(&s1, "vxdp_conntrack_entries", &[("network", "default")]) >= 2.0,
        "the ping flow's entries are not counted"
    );
    ensure!(
        s1.keys().any(|(n, l)| n == "vxdp_nat_port_exhausted_total"
            && l.get("network").is_some_and(|v| v == "default")),
        "vxdp_nat_port_exhausted_total missing for default"
    );

    // The table of `vxdp stats` agrees with the metrics.
    let (snat, _) = topo.counter("default", "snat_forwarded")?;
    let metric = value(
        &s1,
        "vxdp_packets_total",
        &[
            ("network", "default"),
            ("interface", &guest.port),
            ("direction", "from_guest"),
            ("action", "snat_forwarded"),
        ],
    );
    ensure!(
        snat as f64 == metric,
        "vxdp stats says {snat} SNATed packets, the metrics {metric}"
    );
    let table = String::from_utf8(topo.vxdp(&["stats", "--by-interface", "default"])?.stdout)?;
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.len() == 7 && f[0] == "default" && f[1] == guest.port && f[3] == "snat_forwarded"
        })
        .with_context(|| {
            format!(
                "no {} snat_forwarded row in `vxdp stats --by-interface`:\n{table}",
                guest.port
            )
        })?;
    ensure!(
        row[5].parse::<f64>()? == metric,
        "vxdp stats --by-interface says {}, the metrics {metric}",
        row[5]
    );
    Ok(())
}

/// `bpftool <kind> show id <id>` succeeds (the object exists).
fn bpf_object_exists(kind: &str, id: u32) -> Result<bool> {
    let out = Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .context("running bpftool")?;
    Ok(out.status.success())
}

#[test]
fn xtask_unload_removes_everything_and_the_kernel_path_works() -> Result<()> {
    let topo = started_topology("dunl")?;
    let daemon = Daemon::start(&topo, &vxdp_bin()?, "unload")?;
    let ids = pinned::pinned_ids(&pins(&topo))?;
    // One guest port (TC), the uplink (XDP and TC), the bridge (TC egress),
    // the two tracepoints, the cgroup socket programs.
    ensure!(
        ids.progs.len() == PINNED_PROGS
            && ids.links.len() == 6 + vxdp_control::dataplane::host_sockets::PROGRAMS.len()
            && !ids.maps.is_empty(),
        "unexpected pins: {ids:?}"
    );
    // Every map the programs use, pinned or not (e.g. .rodata), by id.
    let mut map_ids: Vec<u32> = ids.maps.iter().map(|(_, id)| *id).collect();
    for (_, id) in &ids.progs {
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .output()?;
        ensure!(out.status.success(), "bpftool does not see prog {id}");
        let json = String::from_utf8(out.stdout)?;
        let list = json
            .split("\"map_ids\":[")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or("");
        map_ids.extend(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    map_ids.sort();
    map_ids.dedup();

    // `cargo xtask unload`: the xtask binary `cargo xtask` runs, built next
    // to vxdp.
    let xtask = vxdp_bin()?.with_file_name("xtask");
    ensure!(
        xtask.exists(),
        "{} not found: build the workspace (cargo xtask build) first",
        xtask.display()
    );
    let out = Command::new(&xtask)
        .env("VXDP_BIN", vxdp_bin()?)
        .args(["unload", "--netns", &topo.hyp.name, "--", "--state-dir"])
        .arg(&topo.state_dir)
        .arg("--bpffs")
        .arg(&topo.bpffs)
        .output()?;
    ensure!(
        out.status.success(),
        "cargo xtask unload failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Wait two reconcile periods: the running daemon must not load it again.
    std::thread::sleep(Duration::from_millis(2500));
    for (path, id) in &ids.progs {
        ensure!(
            !bpf_object_exists("prog", *id)?,
            "prog {id} ({}) still loaded",
            path.display()
        );
    }
    for id in &map_ids {
        ensure!(!bpf_object_exists("map", *id)?, "map {id} still exists");
    }
    for (path, l) in &ids.links {
        ensure!(
            !bpf_object_exists("link", l.id)?,
            "link {} ({}) still exists",
            l.id,
            path.display()
        );
    }
    ensure!(
        !topo.bpffs.exists() || std::fs::read_dir(&topo.bpffs)?.next().is_none(),
        "pins left under {}",
        topo.bpffs.display()
    );
    let net = String::from_utf8(topo.hyp.exec("bpftool", &["net", "show"])?.stdout)?;
    ensure!(
        !net.contains("vxdp"),
        "vxdp programs still attached in the namespace:\n{net}"
    );
    drop(daemon);

    // The kernel path: the test's own masquerade rule, in the hypervisor
    // namespace only; the bridge and the port are still in place.
    topo.hyp.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    topo.hyp.exec("nft", &["add", "table", "ip", "vxdptest"])?;
    topo.hyp.exec(
        "nft",
        &["add chain ip vxdptest post { type nat hook postrouting priority 100 ; }"],
    )?;
    topo.hyp.exec(
        "nft",
        &["add rule ip vxdptest post ip saddr 192.168.122.0/24 oifname up0 masquerade"],
    )?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(10))?;
    let payload = pattern(256 * 1024, 3);
    let (addr, server) = serve_payload(&topo.wan, &format!("{OUTSIDE_HOST}:0"), payload.clone())?;
    let got = fetch(&topo.guests[0].ns, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(
        got == payload,
        "the transfer through the kernel path arrived corrupted ({} bytes)",
        got.len()
    );
    ensure!(
        peer.ip().to_string() == UPLINK_ADDR,
        "outside host saw {peer}, expected the masqueraded {UPLINK_ADDR}"
    );

    // `vxdp load` brings the fast path back for the started network.
    topo.hyp
        .exec("nft", &["delete", "table", "ip", "vxdptest"])?;
    topo.vxdp(&["load"])?;
    let ifindex = port_ifindex(&topo, &topo.guests[0].port)?;
    ensure!(
        pinned::link_attached(&pins(&topo).tc_link(ifindex), ifindex),
        "vxdp load did not attach the guest port"
    );
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let ping = topo.guests[0]
        .ns
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", OUTSIDE_HOST])?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains("3 received"),
        "pings lost after vxdp load"
    );
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3,
        "after vxdp load pings did not take the eBPF path: snat +{}",
        snat1 - snat0
    );
    Ok(())
}

/// Waits until the link pinned at `path` is attached to `ifindex` again
/// and returns its new state.
fn wait_reattached(
    path: &Path,
    ifindex: u32,
    old_id: u32,
    within: Duration,
) -> Result<pinned::LinkState> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(state) = pinned::link_state(path)
            && state.ifindex == ifindex
            && state.id != old_id
        {
            return Ok(state);
        }
        if Instant::now() > deadline {
            bail!(
                "{} not re-attached to ifindex {ifindex} within {within:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reconcile_reattaches_programs_removed_by_hand() -> Result<()> {
    let topo = started_topology("drec")?;
    let daemon = Daemon::start(&topo, &vxdp_bin()?, "reconcile")?;
    let p = pins(&topo);
    let port = topo.guests[0].port.clone();
    let ifindex = port_ifindex(&topo, &port)?;
    let link_path = p.tc_link(ifindex);
    // One reconcile period is 1 s; allow scheduling slack on a busy machine.
    let bound = Duration::from_secs(5);

    // 1. `bpftool link detach`: the pin stays, the link is defunct.
    let old = pinned::link_state(&link_path)?;
    ensure!(
        old.ifindex == ifindex,
        "guest port link not attached at start: {old:?}"
    );
    run_ok("bpftool", &["link", "detach", "id", &old.id.to_string()])?;
    ensure!(
        pinned::link_state(&link_path)?.ifindex == 0,
        "bpftool link detach left the link attached"
    );
    let new = wait_reattached(&link_path, ifindex, old.id, bound)
        .with_context(|| format!("after bpftool link detach; daemon log:\n{}", daemon.log()))?;

    // 2. The pin removed: the link (no other holder) goes with it.
    std::fs::remove_file(&link_path)?;
    let newer = wait_reattached(&link_path, ifindex, new.id, bound)
        .with_context(|| format!("after removing the pin; daemon log:\n{}", daemon.log()))?;
    ensure!(
        !bpf_object_exists("link", new.id)?,
        "the unpinned link {} still exists",
        new.id
    );

    // 3. The uplink's XDP link detached.
    let up = p.xdp_link(
        StateDir::open(&topo.state_dir)?
            .network("default")?
            .context("record")?
            .uplink_ifindex,
    );
    let up_old = pinned::link_state(&up)?;
    run_ok("bpftool", &["link", "detach", "id", &up_old.id.to_string()])?;
    wait_reattached(&up, up_old.ifindex, up_old.id, bound).with_context(|| {
        format!(
            "after detaching the uplink's XDP link; daemon log:\n{}",
            daemon.log()
        )
    })?;

    // 4. Map entries removed by hand: the port's endpoint and the network's
    // configuration are written again.
    let maps = Maps::open(&p)?;
    let rec = StateDir::open(&topo.state_dir)?
        .network("default")?
        .context("record")?;
    let endpoint = maps.endpoints()?.get(&ifindex, 0)?;
    let config = maps.networks()?.get(&rec.id, 0)?;
    maps.remove_endpoint(ifindex)?;
    maps.set_network(rec.id, &vxdp_common::NetworkConfig::default())?;
    let deadline = Instant::now() + bound;
    while maps.endpoints()?.get(&ifindex, 0).ok() != Some(endpoint)
        || maps.networks()?.get(&rec.id, 0)? != config
    {
        ensure!(
            Instant::now() < deadline,
            "map entries not refilled within {bound:?}; daemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Traffic takes the eBPF path again, both ways.
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let (dnat0, _) = topo.counter("default", "dnat_forwarded")?;
    let ping = topo.guests[0]
        .ns
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", OUTSIDE_HOST])?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains("3 received"),
        "pings lost after the repair"
    );
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    let (dnat1, _) = topo.counter("default", "dnat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3 && dnat1 - dnat0 == 3,
        "pings did not take the repaired programs: snat +{}, dnat +{}",
        snat1 - snat0,
        dnat1 - dnat0
    );
    ensure!(
        newer.prog_id == old.prog_id,
        "reconcile attached another program ({} instead of {})",
        newer.prog_id,
        old.prog_id
    );
    let repairs = value(
        &samples(&scrape(&topo.hyp)?)?,
        "vxdp_reconcile_repairs_total",
        &[],
    );
    ensure!(
        repairs >= 5.0,
        "vxdp_reconcile_repairs_total is {repairs} after five repairs"
    );
    Ok(())
}

fn run_ok(cmd: &str, args: &[&str]) -> Result<()> {
    vxdp_testkit::run(cmd, args).map(|_| ())
}

#[test]
fn daemon_expires_idle_flows_by_timeout_class() -> Result<()> {
    let topo = started_topology("dgc")?;
    let daemon = Daemon::start(&topo, &vxdp_bin()?, "gc")?;
    let maps = Maps::open(&pins(&topo))?;
    // The timeouts are runtime configuration in VXDP_TIMEOUTS: make ICMP
    // flows expire after 2 s; TCP keeps its 5 days.
    maps.timeouts()?
        .set(vxdp_common::timeout_class::ICMP, &2_000_000_000u64, 0)?;

    // An idle TCP connection and one ping, then no traffic at all: only the
    // programs' lookups could expire entries, and there are none.
    let listener = topo
        .wan
        .enter(|| TcpListener::bind(format!("{OUTSIDE_HOST}:0")))??;
    let server = listener.local_addr()?;
    let tcp = topo.guests[0]
        .ns
        .enter(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)))??;
    let (_accepted, _) = listener.accept()?;
    let icmp = |maps: &Maps| -> Result<usize> {
        Ok(maps
            .conntrack_entries(None)?
            .iter()
            .filter(|(k, _)| k.proto == vxdp_common::PROTO_ICMP)
            .count())
    };
    // Let the set-up pings' flows go first (they age under the new timeout too).
    let deadline = Instant::now() + Duration::from_secs(10);
    while icmp(&maps)? != 0 {
        ensure!(
            Instant::now() < deadline,
            "the set-up pings' flows were not expired within 10 s; daemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ping = topo.guests[0]
        .ns
        .exec("ping", &["-c", "1", "-W", "1", OUTSIDE_HOST])?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains("1 received"),
        "ping lost"
    );
    ensure!(
        icmp(&maps)? == 2,
        "the ping's two conntrack entries are missing"
    );
    let tcp_entries = tcp_flow_entries(&topo, server)?;
    ensure!(
        tcp_entries.len() == 2,
        "the TCP flow's two entries are missing: {tcp_entries:?}"
    );

    // 2 s of timeout + 1 s reconcile period, with slack for a busy machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while icmp(&maps)? != 0 {
        ensure!(
            Instant::now() < deadline,
            "the idle ICMP flow was not expired within 10 s; daemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        daemon.log().contains("idle conntrack flows"),
        "daemon did not report the expiry:\n{}",
        daemon.log()
    );
    let expired = value(
        &samples(&scrape(&topo.hyp)?)?,
        "vxdp_conntrack_expired_total",
        &[("network", "default")],
    );
    ensure!(
        expired >= 2.0,
        "vxdp_conntrack_expired_total{{network=\"default\"}} is {expired}, expected the set-up flow(s) and the ping's"
    );
    ensure!(
        tcp_flow_entries(&topo, server)? == tcp_entries,
        "the idle but unexpired TCP flow was touched"
    );
    drop(tcp);
    Ok(())
}

#[test]
fn reconcile_recreates_a_deleted_bridge() -> Result<()> {
    let topo = started_topology("dbr")?;
    let daemon = Daemon::start(&topo, &vxdp_bin()?, "bridge")?;
    let port = topo.guests[0].port.clone();
    topo.hyp.ip(&["link", "del", "virbr0"])?;

    // Recreated with its address, and the guest port plugged in again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let br = topo
            .hyp
            .exec_status("ip", &["-o", "addr", "show", "dev", "virbr0"])?;
        let link = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", &port])?.stdout)?;
        if br.status.success()
            && String::from_utf8_lossy(&br.stdout).contains("192.168.122.1/24")
            && link.contains("master virbr0")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "virbr0 not recreated with {port} plugged in within 5 s; daemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Through the eBPF path again (its map entry names the new bridge).
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    let ping = topo.guests[0]
        .ns
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", OUTSIDE_HOST])?;
    ensure!(
        String::from_utf8_lossy(&ping.stdout).contains("3 received"),
        "pings lost after the bridge came back"
    );
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3,
        "pings did not take the eBPF path after the repair: snat +{}",
        snat1 - snat0
    );
    let rec = StateDir::open(&topo.state_dir)?
        .network("default")?
        .context("record")?;
    let ifindex: u32 = String::from_utf8(
        topo.hyp
            .exec("cat", &["/sys/class/net/virbr0/ifindex"])?
            .stdout,
    )?
    .trim()
    .parse()?;
    ensure!(
        rec.bridge_ifindex == ifindex,
        "the record kept the old bridge ifindex {} (now {ifindex})",
        rec.bridge_ifindex
    );
    Ok(())
}

/// Pings `dst` `n` times from `ns`; whether all came back.
fn pings(ns: &Netns, dst: &str, n: u32) -> Result<bool> {
    let out = ns.exec_status("ping", &["-c", &n.to_string(), "-i", "0.2", "-W", "1", dst])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("{n} received")))
}

/// Route and isolated networks are repaired like NAT ones: a guest port's
/// TC link and the uplink's XDP link detached by hand, the port's endpoint,
/// the network's entry and its subnet entry removed, then the bridge
/// deleted — everything comes back (the bridge with the same host side as
/// `net-start` gives it) and traffic takes the eBPF path again.
fn reconcile_repairs_mode(tag: &str, mode_name: &str) -> Result<()> {
    let mut topo = NatTopology::new(tag, 2)?;
    topo.start_with(&routed_xml(mode_name), true)?;
    topo.wan
        .ip(&["route", "add", "192.168.122.0/24", "via", UPLINK_ADDR])?;
    topo.wait_ping(0, &topo.guests[1].addr.clone(), Duration::from_secs(20))?;
    let daemon = Daemon::start(&topo, &vxdp_bin()?, mode_name)?;
    let p = pins(&topo);
    let maps = Maps::open(&p)?;
    let rec = StateDir::open(&topo.state_dir)?
        .network("default")?
        .context("record")?;
    let want_mode = if mode_name == "route" {
        vxdp_common::mode::ROUTE
    } else {
        vxdp_common::mode::ISOLATED
    };
    ensure!(
        rec.mode
            == if mode_name.is_empty() {
                "isolated"
            } else {
                mode_name
            },
        "recorded mode {}",
        rec.mode
    );
    ensure!(
        !rec.uplink.is_empty(),
        "{} network has no uplink (the default route's interface)",
        rec.mode
    );
    let bound = Duration::from_secs(5);
    let port = topo.guests[0].port.clone();
    let ifindex = port_ifindex(&topo, &port)?;

    // The guest port's and the uplink's links detached by hand.
    let link_path = p.tc_link(ifindex);
    let old = pinned::link_state(&link_path)?;
    ensure!(
        old.ifindex == ifindex,
        "guest port link not attached at start: {old:?}"
    );
    let up = p.xdp_link(rec.uplink_ifindex);
    let up_old = pinned::link_state(&up)?;
    run_ok("bpftool", &["link", "detach", "id", &old.id.to_string()])?;
    run_ok("bpftool", &["link", "detach", "id", &up_old.id.to_string()])?;
    wait_reattached(&link_path, ifindex, old.id, bound).with_context(|| {
        format!(
            "{}: guest port after bpftool link detach; daemon log:\n{}",
            rec.mode,
            daemon.log()
        )
    })?;
    wait_reattached(&up, up_old.ifindex, up_old.id, bound).with_context(|| {
        format!(
            "{}: uplink after bpftool link detach; daemon log:\n{}",
            rec.mode,
            daemon.log()
        )
    })?;

    // Map entries removed by hand: endpoint (with its static IPv4), the
    // network's entry and its subnet's owner come back as they were.
    let endpoint = maps.endpoints()?.get(&ifindex, 0)?;
    ensure!(
        endpoint.flags & vxdp_common::endpoint_flags::IPV4_KNOWN != 0,
        "the endpoint lacks the --ip address: {endpoint:?}"
    );
    let config = maps.networks()?.get(&rec.id, 0)?;
    let subnet = u32::from_ne_bytes(rec.subnet.octets());
    let owner = maps
        .subnet_owner(subnet, rec.prefix as u32)?
        .context("no subnet entry at start")?;
    ensure!(
        owner.network_id == rec.id && owner.mode == want_mode,
        "subnet owner at start: {owner:?}"
    );
    maps.remove_endpoint(ifindex)?;
    maps.set_network(rec.id, &vxdp_common::NetworkConfig::default())?;
    maps.remove_subnet(subnet, rec.prefix as u32)?;
    let deadline = Instant::now() + bound;
    while maps.endpoints()?.get(&ifindex, 0).ok() != Some(endpoint)
        || maps.networks()?.get(&rec.id, 0)? != config
        || maps.subnet_owner(subnet, rec.prefix as u32)? != Some(owner)
        || maps.mac_port(rec.id, endpoint.mac)? != Some(ifindex)
    {
        ensure!(
            Instant::now() < deadline,
            "{}: map entries not refilled within {bound:?}; daemon log:\n{}",
            rec.mode,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The port's MAC table entry alone removed: written again.
    let mac_key = vxdp_common::MacKey {
        network_id: rec.id,
        mac: endpoint.mac,
        _pad0: [0; 2],
    };
    maps.macs()?.remove(&mac_key)?;
    let deadline = Instant::now() + bound;
    while maps.mac_port(rec.id, endpoint.mac)? != Some(ifindex) {
        ensure!(
            Instant::now() < deadline,
            "{}: VXDP_MACS entry not refilled within {bound:?}; daemon log:\n{}",
            rec.mode,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The bridge deleted: recreated with its address and IPv6 disabled (no
    // IPv6 <ip>), both ports plugged in again.
    topo.hyp.ip(&["link", "del", "virbr0"])?;
    let deadline = Instant::now() + bound;
    loop {
        let br = topo
            .hyp
            .exec_status("ip", &["-o", "addr", "show", "dev", "virbr0"])?;
        let plugged = topo.guests.iter().all(|g| {
            topo.hyp
                .ip(&["-o", "link", "show", &g.port])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("master virbr0"))
        });
        if br.status.success()
            && String::from_utf8_lossy(&br.stdout).contains("192.168.122.1/24")
            && plugged
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{}: virbr0 not recreated with the ports plugged in within {bound:?}; daemon log:\n{}",
            rec.mode,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v6 = String::from_utf8(
        topo.hyp
            .exec("cat", &["/proc/sys/net/ipv6/conf/virbr0/disable_ipv6"])?
            .stdout,
    )?;
    ensure!(
        v6.trim() == "1",
        "{}: the recreated bridge has IPv6 enabled ({v6:?}); net-start disables it",
        rec.mode
    );
    let br_ifindex: u32 = String::from_utf8(
        topo.hyp
            .exec("cat", &["/sys/class/net/virbr0/ifindex"])?
            .stdout,
    )?
    .trim()
    .parse()?;
    let deadline = Instant::now() + bound;
    while maps.networks()?.get(&rec.id, 0)?.bridge_ifindex != br_ifindex {
        ensure!(
            Instant::now() < deadline,
            "{}: the network entry does not name the new bridge; daemon log:\n{}",
            rec.mode,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Traffic again, through the repaired programs and entries.
    let g1 = topo.guests[1].addr.clone();
    topo.wait_ping(0, &g1, Duration::from_secs(20))?;
    // Guest to guest goes port to port (VXDP_MACS), past the bridge, so it
    // answers before the recreated bridge's ports leave STP's listening and
    // learning states; the host is behind the bridge.
    topo.wait_ping(0, matrix::GATEWAY, Duration::from_secs(20))?;
    ensure!(
        pings(&topo.guests[0].ns, matrix::GATEWAY, 3)?,
        "{}: guest → host lost pings after the repair",
        rec.mode
    );
    if mode_name == "route" {
        // Replies reach the guest through the XDP fast path, or through the
        // kernel while the recreated bridge has not resolved the guest yet.
        let inbound = || -> Result<u64> {
            Ok(topo.counter("default", "route_inbound")?.0
                + topo.counter("default", "route_inbound_forwarded")?.0)
        };
        let (fwd0, _) = topo.counter("default", "route_forwarded")?;
        let in0 = inbound()?;
        ensure!(
            pings(&topo.guests[0].ns, OUTSIDE_HOST, 3)?,
            "route: guest → outside lost pings after the repair"
        );
        let (fwd1, _) = topo.counter("default", "route_forwarded")?;
        let in1 = inbound()?;
        ensure!(
            fwd1 - fwd0 >= 3,
            "route: requests not forwarded by the repaired TC program (route_forwarded +{})",
            fwd1 - fwd0
        );
        ensure!(
            in1 - in0 >= 3,
            "route: replies not seen by the repaired XDP program (route_inbound + route_inbound_forwarded +{})",
            in1 - in0
        );
        ensure!(
            pings(&topo.wan, &g1, 3)?,
            "route: outside → guest lost pings after the repair"
        );
    } else {
        // Isolated: still refused both ways, by the repaired programs.
        let (d0, _) = topo.counter("default", "isolated_network")?;
        ensure!(
            !pings(&topo.guests[0].ns, OUTSIDE_HOST, 1)?,
            "isolated: a guest reached the outside after the repair"
        );
        let (d1, _) = topo.counter("default", "isolated_network")?;
        ensure!(
            !pings(&topo.wan, &g1, 1)?,
            "isolated: the outside reached a guest after the repair"
        );
        let (d2, _) = topo.counter("default", "isolated_network")?;
        ensure!(
            d1 > d0 && d2 > d1,
            "isolated: refusals not counted by the programs (isolated_network {d0} -> {d1} -> {d2})"
        );
    }
    let repairs = value(
        &samples(&scrape(&topo.hyp)?)?,
        "vxdp_reconcile_repairs_total",
        &[],
    );
    ensure!(
        repairs >= 6.0,
        "{}: vxdp_reconcile_repairs_total is {repairs} after six repairs",
        rec.mode
    );
    drop(daemon);
    topo.stop()?;
    Ok(())
}

#[test]
fn reconcile_repairs_a_route_network() -> Result<()> {
    reconcile_repairs_mode("drr", "route")
}

#[test]
fn reconcile_repairs_an_isolated_network() -> Result<()> {
    reconcile_repairs_mode("dri", "")
}

/// Another vxdp command holding the state directory's lock (here: this
/// test, with flock on `<state-dir>/lock`) stalls the daemon's reconcile
/// passes, which wait for it, but not its metrics or its signals: /metrics
/// answers and SIGTERM ends it while the lock is held.
#[test]
fn metrics_and_sigterm_do_not_wait_for_the_state_lock() -> Result<()> {
    let topo = started_topology("dlock")?;
    let mut daemon = Daemon::start(&topo, &vxdp_bin()?, "locked")?;
    let lock_path = topo.state_dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{}", lock_path.display()))?;
    // Released when `lock` is closed, also when the test fails.
    ensure!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } == 0,
        "flock: {}",
        std::io::Error::last_os_error()
    );
    // Two reconcile periods (1 s): a pass is now waiting for the lock.
    std::thread::sleep(Duration::from_secs(3));
    // Liveness, not speed: 5 s is far above a scrape's cost and far below
    // the 120 s a lock waiter may wait.
    let text = scrape_within(&topo.hyp, Duration::from_secs(5)).with_context(|| {
        format!(
            "/metrics did not answer while the state lock was held; the daemon's log:\n{}",
            daemon.log()
        )
    })?;
    let s = samples(&text)?;
    ensure!(
        value(
            &s,
            "vxdp_network_up",
            &[("network", "default"), ("mode", "nat")]
        ) == 1.0,
        "network not reported up:\n{text}"
    );
    let status = daemon.signal(libc::SIGTERM)?;
    ensure!(
        status.success(),
        "vxdp serve exited with {status} on SIGTERM:\n{}",
        daemon.log()
    );
    drop(lock);
    Ok(())
}

/// `ip netns exec NS vxdp serve` works like `vxdp --netns NS serve`: it
/// adopts the pinned dataplane (pinned from outside that mount namespace)
/// instead of loading a second one, re-attaches nothing that is attached,
/// and reports the forwarding network up.
#[test]
fn serve_under_ip_netns_exec_adopts_the_pinned_dataplane() -> Result<()> {
    let topo = started_topology("dipns")?;
    let before = pinned::pinned_ids(&pins(&topo))?;
    let daemon = Daemon::start_in_ip_netns_exec(&topo, &vxdp_bin()?, "ipnetns")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !daemon.log().contains("first reconcile") {
        ensure!(
            Instant::now() < deadline,
            "no first reconcile within 15 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.log();
    ensure!(
        log.contains("adopted the pinned dataplane"),
        "did not adopt the pins:\n{log}"
    );
    ensure!(
        log.contains("first reconcile done (0 repairs)"),
        "the first reconcile was not a no-op:\n{log}"
    );
    let s = samples(&scrape(&topo.hyp)?)?;
    ensure!(
        value(
            &s,
            "vxdp_network_up",
            &[("network", "default"), ("mode", "nat")]
        ) == 1.0,
        "network not reported up:\n{log}"
    );
    let after = pinned::pinned_ids(&pins(&topo))?;
    ensure!(
        same_objects(&before, &after),
        "programs, maps or links were replaced:\nbefore {before:?}\nafter  {after:?}"
    );
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(10))?;
    Ok(())
}

/// Admission control's counts follow the tables: what the programs could
/// not uncount (an LRU eviction, a flush) is corrected by the daemon's
/// sweep, so a guest is never refused for flows it no longer holds.
#[test]
fn daemon_recounts_flow_quotas() -> Result<()> {
    use vxdp_common::{FlowQuota, flow_quota};
    let topo = started_topology("dfq")?;
    let maps = Maps::open(&pins(&topo))?;
    // The set-up pings made the guest port's and the network's entries.
    let mut quotas = maps.flow_quotas()?;
    let keys: Vec<u32> = quotas
        .keys()
        .filter_map(Result::ok)
        .filter(|k| *k != flow_quota::GUEST_DEFAULT && *k != flow_quota::NETWORK_DEFAULT)
        .collect();
    ensure!(
        keys.iter().any(|k| flow_quota::is_port(*k))
            && keys.iter().any(|k| !flow_quota::is_port(*k)),
        "no quota entries for the guest port and the network after its pings: {keys:?}"
    );
    // Counts as if 1000 flows had been evicted without being uncounted.
    for key in &keys {
        let q = quotas.get(key, 0)?;
        quotas.insert(key, &FlowQuota { count: 1000, ..q }, 0)?;
    }
    let held = |maps: &Maps| -> Result<(u32, u32)> {
        let flows = maps
            .conntrack_entries(None)?
            .iter()
            .filter(|(_, e)| e.direction == vxdp_common::DIR_ORIGINAL)
            .count() as u32;
        let counts: u32 = keys
            .iter()
            .filter(|k| flow_quota::is_port(**k))
            .map(|k| maps.flow_quota(*k).ok().flatten().map_or(0, |q| q.count))
            .sum();
        Ok((flows, counts))
    };
    let daemon = Daemon::start(&topo, &vxdp_bin()?, "fq")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (flows, counted) = held(&maps)?;
        if flows == counted {
            println!("the sweep recounted the guest's quota: {counted} flows");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the guest port's quota still counts {counted} flows where the table holds {flows}; daemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

//! End to end: the parts of a libvirt network definition that libvirt
//! starts beyond one address per family — several IPv4 and IPv6 `<ip>`
//! blocks with a DHCP range each, static `<route>`s via a guest, `<mtu>`,
//! `<network ipv6='yes'>`, `<bridge zone>` and `<port isolated>` — realized by vxdp in
//! throwaway namespaces, with real clients (busybox udhcpc, ping, TCP) and
//! what a hostile guest could do with each new path.

use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{NatTopology, Netns, OUTSIDE_HOST, UPLINK_ADDR, fetch, pattern, serve_payload};

/// udhcpc's event script: records what the server sent and configures the
/// address and default route like a real client.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    env | sort > "$VXDP_TEST_OUT"
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    ;;
  deconfig)
    ip addr flush dev "$interface"
    ;;
esac
exit 0
"#;

/// A guest behind `vnet<n>` in the hypervisor namespace, no address yet.
struct LabGuest {
    ns: Netns,
    port: String,
    mac: String,
}

/// The NAT topology's wan and hypervisor namespaces, guests added one by
/// one, and the network `default` started from a test's XML; everything is
/// stopped and removed on drop (the topology destroys `default`).
struct Lab {
    topo: NatTopology,
    guests: Vec<LabGuest>,
    dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Result<Self> {
        let topo = NatTopology::new(tag, 0)?;
        let dir = std::env::temp_dir().join(format!("{}-files", topo.prefix));
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("udhcpc.sh"), UDHCPC_SCRIPT)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("udhcpc.sh"), fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            topo,
            guests: Vec::new(),
            dir,
        })
    }

    /// Adds a guest with `mac` behind a veth in the kernel's default
    /// settings; not plugged in yet.
    fn add_guest(&mut self, mac: &str) -> Result<usize> {
        let n = self.guests.len();
        let ns = Netns::new(format!("{}-g{n}", self.topo.prefix))?;
        let port = format!("vnet{n}");
        self.topo.hyp.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        ns.ip(&["link", "set", "eth0", "address", mac])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        self.guests.push(LabGuest {
            ns,
            port,
            mac: mac.into(),
        });
        Ok(n)
    }

    fn plug(&self, guest: usize) -> Result<()> {
        self.plug_with(guest, &[])
    }

    /// `attach-interface` of the guest's port with `extra` arguments (such
    /// as `--ip`).
    fn plug_with(&self, guest: usize, extra: &[&str]) -> Result<()> {
        let g = &self.guests[guest];
        let mut args = vec![
            "attach-interface",
            "--network",
            "default",
            "--dev",
            &g.port,
            "--mac",
            &g.mac,
        ];
        args.extend_from_slice(extra);
        self.topo.vxdp(&args)?;
        Ok(())
    }

    /// Runs udhcpc once in the guest (6 discovers, 2 s apart) and returns
    /// the environment the server's reply produced.
    fn dhcp(&self, guest: usize) -> Result<BTreeMap<String, String>> {
        let out_file = self.dir.join(format!("g{guest}.env"));
        let _ = fs::remove_file(&out_file);
        let script = self.dir.join("udhcpc.sh");
        let out_env = format!("VXDP_TEST_OUT={}", out_file.display());
        let script = script.display().to_string();
        let argv = [
            out_env.as_str(),
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            "6",
            "-T",
            "2",
            "-s",
            &script,
        ];
        let out = self.guests[guest].ns.exec_status("env", &argv)?;
        ensure!(
            out.status.success(),
            "udhcpc in guest {guest} got no lease: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = fs::read_to_string(&out_file)
            .with_context(|| format!("udhcpc ran no bound event ({})", out_file.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.topo.counter("default", name)?.0)
    }

    /// Pings `dst` from guest `guest` until one echo comes back (the
    /// bridge port may still be learning).
    fn wait_ping(&self, guest: usize, dst: &str, within: Duration) -> Result<()> {
        self.topo
            .wait_port_forwarding(&self.guests[guest].port, within)?;
        let start = Instant::now();
        loop {
            let out = self.guests[guest]
                .ns
                .exec_status("ping", &["-c", "1", "-W", "1", dst])?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "guest {guest} cannot ping {dst} within {within:?}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn env<'a>(e: &'a BTreeMap<String, String>, k: &str) -> Result<&'a str> {
    e.get(k)
        .map(String::as_str)
        .with_context(|| format!("the DHCP reply set no '{k}': {e:?}"))
}

fn in_range(ip: &str, first: Ipv4Addr, last: Ipv4Addr) -> Result<Ipv4Addr> {
    let a: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("'{ip}' is not an IPv4 address"))?;
    ensure!(
        a >= first && a <= last,
        "leased {a} is outside the range {first}-{last}"
    );
    Ok(a)
}

/// The addresses `dev` has in namespace `ns` (`ip -o addr show`).
fn addresses(ns: &Netns, dev: &str) -> Result<String> {
    Ok(String::from_utf8(
        ns.ip(&["-o", "addr", "show", "dev", dev])?.stdout,
    )?)
}

/// Fetches 1 MB from the outside host in guest `guest`'s namespace and
/// returns the source address the outside host saw.
fn fetch_from_outside(lab: &Lab, guest: usize) -> Result<SocketAddr> {
    let payload = pattern(1024 * 1024, 17);
    let (addr, server) =
        serve_payload(&lab.topo.wan, &format!("{OUTSIDE_HOST}:0"), payload.clone())?;
    let got = fetch(&lab.guests[guest].ns, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(
        got == payload,
        "the 1 MB transfer arrived short or corrupted"
    );
    Ok(peer)
}

/// Two IPv4 blocks (and two IPv6 ones) in a NAT network, as libvirt starts
/// them: the bridge holds every address, dnsmasq serves the block with
/// `<dhcp>` (libvirt allows DHCP on one IPv4 `<ip>`; here the second) with
/// that block's router, and the dataplane masquerades every block (its
/// subnet trie maps each prefix to the network).
#[test]
fn nat_network_with_two_ipv4_blocks_serves_and_masquerades_both() -> Result<()> {
    let mut lab = Lab::new("ips")?;
    lab.topo.create(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off'/>
  <ip address='192.168.122.1' prefix='24'/>
  <ip address='192.168.123.1' prefix='24'><dhcp><range start='192.168.123.100' end='192.168.123.150'/></dhcp></ip>
  <ip family='ipv6' address='2001:db8:5::1' prefix='64'/>
  <ip family='ipv6' address='2001:db8:6::1' prefix='64'/>
</network>",
    )?;
    let bridge = addresses(&lab.topo.hyp, "virbr0")?;
    for want in [
        "192.168.122.1/24",
        "192.168.123.1/24",
        "2001:db8:5::1/64",
        "2001:db8:6::1/64",
    ] {
        ensure!(bridge.contains(want), "the bridge lacks {want}:\n{bridge}");
    }

    // Guest a: a static address in the first block; guest b: DHCP.
    let a = lab.add_guest("52:54:00:00:7a:01")?;
    let b = lab.add_guest("52:54:00:00:7a:02")?;
    lab.plug(a)?;
    lab.plug(b)?;
    let ga = &lab.guests[a].ns;
    ga.ip(&["addr", "add", "192.168.122.10/24", "dev", "eth0"])?;
    ga.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    let eb = lab.dhcp(b)?;
    let ip_b = in_range(
        env(&eb, "ip")?,
        Ipv4Addr::new(192, 168, 123, 100),
        Ipv4Addr::new(192, 168, 123, 150),
    )?;
    ensure!(
        env(&eb, "router")? == "192.168.123.1" && env(&eb, "dns")? == "192.168.123.1",
        "the second block's guest must get its block's router and DNS server: {eb:?}"
    );
    let leases = String::from_utf8(lab.topo.vxdp(&["net-dhcp-leases", "default"])?.stdout)?;
    ensure!(
        leases.contains(&format!("{ip_b}/24")),
        "net-dhcp-leases lacks {ip_b}:\n{leases}"
    );

    // The second block's guest reaches the outside, masqueraded by eBPF.
    lab.wait_ping(b, OUTSIDE_HOST, Duration::from_secs(15))?;
    let snat0 = lab.counter("snat_forwarded")?;
    let peer = fetch_from_outside(&lab, b)?;
    ensure!(
        peer.ip().to_string() == UPLINK_ADDR,
        "the outside host saw {peer}, expected the uplink address {UPLINK_ADDR}"
    );
    ensure!(
        lab.counter("snat_forwarded")? > snat0,
        "the second block's TCP did not take the eBPF NAT path"
    );
    // So does the first block's, and the two blocks reach each other
    // through the host (it routes between its addresses on the bridge).
    let peer = fetch_from_outside(&lab, a)?;
    ensure!(peer.ip().to_string() == UPLINK_ADDR, "outside saw {peer}");
    lab.wait_ping(a, &ip_b.to_string(), Duration::from_secs(5))?;
    lab.wait_ping(b, "192.168.122.10", Duration::from_secs(5))?;

    // A hostile guest: the second guest, its lease known, sends from an
    // address of the other block and from one in neither: both spoofed.
    let g = &lab.guests[b].ns;
    for (src, counter) in [
        ("192.168.122.77", "spoofed_source"),
        ("10.99.0.5", "spoofed_source"),
    ] {
        let before = lab.counter(counter)?;
        g.ip(&["addr", "add", &format!("{src}/32"), "dev", "eth0"])?;
        let out = g.exec_status("ping", &["-c", "2", "-W", "1", "-I", src, OUTSIDE_HOST])?;
        g.ip(&["addr", "del", &format!("{src}/32"), "dev", "eth0"])?;
        ensure!(
            !out.status.success(),
            "a ping from {src} got through: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        ensure!(
            lab.counter(counter)? >= before + 2,
            "pings from {src} were not counted as {counter}"
        );
    }
    Ok(())
}

/// Without a known address (no lease, no `--ip`), a guest may use any
/// source inside the network; the second block counts as inside, an
/// address outside every block does not and is dropped as
/// `source_not_in_subnet`, and the host's address in the second block is
/// guarded like the first block's gateway (`spoofed_source`).
#[test]
fn sources_outside_every_block_are_refused() -> Result<()> {
    let mut lab = Lab::new("ipsrc")?;
    lab.topo.create(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off'/>
  <ip address='192.168.122.1' prefix='24'/>
  <ip address='192.168.123.1' prefix='24'/>
</network>",
    )?;
    let g = lab.add_guest("52:54:00:00:7b:01")?;
    lab.plug(g)?;
    let ns = &lab.guests[g].ns;
    ns.ip(&["addr", "add", "192.168.123.20/24", "dev", "eth0"])?;
    ns.ip(&["route", "add", "default", "via", "192.168.123.1"])?;
    lab.wait_ping(g, OUTSIDE_HOST, Duration::from_secs(15))?;

    ns.ip(&["addr", "add", "10.99.0.5/32", "dev", "eth0"])?;
    let before = lab.counter("source_not_in_subnet")?;
    let out = ns.exec_status(
        "ping",
        &["-c", "2", "-W", "1", "-I", "10.99.0.5", OUTSIDE_HOST],
    )?;
    ensure!(
        !out.status.success(),
        "a ping from outside every block got through: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        lab.counter("source_not_in_subnet")? >= before + 2,
        "pings from 10.99.0.5 were not counted as source_not_in_subnet"
    );

    // The host's address in the second block is the host's, as the first
    // block's gateway is: a guest may neither send from it nor announce it.
    ns.ip(&["addr", "add", "192.168.123.1/32", "dev", "eth0"])?;
    let before = lab.counter("spoofed_source")?;
    let out = ns.exec_status(
        "ping",
        &["-c", "2", "-W", "1", "-I", "192.168.123.1", OUTSIDE_HOST],
    )?;
    ensure!(
        !out.status.success(),
        "a ping from the host's second address got through: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ns.exec_status(
        "busybox",
        &[
            "arping",
            "-U",
            "-c",
            "2",
            "-I",
            "eth0",
            "-s",
            "192.168.123.1",
            "192.168.123.1",
        ],
    )?;
    ensure!(
        lab.counter("spoofed_source")? >= before + 4,
        "2 pings and 2 ARP announcements from 192.168.123.1 should be spoofed_source, counted {}",
        lab.counter("spoofed_source")? - before
    );
    let neigh = String::from_utf8(lab.topo.hyp.ip(&["neigh", "show", "192.168.123.1"])?.stdout)?;
    ensure!(
        neigh.trim().is_empty(),
        "the host learned a neighbour for its own address: {neigh:?}"
    );
    Ok(())
}

/// A network with `<route address='10.77.0.0' prefix='24'
/// gateway='192.168.122.10'/>`: guest 0 (192.168.122.10, its address
/// pinned with `--ip`) forwards for a host behind it (10.77.0.2, in its own
/// namespace); guest 1 is 192.168.122.11, pinned too. Returns the lab
/// and the hidden host's namespace.
fn routed_lab(tag: &str, mode: &str) -> Result<(Lab, Netns)> {
    let mut lab = Lab::new(tag)?;
    lab.topo.create(&format!(
        "<network><name>default</name><forward mode='{mode}'/><bridge name='virbr0' stp='off'/>
  <ip address='192.168.122.1' prefix='24'/>
  <ip family='ipv6' address='2001:db8:7::1' prefix='64'/>
  <route address='10.77.0.0' prefix='24' gateway='192.168.122.10'/>
  <route family='ipv6' address='2001:db8:77::' prefix='64' gateway='2001:db8:7::10' metric='7'/>
</network>"
    ))?;
    for (family, prefix, via) in [
        ("-4", "10.77.0.0/24", "via 192.168.122.10 dev virbr0"),
        ("-6", "2001:db8:77::/64", "via 2001:db8:7::10 dev virbr0"),
        ("-6", "2001:db8:77::/64", " metric 7 "),
    ] {
        let routes =
            String::from_utf8(lab.topo.hyp.ip(&[family, "route", "show", prefix])?.stdout)?;
        ensure!(
            routes.contains(via),
            "no kernel route to {prefix} {via}: {routes:?}"
        );
    }
    for (n, mac) in ["52:54:00:00:7c:0a", "52:54:00:00:7c:0b"]
        .into_iter()
        .enumerate()
    {
        let g = lab.add_guest(mac)?;
        let addr = format!("192.168.122.{}", 10 + n);
        lab.plug_with(g, &["--ip", &addr])?;
        let ns = &lab.guests[g].ns;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    }
    // The host behind guest 0: guest 0 routes (in its own namespace).
    let hidden = Netns::new(format!("{}-hidden", lab.topo.prefix))?;
    let g0 = &lab.guests[0].ns;
    g0.ip(&[
        "link",
        "add",
        "eth1",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &hidden.name,
    ])?;
    g0.ip(&["addr", "add", "10.77.0.1/24", "dev", "eth1"])?;
    g0.ip(&["link", "set", "eth1", "up"])?;
    g0.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    hidden.ip(&["addr", "add", "10.77.0.2/24", "dev", "eth0"])?;
    hidden.ip(&["link", "set", "eth0", "up"])?;
    hidden.ip(&["route", "add", "default", "via", "10.77.0.1"])?;
    Ok((lab, hidden))
}

/// Waits until `ns` can ping `dst`.
fn ns_wait_ping(ns: &Netns, dst: &str, within: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let out = ns.exec_status("ping", &["-c", "1", "-W", "1", dst])?;
        if out.status.success() {
            return Ok(());
        }
        if start.elapsed() > within {
            bail!(
                "{} cannot ping {dst} within {within:?}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// Route mode with a static route: the host reaches the host behind the
/// gateway guest, that host reaches the outside with its own address and
/// the outside reaches it (the routed prefix is the network's, as its
/// `<ip>` is); only the gateway guest may send from the prefix.
#[test]
fn route_network_reaches_a_host_behind_a_gateway_guest() -> Result<()> {
    let (lab, hidden) = routed_lab("rt", "route")?;
    lab.topo.wait_ports_forwarding(Duration::from_secs(15))?;
    // The hypervisor itself (libvirt's reason for <route>).
    ns_wait_ping(&lab.topo.hyp, "10.77.0.2", Duration::from_secs(10))?;
    // The outside routes the network's prefixes to the hypervisor (route
    // mode), and the hidden host reaches it, and back.
    for net in ["192.168.122.0/24", "10.77.0.0/24"] {
        lab.topo
            .wan
            .ip(&["route", "add", net, "via", UPLINK_ADDR])?;
    }
    ns_wait_ping(&hidden, OUTSIDE_HOST, Duration::from_secs(10))?;
    let payload = pattern(1024 * 1024, 23);
    let (addr, server) =
        serve_payload(&lab.topo.wan, &format!("{OUTSIDE_HOST}:0"), payload.clone())?;
    let got = fetch(&hidden, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(got == payload, "the transfer arrived short or corrupted");
    ensure!(
        peer.ip().to_string() == "10.77.0.2",
        "route mode forwards without NAT: the outside saw {peer}"
    );
    ns_wait_ping(&lab.topo.wan, "10.77.0.2", Duration::from_secs(5))?;

    // A hostile guest (guest 1, not the route's gateway) sending from the
    // routed prefix is dropped as spoofed.
    let g1 = &lab.guests[1].ns;
    g1.ip(&["addr", "add", "10.77.0.9/32", "dev", "eth0"])?;
    let before = lab.counter("spoofed_source")?;
    let out = g1.exec_status(
        "ping",
        &["-c", "2", "-W", "1", "-I", "10.77.0.9", OUTSIDE_HOST],
    )?;
    ensure!(
        !out.status.success(),
        "guest 1 sent from the routed prefix: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        lab.counter("spoofed_source")? >= before + 2,
        "guest 1's packets from 10.77.0.9 were not counted as spoofed_source"
    );

    // Another network routing an overlapping prefix would take its
    // addresses from this one: refused at start, naming the route.
    let file = lab.dir.join("other.xml");
    fs::write(
        &file,
        "<network><name>other</name><forward mode='route'/><bridge name='virbr9' stp='off'/>
  <ip address='192.168.130.1' prefix='24'/>
  <route address='10.77.0.0' prefix='16' gateway='192.168.130.10'/></network>",
    )?;
    let out = lab
        .topo
        .vxdp_status(&["net-create", file.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("/network/route[1]@address")
            && err.contains("overlaps network 'default'"),
        "an overlapping route of another network must be refused: {err}"
    );
    let links = String::from_utf8(lab.topo.hyp.ip(&["-o", "link", "show"])?.stdout)?;
    ensure!(
        !links.contains("virbr9"),
        "the refused start left its bridge"
    );
    ns_wait_ping(&hidden, OUTSIDE_HOST, Duration::from_secs(5))?;
    Ok(())
}

/// NAT mode with a static route: the host behind the gateway guest reaches
/// the outside masqueraded like the network's own guests, and the outside
/// cannot reach it even with a route to it (`unsolicited_inbound`).
#[test]
fn nat_network_masquerades_a_host_behind_a_gateway_guest() -> Result<()> {
    let (lab, hidden) = routed_lab("rtnat", "nat")?;
    lab.topo.wait_ports_forwarding(Duration::from_secs(15))?;
    ns_wait_ping(&hidden, OUTSIDE_HOST, Duration::from_secs(10))?;
    let payload = pattern(1024 * 1024, 29);
    let (addr, server) =
        serve_payload(&lab.topo.wan, &format!("{OUTSIDE_HOST}:0"), payload.clone())?;
    let got = fetch(&hidden, addr, Duration::from_secs(5))?;
    let peer = server.join().expect("server thread")?;
    ensure!(got == payload, "the transfer arrived short or corrupted");
    ensure!(
        peer.ip().to_string() == UPLINK_ADDR,
        "the outside saw {peer}, expected the uplink address"
    );

    // Unsolicited inbound to the routed prefix: refused like the subnet's.
    lab.topo
        .wan
        .ip(&["route", "add", "10.77.0.0/24", "via", UPLINK_ADDR])?;
    let before = lab.counter("unsolicited_inbound")?;
    let out = lab
        .topo
        .wan
        .exec_status("ping", &["-c", "2", "-W", "1", "10.77.0.2"])?;
    ensure!(
        !out.status.success(),
        "the outside reached the NAT network's routed host: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        lab.counter("unsolicited_inbound")? >= before + 2,
        "pings to 10.77.0.2 from outside were not counted as unsolicited_inbound"
    );
    Ok(())
}

/// The MTU of a link in `ns` (`ip -o link show`).
fn link_mtu(ns: &Netns, dev: &str) -> Result<u32> {
    let text = String::from_utf8(ns.ip(&["-o", "link", "show", "dev", dev])?.stdout)?;
    text.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no MTU for {dev} in {text:?}"))
}

/// `<mtu size='9000'>`: the bridge and every port vxdp plugs get it, the
/// DHCP reply carries it, and two guests that take it exchange jumbo
/// frames (a 9000-byte IPv4 packet, don't-fragment) through the network.
/// The bridge's firewalld `zone` is accepted and kept (vxdp needs no
/// firewall).
#[test]
fn network_mtu_reaches_bridge_ports_and_dhcp_clients() -> Result<()> {
    let mut lab = Lab::new("mtu")?;
    lab.topo.create(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off' zone='trusted'/>
  <mtu size='9000'/>
  <ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.100' end='192.168.122.150'/></dhcp></ip>
</network>",
    )?;
    ensure!(
        link_mtu(&lab.topo.hyp, "virbr0")? == 9000,
        "the bridge's MTU is {}",
        link_mtu(&lab.topo.hyp, "virbr0")?
    );
    let dump = String::from_utf8(lab.topo.vxdp(&["net-dumpxml", "default"])?.stdout)?;
    ensure!(
        dump.contains("zone='trusted'") && dump.contains("<mtu size='9000'/>"),
        "net-dumpxml lost the zone or the MTU:\n{dump}"
    );
    let mut leased = Vec::new();
    for mac in ["52:54:00:00:7d:01", "52:54:00:00:7d:02"] {
        let g = lab.add_guest(mac)?;
        lab.plug(g)?;
        let port = lab.guests[g].port.clone();
        ensure!(
            link_mtu(&lab.topo.hyp, &port)? == 9000,
            "port {port} has MTU {}",
            link_mtu(&lab.topo.hyp, &port)?
        );
        let e = lab.dhcp(g)?;
        ensure!(
            env(&e, "mtu")? == "9000",
            "the DHCP reply's MTU option: {e:?}"
        );
        // What a guest honouring the option does.
        lab.guests[g]
            .ns
            .ip(&["link", "set", "eth0", "mtu", "9000"])?;
        leased.push(env(&e, "ip")?.to_string());
    }
    ensure!(
        link_mtu(&lab.topo.hyp, "virbr0")? == 9000,
        "plugging ports changed the bridge's MTU to {}",
        link_mtu(&lab.topo.hyp, "virbr0")?
    );
    lab.wait_ping(0, &leased[1], Duration::from_secs(15))?;
    for (g, dst) in [(0, leased[1].as_str()), (1, "192.168.122.1")] {
        let out = lab.guests[g].ns.exec_status(
            "ping",
            &["-c", "2", "-W", "2", "-M", "do", "-s", "8972", dst],
        )?;
        ensure!(
            String::from_utf8_lossy(&out.stdout).contains("2 received"),
            "guest {g}: 9000-byte pings to {dst} did not come back: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The link-local IPv6 address of `dev` in `ns` once duplicate address
/// detection is done.
fn link_local(ns: &Netns, dev: &str, within: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        let text = String::from_utf8(
            ns.ip(&["-6", "-o", "addr", "show", "dev", dev, "scope", "link"])?
                .stdout,
        )?;
        if let Some(addr) = text.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
            && !text.contains("tentative")
        {
            return Ok(addr.split('/').next().unwrap_or(addr).to_string());
        }
        if start.elapsed() > within {
            bail!("{dev} has no usable link-local address within {within:?}: {text:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one router advertisement (default router, lifetime 1800 s) to
/// all nodes from `ns`'s `eth0`, as a hostile guest would.
fn send_router_advertisement(ns: &Netns) -> Result<()> {
    ns.enter(|| -> Result<()> {
        let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
        ensure!(ifindex != 0, "no eth0");
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
        ensure!(
            fd >= 0,
            "raw ICMPv6 socket: {}",
            std::io::Error::last_os_error()
        );
        let hops: libc::c_int = 255;
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                (&hops as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        // Type 134, code 0, checksum (the kernel fills it), hop limit 64,
        // no flags, router lifetime 1800 s, reachable and retrans 0.
        let ra: [u8; 16] = [134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut dst: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        dst.sin6_family = libc::AF_INET6 as u16;
        dst.sin6_addr.s6_addr = "ff02::1".parse::<std::net::Ipv6Addr>()?.octets();
        dst.sin6_scope_id = ifindex;
        let n = unsafe {
            libc::sendto(
                fd,
                ra.as_ptr().cast(),
                ra.len(),
                0,
                (&dst as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        ensure!(n == ra.len() as isize, "sending the RA: {err}");
        Ok(())
    })?
}

/// `<network ipv6='yes'>` without an IPv6 `<ip>`: guests reach each other
/// and the host by link-local IPv6 (the bridge keeps IPv6, with router
/// advertisements ignored as libvirt sets it); a guest's RA is dropped
/// and the host learns no route from it. Without the attribute the bridge
/// has no IPv6 at all.
#[test]
fn ipv6_yes_gives_guests_link_local_ipv6() -> Result<()> {
    let mut lab = Lab::new("v6yes")?;
    lab.topo.create(
        "<network ipv6='yes'><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off'/>
  <ip address='192.168.122.1' prefix='24'/>
</network>",
    )?;
    for (knob, want) in [("disable_ipv6", "0"), ("accept_ra", "0"), ("autoconf", "0")] {
        let v = String::from_utf8(
            lab.topo
                .hyp
                .exec("sysctl", &["-n", &format!("net.ipv6.conf.virbr0.{knob}")])?
                .stdout,
        )?;
        ensure!(
            v.trim() == want,
            "virbr0's {knob} is {v:?}, expected {want}"
        );
    }
    let a = lab.add_guest("52:54:00:00:7e:01")?;
    let b = lab.add_guest("52:54:00:00:7e:02")?;
    lab.plug(a)?;
    lab.plug(b)?;
    lab.topo.wait_ports_forwarding(Duration::from_secs(15))?;
    let la = link_local(&lab.guests[a].ns, "eth0", Duration::from_secs(10))?;
    let lb = link_local(&lab.guests[b].ns, "eth0", Duration::from_secs(10))?;
    let host = link_local(&lab.topo.hyp, "virbr0", Duration::from_secs(10))?;
    for (ns, dst) in [
        (&lab.guests[a].ns, format!("{lb}%eth0")),
        (&lab.guests[b].ns, format!("{la}%eth0")),
        (&lab.guests[a].ns, format!("{host}%eth0")),
        (&lab.topo.hyp, format!("{la}%virbr0")),
    ] {
        ns_wait_ping(ns, &dst, Duration::from_secs(10))?;
    }

    // A hostile guest announces itself as the network's router.
    let before = lab.counter("rogue_service")?;
    send_router_advertisement(&lab.guests[a].ns)?;
    let start = Instant::now();
    while lab.counter("rogue_service")? < before + 1 {
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "the guest's router advertisement was not dropped as rogue_service"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let routes = String::from_utf8(lab.topo.hyp.ip(&["-6", "route", "show", "default"])?.stdout)?;
    ensure!(
        !routes.contains("virbr0"),
        "the host took a default route from a guest: {routes:?}"
    );
    lab.topo.stop()?;

    // Without ipv6='yes': no IPv6 on the bridge, as libvirt.
    lab.topo.create(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off'/>
  <ip address='192.168.122.1' prefix='24'/>
</network>",
    )?;
    let v = String::from_utf8(
        lab.topo
            .hyp
            .exec("sysctl", &["-n", "net.ipv6.conf.virbr0.disable_ipv6"])?
            .stdout,
    )?;
    ensure!(v.trim() == "1", "without ipv6='yes' disable_ipv6 is {v:?}");
    Ok(())
}

/// `<forward mode='nat'><interface dev='up0'/></forward>`: the device list
/// names the uplink (the first device is used, as libvirt does): guests
/// leave through it masqueraded to its address; a list naming a device
/// that does not exist is refused at start, changing nothing.
#[test]
fn nat_forward_interface_list_names_the_uplink() -> Result<()> {
    let mut lab = Lab::new("fwif")?;
    let file = lab.dir.join("missing.xml");
    fs::write(
        &file,
        "<network><name>missing</name><forward mode='nat'><interface dev='nosuch0'/></forward>
  <bridge name='virbr9' stp='off'/><ip address='192.168.124.1' prefix='24'/></network>",
    )?;
    let out = lab
        .topo
        .vxdp_status(&["net-create", file.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("/network/forward") && err.contains("nosuch0"),
        "a missing forward device must be refused naming it: {err}"
    );
    let links = String::from_utf8(lab.topo.hyp.ip(&["-o", "link", "show"])?.stdout)?;
    ensure!(
        !links.contains("virbr9"),
        "the refused start left its bridge:\n{links}"
    );

    lab.topo.create(
        "<network><name>default</name><forward mode='nat'><interface dev='up0'/></forward>
  <bridge name='virbr0' stp='off'/><ip address='192.168.122.1' prefix='24'/></network>",
    )?;
    let dump = String::from_utf8(lab.topo.vxdp(&["net-dumpxml", "default"])?.stdout)?;
    ensure!(
        dump.contains("<interface dev='up0'/>"),
        "net-dumpxml lost the device list:\n{dump}"
    );
    let g = lab.add_guest("52:54:00:00:7f:01")?;
    lab.plug(g)?;
    let ns = &lab.guests[g].ns;
    ns.ip(&["addr", "add", "192.168.122.10/24", "dev", "eth0"])?;
    ns.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    lab.wait_ping(g, OUTSIDE_HOST, Duration::from_secs(15))?;
    let peer = fetch_from_outside(&lab, g)?;
    ensure!(
        peer.ip().to_string() == UPLINK_ADDR,
        "the outside saw {peer}, expected up0's address"
    );
    Ok(())
}

/// DUID bytes from libvirt's colon-separated hex.
fn duid_bytes(duid: &str) -> Vec<u8> {
    duid.split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex DUID"))
        .collect()
}

/// A DHCPv6 client's first step from `ns`'s `eth0`: a SOLICIT for one
/// non-temporary address with client DUID `duid` (RFC 8415 §16.2) to all
/// DHCP servers, and the address the server's ADVERTISE offers (None when
/// it offers none).
fn dhcpv6_solicit(ns: &Netns, duid: &str) -> Result<Option<std::net::Ipv6Addr>> {
    let duid = duid_bytes(duid);
    ns.enter(move || -> Result<Option<std::net::Ipv6Addr>> {
        let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
        ensure!(ifindex != 0, "no eth0");
        let sock = std::net::UdpSocket::bind("[::]:546")?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let tid = [0x5a, 0x17, 0x42];
        let mut msg = vec![1, tid[0], tid[1], tid[2]];
        // OPTION_CLIENTID.
        msg.extend_from_slice(&1u16.to_be_bytes());
        msg.extend_from_slice(&(duid.len() as u16).to_be_bytes());
        msg.extend_from_slice(&duid);
        // OPTION_IA_NA: IAID 1, T1 and T2 0.
        msg.extend_from_slice(&3u16.to_be_bytes());
        msg.extend_from_slice(&12u16.to_be_bytes());
        msg.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        // OPTION_ELAPSED_TIME 0.
        msg.extend_from_slice(&[0, 8, 0, 2, 0, 0]);
        let servers = std::net::SocketAddrV6::new("ff02::1:2".parse()?, 547, 0, ifindex);
        let mut buf = [0u8; 1500];
        for _ in 0..3 {
            sock.send_to(&msg, servers)?;
            let Ok(n) = sock.recv(&mut buf) else {
                continue;
            };
            let reply = &buf[..n];
            if n < 4 || reply[0] != 2 || reply[1..4] != tid {
                continue;
            }
            return Ok(ia_na_address(&reply[4..]));
        }
        bail!("no DHCPv6 ADVERTISE within 3 tries")
    })?
}

/// The first IAADDR inside the first IA_NA of a DHCPv6 message's options.
fn ia_na_address(mut opts: &[u8]) -> Option<std::net::Ipv6Addr> {
    while opts.len() >= 4 {
        let code = u16::from_be_bytes([opts[0], opts[1]]);
        let len = u16::from_be_bytes([opts[2], opts[3]]) as usize;
        let body = opts.get(4..4 + len)?;
        if code == 3 && len >= 12 {
            let mut sub = &body[12..];
            while sub.len() >= 4 {
                let c = u16::from_be_bytes([sub[0], sub[1]]);
                let l = u16::from_be_bytes([sub[2], sub[3]]) as usize;
                let b = sub.get(4..4 + l)?;
                if c == 5 && l >= 16 {
                    let a: [u8; 16] = b[..16].try_into().ok()?;
                    return Some(a.into());
                }
                sub = &sub[4 + l..];
            }
        }
        opts = &opts[4 + len..];
    }
    None
}

/// DHCPv6 `<host id name ip>`: dnsmasq offers the listed address to the
/// client with that DUID, and nothing to a client with another DUID (the
/// `<ip>` has no range, as libvirt configures it).
#[test]
fn dhcpv6_host_gets_its_address_by_duid() -> Result<()> {
    let mut lab = Lab::new("dhcp6")?;
    lab.topo.create(
        "<network><name>default</name><bridge name='virbr0' stp='off'/>
  <ip address='192.168.122.1' prefix='24'/>
  <ip family='ipv6' address='2001:db8:5::1' prefix='64'><dhcp>
    <host id='00:03:00:01:52:54:00:00:70:01' name='v6host' ip='2001:db8:5::20'/>
  </dhcp></ip>
</network>",
    )?;
    let a = lab.add_guest("52:54:00:00:70:01")?;
    let b = lab.add_guest("52:54:00:00:70:02")?;
    lab.plug(a)?;
    lab.plug(b)?;
    lab.topo.wait_ports_forwarding(Duration::from_secs(15))?;
    for g in [a, b] {
        link_local(&lab.guests[g].ns, "eth0", Duration::from_secs(10))?;
    }
    let offered = dhcpv6_solicit(&lab.guests[a].ns, "00:03:00:01:52:54:00:00:70:01")?;
    ensure!(
        offered == Some("2001:db8:5::20".parse()?),
        "the listed DUID was offered {offered:?}"
    );
    let other = dhcpv6_solicit(&lab.guests[b].ns, "00:03:00:01:52:54:00:00:70:02")?;
    ensure!(
        other.is_none(),
        "a DUID that is not listed was offered {other:?}"
    );
    Ok(())
}

/// `<port isolated='yes'/>`, as libvirt starts it: every guest port is an
/// isolated bridge port, and the programs leave guest-to-guest frames to
/// the bridge (no port-to-port shortcut), so two guests cannot reach each
/// other — not even a guest that addresses the other's MAC directly with
/// a static neighbour entry — while both reach the gateway and the
/// outside. A port that loses its flag gets it back from `vxdp serve`'s
/// reconcile pass (here `vxdp load`, which reconciles the same way).
#[test]
fn isolated_ports_keep_guests_apart_but_not_from_the_outside() -> Result<()> {
    let mut lab = Lab::new("piso")?;
    lab.topo.create(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off'/>
  <port isolated='yes'/>
  <ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.100' end='192.168.122.150'/></dhcp></ip>
</network>",
    )?;
    let mut leased = Vec::new();
    for mac in ["52:54:00:00:7e:01", "52:54:00:00:7e:02"] {
        let g = lab.add_guest(mac)?;
        lab.plug(g)?;
        let e = lab.dhcp(g)?;
        leased.push(env(&e, "ip")?.to_string());
    }
    for g in &lab.guests {
        let out = lab
            .topo
            .hyp
            .exec_status("ip", &["-d", "-j", "link", "show", "dev", &g.port])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains("\"isolated\":true"),
            "port {} is not an isolated bridge port: {text}",
            g.port
        );
    }
    lab.wait_ping(0, "192.168.122.1", Duration::from_secs(15))?;
    lab.wait_ping(1, "192.168.122.1", Duration::from_secs(15))?;
    fetch_from_outside(&lab, 0)?;
    fetch_from_outside(&lab, 1)?;
    // Hostile guest 0: B's MAC as a static neighbour, so no ARP is needed.
    let b_mac = lab.guests[1].mac.clone();
    lab.guests[0].ns.ip(&[
        "neigh", "replace", &leased[1], "lladdr", &b_mac, "dev", "eth0",
    ])?;
    let fwd_before = lab.counter("port_forwarded")?;
    let out = lab.guests[0]
        .ns
        .exec_status("ping", &["-c", "3", "-W", "1", &leased[1]])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("0 received"),
        "guest 0 reached guest 1 across isolated ports: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        lab.counter("port_forwarded")? == fwd_before,
        "the guest program delivered frames port to port in an isolated network"
    );
    // Take the flag off one port; reconcile puts it back.
    let port = lab.guests[1].port.clone();
    lab.topo
        .hyp
        .exec_status("bridge", &["link", "set", "dev", &port, "isolated", "off"])?;
    lab.topo.vxdp(&["load"])?;
    let out = lab
        .topo
        .hyp
        .exec_status("ip", &["-d", "-j", "link", "show", "dev", &port])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("\"isolated\":true"),
        "reconcile did not isolate {port} again: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// A network's `<virtualport>` is a port setting: libvirt starts the
/// network and applies it (Open vSwitch, 802.1Qbg/Qbh) only when a
/// domain's interface is plugged. vxdp starts it too and refuses the port
/// as "not supported yet", naming the element, with nothing plugged.
#[test]
fn a_networks_virtualport_starts_it_and_refuses_its_ports() -> Result<()> {
    let mut lab = Lab::new("vport")?;
    lab.topo.create(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='off'/>
  <virtualport type='openvswitch'/>
  <ip address='192.168.122.1' prefix='24'/>
</network>",
    )?;
    let g = lab.add_guest("52:54:00:00:7f:01")?;
    let port = lab.guests[g].port.clone();
    let out =
        lab.topo
            .vxdp_status(&["attach-interface", "--network", "default", "--dev", &port])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("/network/virtualport")
            && err.contains("not supported yet"),
        "attach-interface on a network with <virtualport>: {}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let list = String::from_utf8(lab.topo.vxdp(&["net-list"])?.stdout)?;
    ensure!(
        lab.topo
            .hyp
            .exec_status("ip", &["-d", "link", "show", "dev", &port])?
            .status
            .success()
            && !String::from_utf8_lossy(
                &lab.topo
                    .hyp
                    .exec_status("ip", &["link", "show", "dev", &port])?
                    .stdout
            )
            .contains("master"),
        "the refused port was left on the bridge"
    );
    ensure!(
        list.contains("default"),
        "the network is not running: {list}"
    );
    Ok(())
}

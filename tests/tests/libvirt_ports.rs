//! `vxdp serve` follows the ports libvirt puts on a vxdp bridge (issue 18,
//! item 2): a libvirt `<forward mode='bridge'/>` network on vxdp's bridge
//! has libvirt create the guest's tap, give it the guest MAC with the first
//! byte `fe` and enslave it; vxdp plugs it with the guest MAC read back
//! from the tap's, and unplugs it (endpoint, MAC entries, flows) when it
//! leaves the bridge or goes away.
//!
//! libvirt is emulated here exactly at the point vxdp sees it: a veth whose
//! hypervisor end is named `vnetN`, has libvirt's tap MAC and is enslaved to
//! `virbr0` and set up by the test (as `virNetDevTapCreateInBridgePort`
//! does); the guest end is in the guest's namespace with the guest MAC.
//! Kernel defaults everywhere.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_control::{
    dataplane::{Maps, Pins},
    host::state::{NetworkRecord, StateDir},
};
use vxdp_testkit::{DEFAULT_XML, NatTopology, Netns, OUTSIDE_HOST, vxdp_bin};

/// `vxdp serve` in the topology's hypervisor namespace, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(topo: &NatTopology) -> Result<Self> {
        let log = topo.state_dir.join("serve.log");
        std::fs::create_dir_all(&topo.state_dir)?;
        let child = Command::new(vxdp_bin()?)
            .arg("--netns")
            .arg(&topo.hyp.name)
            .arg("--state-dir")
            .arg(&topo.state_dir)
            .arg("--bpffs")
            .arg(&topo.bpffs)
            .args(["serve", "--reconcile-interval", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting vxdp serve")?;
        Ok(Self { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A guest as libvirt would start it on a `<forward mode='bridge'/>`
/// network on virbr0: `eth0` (MAC `guest_mac`, address `addr`) in its own
/// namespace; `port` in the hypervisor namespace with MAC `tap_mac`,
/// enslaved to virbr0 and up.
fn libvirt_guest(
    topo: &NatTopology,
    n: usize,
    port: &str,
    tap_mac: &str,
    guest_mac: &str,
    addr: &str,
) -> Result<Netns> {
    let g = Netns::new(format!("{}-g{n}", topo.prefix))?;
    topo.hyp.ip(&[
        "link", "add", port, "address", tap_mac, "type", "veth", "peer", "name", "eth0", "address",
        guest_mac, "netns", &g.name,
    ])?;
    g.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
    g.ip(&["link", "set", "eth0", "up"])?;
    g.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    topo.hyp.ip(&["link", "set", port, "master", "virbr0"])?;
    topo.hyp.ip(&["link", "set", port, "up"])?;
    Ok(g)
}

fn record(topo: &NatTopology) -> Result<NetworkRecord> {
    StateDir::open(&topo.state_dir)?
        .network("default")?
        .context("network default has no record")
}

fn ifindex(topo: &NatTopology, dev: &str) -> Result<u32> {
    Ok(String::from_utf8(
        topo.hyp
            .exec("cat", &[&format!("/sys/class/net/{dev}/ifindex")])?
            .stdout,
    )?
    .trim()
    .parse()?)
}

/// Waits (at most 20 s) until `what` holds of the network's record.
fn wait_record(
    topo: &NatTopology,
    daemon: &Daemon,
    what: &str,
    ok: impl Fn(&NetworkRecord) -> bool,
) -> Result<NetworkRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rec = record(topo)?;
        if ok(&rec) {
            return Ok(rec);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not within 20 s; ports {:?}; daemon log:\n{}",
                rec.ports,
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pings(ns: &Netns, dst: &str, n: u32) -> Result<u32> {
    let out = ns.exec_status("ping", &["-c", &n.to_string(), "-i", "0.2", "-W", "1", dst])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = text
        .split(',')
        .find_map(|f| f.trim().strip_suffix(" received"))
        .with_context(|| format!("no ping summary in {text}"))?;
    Ok(received.trim().parse()?)
}

/// Waits (at most 20 s) until `ns` can ping `dst`.
fn wait_ping(ns: &Netns, dst: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pings(ns, dst, 1)? != 1 {
        ensure!(
            Instant::now() < deadline,
            "{} cannot ping {dst} within 20 s",
            ns.name
        );
    }
    Ok(())
}

#[test]
fn serve_plugs_what_libvirt_plugs_and_unplugs_what_leaves() -> Result<()> {
    let mut topo = NatTopology::new("lvp", 0)?;
    topo.create(DEFAULT_XML)?;
    let daemon = Daemon::start(&topo)?;

    // A guest started by libvirt: tap MAC fe + the guest MAC's last five bytes.
    let g0 = libvirt_guest(
        &topo,
        0,
        "vnet0",
        "fe:54:00:aa:bb:01",
        "52:54:00:aa:bb:01",
        "192.168.122.10",
    )?;
    let vnet0 = ifindex(&topo, "vnet0")?;
    let rec = wait_record(&topo, &daemon, "vnet0 plugged", |r| {
        r.ports.iter().any(|p| p.dev == "vnet0")
    })?;
    let port = rec.ports.iter().find(|p| p.dev == "vnet0").unwrap();
    ensure!(
        port.from_bridge && port.ifindex == vnet0 && !port.created_tap,
        "vnet0 recorded as {port:?}"
    );
    ensure!(
        port.mac.as_deref() == Some("52:54:00:aa:bb:01"),
        "guest MAC derived from the tap's: {:?}",
        port.mac
    );

    // Through vxdp's path: the pings are SNATed by the eBPF program.
    wait_ping(&g0, OUTSIDE_HOST)?;
    let (snat0, _) = topo.counter("default", "snat_forwarded")?;
    ensure!(pings(&g0, OUTSIDE_HOST, 3)? == 3, "pings lost");
    let (snat1, _) = topo.counter("default", "snat_forwarded")?;
    ensure!(
        snat1 - snat0 == 3,
        "pings did not take the eBPF path: snat_forwarded +{}",
        snat1 - snat0
    );

    // A hostile guest: its port appears like libvirt's, but the guest sends
    // from another MAC than its tap says (52:54:00:aa:bb:02). Nothing it
    // sends gets through, and the drops are counted as spoofed MACs.
    let g1 = libvirt_guest(
        &topo,
        1,
        "vnet1",
        "fe:54:00:aa:bb:02",
        "52:54:00:66:66:66",
        "192.168.122.11",
    )?;
    wait_record(&topo, &daemon, "vnet1 plugged", |r| {
        r.ports
            .iter()
            .any(|p| p.dev == "vnet1" && p.mac.as_deref() == Some("52:54:00:aa:bb:02"))
    })?;
    // The bridge port must forward first, or the kernel's STP, not vxdp,
    // would drop the pings.
    topo.wait_port_forwarding("vnet1", Duration::from_secs(20))?;
    let (spoofed0, _) = topo.counter("default", "spoofed_mac")?;
    ensure!(
        pings(&g1, OUTSIDE_HOST, 3)? == 0,
        "a guest sending from a MAC that is not its own reached the outside"
    );
    ensure!(
        pings(&g1, "192.168.122.10", 3)? == 0,
        "a guest sending from a MAC that is not its own reached another guest"
    );
    let (spoofed1, _) = topo.counter("default", "spoofed_mac")?;
    ensure!(
        spoofed1 > spoofed0,
        "the spoofed frames were not counted as spoofed_mac drops"
    );

    // The guest stops: libvirt deletes its tap. The port is unplugged and
    // its flows are gone.
    let pins = Pins::new(&topo.bpffs);
    let maps = Maps::open(&pins)?;
    ensure!(
        maps.endpoint(vnet0)?.is_some(),
        "vnet0 has no endpoint while plugged"
    );
    let flows = |maps: &Maps| -> Result<usize> {
        Ok(maps
            .conntrack_entries(None)?
            .iter()
            .filter(|(_, e)| e.ifindex == vnet0)
            .count())
    };
    ensure!(flows(&maps)? > 0, "vnet0's pings left no conntrack entry");
    topo.hyp.ip(&["link", "del", "vnet0"])?;
    wait_record(&topo, &daemon, "vnet0 unplugged after deletion", |r| {
        !r.ports.iter().any(|p| p.dev == "vnet0")
    })?;
    ensure!(
        maps.endpoint(vnet0)?.is_none(),
        "vnet0's endpoint outlived it"
    );
    let left = flows(&maps)?;
    ensure!(left == 0, "{left} conntrack entries of vnet0 remain");

    // A port taken off the bridge (`ip link set nomaster`) is unplugged too:
    // its program is gone.
    let vnet1 = ifindex(&topo, "vnet1")?;
    topo.hyp.ip(&["link", "set", "vnet1", "nomaster"])?;
    wait_record(&topo, &daemon, "vnet1 unplugged after nomaster", |r| {
        !r.ports.iter().any(|p| p.dev == "vnet1")
    })?;
    ensure!(
        maps.endpoint(vnet1)?.is_none(),
        "vnet1's endpoint outlived its unplug"
    );
    ensure!(
        !pins.tc_link(vnet1).exists(),
        "vnet1's program link is still pinned"
    );
    drop((g0, g1));
    Ok(())
}

#[test]
fn ports_plugged_by_attach_interface_are_left_to_it() -> Result<()> {
    let mut topo = NatTopology::new("lva", 1)?;
    topo.start(DEFAULT_XML)?;
    let daemon = Daemon::start(&topo)?;
    let guest = topo.guests[0].mac.clone();
    // Named like a libvirt tap and taken off the bridge: a port
    // attach-interface plugged is plugged in again with its MAC, not
    // unplugged or taken over as a libvirt one.
    topo.hyp.ip(&["link", "set", "vnet0", "nomaster"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let link = String::from_utf8(topo.hyp.ip(&["-o", "link", "show", "vnet0"])?.stdout)?;
        if link.contains("master virbr0") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "vnet0 (attach-interface) not plugged in again within 20 s: {link}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rec = record(&topo)?;
    let port = rec
        .ports
        .iter()
        .find(|p| p.dev == "vnet0")
        .context("vnet0 left the record")?;
    ensure!(
        !port.from_bridge && port.mac.as_deref() == Some(guest.as_str()),
        "attach-interface's port was taken over: {port:?}"
    );
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    ensure!(
        record(&topo)?.ports.len() == 1,
        "a second record for the same port"
    );
    Ok(())
}

/// `vxdp libvirt-hook DOMAIN OPERATION` with the domain XML on stdin, in
/// the topology's hypervisor namespace.
fn hook(topo: &NatTopology, domain: &str, op: &str, xml: &str) -> Result<std::process::Output> {
    use std::io::Write as _;
    let mut child = Command::new(vxdp_bin()?)
        .arg("--netns")
        .arg(&topo.hyp.name)
        .arg("--state-dir")
        .arg(&topo.state_dir)
        .arg("--bpffs")
        .arg(&topo.bpffs)
        .args(["libvirt-hook", domain, op, "begin", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(xml.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// libvirt's qemu hook after `vxdp serve` plugged the tap first (the race
/// libvirt's order allows): the daemon derived the guest MAC from the tap's
/// (`52:…` for a guest whose MAC is `02:…`), so the guest's frames are
/// spoofed-MAC drops; the hook's `started` corrects the port in place with
/// the domain's exact MAC and its `<filterref>` address, and the guest
/// gets through, from that address only; `stopped` unplugs it.
#[test]
fn the_qemu_hook_corrects_a_port_serve_plugged_first() -> Result<()> {
    let mut topo = NatTopology::new("lvk", 0)?;
    topo.create(DEFAULT_XML)?;
    let daemon = Daemon::start(&topo)?;
    let g = libvirt_guest(
        &topo,
        0,
        "vnet0",
        "fe:11:22:33:44:55",
        "02:11:22:33:44:55",
        "192.168.122.50",
    )?;
    let vnet0 = ifindex(&topo, "vnet0")?;
    wait_record(&topo, &daemon, "vnet0 plugged with the derived MAC", |r| {
        r.ports
            .iter()
            .any(|p| p.dev == "vnet0" && p.mac.as_deref() == Some("52:11:22:33:44:55"))
    })?;
    topo.wait_port_forwarding("vnet0", Duration::from_secs(20))?;
    let (spoofed0, _) = topo.counter("default", "spoofed_mac")?;
    ensure!(
        pings(&g, OUTSIDE_HOST, 2)? == 0,
        "the guest got through with a MAC vxdp does not know as its own"
    );
    let (spoofed1, _) = topo.counter("default", "spoofed_mac")?;
    ensure!(
        spoofed1 > spoofed0,
        "the guest's frames were not counted as spoofed_mac"
    );

    let xml = "<domain type='qemu'><name>vm</name><devices>\
        <interface type='network'><mac address='02:11:22:33:44:55'/>\
        <source network='default' portid='0f3e' bridge='virbr0'/><target dev='vnet0'/>\
        <model type='virtio'/><filterref filter='clean-traffic'>\
        <parameter name='IP' value='192.168.122.50'/></filterref><alias name='net0'/></interface>\
        </devices></domain>";
    let out = hook(&topo, "vm", "started", xml)?;
    ensure!(
        out.status.success() && out.stdout.is_empty(),
        "libvirt-hook started: {:?}, stdout {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = record(&topo)?;
    let port = rec
        .ports
        .iter()
        .find(|p| p.dev == "vnet0")
        .context("vnet0 left the record")?;
    ensure!(
        port.mac.as_deref() == Some("02:11:22:33:44:55")
            && port.ipv4 == Some("192.168.122.50".parse()?)
            && port.from_bridge
            && port.ifindex == vnet0
            && rec.ports.len() == 1,
        "after the hook: {:?}",
        rec.ports
    );
    let ep = Maps::open(&Pins::new(&topo.bpffs))?
        .endpoint(vnet0)?
        .context("vnet0 has no endpoint")?;
    ensure!(
        ep.mac == [2, 0x11, 0x22, 0x33, 0x44, 0x55]
            && ep.ipv4 == u32::from_ne_bytes([192, 168, 122, 50]),
        "vnet0's endpoint after the hook: {ep:?}"
    );
    wait_ping(&g, OUTSIDE_HOST)?;
    // The daemon's next passes keep the hook's word.
    std::thread::sleep(Duration::from_millis(2500));
    ensure!(
        record(&topo)?
            .ports
            .iter()
            .any(|p| p.dev == "vnet0" && p.mac.as_deref() == Some("02:11:22:33:44:55")),
        "the daemon undid the hook's MAC"
    );
    // Another address than the domain's: dropped and counted.
    g.ip(&["addr", "flush", "dev", "eth0"])?;
    g.ip(&["addr", "add", "192.168.122.51/24", "dev", "eth0"])?;
    g.ip(&["route", "add", "default", "via", "192.168.122.1"])?;
    let (src0, _) = topo.counter("default", "spoofed_source")?;
    ensure!(
        pings(&g, OUTSIDE_HOST, 2)? == 0,
        "the guest got through from an address not its own"
    );
    let (src1, _) = topo.counter("default", "spoofed_source")?;
    ensure!(
        src1 > src0,
        "the spoofed pings were not counted as spoofed_source"
    );

    let out = hook(&topo, "vm", "stopped", xml)?;
    ensure!(
        out.status.success(),
        "libvirt-hook stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !record(&topo)?.ports.iter().any(|p| p.dev == "vnet0"),
        "vnet0 still plugged after stopped"
    );
    // A domain of no vxdp network, and operations the hook has no use for: nothing.
    let other = xml
        .replace("network='default'", "network='elsewhere'")
        .replace("bridge='virbr0'", "bridge='virbr9'");
    for (x, op) in [
        (other.as_str(), "started"),
        (xml, "migrate"),
        (xml, "restore"),
    ] {
        let out = hook(&topo, "vm", op, x)?;
        ensure!(
            out.status.success() && out.stdout.is_empty(),
            "libvirt-hook {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure!(
        record(&topo)?.ports.is_empty(),
        "a port appeared: {:?}",
        record(&topo)?.ports
    );
    drop(g);
    Ok(())
}

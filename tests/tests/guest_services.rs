//! End to end: the guest services of a network (DHCP, DNS, TFTP/PXE) served
//! by the dnsmasq vxdp starts for it, with real clients (busybox udhcpc,
//! dig, tftp-hpa) in guest namespaces without static addresses. dnsmasq
//! runs in the test's hypervisor namespace; its files are under the test's
//! private state directory.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_common::endpoint_flags;
use vxdp_control::{
    dataplane::{Maps, Pins},
    host::state::StateDir,
};
use vxdp_testkit::{NatTopology, Netns, pattern};

/// udhcpc's event script: records what the server sent (the environment
/// udhcpc hands over) and configures the address like a real client.
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

/// A guest without an address, behind `vnet<n>` in the hypervisor namespace.
struct DhcpGuest {
    ns: Netns,
    port: String,
    mac: String,
}

/// The NAT topology (wan + hypervisor namespaces) with DHCP guests and the
/// networks this test started; everything is stopped and removed on drop.
struct Services {
    topo: NatTopology,
    guests: Vec<DhcpGuest>,
    networks: Vec<String>,
    dir: PathBuf,
}

impl Services {
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
            networks: Vec::new(),
            dir,
        })
    }

    /// Adds guest `n` with MAC 52:54:00:00:<net>:<n>; not plugged in yet.
    fn add_guest(&mut self, mac: &str) -> Result<usize> {
        let n = self.guests.len();
        let ns = Netns::new(format!("{}-g{n}", self.topo.prefix))?;
        let port = format!("vnet{n}");
        self.topo.hyp.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        ns.ip(&["link", "set", "eth0", "address", mac])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        self.guests.push(DhcpGuest {
            ns,
            port,
            mac: mac.into(),
        });
        Ok(n)
    }

    fn start_network(&mut self, name: &str, xml: &str) -> Result<()> {
        fs::create_dir_all(&self.topo.state_dir)?;
        let file = self.dir.join(format!("{name}.xml"));
        fs::write(&file, xml)?;
        self.networks.push(name.into());
        self.topo
            .vxdp(&["net-create", file.to_str().context("path")?])?;
        Ok(())
    }

    fn plug(&self, guest: usize, network: &str) -> Result<()> {
        let g = &self.guests[guest];
        self.topo.vxdp(&[
            "attach-interface",
            "--network",
            network,
            "--dev",
            &g.port,
            "--mac",
            &g.mac,
        ])?;
        Ok(())
    }

    /// Runs udhcpc once in the guest (bounded: 6 discovers, 2 s apart) and
    /// returns the environment the server's reply produced.
    fn dhcp(&self, guest: usize, extra: &[&str]) -> Result<BTreeMap<String, String>> {
        let out_file = self.dir.join(format!("g{guest}.env"));
        let _ = fs::remove_file(&out_file);
        let script = self.dir.join("udhcpc.sh");
        let mut args = vec![
            format!("VXDP_TEST_OUT={}", out_file.display()),
            "udhcpc".into(),
            "-i".into(),
            "eth0".into(),
            "-f".into(),
            "-q".into(),
            "-n".into(),
            "-t".into(),
            "6".into(),
            "-T".into(),
            "2".into(),
            "-s".into(),
            script.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
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

    /// Runs udhcpc until it holds a lease, then stops it with SIGTERM, on
    /// which it releases the lease (`-R`; with `-q` busybox would not).
    fn dhcp_release(&self, guest: usize, hostname: &str) -> Result<()> {
        let out_file = self.dir.join(format!("g{guest}-release.env"));
        let _ = fs::remove_file(&out_file);
        let script = self.dir.join("udhcpc.sh");
        // `ip netns exec` and `env` exec, so the child's pid is udhcpc's.
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.guests[guest].ns.name, "env"])
            .arg(format!("VXDP_TEST_OUT={}", out_file.display()))
            .args([
                "udhcpc", "-i", "eth0", "-f", "-n", "-R", "-t", "6", "-T", "2", "-x",
            ])
            .arg(format!("hostname:{hostname}"))
            .arg("-s")
            .arg(&script)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let bound = wait_for("udhcpc holding a lease", Duration::from_secs(20), || {
            out_file.exists().then_some(())
        });
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = wait_for(
            "udhcpc exiting after SIGTERM",
            Duration::from_secs(10),
            || child.try_wait().ok().flatten(),
        );
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        bound?;
        exited?;
        Ok(())
    }

    fn leases(&self, network: &str) -> Result<String> {
        Ok(String::from_utf8(
            self.topo.vxdp(&["net-dhcp-leases", network])?.stdout,
        )?)
    }

    fn dnsmasq_dir(&self, network: &str) -> PathBuf {
        self.topo.state_dir.join("dnsmasq").join(network)
    }

    fn dnsmasq_pid(&self, network: &str) -> Option<i32> {
        vxdp_control::host::dnsmasq::dnsmasq_pid(&self.topo.state_dir, network)
    }

    /// The guest port's endpoint as the dataplane sees it.
    fn endpoint(&self, network: &str, guest: usize) -> Result<vxdp_common::Endpoint> {
        let rec = StateDir::open(&self.topo.state_dir)?
            .network(network)?
            .context("network record")?;
        let port = rec
            .ports
            .iter()
            .find(|p| p.dev == self.guests[guest].port)
            .context("port record")?;
        Maps::open(&Pins::new(&self.topo.bpffs))?
            .endpoint(port.ifindex)?
            .context("no endpoint for the port")
    }

    /// Processes whose command line mentions this test's state directory
    /// (the supervisors, their dnsmasqs, lease hooks).
    fn our_processes(&self) -> Vec<(i32, String)> {
        let marker = self.topo.state_dir.to_string_lossy().into_owned();
        let mut out = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let zombie = fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            });
            if cmd.contains(&marker) && !zombie {
                out.push((pid, cmd));
            }
        }
        out
    }

    fn destroy(&mut self, network: &str) -> Result<()> {
        self.topo.vxdp(&["net-destroy", network])?;
        self.networks.retain(|n| n != network);
        Ok(())
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for n in std::mem::take(&mut self.networks) {
            let _ = self.topo.vxdp_status(&["net-destroy", &n]);
        }
        // Last resort against leaks if net-destroy itself failed.
        for (pid, _) in self.our_processes() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The real, effective, saved and filesystem uids of `pid`.
fn uids(pid: i32) -> Result<Vec<u32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("no Uid: line")?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}

/// dnsmasq parses guests' requests as its own user, never as root.
fn ensure_unprivileged(pid: i32) -> Result<()> {
    let user = vxdp_control::host::users::user(vxdp_control::host::dnsmasq::DNSMASQ_USER)
        .with_context(|| {
            format!(
                "user {} missing (package dnsmasq-base)",
                vxdp_control::host::dnsmasq::DNSMASQ_USER
            )
        })?;
    let (ids, _) = wait_for(
        "dnsmasq to switch to its user",
        Duration::from_secs(5),
        || uids(pid).ok().filter(|ids| ids.iter().all(|&id| id != 0)),
    )
    .with_context(|| format!("dnsmasq {pid} still has uids {:?}", uids(pid)))?;
    ensure!(
        ids.iter().all(|&id| id == user.uid),
        "dnsmasq {pid} runs with uids {ids:?}, not the dnsmasq user's {}",
        user.uid
    );
    Ok(())
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

fn env<'a>(e: &'a BTreeMap<String, String>, k: &str) -> Result<&'a str> {
    e.get(k)
        .map(String::as_str)
        .with_context(|| format!("the DHCP reply set no '{k}': {e:?}"))
}

fn dig(ns: &Netns, server: &str, name: &str) -> Result<String> {
    let out = ns.exec_status(
        "dig",
        &[
            "+short",
            "+time=1",
            "+tries=3",
            &format!("@{server}"),
            name,
            "A",
        ],
    )?;
    ensure!(
        out.status.success(),
        "dig {name} @{server} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn wait_for<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok((v, start.elapsed()));
        }
        if start.elapsed() > within {
            bail!("{what} did not happen within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lab_xml(tftp_root: &Path, static_mac: &str) -> String {
    format!(
        "<network>
  <name>lab</name>
  <forward mode='nat'/>
  <bridge name='virbr-lab' stp='off'/>
  <domain name='lab.test'/>
  <dns>
    <host ip='192.168.140.50'><hostname>files</hostname></host>
    <txt name='info' value='vxdp lab'/>
  </dns>
  <ip address='192.168.140.1' netmask='255.255.255.0'>
    <tftp root='{}'/>
    <dhcp>
      <range start='192.168.140.100' end='192.168.140.199'><lease expiry='10' unit='minutes'/></range>
      <host mac='{static_mac}' name='beta' ip='192.168.140.11'/>
      <bootp file='pxelinux.0' server='192.168.140.1'/>
    </dhcp>
  </ip>
</network>",
        tftp_root.display()
    )
}

#[test]
fn dhcp_dns_pxe_and_dnsmasq_restart() -> Result<()> {
    let mut s = Services::new("svc")?;
    let tftp_root = s.dir.join("tftp");
    fs::create_dir_all(&tftp_root)?;
    let boot_image = pattern(300 * 1024, 42);
    fs::write(tftp_root.join("pxelinux.0"), &boot_image)?;

    let alpha = s.add_guest("52:54:00:00:40:01")?;
    let beta = s.add_guest("52:54:00:00:40:02")?;
    s.start_network("lab", &lab_xml(&tftp_root, "52:54:00:00:40:02"))?;
    s.plug(alpha, "lab")?;
    s.plug(beta, "lab")?;
    let first_pid = s
        .dnsmasq_pid("lab")
        .context("no dnsmasq running after net-create")?;
    ensure_unprivileged(first_pid)?;

    // Before any DHCP: the static <host>'s address is known from the moment
    // its port is plugged in; the other guest's address is not known yet.
    let ep = s.endpoint("lab", beta)?;
    ensure!(
        ep.flags & endpoint_flags::IPV4_KNOWN != 0
            && ep.ipv4 == u32::from_ne_bytes([192, 168, 140, 11]),
        "the static host's endpoint should carry 192.168.140.11 at plug time: {ep:?}"
    );
    let ep = s.endpoint("lab", alpha)?;
    ensure!(
        ep.flags & endpoint_flags::IPV4_KNOWN == 0 && ep.ipv4 == 0,
        "alpha has no lease yet but its endpoint says {ep:?}"
    );

    // DHCP from the range with the network's router and DNS options; a PXE
    // client's reply carries <bootp>'s file and server.
    let a = s.dhcp(
        alpha,
        &[
            "-x",
            "hostname:alpha",
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
        ],
    )?;
    let alpha_ip = in_range(
        env(&a, "ip")?,
        Ipv4Addr::new(192, 168, 140, 100),
        Ipv4Addr::new(192, 168, 140, 199),
    )?;
    ensure!(env(&a, "mask")? == "24", "prefix {:?}", a.get("mask"));
    ensure!(
        env(&a, "router")? == "192.168.140.1",
        "router option {:?}",
        a.get("router")
    );
    ensure!(
        env(&a, "dns")? == "192.168.140.1",
        "dns option {:?}",
        a.get("dns")
    );
    ensure!(
        env(&a, "domain")? == "lab.test",
        "domain option {:?}",
        a.get("domain")
    );
    ensure!(
        env(&a, "lease")? == "600",
        "lease time {:?} (10 minutes expected)",
        a.get("lease")
    );
    ensure!(
        env(&a, "boot_file")? == "pxelinux.0",
        "boot file {:?}",
        a.get("boot_file")
    );
    ensure!(
        env(&a, "siaddr")? == "192.168.140.1",
        "next server {:?}",
        a.get("siaddr")
    );

    // The static <host> gets exactly its address.
    let b = s.dhcp(beta, &["-x", "hostname:beta"])?;
    ensure!(
        env(&b, "ip")? == "192.168.140.11",
        "static host got {:?}",
        b.get("ip")
    );

    // net-dhcp-leases shows both.
    let leases = s.leases("lab")?;
    for want in [
        format!("{alpha_ip}/24"),
        "alpha".into(),
        "52:54:00:00:40:01".into(),
        "192.168.140.11/24".into(),
        "52:54:00:00:40:02".into(),
    ] {
        ensure!(
            leases.contains(&want),
            "net-dhcp-leases lacks {want}:\n{leases}"
        );
    }

    // Leases reached the dataplane: each port's endpoint knows its address.
    for (g, ip) in [(alpha, alpha_ip), (beta, Ipv4Addr::new(192, 168, 140, 11))] {
        let (ep, _) = wait_for(
            "the lease hook updating the endpoint",
            Duration::from_secs(10),
            || {
                s.endpoint("lab", g)
                    .ok()
                    .filter(|ep| ep.flags & endpoint_flags::IPV4_KNOWN != 0)
            },
        )?;
        ensure!(
            ep.ipv4 == u32::from_ne_bytes(ip.octets()),
            "guest {g}'s endpoint has {:?}, expected {ip}",
            Ipv4Addr::from(ep.ipv4.to_ne_bytes())
        );
    }

    // DNS through the gateway: a <dns><host> name, the other guest's DHCP
    // hostname, a TXT record.
    let got = dig(&s.guests[beta].ns, "192.168.140.1", "files.lab.test")?;
    ensure!(
        got == "192.168.140.50",
        "files.lab.test resolved to {got:?}"
    );
    let got = dig(&s.guests[beta].ns, "192.168.140.1", "alpha.lab.test")?;
    ensure!(
        got == alpha_ip.to_string(),
        "alpha.lab.test resolved to {got:?}, alpha has {alpha_ip}"
    );
    let got = dig(&s.guests[alpha].ns, "192.168.140.1", "beta")?;
    ensure!(got == "192.168.140.11", "beta resolved to {got:?}");

    // TFTP: the PXE client downloads the boot file from <tftp root>.
    let fetched = s.dir.join("fetched.bin");
    let out = s.guests[alpha].ns.exec_status(
        "timeout",
        &[
            "20",
            "tftp",
            "-m",
            "binary",
            "192.168.140.1",
            "-c",
            "get",
            "pxelinux.0",
            fetched.to_str().context("path")?,
        ],
    )?;
    let got = fs::read(&fetched).with_context(|| {
        format!(
            "tftp fetched nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    ensure!(
        got == boot_image,
        "TFTP download differs: {} bytes of {}",
        got.len(),
        boot_image.len()
    );

    // Killing dnsmasq: the supervisor restarts it within 10 s; the leases
    // are still there and the guest renews to the same address.
    let lease_file = s.dnsmasq_dir("lab").join("leases");
    let before = fs::read_to_string(&lease_file)?;
    ensure!(
        before.contains("52:54:00:00:40:01"),
        "lease file lacks alpha:\n{before}"
    );
    unsafe { libc::kill(first_pid, libc::SIGKILL) };
    let (new_pid, took) = wait_for("dnsmasq restart", Duration::from_secs(10), || {
        s.dnsmasq_pid("lab").filter(|p| *p != first_pid)
    })?;
    eprintln!("dnsmasq {first_pid} killed, {new_pid} running {took:?} later");
    let after = fs::read_to_string(&lease_file)?;
    ensure!(
        after.contains("52:54:00:00:40:01") && after.contains("52:54:00:00:40:02"),
        "leases lost over the restart:\n{after}"
    );
    let leases = s.leases("lab")?;
    ensure!(
        leases.contains(&format!("{alpha_ip}/24")),
        "net-dhcp-leases after the restart:\n{leases}"
    );
    let a2 = s.dhcp(alpha, &["-x", "hostname:alpha"])?;
    ensure!(
        env(&a2, "ip")? == alpha_ip.to_string(),
        "after the restart alpha got {:?}, had {alpha_ip}",
        a2.get("ip")
    );

    // Releasing: a dynamic lease's address is forgotten by the dataplane,
    // a static host's stays.
    s.dhcp_release(alpha, "alpha")?;
    s.dhcp_release(beta, "beta")?;
    wait_for(
        "alpha's released address leaving its endpoint",
        Duration::from_secs(10),
        || {
            s.endpoint("lab", alpha)
                .ok()
                .filter(|ep| ep.flags & endpoint_flags::IPV4_KNOWN == 0 && ep.ipv4 == 0)
        },
    )
    .with_context(|| {
        format!(
            "dnsmasq's log:\n{}",
            fs::read_to_string(s.dnsmasq_dir("lab").join("log")).unwrap_or_default()
        )
    })?;
    let leases = s.leases("lab")?;
    ensure!(
        !leases.contains(&format!("{alpha_ip}/24")),
        "released lease still listed:\n{leases}"
    );
    let ep = s.endpoint("lab", beta)?;
    ensure!(
        ep.flags & endpoint_flags::IPV4_KNOWN != 0
            && ep.ipv4 == u32::from_ne_bytes([192, 168, 140, 11]),
        "the static host's address must stay known after its lease is released: {ep:?}"
    );

    // Stopping: nothing of ours keeps running, the lease file stays.
    s.destroy("lab")?;
    let left = s.our_processes();
    ensure!(
        left.is_empty(),
        "processes left after net-destroy: {left:?}"
    );
    ensure!(
        lease_file.exists(),
        "the lease file should survive net-destroy"
    );
    Ok(())
}

fn simple_xml(name: &str, bridge: &str, third: u8) -> String {
    format!(
        "<network><name>{name}</name><forward mode='nat'/><bridge name='{bridge}' stp='off'/>
  <ip address='192.168.{third}.1' prefix='24'><dhcp><range start='192.168.{third}.100' end='192.168.{third}.150'/></dhcp></ip>
</network>"
    )
}

#[test]
fn two_networks_each_serve_only_their_own_guests() -> Result<()> {
    let mut s = Services::new("two")?;
    let a = s.add_guest("52:54:00:00:51:01")?;
    let b = s.add_guest("52:54:00:00:52:01")?;
    s.start_network("neta", &simple_xml("neta", "virbr-a", 151))?;
    s.start_network("netb", &simple_xml("netb", "virbr-b", 152))?;
    s.plug(a, "neta")?;
    s.plug(b, "netb")?;
    let pa = s.dnsmasq_pid("neta").context("neta has no dnsmasq")?;
    let pb = s.dnsmasq_pid("netb").context("netb has no dnsmasq")?;
    ensure!(pa != pb, "both networks report the same dnsmasq {pa}");

    let ea = s.dhcp(a, &["-x", "hostname:guesta"])?;
    let eb = s.dhcp(b, &["-x", "hostname:guestb"])?;
    let ip_a = in_range(
        env(&ea, "ip")?,
        Ipv4Addr::new(192, 168, 151, 100),
        Ipv4Addr::new(192, 168, 151, 150),
    )?;
    let ip_b = in_range(
        env(&eb, "ip")?,
        Ipv4Addr::new(192, 168, 152, 100),
        Ipv4Addr::new(192, 168, 152, 150),
    )?;
    ensure!(
        env(&ea, "router")? == "192.168.151.1" && env(&eb, "router")? == "192.168.152.1",
        "routers {:?} {:?}",
        ea.get("router"),
        eb.get("router")
    );
    ensure!(
        env(&ea, "serverid")? == "192.168.151.1",
        "neta's guest was served by {:?}",
        ea.get("serverid")
    );
    ensure!(
        env(&eb, "serverid")? == "192.168.152.1",
        "netb's guest was served by {:?}",
        eb.get("serverid")
    );

    let la = s.leases("neta")?;
    let lb = s.leases("netb")?;
    ensure!(
        la.contains(&ip_a.to_string())
            && !la.contains("52:54:00:00:52:01")
            && !la.contains(&ip_b.to_string()),
        "neta's leases:\n{la}"
    );
    ensure!(
        lb.contains(&ip_b.to_string())
            && !lb.contains("52:54:00:00:51:01")
            && !lb.contains(&ip_a.to_string()),
        "netb's leases:\n{lb}"
    );

    // Stopping one network leaves the other's dnsmasq serving.
    s.destroy("neta")?;
    ensure!(
        s.dnsmasq_pid("neta").is_none(),
        "neta's dnsmasq survived net-destroy"
    );
    ensure!(
        s.dnsmasq_pid("netb") == Some(pb),
        "netb's dnsmasq changed when neta stopped"
    );
    let eb2 = s.dhcp(b, &["-x", "hostname:guestb"])?;
    ensure!(
        env(&eb2, "ip")? == ip_b.to_string(),
        "netb renewed to {:?}",
        eb2.get("ip")
    );
    s.destroy("netb")?;
    let left = s.our_processes();
    ensure!(
        left.is_empty(),
        "processes left after net-destroy: {left:?}"
    );
    Ok(())
}

/// dnsmasq never outlives its supervisor, even one killed with SIGKILL,
/// although it runs as its own user (which clears a parent-death signal):
/// its guard sees the supervisor's pipe close and ends it.
#[test]
fn dnsmasq_ends_with_a_killed_supervisor() -> Result<()> {
    let mut s = Services::new("orph")?;
    s.start_network("neto", &simple_xml("neto", "virbr-o", 153))?;
    let dnsmasq = s.dnsmasq_pid("neto").context("neto has no dnsmasq")?;
    ensure_unprivileged(dnsmasq)?;
    let supervisors: Vec<i32> = s
        .our_processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("dnsmasq-supervise"))
        .map(|(p, _)| p)
        .collect();
    ensure!(
        supervisors.len() == 1,
        "expected one supervisor, found {supervisors:?}"
    );
    unsafe { libc::kill(supervisors[0], libc::SIGKILL) };
    let (_, took) = wait_for(
        "dnsmasq to end with its supervisor",
        Duration::from_secs(5),
        || {
            let alive = s.our_processes().iter().any(|(p, _)| *p == dnsmasq);
            (!alive).then_some(())
        },
    )?;
    eprintln!("supervisor killed; dnsmasq {dnsmasq} gone {took:?} later");
    s.destroy("neto")?;
    let left = s.our_processes();
    ensure!(
        left.is_empty(),
        "processes left after net-destroy: {left:?}"
    );
    Ok(())
}

/// A dnsmasq that cannot start (here: the TFTP root does not exist) fails
/// net-create quickly with dnsmasq's own words, and leaves nothing behind:
/// no process, no bridge, no pins.
#[test]
fn dnsmasq_that_cannot_start_fails_net_create_cleanly() -> Result<()> {
    let mut s = Services::new("bad")?;
    let missing = s.dir.join("no-such-tftp-root");
    let xml = format!(
        "<network><name>badtftp</name><forward mode='nat'/><bridge name='virbr-bad' stp='off'/>
  <ip address='192.168.153.1' prefix='24'><tftp root='{}'/>
    <dhcp><range start='192.168.153.100' end='192.168.153.150'/></dhcp></ip></network>",
        missing.display()
    );
    let file = s.dir.join("badtftp.xml");
    fs::write(&file, xml)?;
    fs::create_dir_all(&s.topo.state_dir)?;
    let start = Instant::now();
    let out = s
        .topo
        .vxdp_status(&["net-create", file.to_str().context("path")?])?;
    let took = start.elapsed();
    if out.status.success() {
        s.networks.push("badtftp".into());
        bail!("net-create succeeded with a missing TFTP root");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("dnsmasq") && err.contains("no-such-tftp-root"),
        "the error should carry dnsmasq's complaint about the TFTP root:\n{err}"
    );
    eprintln!("net-create failed after {took:?}");
    let left = s.our_processes();
    ensure!(
        left.is_empty(),
        "processes left after the failed net-create: {left:?}"
    );
    let link = s
        .topo
        .hyp
        .exec_status("ip", &["link", "show", "virbr-bad"])?;
    ensure!(!link.status.success(), "the bridge was left behind");
    ensure!(
        !s.topo.bpffs.exists() || fs::read_dir(&s.topo.bpffs)?.next().is_none(),
        "pins left under {}",
        s.topo.bpffs.display()
    );
    let list = String::from_utf8(s.topo.vxdp(&["net-list"])?.stdout)?;
    ensure!(
        !list.contains("badtftp"),
        "the network is recorded as started:\n{list}"
    );
    Ok(())
}

/// Bad guest-service values are refused by `net-validate` (and so before
/// `net-create` touches anything), naming the file, element and value.
#[test]
fn bad_service_values_are_refused_naming_the_fault() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vxdp-svc-invalid-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let net = |inner: &str, ip_inner: &str| {
        format!(
            "<network><name>n</name><forward mode='nat'/>{inner}<ip address='192.168.154.1' prefix='24'>{ip_inner}</ip></network>"
        )
    };
    let cases = [
        (
            "fwd.xml",
            net("<dns><forwarder addr='8.8.8'/></dns>", ""),
            "/network/dns/forwarder[1]@addr",
            "8.8.8",
        ),
        (
            "host.xml",
            net(
                "<dns><host ip='192.168.154.9'><hostname>a,b</hostname></host></dns>",
                "",
            ),
            "/network/dns/host[1]/hostname[1]",
            "a,b",
        ),
        (
            "tftp.xml",
            net("", "<tftp root='relative/dir'/>"),
            "/network/ip[1]/tftp@root",
            "relative/dir",
        ),
    ];
    for (file, xml, element, value) in cases {
        let path = dir.join(file);
        fs::write(&path, xml)?;
        let out = std::process::Command::new(vxdp_testkit::vxdp_bin()?)
            .args([
                "--state-dir",
                dir.join("state").to_str().context("path")?,
                "net-validate",
                path.to_str().context("path")?,
            ])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{file} was accepted");
        ensure!(
            err.contains(file) && err.contains(element) && err.contains(value),
            "error for {file} should name the file, {element} and {value}: {err}"
        );
    }
    fs::remove_dir_all(&dir)?;
    Ok(())
}

//! The virsh-like CLI through the real binary: the define/start/list/dumpxml/
//! destroy/undefine cycle of libvirt's default network, autostart, transient
//! networks, and a guest port from a domain <interface> XML whose tap the
//! guest side (this test, like QEMU would) opens and talks through.

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::DEFAULT_XML;
use vxdp_tests::corpus::VxdpHost;

/// `net-list` rows as (name, state, autostart, persistent).
fn rows(list: &str) -> Vec<(String, String, String, String)> {
    list.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[0].into(), f[1].into(), f[2].into(), f[3].into()))
        })
        .collect()
}

fn row(
    name: &str,
    state: &str,
    autostart: &str,
    persistent: &str,
) -> (String, String, String, String) {
    (
        name.into(),
        state.into(),
        autostart.into(),
        persistent.into(),
    )
}

fn bridge_addr(host: &VxdpHost, dev: &str) -> Result<Option<String>> {
    let out = host
        .ns
        .exec_status("ip", &["-br", "addr", "show", "dev", dev])?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string()))
}

#[test]
fn default_network_define_start_list_dumpxml_destroy_undefine() -> Result<()> {
    let host = VxdpHost::new("cli")?;
    let file = host.write("default.xml", DEFAULT_XML)?;
    let file = file.to_str().context("path")?;

    host.vxdp(&["net-define", file])?;
    ensure!(
        rows(&host.vxdp(&["net-list"])?).is_empty(),
        "an inactive network is listed without --all"
    );
    ensure!(
        rows(&host.vxdp(&["net-list", "--all"])?) == vec![row("default", "inactive", "no", "yes")],
        "net-list --all after define"
    );
    ensure!(
        bridge_addr(&host, "virbr0")?.is_none(),
        "net-define must not create the bridge"
    );

    host.vxdp(&["net-start", "default"])?;
    let addr = bridge_addr(&host, "virbr0")?.context("virbr0 does not exist after net-start")?;
    ensure!(
        addr.contains("192.168.122.1/24"),
        "virbr0 lacks the gateway address 192.168.122.1/24: {addr}"
    );
    ensure!(
        rows(&host.vxdp(&["net-list"])?) == vec![row("default", "active", "no", "yes")],
        "net-list after start"
    );

    let dumped = host.vxdp(&["net-dumpxml", "default"])?;
    for want in [
        "<name>default</name>",
        "<uuid>",
        "<bridge name='virbr0' stp='on' delay='0'/>",
        "<mac address='52:54:00:",
        "<range start='192.168.122.2' end='192.168.122.254'/>",
    ] {
        ensure!(dumped.contains(want), "net-dumpxml lacks {want}:\n{dumped}");
    }
    let info = host.vxdp(&["net-info", "default"])?;
    ensure!(
        info.contains("Active:         yes")
            && info.contains("Persistent:     yes")
            && info.contains("Bridge:         virbr0"),
        "net-info:\n{info}"
    );

    host.vxdp(&["net-destroy", "default"])?;
    ensure!(
        bridge_addr(&host, "virbr0")?.is_none(),
        "virbr0 still exists after net-destroy"
    );
    ensure!(
        rows(&host.vxdp(&["net-list", "--all"])?) == vec![row("default", "inactive", "no", "yes")],
        "net-destroy must keep the definition"
    );

    // Autostart starts it; a second autostart run has nothing to do.
    host.vxdp(&["net-autostart", "default"])?;
    ensure!(
        rows(&host.vxdp(&["net-list", "--all"])?) == vec![row("default", "inactive", "yes", "yes")],
        "net-autostart"
    );
    ensure!(
        host.vxdp(&["autostart"])?
            .contains("Network default started"),
        "vxdp autostart did not start default"
    );
    ensure!(
        bridge_addr(&host, "virbr0")?.is_some_and(|a| a.contains("192.168.122.1/24")),
        "autostart did not bring up virbr0"
    );
    ensure!(
        !host.vxdp(&["autostart"])?.contains("started"),
        "autostart restarted a running network"
    );
    host.vxdp(&["net-destroy", "default"])?;
    host.vxdp(&["net-autostart", "default", "--disable"])?;

    host.vxdp(&["net-undefine", "default"])?;
    ensure!(
        rows(&host.vxdp(&["net-list", "--all"])?).is_empty(),
        "net-undefine left the network listed"
    );
    ensure!(
        !host.state_dir.join("networks/default.xml").exists(),
        "net-undefine left the definition file"
    );

    // A transient network: listed while it runs, gone after net-destroy.
    host.vxdp(&["net-create", file])?;
    ensure!(
        rows(&host.vxdp(&["net-list", "--all"])?) == vec![row("default", "active", "no", "no")],
        "net-create"
    );
    let out = host.vxdp_status(&["net-autostart", "default"])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("transient"),
        "autostart of a transient network must be refused"
    );
    host.vxdp(&["net-destroy", "default"])?;
    ensure!(
        rows(&host.vxdp(&["net-list", "--all"])?).is_empty(),
        "a destroyed transient network is still listed"
    );
    ensure!(
        bridge_addr(&host, "virbr0")?.is_none(),
        "virbr0 still exists after destroying the transient network"
    );

    // A valid definition vxdp cannot realize yet (hostdev): defined,
    // refused at start by name.
    let hostdev = host.write(
        "hostdev.xml",
        "<network><name>hostdev</name><forward mode='hostdev'><pf dev='eth1'/></forward></network>",
    )?;
    let hostdev = hostdev.to_str().context("path")?;
    let v = host.vxdp_status(&["net-validate", hostdev])?;
    ensure!(
        !v.status.success()
            && String::from_utf8_lossy(&v.stderr)
                .contains("/network/forward/pf: not supported yet"),
        "net-validate of a hostdev network: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    host.vxdp(&["net-define", hostdev])?;
    let s = host.vxdp_status(&["net-start", "hostdev"])?;
    ensure!(
        !s.status.success() && String::from_utf8_lossy(&s.stderr).contains("not supported yet"),
        "net-start of a hostdev network: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    ensure!(
        bridge_addr(&host, "virbr1")?.is_none() && bridge_addr(&host, "virbr0")?.is_none(),
        "a refused start left a bridge"
    );
    host.vxdp(&["net-undefine", "hostdev"])?;

    // A direct (macvtap-like) network: no bridge; its device is listed
    // instead, a second direct network on that device and a missing
    // device are refused naming the element, and net-destroy takes the
    // device's programs away.
    let direct = host.write(
        "direct.xml",
        "<network><name>direct</name><forward mode='private' dev='eth1'/></network>",
    )?;
    let direct = direct.to_str().context("path")?;
    host.vxdp(&["net-validate", direct])?;
    host.vxdp(&["net-define", direct])?;
    host.vxdp(&["net-start", "direct"])?;
    let list = host.vxdp(&["net-list"])?;
    ensure!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..]
                == [
                    "direct",
                    "active",
                    "no",
                    "yes",
                    "direct-private",
                    "eth1",
                    "-",
                    "-"
                ]),
        "net-list of a direct network:\n{list}"
    );
    // XDP, TC ingress and TC egress on eth1, each a pinned link.
    let eth1 = host.ns.ip(&["-o", "link", "show", "eth1"])?.stdout;
    let eth1 = String::from_utf8(eth1)?
        .split(':')
        .next()
        .context("ifindex")?
        .trim()
        .to_string();
    let mut link_ids = Vec::new();
    for pin in [
        format!("xdp_{eth1}"),
        format!("tc_nic_in_{eth1}"),
        format!("tc_nic_out_{eth1}"),
    ] {
        let path = host.bpffs.join("links").join(&pin);
        let out = vxdp_testkit::run(
            "bpftool",
            &["link", "show", "pinned", path.to_str().context("path")?],
        )
        .with_context(|| format!("direct network: no link {pin} on eth1"))?;
        let id = String::from_utf8(out.stdout)?
            .split(':')
            .next()
            .context("link id")?
            .trim()
            .to_string();
        link_ids.push(id);
    }
    let second = host.write("second.xml", "<network><name>second</name><forward mode='vepa'><interface dev='eth1'/></forward></network>")?;
    let out = host.vxdp_status(&["net-create", second.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("/network/forward/interface[1]@dev")
            && err.contains("eth1")
            && err.contains("'direct'"),
        "a second direct network on eth1: {err}"
    );
    let missing = host.write(
        "missing.xml",
        "<network><name>missing</name><forward mode='bridge' dev='eth9'/></network>",
    )?;
    let out = host.vxdp_status(&["net-create", missing.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("/network/forward@dev")
            && err.contains("eth9 does not exist"),
        "a direct network on a missing device: {err}"
    );
    host.vxdp(&["net-destroy", "direct"])?;
    for id in &link_ids {
        let gone = !std::process::Command::new("bpftool")
            .args(["link", "show", "id", id])
            .output()?
            .status
            .success();
        ensure!(
            gone,
            "link {id} on eth1 survived net-destroy of the direct network"
        );
    }
    host.vxdp(&["net-undefine", "direct"])?;
    Ok(())
}

// ---- a guest on a tap ----------------------------------------------------------------

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUEST_IP: [u8; 4] = [192, 168, 122, 50];
const GATEWAY_IP: [u8; 4] = [192, 168, 122, 1];

/// Attaches to the existing persistent tap `name`, as QEMU does.
fn open_tap(name: &str) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: 0x0002 | 0x1000,
        _pad: [0; 22],
    }; // IFF_TAP | IFF_NO_PI
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // TUNSETIFF
    if unsafe { libc::ioctl(f.as_raw_fd(), 0x4004_54ca, &mut req as *mut IfReq) } < 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    Ok(f)
}

/// Reads one frame, or `None` after `timeout`.
fn read_frame(tap: &mut File, timeout: Duration) -> Result<Option<Vec<u8>>> {
    let mut pfd = libc::pollfd {
        fd: tap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; 2048];
    let n = tap.read(&mut buf)?;
    buf.truncate(n);
    Ok(Some(buf))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp(op: u16, dst_mac: [u8; 6], target_mac: [u8; 6], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target_ip);
    f
}

fn icmp_echo(dst_mac: [u8; 6], seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&GUEST_IP);
    ip.extend_from_slice(&GATEWAY_IP);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// Answers the host's ARP requests for the guest address; true if `f` was one.
fn answer_arp(tap: &mut File, f: &[u8]) -> Result<bool> {
    if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[38..42] == GUEST_IP {
        let mac: [u8; 6] = f[22..28].try_into()?;
        let ip: [u8; 4] = f[28..32].try_into()?;
        tap.write_all(&arp(2, mac, mac, ip))?;
        return Ok(true);
    }
    Ok(false)
}

/// The guest side: resolves the gateway with ARP, then pings it; returns the
/// gateway's MAC, the echo reply's payload and the still open tap.
fn guest_talks_through_tap(name: &str) -> Result<([u8; 6], Vec<u8>, File)> {
    let mut tap = open_tap(name)?;
    // The bridge port passes nothing while STP is listening/learning (~4 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let gw_mac = 'arp: loop {
        ensure!(
            Instant::now() < deadline,
            "no ARP reply for 192.168.122.1 through tap {name} within 20 s"
        );
        tap.write_all(&arp(1, [0xff; 6], [0; 6], GATEWAY_IP))?;
        let until = Instant::now() + Duration::from_millis(500);
        while let Some(f) = read_frame(&mut tap, until.saturating_duration_since(Instant::now()))? {
            if f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 2]
                && f[28..32] == GATEWAY_IP
                && f[0..6] == GUEST_MAC
            {
                break 'arp <[u8; 6]>::try_from(&f[22..28])?;
            }
        }
    };
    let payload = b"vxdp tap test payload";
    for seq in 1..=10u16 {
        tap.write_all(&icmp_echo(gw_mac, seq, payload))?;
        let until = Instant::now() + Duration::from_millis(1000);
        while let Some(f) = read_frame(&mut tap, until.saturating_duration_since(Instant::now()))? {
            if answer_arp(&mut tap, &f)? {
                continue;
            }
            // IPv4, ICMP echo reply from the gateway to us with our id/seq.
            if f.len() >= 42
                && f[12..14] == [0x08, 0x00]
                && f[23] == 1
                && f[26..30] == GATEWAY_IP
                && f[30..34] == GUEST_IP
                && f[34] == 0
                && f[38..40] == [0x12, 0x34]
                && f[40..42] == seq.to_be_bytes()
            {
                ensure!(
                    checksum(&f[14..34]) == 0,
                    "echo reply with a bad IPv4 header checksum"
                );
                ensure!(
                    checksum(&f[34..]) == 0,
                    "echo reply with a bad ICMP checksum"
                );
                return Ok((gw_mac, f[42..].to_vec(), tap));
            }
        }
    }
    bail!("no ICMP echo reply from 192.168.122.1 through tap {name} after 10 requests")
}

#[test]
fn attach_interface_xml_plugs_a_tap_the_guest_can_use() -> Result<()> {
    let host = VxdpHost::new("tap")?;
    let file = host.write("default.xml", DEFAULT_XML)?;
    host.vxdp(&["net-define", file.to_str().context("path")?])?;
    host.vxdp(&["net-start", "default"])?;

    let iface = host.write(
        "iface.xml",
        "<interface type='network'>
  <mac address='52:54:00:12:34:56'/>
  <source network='default'/>
  <model type='virtio'/>
  <target dev='vnet7'/>
</interface>
",
    )?;
    let iface = iface.to_str().context("path")?;
    let out = host.vxdp(&["attach-interface", "--xml", iface])?;
    ensure!(
        out.trim() == "vnet7",
        "attach-interface printed {out:?}, expected the device vnet7"
    );
    let link = String::from_utf8(host.ns.ip(&["-d", "link", "show", "vnet7"])?.stdout)?;
    ensure!(
        link.contains("master virbr0")
            && link.contains("tun")
            && link.contains("fe:54:00:12:34:56"),
        "vnet7 is not a tap in virbr0 with host MAC fe:54:00:12:34:56:\n{link}"
    );
    let list = host.vxdp(&["net-list"])?;
    ensure!(
        list.contains("vnet7"),
        "net-list does not show the port:\n{list}"
    );

    let bridge_mac = String::from_utf8(host.ns.ip(&["-br", "link", "show", "virbr0"])?.stdout)?;
    let (gw_mac, payload, open_tap) = host.ns.enter(|| guest_talks_through_tap("vnet7"))??;
    let gw = gw_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ensure!(
        bridge_mac.contains(&gw),
        "ARP answered with {gw}, not virbr0's MAC: {bridge_mac}"
    );
    ensure!(
        payload == b"vxdp tap test payload",
        "echo reply payload differs: {payload:?}"
    );

    // Detach by the same XML while the "guest" still holds the tap open, as a
    // running hypervisor would: the tap vxdp created is gone all the same.
    ensure!(
        host.vxdp(&["detach-interface", "--xml", iface])?.trim() == "vnet7",
        "detach-interface did not name vnet7"
    );
    ensure!(
        !host
            .ns
            .exec_status("ip", &["link", "show", "vnet7"])?
            .status
            .success(),
        "vnet7 still exists after detach-interface"
    );
    drop(open_tap);

    // No <target dev>: the first free vnetN; no <mac>: a generated 52:54:00 one.
    // A tap vxdp created goes away with net-destroy too.
    let anon = host.write(
        "anon.xml",
        "<interface type='bridge'><source bridge='virbr0'/></interface>",
    )?;
    let dev = host.vxdp(&["attach-interface", "--xml", anon.to_str().context("path")?])?;
    ensure!(dev.trim() == "vnet0", "expected vnet0, got {dev:?}");
    let link = String::from_utf8(host.ns.ip(&["link", "show", "vnet0"])?.stdout)?;
    ensure!(
        link.contains("master virbr0") && link.contains("fe:54:00:"),
        "vnet0:\n{link}"
    );

    // A port naming a network that is not running is refused, and no tap is left.
    let other = host.write(
        "other.xml",
        "<interface type='network'><source network='nosuch'/><target dev='vnet9'/></interface>",
    )?;
    let out = host.vxdp_status(&["attach-interface", "--xml", other.to_str().context("path")?])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nosuch"),
        "attaching to a missing network must fail naming it"
    );
    ensure!(
        !host
            .ns
            .exec_status("ip", &["link", "show", "vnet9"])?
            .status
            .success(),
        "a failed attach left vnet9 behind"
    );

    host.vxdp(&["net-destroy", "default"])?;
    ensure!(
        !host
            .ns
            .exec_status("ip", &["link", "show", "vnet0"])?
            .status
            .success(),
        "vnet0 (created by vxdp) survived net-destroy"
    );
    Ok(())
}

/// Names that would be paths ('..': `networks/...xml`, `dnsmasq/../`) or
/// options ('-x') are refused, in the XML and on the command line, before
/// anything is written.
#[test]
fn names_that_are_paths_or_options_are_refused() -> Result<()> {
    let host = VxdpHost::new("names")?;
    for name in ["..", ".", "-x"] {
        let xml = DEFAULT_XML.replace("<name>default</name>", &format!("<name>{name}</name>"));
        ensure!(
            xml.contains(&format!("<name>{name}</name>")),
            "the default network XML has no <name>default</name>"
        );
        let file = host.write("bad.xml", &xml)?;
        let file = file.to_str().context("path")?;
        for verb in ["net-define", "net-create"] {
            let out = host.vxdp_status(&[verb, file])?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success() && err.contains("/network/name"),
                "`{verb}` of a network named {name:?}: {err}"
            );
        }
        for args in [
            vec!["net-start", "--", name],
            vec!["net-undefine", "--", name],
            vec!["net-destroy", "--", name],
            vec![
                "dhcp-lease-event",
                "--",
                name,
                "add",
                "52:54:00:00:00:01",
                "192.168.122.5",
            ],
            vec!["dnsmasq-supervise", "--", name],
        ] {
            let out = host.vxdp_status(&args)?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success() && err.contains("network name must not"),
                "`vxdp {}`: {err}",
                args.join(" ")
            );
        }
    }
    ensure!(
        !host.state_dir.join("networks").exists()
            || std::fs::read_dir(host.state_dir.join("networks"))?
                .next()
                .is_none(),
        "a refused name left a definition"
    );
    ensure!(
        !host.state_dir.join("dnsmasq").exists(),
        "a refused name left a dnsmasq directory"
    );
    Ok(())
}

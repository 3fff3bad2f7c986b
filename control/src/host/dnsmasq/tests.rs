use std::path::Path;

use super::leases::{format_utc, parse_leases, table};
use super::*;
use crate::xml::{default_network_xml, parse_network};

fn paths() -> Paths {
    Paths::new(Path::new("/var/lib/vxdp"), "net")
}

fn run_as() -> RunAs {
    RunAs {
        user: "dnsmasq".into(),
        group: "nogroup".into(),
    }
}

fn conf(xml: &str) -> String {
    let def = parse_network(xml, "net.xml").expect("valid XML");
    generate(&def, "virbr7", &paths(), &run_as(), "net.xml").expect("config")
}

fn lines(c: &str) -> Vec<&str> {
    c.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn default_network_config_is_libvirts() {
    let c = conf(default_network_xml());
    let l = lines(&c);
    for want in [
        "strict-order",
        "user=dnsmasq",
        "group=nogroup",
        "pid-file=/var/lib/vxdp/dnsmasq/net/dnsmasq.pid",
        "dhcp-leasefile=/var/lib/vxdp/dnsmasq/net/leases",
        "dhcp-script=/var/lib/vxdp/dnsmasq/net/lease-hook",
        "except-interface=lo",
        "bind-dynamic",
        "interface=virbr7",
        "listen-address=192.168.122.1",
        "dhcp-range=192.168.122.2,192.168.122.254,255.255.255.0",
        "dhcp-option=option:router,192.168.122.1",
        "dhcp-option=option:dns-server,192.168.122.1",
        "dhcp-no-override",
        "dhcp-authoritative",
        "dhcp-lease-max=253",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{c}");
    }
    for absent in ["port=0", "enable-tftp", "no-resolv", "enable-ra"] {
        assert!(
            !l.iter().any(|x| x.starts_with(absent)),
            "unexpected {absent:?} in\n{c}"
        );
    }
}

const FULL: &str = "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>lab</name><forward mode='nat'/>
  <domain name='lab.test' localOnly='yes'/>
  <dns forwardPlainNames='no'>
    <forwarder addr='192.0.2.53'/>
    <forwarder domain='corp.test' addr='192.0.2.54'/>
    <forwarder domain='local.test'/>
    <txt name='info' value='hello world'/>
    <srv service='ldap' protocol='tcp' target='ldap.lab.test' port='389' priority='1' weight='10'/>
    <host ip='192.168.140.50'><hostname>files</hostname><hostname>www</hostname></host>
  </dns>
  <ip address='192.168.140.1' prefix='24'>
    <tftp root='/srv/tftp'/>
    <dhcp>
      <range start='192.168.140.100' end='192.168.140.199'><lease expiry='2' unit='hours'/></range>
      <host mac='52:54:00:00:00:01' name='vm1' ip='192.168.140.11'/>
      <host mac='52:54:00:00:00:02' ip='192.168.140.12'><lease expiry='0'/></host>
      <bootp file='pxelinux.0' server='192.168.140.1'/>
    </dhcp>
  </ip>
  <dnsmasq:options><dnsmasq:option value='log-dhcp'/></dnsmasq:options>
</network>";

#[test]
fn every_modelled_element_reaches_the_config() {
    let c = conf(FULL);
    let l = lines(&c);
    for want in [
        "domain-needed",
        "no-resolv",
        "server=192.0.2.53",
        "server=/corp.test/192.0.2.54",
        "server=/local.test/",
        "domain=lab.test",
        "expand-hosts",
        "local=/lab.test/",
        "host-record=files,www,files.lab.test,www.lab.test,192.168.140.50",
        "txt-record=info,\"hello world\"",
        "srv-host=_ldap._tcp.lab.test,ldap.lab.test,389,1,10",
        "dhcp-range=192.168.140.100,192.168.140.199,255.255.255.0,2h",
        "dhcp-host=52:54:00:00:00:01,192.168.140.11,vm1",
        "dhcp-host=52:54:00:00:00:02,192.168.140.12,infinite",
        "enable-tftp",
        "tftp-root=/srv/tftp",
        "dhcp-boot=pxelinux.0,,192.168.140.1",
        "dhcp-lease-max=102",
        "log-dhcp",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{c}");
    }
}

#[test]
fn dns_disabled_means_port_zero() {
    // libvirt refuses forwarders or records inside a disabled <dns>, so
    // there is nothing to forward to.
    let c = conf(
        "<network><name>n</name><forward/><dns enable='no'/>
         <ip address='10.9.0.1' prefix='24'><dhcp><range start='10.9.0.5' end='10.9.0.9'/></dhcp></ip></network>",
    );
    let l = lines(&c);
    assert!(l.contains(&"port=0"), "{c}");
    assert!(!l.iter().any(|x| x.starts_with("server=")), "{c}");
}

#[test]
fn static_hosts_without_range_serve_the_subnet_statically() {
    let c = conf(
        "<network><name>n</name><forward/><ip address='10.9.0.1' prefix='24'><dhcp>
         <host mac='52:54:00:00:00:09' ip='10.9.0.9'/></dhcp></ip></network>",
    );
    assert!(
        lines(&c).contains(&"dhcp-range=10.9.0.0,static,255.255.255.0"),
        "{c}"
    );
}

#[test]
fn ipv6_ranges_get_router_advertisements() {
    let c = conf(
        "<network><name>n</name><ip family='ipv6' address='2001:db8:5::1' prefix='64'><dhcp>
         <range start='2001:db8:5::100' end='2001:db8:5::1ff'/></dhcp></ip></network>",
    );
    let l = lines(&c);
    assert!(
        l.contains(&"dhcp-range=2001:db8:5::100,2001:db8:5::1ff,64"),
        "{c}"
    );
    assert!(l.contains(&"enable-ra"), "{c}");
    assert!(l.contains(&"listen-address=2001:db8:5::1"), "{c}");
}

#[test]
fn networks_without_ip_run_no_dnsmasq() {
    let def = parse_network("<network><name>vi</name></network>", "vi.xml").unwrap();
    assert!(!wanted(&def, "vi.xml").unwrap());
    let def = parse_network(default_network_xml(), "d.xml").unwrap();
    assert!(wanted(&def, "d.xml").unwrap());
    // Nothing to serve: an address, but no DHCP, TFTP or DNS.
    let def = parse_network(
        "<network><name>q</name><dns enable='no'/><ip address='10.1.0.1' prefix='24'/></network>",
        "q.xml",
    )
    .unwrap();
    assert!(!wanted(&def, "q.xml").unwrap());
}

/// Refused naming the element and value: by the XML module's checks or, for
/// what only matters to dnsmasq, by the configuration generator.
fn bad(xml: &str, element: &str, value: Option<&str>) {
    let e = match parse_network(xml, "bad.xml") {
        Err(e) => e,
        Ok(def) => {
            generate(&def, "virbr7", &paths(), &run_as(), "bad.xml").expect_err("must be refused")
        }
    };
    assert_eq!(e.file, "bad.xml");
    assert_eq!(e.element, element, "{e}");
    assert_eq!(e.value.as_deref(), value, "{e}");
}

#[test]
fn bad_values_are_refused_naming_the_element() {
    let n = |inner: &str| {
        format!("<network><name>n</name>{inner}<ip address='10.2.0.1' prefix='24'/></network>")
    };
    bad(
        &n("<dns><forwarder addr='8.8.8'/></dns>"),
        "/network/dns/forwarder[1]@addr",
        Some("8.8.8"),
    );
    bad(
        &n("<dns><forwarder/></dns>"),
        "/network/dns/forwarder[1]",
        None,
    );
    bad(
        &n("<dns enable='maybe'/>"),
        "/network/dns@enable",
        Some("maybe"),
    );
    bad(
        &n("<dns><txt name='a b' value='x'/></dns>"),
        "/network/dns/txt[1]@name",
        Some("a b"),
    );
    bad(
        &n(
            "<dns><host ip='10.2.0.5'><hostname>ok</hostname><hostname>bad,name</hostname></host></dns>",
        ),
        "/network/dns/host[1]/hostname[2]",
        Some("bad,name"),
    );
    bad(
        &n("<dns><host ip='10.2.0.5'/></dns>"),
        "/network/dns/host[1]/hostname",
        Some("10.2.0.5"),
    );
    bad(
        &n("<dns><srv service='ldap' protocol='tcp' target='t' port='70000'/></dns>"),
        "/network/dns/srv[1]@port",
        Some("70000"),
    );
    bad(
        "<network><name>n</name><ip address='10.2.0.1' prefix='24'><tftp root='srv/tftp'/></ip></network>",
        "/network/ip[1]/tftp@root",
        Some("srv/tftp"),
    );
    bad(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><name>n</name><ip address='10.2.0.1' prefix='24'/>\
         <dnsmasq:options><dnsmasq:option value='a&#10;b'/></dnsmasq:options></network>",
        "/network/dnsmasq:options/dnsmasq:option[1]@value",
        Some("a\nb"),
    );
}

#[test]
fn lease_file_lines_are_parsed() {
    let text = "1790000000 52:54:00:aa:bb:cc 192.168.122.57 guest1 01:52:54:00:aa:bb:cc\n\
                0 52:54:00:aa:bb:dd 192.168.122.20 * *\n\
                garbage line\n\
                duid 00:01:00:01:2c:aa:bb:cc:dd:ee:ff:00\n\
                1790000000 1234 2001:db8::20 v6host 00:01:00:01:aa\n";
    let l = parse_leases(text);
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].mac, Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]));
    assert_eq!(l[0].hostname.as_deref(), Some("guest1"));
    assert_eq!(l[1].expiry, 0);
    assert_eq!(l[1].hostname, None);
    assert_eq!(l[2].mac, None);
    assert!(l[2].ip.is_ipv6());
}

#[test]
fn seeded_leases_are_read_back_and_a_guests_hostname_cannot_add_lines() {
    let dir = std::env::temp_dir().join(format!("vxdp-seed-{}", std::process::id()));
    let lease = |mac: u8, ip: &str, host: Option<&str>| leases::LeaseEntry {
        expiry: 1_790_000_000,
        mac: Some([0x52, 0x54, 0, 0, 0, mac]),
        ip: ip.parse().unwrap(),
        hostname: host.map(String::from),
        client_id: None,
    };
    let given = vec![
        lease(1, "192.168.122.10", Some("vm1")),
        // A hostname a guest chose, with a line break and another lease in it.
        lease(
            2,
            "192.168.122.11",
            Some("x\n0 52:54:00:00:00:09 192.168.122.99 evil *"),
        ),
    ];
    let path = leases::seed_leases(&dir, "net", &given).unwrap();
    let back = parse_leases(&std::fs::read_to_string(&path).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!(back[0], given[0]);
    assert_eq!(back[1].ip, given[1].ip);
    assert_eq!(back[1].hostname, None);
}

#[test]
fn lease_table_like_virsh() {
    let def = parse_network(default_network_xml(), "d.xml").unwrap();
    let leases = parse_leases(
        "1790000000 52:54:00:aa:bb:cc 192.168.122.57 guest1 *\n\
         1000 52:54:00:aa:bb:ee 192.168.122.58 expired *\n\
         0 52:54:00:aa:bb:dd 192.168.122.20 * *\n",
    );
    let t = table(&def, &leases, None, 1_700_000_000);
    assert!(t.contains("2026-09-21 14:13:20"), "{t}");
    assert!(
        t.contains("52:54:00:aa:bb:cc")
            && t.contains("ipv4")
            && t.contains("192.168.122.57/24")
            && t.contains("guest1"),
        "{t}"
    );
    assert!(
        t.contains("never") && t.contains("192.168.122.20/24"),
        "{t}"
    );
    assert!(
        !t.contains("expired"),
        "expired leases are not listed:\n{t}"
    );
    let only = table(
        &def,
        &leases,
        Some(&[0x52, 0x54, 0, 0xaa, 0xbb, 0xdd]),
        1_700_000_000,
    );
    assert!(
        only.contains("192.168.122.20") && !only.contains("192.168.122.57"),
        "{only}"
    );
}

#[test]
fn utc_formatting() {
    assert_eq!(format_utc(0), "1970-01-01 00:00:00");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
    assert_eq!(format_utc(1_790_000_000), "2026-09-21 14:13:20");
}

/// dnsmasq itself accepts what we generate (`--test` checks the syntax).
#[test]
fn dnsmasq_accepts_the_generated_config() {
    let dir = std::env::temp_dir().join(format!("vxdp-dnsmasq-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let no_dns = "<network><name>n</name><dns enable='no'/><ip address='10.9.0.1' prefix='24'>\
                  <dhcp><host mac='52:54:00:00:00:09' ip='10.9.0.9'/></dhcp></ip></network>";
    for (i, xml) in [default_network_xml(), FULL, no_dns]
        .into_iter()
        .enumerate()
    {
        let path = dir.join(format!("{i}.conf"));
        std::fs::write(&path, conf(xml)).unwrap();
        let out = std::process::Command::new("dnsmasq")
            .arg("--test")
            .arg(format!("--conf-file={}", path.display()))
            .output()
            .expect("dnsmasq must be installed (package dnsmasq-base; `cargo xtask setup`)");
        assert!(
            out.status.success(),
            "dnsmasq refused {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Definitions an administrator (or whoever can write the XML) could use to
/// smuggle options into dnsmasq: over-long values that dnsmasq's 1,025-byte
/// line buffer would cut (the rest read as a line of its own, e.g. a
/// `dhcp-script` dnsmasq runs as its user on every lease), a ',' that starts
/// another field, a trailing '\' that escapes the closing quote.
fn adversarial_definitions() -> Vec<(String, &'static str)> {
    let inject = "dhcp-script=/tmp/owned";
    let long = |n: usize| "a".repeat(n);
    // `inner` goes into <ip>, `dhcp` into its <dhcp>.
    let ip2 = |inner: &str, dhcp: &str| {
        format!(
            "<network><name>n</name><ip address='10.2.0.1' prefix='24'>{inner}<dhcp><range start='10.2.0.5' end='10.2.0.9'/>{dhcp}</dhcp></ip></network>"
        )
    };
    let ip = |inner: &str| ip2(inner, "");
    let dhcp = |inner: &str| ip2("", inner);
    let dns = |inner: &str| {
        format!(
            "<network><name>n</name><dns>{inner}</dns><ip address='10.2.0.1' prefix='24'/></network>"
        )
    };
    let opts = |v: &str| {
        format!(
            "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><name>n</name><ip address='10.2.0.1' prefix='24'/>\
             <dnsmasq:options><dnsmasq:option value='{v}'/></dnsmasq:options></network>"
        )
    };
    let mut v = vec![
        (
            ip(&format!("<tftp root='/{}{inject}'/>", long(1014))),
            "/network/ip[1]/tftp@root",
        ),
        (
            ip("<tftp root='/srv/tftp,eth0'/>"),
            "/network/ip[1]/tftp@root",
        ),
        (
            ip("<tftp root='/srv/tftp #x'/>"),
            "/network/ip[1]/tftp@root",
        ),
        (ip("<tftp root='/srv/\"tftp'/>"), "/network/ip[1]/tftp@root"),
        (
            ip(&format!("<tftp root='/srv/{}'/>", long(1200))),
            "/network/ip[1]/tftp@root",
        ),
        (
            ip2(
                "<tftp root='/srv/tftp'/>",
                &format!("<bootp file='{}{inject}'/>", long(1014)),
            ),
            "/network/ip[1]/dhcp/bootp@file",
        ),
        (
            dhcp("<bootp file='pxe\\'/>"),
            "/network/ip[1]/dhcp/bootp@file",
        ),
        (
            dhcp("<bootp file='pxe linux.0'/>"),
            "/network/ip[1]/dhcp/bootp@file",
        ),
        (
            dhcp(&format!("<bootp file='{}'/>", long(200))),
            "/network/ip[1]/dhcp/bootp@file",
        ),
        (
            dhcp("<bootp file='pxe&#9;linux'/>"),
            "/network/ip[1]/dhcp/bootp@file",
        ),
        (
            dhcp(&format!(
                "<host mac='52:54:00:00:00:01' name='a{}' ip='10.2.0.7'/>",
                long(1100)
            )),
            "/network/ip[1]/dhcp/host[1]@name",
        ),
        (
            dns(&format!("<txt name='t' value='{}{inject}'/>", long(1010))),
            "/network/dns/txt[1]@value",
        ),
        (
            dns("<txt name='t' value='a&#127;b'/>"),
            "/network/dns/txt[1]@value",
        ),
        (
            dns(&format!(
                "<forwarder domain='{}.test' addr='192.0.2.1'/>",
                long(300)
            )),
            "/network/dns/forwarder[1]@domain",
        ),
        (
            dns(&format!(
                "<srv service='ldap' protocol='tcp' target='{}'/>",
                long(1100)
            )),
            "/network/dns/srv[1]@target",
        ),
        (
            opts(&format!("{}{inject}", long(1020))),
            "/network/dnsmasq:options/dnsmasq:option[1]@value",
        ),
        (
            opts("log-dhcp&#13;"),
            "/network/dnsmasq:options/dnsmasq:option[1]@value",
        ),
        (
            format!(
                "<network><name>n</name><domain name='{}.test'/><ip address='10.2.0.1' prefix='24'/></network>",
                long(300)
            ),
            "/network/domain@name",
        ),
    ];
    // The name is part of dnsmasq's paths: '#' after a space would cut them.
    v.push((
        "<network><name>a #b</name><ip address='10.2.0.1' prefix='24'/></network>".into(),
        "/network/name",
    ));
    // Many names on one host: each is fine, the line is not.
    let names: String = (0..40)
        .map(|i| format!("<hostname>host{i}-{}</hostname>", long(30)))
        .collect();
    v.push((
        dns(&format!("<host ip='10.2.0.5'>{names}</host>")),
        "/network/dns/host[1]",
    ));
    v
}

#[test]
fn values_that_would_change_dnsmasqs_reading_are_refused() {
    for (xml, element) in adversarial_definitions() {
        let e = match parse_network(&xml, "bad.xml") {
            Err(e) => e,
            Ok(def) => match generate(&def, "virbr7", &paths(), &run_as(), "bad.xml") {
                Err(e) => e,
                Ok(c) => panic!("accepted; dnsmasq would read:\n{c}\nfrom\n{xml}"),
            },
        };
        assert_eq!(e.file, "bad.xml");
        assert_eq!(e.element, element, "{e}\nfor\n{xml}");
    }
}

/// What dnsmasq reads a line at a time: at most MAX_LINE bytes with the
/// newline (fgets into its 1,025-byte buffer).
fn assert_lines_fit(c: &str) {
    for l in c.split_inclusive('\n') {
        assert!(l.ends_with('\n'), "unterminated line {l:?}");
        assert!(
            l.len() <= MAX_LINE,
            "a {}-byte line: dnsmasq would cut {l:?}",
            l.len()
        );
        assert!(
            !l[..l.len() - 1].chars().any(char::is_control),
            "control character in {l:?}"
        );
    }
}

/// Values at the edge of what is accepted: every line still fits, nothing
/// the value holds is read as syntax, and dnsmasq accepts the file.
#[test]
fn accepted_edge_values_fit_dnsmasqs_lines() {
    let long = |n: usize| "a".repeat(n);
    let edge = [
        format!(
            "<network><name>n</name><dns><txt name='t' value='ends in a backslash \\'/><txt name='q' value='say \"hi\", # not a comment'/></dns>\
             <ip address='10.2.0.1' prefix='24'><tftp root='/{}'/><dhcp><range start='10.2.0.5' end='10.2.0.9'/>\
             <bootp file='{}'/></dhcp></ip></network>",
            long(1000),
            long(127)
        ),
        format!(
            "<network><name>{}</name><ip address='10.2.0.1' prefix='24'/></network>",
            long(200)
        ),
    ];
    let dir = std::env::temp_dir().join(format!("vxdp-dnsmasq-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, xml) in edge.iter().enumerate() {
        let c = conf(xml);
        assert_lines_fit(&c);
        let path = dir.join(format!("{i}.conf"));
        std::fs::write(&path, &c).unwrap();
        let out = std::process::Command::new("dnsmasq")
            .arg("--test")
            .arg(format!("--conf-file={}", path.display()))
            .output()
            .expect("dnsmasq must be installed (package dnsmasq-base; `cargo xtask setup`)");
        assert!(
            out.status.success(),
            "dnsmasq refused {}: {}\n{c}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let c = conf(&edge[0]);
    assert!(
        lines(&c).contains(&r#"txt-record=t,"ends in a backslash \\""#),
        "{c}"
    );
    assert!(
        lines(&c).contains(&r#"txt-record=q,"say \"hi\", # not a comment""#),
        "{c}"
    );
}

/// The lease hook passes the network's name after `--` and quoted, so
/// `vxdp dhcp-lease-event` gets it as written whatever it holds.
#[test]
fn lease_hook_passes_the_name_as_one_argument_after_double_dash() {
    let dir = std::env::temp_dir().join(format!("vxdp-hook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A stand-in for vxdp that prints its arguments one per line.
    let exe = dir.join("args");
    std::fs::write(
        &exe,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inv = Invocation {
        exe,
        state_dir: "/var/lib/vxdp".into(),
        bpffs: "/sys/fs/bpf/vxdp".into(),
    };
    let hook = dir.join("hook");
    let name = "it's $(a) net";
    std::fs::write(&hook, hook_script(&inv, name)).unwrap();
    let out = std::process::Command::new("sh")
        .arg(&hook)
        .args(["add", "52:54:00:00:00:01", "10.0.0.5"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let args = String::from_utf8(out.stdout).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "--state-dir",
            "/var/lib/vxdp",
            "--bpffs",
            "/sys/fs/bpf/vxdp",
            "dhcp-lease-event",
            "--",
            name,
            "add",
            "52:54:00:00:00:01",
            "10.0.0.5"
        ]
    );
}

#[test]
fn the_networks_mtu_is_forced_on_dhcp_clients() {
    let c = conf(
        "<network><name>n</name><forward mode='nat'/><mtu size='9000'/>
         <ip address='192.168.150.1' prefix='24'><dhcp><range start='192.168.150.10' end='192.168.150.20'/></dhcp></ip>
         </network>",
    );
    assert!(
        lines(&c).contains(&"dhcp-option-force=option:mtu,9000"),
        "{c}"
    );
    let c = conf(default_network_xml());
    assert!(!c.contains("option:mtu"), "no <mtu>, no option:\n{c}");
}

#[test]
fn dhcpv6_hosts_are_served_by_duid() {
    let c = conf(
        "<network><name>n</name><forward mode='nat'/>
         <ip address='192.168.150.1' prefix='24'/>
         <ip family='ipv6' address='2001:db8:5::1' prefix='64'><dhcp>
           <host id='00:03:00:01:52:54:00:00:70:01' name='v6host' ip='2001:db8:5::20'/>
         </dhcp></ip></network>",
    );
    let l = lines(&c);
    for want in [
        "dhcp-range=2001:db8:5::,static,64",
        "dhcp-host=id:00:03:00:01:52:54:00:00:70:01,[2001:db8:5::20],v6host",
        "enable-ra",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{c}");
    }
}

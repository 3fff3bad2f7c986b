use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn v4(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn parse_ok(xml: &str) -> NetworkDef {
    match parse_network(xml, "test.xml") {
        Ok(d) => d,
        Err(e) => panic!("unexpected error: {e}\n{xml}"),
    }
}

/// parse → to_xml → parse must give the same definition, and writing is stable.
fn round_trip(xml: &str) -> NetworkDef {
    let first = parse_ok(xml);
    let text = to_xml(&first);
    let second = match parse_network(&text, "written.xml") {
        Ok(d) => d,
        Err(e) => panic!("re-parse failed: {e}\n{text}"),
    };
    assert_eq!(first, second, "round trip changed the definition:\n{text}");
    assert_eq!(text, to_xml(&second), "writing is not stable");
    first
}

/// Parses a document that must fail, and checks where and on which value.
fn bad(xml: &str, element: &str, value: Option<&str>) -> XmlError {
    let err = match parse_network(xml, "bad.xml") {
        Ok(d) => panic!("expected an error at {element}, parsed {d:?}"),
        Err(e) => e,
    };
    assert_eq!(err.file, "bad.xml");
    assert_eq!(err.element, element, "wrong element in: {err}");
    assert_eq!(err.value.as_deref(), value, "wrong value in: {err}");
    err
}

/// Wraps body elements in a minimal named network.
fn net(body: &str) -> String {
    format!("<network><name>t</name>{body}</network>")
}

#[test]
fn default_network_parses_to_expected_struct() {
    let def = parse_ok(default_network_xml());
    let mut ip = IpDef::new(v4("192.168.122.1"), 24);
    ip.dhcp_ranges
        .push((v4("192.168.122.2"), v4("192.168.122.254")));
    let want = NetworkDef {
        name: "default".into(),
        bridge: BridgeDef {
            name: Some("virbr0".into()),
            stp: true,
            delay: 0,
            ..BridgeDef::default()
        },
        forward: Some(ForwardDef {
            mode: ForwardMode::Nat,
            ..ForwardDef::default()
        }),
        ips: vec![ip],
        ..NetworkDef::default()
    };
    assert_eq!(def, want);
    assert_eq!(def.ips[0].network(), v4("192.168.122.0"));
    assert!(unsupported_features(&def).is_empty());
    round_trip(default_network_xml());
}

#[test]
fn forward_without_mode_is_nat_and_classful_prefix_applies() {
    let def = parse_ok(&net(
        "<forward/><ip address='10.1.2.3'/><ip address='172.16.0.1'/>",
    ));
    assert_eq!(def.forward.map(|f| f.mode), Some(ForwardMode::Nat));
    assert_eq!(def.ips[0].prefix, 8);
    assert_eq!(def.ips[0].network(), v4("10.0.0.0"));
    assert_eq!(def.ips[1].prefix, 16);
    let v6 = parse_ok(&net("<ip family='ipv6' address='fd00::1'/>"));
    assert_eq!(v6.ips[0].prefix, 64);
}

#[test]
fn round_trip_nat_with_address_and_port_ranges() {
    let def = round_trip(
        "<network>
  <name>natnet</name>
  <uuid>3E3FCE45-4F53-4FA7-BB32-11F34168B82B</uuid>
  <forward mode='nat' dev='eth0'>
    <nat ipv6='yes'>
      <address start='203.0.113.10' end='203.0.113.20'/>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr7' stp='off' delay='2'/>
  <mtu size='9000'/>
  <mac address='52:54:00:0A:bc:01'/>
  <domain name='example.test'/>
  <ip address='192.168.50.1' prefix='24'>
    <dhcp>
      <range start='192.168.50.100' end='192.168.50.200'/>
    </dhcp>
  </ip>
</network>",
    );
    assert_eq!(
        def.uuid.as_deref(),
        Some("3e3fce45-4f53-4fa7-bb32-11f34168b82b")
    );
    let nat = def
        .forward
        .as_ref()
        .and_then(|f| f.nat.clone())
        .expect("nat");
    assert_eq!(
        nat.addresses,
        Some((
            Ipv4Addr::new(203, 0, 113, 10),
            Ipv4Addr::new(203, 0, 113, 20)
        ))
    );
    assert_eq!(nat.ports, Some((1024, 65535)));
    assert!(nat.ipv6);
    assert_eq!(def.mac, Some([0x52, 0x54, 0x00, 0x0a, 0xbc, 0x01]));
    assert_eq!(def.mtu, Some(9000));
    assert!(!def.bridge.stp);
    assert_eq!(def.bridge.delay, 2);
}

#[test]
fn round_trip_route_mode() {
    let def = round_trip(
        "<network><name>routed</name><forward mode='route' dev='eth1'/>
         <bridge name='virbr2'/>
         <ip address='10.20.0.1' netmask='255.255.0.0'/>
         <route address='10.30.0.0' prefix='16' gateway='10.20.0.254' metric='5'/></network>",
    );
    assert_eq!(
        def.forward.as_ref().map(|f| f.mode),
        Some(ForwardMode::Route)
    );
    assert_eq!(def.ips[0].prefix, 16);
    assert_eq!(def.routes.len(), 1);
    assert!(
        unsupported_features(&def).is_empty(),
        "static routes are realized"
    );
}

#[test]
fn round_trip_open_mode() {
    let def = round_trip(&net(
        "<forward mode='open'/><ip address='10.9.0.1' prefix='30'/>",
    ));
    assert_eq!(def.forward.map(|f| f.mode), Some(ForwardMode::Open));
}

#[test]
fn round_trip_isolated() {
    let def = round_trip(
        "<network><name>isolated</name><bridge name='virbr9' stp='on' delay='0'/>
         <ip address='192.168.200.1' netmask='255.255.255.0'>
           <dhcp><range start='192.168.200.2' end='192.168.200.254'/></dhcp>
         </ip></network>",
    );
    assert!(def.forward.is_none());
}

#[test]
fn round_trip_very_isolated() {
    let def = round_trip("<network><name>very-isolated</name></network>");
    assert!(def.forward.is_none() && def.ips.is_empty());
    assert_eq!(def.bridge, BridgeDef::default());
}

#[test]
fn round_trip_dual_stack_with_ipv6_dhcp() {
    let def = round_trip(
        "<network><name>dual</name><forward mode='nat'/>
         <ip address='192.168.123.1' netmask='255.255.255.0'/>
         <ip family='ipv6' address='2001:db8:ca2:2::1' prefix='64'>
           <dhcp>
             <range start='2001:db8:ca2:2::100' end='2001:db8:ca2:2::1ff'/>
             <host id='0:4:7e:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63' name='v6host' ip='2001:db8:ca2:2::20'/>
           </dhcp>
         </ip></network>",
    );
    assert!(def.ips[1].address.is_ipv6());
    assert_eq!(
        def.ips[1].network(),
        "2001:db8:ca2:2::".parse::<IpAddr>().expect("v6")
    );
    assert!(
        unsupported_features(&def).is_empty(),
        "DHCPv6 hosts go to dnsmasq"
    );
}

#[test]
fn round_trip_dhcp_hosts_leases_tftp_bootp() {
    let def = round_trip(
        "<network><name>hosts</name><forward/>
         <ip address='192.168.100.1' netmask='255.255.255.0' localPtr='yes'>
           <tftp root='/var/lib/tftp'/>
           <dhcp>
             <range start='192.168.100.128' end='192.168.100.254'><lease expiry='1' unit='hours'/></range>
             <range start='192.168.100.10' end='192.168.100.20'/>
             <host mac='52:54:00:00:00:01' name='vm1' ip='192.168.100.11'/>
             <host mac='52:54:00:00:00:02' ip='192.168.100.12'><lease expiry='0'/></host>
             <host name='named-only' ip='192.168.100.13'/>
             <bootp file='pxelinux.0' server='192.168.100.1'/>
           </dhcp>
         </ip></network>",
    );
    let ip = &def.ips[0];
    assert_eq!(ip.dhcp_hosts.len(), 3);
    assert_eq!(ip.dhcp_hosts[0].mac, Some([0x52, 0x54, 0, 0, 0, 1]));
    assert_eq!(ip.dhcp_hosts[0].name.as_deref(), Some("vm1"));
    assert_eq!(ip.dhcp_hosts[2].ip, Some(v4("192.168.100.13")));
    assert_eq!(ip.range_leases.len(), 2);
    assert_eq!(ip.range_leases[1], None);
    assert_eq!(unsupported_features(&def), ["/network/ip[1]@localPtr"]);
}

#[test]
fn round_trip_bridge_mode() {
    let def = round_trip(&net("<forward mode='bridge'/><bridge name='br0'/>"));
    assert_eq!(
        def.forward.as_ref().map(|f| f.mode),
        Some(ForwardMode::Bridge)
    );
    assert_eq!(def.bridge.name.as_deref(), Some("br0"));
    assert!(
        !to_xml(&def).contains("stp="),
        "direct modes do not write stp"
    );
}

#[test]
fn round_trip_direct_modes_with_devices() {
    round_trip(&net(
        "<forward mode='vepa'><interface dev='eth2'/><interface dev='eth3'/></forward>",
    ));
    round_trip(&net(
        "<forward mode='passthrough'><pf dev='eth4'/></forward>",
    ));
    let def = round_trip(&net(
        "<forward mode='hostdev' managed='yes'><driver name='vfio'/>\
         <address type='pci' domain='0' bus='4' slot='0' function='1'/></forward>",
    ));
    assert_eq!(
        unsupported_features(&def),
        [
            "/network/forward@managed",
            "/network/forward/driver",
            "/network/forward/address"
        ]
    );
}

#[test]
fn round_trip_documented_extras_are_kept() {
    let def = round_trip(
        "<network ipv6='yes' xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>extras</name>
  <title>A &lt;title&gt; &amp; more</title>
  <description>multi
line</description>
  <metadata>
    <app1:foo xmlns:app1='http://app1.org/app1/' app1:attr='x'>bar<inner/></app1:foo>
  </metadata>
  <bridge name='virbr3' zone='trusted' macTableManager='libvirt'/>
  <domain name='lab.test' localOnly='yes'/>
  <dns forwardPlainNames='no'>
    <forwarder addr='8.8.8.8'/>
    <txt name='example' value='text &apos;quoted&apos;'/>
    <host ip='192.168.130.5'><hostname>h1</hostname></host>
  </dns>
  <portgroup name='engineering' default='yes'>
    <bandwidth><inbound average='1000' peak='5000' burst='1024'/></bandwidth>
  </portgroup>
  <port isolated='yes'/>
  <ip address='192.168.130.1' netmask='255.255.255.0'/>
  <dnsmasq:options>
    <dnsmasq:option value='dhcp-option=3'/>
  </dnsmasq:options>
</network>",
    );
    assert_eq!(def.title.as_deref(), Some("A <title> & more"));
    assert_eq!(def.dnsmasq_options, ["dhcp-option=3"]);
    let meta = def.metadata.as_deref().unwrap_or_default();
    assert!(
        meta.contains("<foo xmlns='http://app1.org/app1/'"),
        "{meta}"
    );
    assert_eq!(
        unsupported_features(&def),
        ["/network/bridge@macTableManager"]
    );
    let groups = super::portgroups(&def);
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].name.as_str(), groups[0].default),
        ("engineering", true)
    );
    let inbound = groups[0].bandwidth.and_then(|b| b.inbound).unwrap();
    assert_eq!(
        (inbound.average, inbound.peak, inbound.burst),
        (1000, Some(5000), Some(1024))
    );
}

#[test]
fn portgroup_parts_vxdp_cannot_realize_are_listed() {
    let def = parse_network(
        &net("<forward mode='bridge'/><bridge name='br9'/><virtualport type='openvswitch'/>\
              <portgroup name='a'><bandwidth><outbound average='5'/></bandwidth></portgroup>\
              <portgroup name='b' trustGuestRxFilters='yes'><vlan><tag id='7'/></vlan><virtualport type='openvswitch'/></portgroup>"),
        "t.xml",
    )
    .unwrap();
    // <virtualport> and <vlan> are port settings (libvirt applies them when
    // a domain's interface is plugged): the network starts, its ports are
    // refused.
    assert_eq!(
        unsupported_features(&def),
        ["/network/portgroup[2]@trustGuestRxFilters"]
    );
    assert_eq!(
        super::port_needs(&def, Some("a")).map(|(p, _)| p),
        Some("/network/virtualport".to_string())
    );
    let own = parse_network(
        &net("<forward mode='bridge'/><bridge name='br9'/>\
              <portgroup name='a' default='yes'/>\
              <portgroup name='b'><vlan><tag id='7'/></vlan><virtualport type='openvswitch'/></portgroup>"),
        "t.xml",
    )
    .unwrap();
    assert_eq!(
        super::port_needs(&own, None),
        None,
        "the default group needs nothing"
    );
    assert_eq!(super::port_needs(&own, Some("a")), None);
    assert_eq!(
        super::port_needs(&own, Some("b")).map(|(p, _)| p),
        Some("/network/portgroup[2]/virtualport".to_string())
    );
    let groups = super::portgroups(&def);
    assert_eq!(
        groups[0]
            .bandwidth
            .and_then(|b| b.outbound)
            .map(|r| r.average),
        Some(5)
    );
    assert!(groups[1].bandwidth.is_none() && groups[1].vlan && groups[1].virtualport);
}

#[test]
fn error_display_names_file_element_and_value() {
    let err = bad(
        &net("<forward mode='nate'/>"),
        "/network/forward@mode",
        Some("nate"),
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("bad.xml: /network/forward@mode: unknown forward mode"),
        "{msg}"
    );
    assert!(msg.ends_with("(value 'nate')"), "{msg}");
}

/// A network name names files and directories (`networks/NAME.xml`,
/// `dnsmasq/NAME/`) and is passed to programs: '..' would make the dnsmasq
/// directory the state directory itself, '-x' an option.
#[test]
fn names_that_are_paths_or_options_are_refused() {
    let long = "n".repeat(MAX_NETWORK_NAME + 1);
    for name in [
        ".",
        "..",
        "-x",
        "--state-dir=/tmp",
        "a/b",
        "a\u{7f}b",
        long.as_str(),
    ] {
        let xml = format!("<network><name>{name}</name></network>");
        let e = parse_network(&xml, "bad.xml").expect_err(name);
        assert_eq!(
            (e.element.as_str(), e.value.as_deref()),
            ("/network/name", Some(name)),
            "{e}"
        );
        assert!(network_name_problem(name).is_some(), "{name}");
    }
    for name in [
        "default",
        "a.b",
        ".hidden-is-fine",
        "x-",
        "n".repeat(MAX_NETWORK_NAME).as_str(),
        "with space",
    ] {
        let xml = format!("<network><name>{name}</name></network>");
        assert_eq!(parse_network(&xml, "ok.xml").expect(name).name, name);
    }
}

#[test]
fn invalid_documents_are_refused_with_element_and_value() {
    // structure
    bad("<network><name>x</name>", "/", None);
    bad("<netwrk><name>x</name></netwrk>", "/netwrk", None);
    bad(
        "<network><uuid>3e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid></network>",
        "/network/name",
        None,
    );
    bad(
        "<network><name>a/b</name></network>",
        "/network/name",
        Some("a/b"),
    );
    bad(
        "<network><name>   </name></network>",
        "/network/name",
        Some("   "),
    );
    bad(&net("<frobnicate/>"), "/network/frobnicate", None);
    bad(
        &net("<bridge name='virbr0' colour='blue'/>"),
        "/network/bridge@colour",
        Some("blue"),
    );
    bad(
        &net("<uuid>not-a-uuid</uuid>"),
        "/network/uuid",
        Some("not-a-uuid"),
    );
    bad(&net("<name>again</name>"), "/network/name", None);
    // bridge / mac / mtu
    bad(
        &net("<bridge name='averyveryverylongbr'/>"),
        "/network/bridge@name",
        Some("averyveryverylongbr"),
    );
    bad(
        &net("<bridge name='br 0'/>"),
        "/network/bridge@name",
        Some("br 0"),
    );
    bad(
        &net("<bridge stp='yes'/>"),
        "/network/bridge@stp",
        Some("yes"),
    );
    bad(
        &net("<bridge delay='4294967296'/>"),
        "/network/bridge@delay",
        Some("4294967296"),
    );
    bad(
        &net("<bridge delay=' 1'/>"),
        "/network/bridge@delay",
        Some(" 1"),
    );
    bad(
        &net("<mac address='01:00:5e:00:00:01'/>"),
        "/network/mac@address",
        Some("01:00:5e:00:00:01"),
    );
    bad(
        &net("<mac address='52:54:00:1:2:3'/>"),
        "/network/mac@address",
        Some("52:54:00:1:2:3"),
    );
    bad(
        &net("<mtu size='70000'/>"),
        "/network/mtu@size",
        Some("70000"),
    );
    // forward / nat
    bad(
        &net("<forward mode=' nat'/>"),
        "/network/forward@mode",
        Some(" nat"),
    );
    bad(
        &net("<forward mode='route'><nat/></forward>"),
        "/network/forward/nat",
        Some("route"),
    );
    bad(
        &net("<forward><nat><address start='10.0.0.9' end='10.0.0.1'/></nat></forward>"),
        "/network/forward/nat/address@end",
        Some("10.0.0.1"),
    );
    bad(
        &net("<forward><nat><address start='fd00::1' end='fd00::2'/></nat></forward>"),
        "/network/forward/nat/address@start",
        Some("fd00::1"),
    );
    bad(
        &net("<forward><nat><port start='0' end='10'/></nat></forward>"),
        "/network/forward/nat/port@start",
        Some("0"),
    );
    bad(
        &net("<forward><nat><port start='1024' end='65536'/></nat></forward>"),
        "/network/forward/nat/port@end",
        Some("65536"),
    );
    bad(
        &net("<forward><nat ipv6='true'/></forward>"),
        "/network/forward/nat@ipv6",
        Some("true"),
    );
    // ip
    bad(
        &net("<ip netmask='255.255.255.0'/>"),
        "/network/ip[1]@address",
        None,
    );
    bad(
        &net("<ip address='192.168.1.300' prefix='24'/>"),
        "/network/ip[1]@address",
        Some("192.168.1.300"),
    );
    bad(
        &net("<ip address='10.0.0.1' netmask='255.0.255.0'/>"),
        "/network/ip[1]@netmask",
        Some("255.0.255.0"),
    );
    bad(
        &net("<ip address='10.0.0.1' netmask='255.0.0.0' prefix='8'/>"),
        "/network/ip[1]@prefix",
        Some("8"),
    );
    bad(
        &net("<ip address='10.0.0.1' prefix='33'/>"),
        "/network/ip[1]@prefix",
        Some("33"),
    );
    bad(
        &net("<ip family='ipv6' address='fd00::1' prefix='129'/>"),
        "/network/ip[1]@prefix",
        Some("129"),
    );
    bad(
        &net("<ip family='ipv6' address='fd00::1' netmask='255.255.255.0'/>"),
        "/network/ip[1]@netmask",
        Some("255.255.255.0"),
    );
    bad(
        &net("<ip family='ipv6' address='10.0.0.1' prefix='8'/>"),
        "/network/ip[1]@family",
        Some("ipv6"),
    );
    bad(
        &net("<ip address='224.0.0.1'/>"),
        "/network/ip[1]@address",
        Some("224.0.0.1"),
    );
    // dhcp
    let dhcp = |inner: &str| {
        net(&format!(
            "<ip address='192.168.1.1' prefix='24'><dhcp>{inner}</dhcp></ip>"
        ))
    };
    bad(
        &dhcp("<range start='192.168.1.10' end='192.168.2.10'/>"),
        "/network/ip[1]/dhcp/range[1]@end",
        Some("192.168.2.10"),
    );
    bad(
        &dhcp(
            "<range start='192.168.1.2' end='192.168.1.9'/><range start='192.168.1.50' end='192.168.1.40'/>",
        ),
        "/network/ip[1]/dhcp/range[2]@end",
        Some("192.168.1.40"),
    );
    bad(
        &dhcp("<range start='192.168.1.0' end='192.168.1.9'/>"),
        "/network/ip[1]/dhcp/range[1]@start",
        Some("192.168.1.0"),
    );
    bad(
        &dhcp("<range start='192.168.1.2' end='192.168.1.255'/>"),
        "/network/ip[1]/dhcp/range[1]@end",
        Some("192.168.1.255"),
    );
    bad(
        &dhcp("<host mac='52:54:00:00:00:01' ip='10.0.0.5'/>"),
        "/network/ip[1]/dhcp/host[1]@ip",
        Some("10.0.0.5"),
    );
    bad(
        &dhcp("<host mac='zz:54:00:00:00:01' ip='192.168.1.5'/>"),
        "/network/ip[1]/dhcp/host[1]@mac",
        Some("zz:54:00:00:00:01"),
    );
    bad(
        &dhcp("<host ip='192.168.1.5'/>"),
        "/network/ip[1]/dhcp/host[1]",
        Some("192.168.1.5"),
    );
    bad(
        &dhcp("<range start='192.168.1.2' end='192.168.1.9'><lease expiry='-1'/></range>"),
        "/network/ip[1]/dhcp/range[1]/lease@expiry",
        Some("-1"),
    );
    bad(&dhcp("<pool/>"), "/network/ip[1]/dhcp/pool", None);
    bad(
        &net(
            "<ip address='192.168.1.1' prefix='24'><dhcp><range start='192.168.1.2' end='192.168.1.9'/></dhcp></ip>\
             <ip address='192.168.2.1' prefix='24'><dhcp><range start='192.168.2.2' end='192.168.2.9'/></dhcp></ip>",
        ),
        "/network/ip[2]/dhcp",
        Some("192.168.2.1"),
    );
    // modes that do not take addressing
    bad(
        &net("<forward mode='bridge'/><bridge name='br0'/><ip address='192.168.1.1' prefix='24'/>"),
        "/network/ip[1]",
        Some("192.168.1.1"),
    );
    bad(
        &net("<forward mode='private' dev='eth0'/><bridge name='br0'/>"),
        "/network/bridge@name",
        Some("br0"),
    );
    bad(
        &net("<forward mode='bridge'/>"),
        "/network/forward@mode",
        Some("bridge"),
    );
    // routes
    bad(
        &net(
            "<ip address='10.0.0.1' prefix='24'/><route address='10.5.0.0' prefix='16' gateway='10.9.0.1'/>",
        ),
        "/network/route[1]@gateway",
        Some("10.9.0.1"),
    );
    bad(
        &net(
            "<ip address='10.0.0.1' prefix='24'/><route address='10.5.0.1' prefix='16' gateway='10.0.0.2'/>",
        ),
        "/network/route[1]@address",
        Some("10.5.0.1"),
    );
    // kept-verbatim parts are still schema-checked
    bad(&net("<dns><bogus/></dns>"), "/network/dns/bogus", None);
    bad(
        &net("<portgroup name='pg'><vlan><tag id='1' colour='red'/></vlan></portgroup>"),
        "/network/portgroup[1]/vlan/tag@colour",
        Some("red"),
    );
    bad(
        &net("<foo:bar xmlns:foo='urn:x'/>"),
        "/network/foo:bar",
        None,
    );
}

#[test]
fn unsupported_features_is_empty_for_plain_networks() {
    let def = parse_ok(&net(
        "<forward mode='nat'/><ip address='10.9.0.1' prefix='24'/><bridge name='virbr5'/><mac address='52:54:00:aa:bb:cc'/>\
         <domain name='plain.test'/><mtu size='1400'/>\
         <title>t</title><description>d</description><metadata/>",
    ));
    assert!(unsupported_features(&def).is_empty());
}

#[test]
fn hand_built_definition_round_trips() {
    let mut ip = IpDef::new(v4("10.10.0.1"), 24);
    ip.dhcp_ranges.push((v4("10.10.0.10"), v4("10.10.0.99")));
    ip.dhcp_hosts.push(DhcpHost {
        mac: Some([0x52, 0x54, 0, 1, 2, 3]),
        name: Some("web".into()),
        ip: Some(v4("10.10.0.5")),
        ..DhcpHost::default()
    });
    let def = NetworkDef {
        name: "built & <escaped> 'name'".into(),
        forward: Some(ForwardDef {
            mode: ForwardMode::Nat,
            nat: Some(NatDef {
                ports: Some((2000, 3000)),
                ..NatDef::default()
            }),
            ..ForwardDef::default()
        }),
        ips: vec![ip],
        ..NetworkDef::default()
    };
    let back = parse_network(&to_xml(&def), "built.xml");
    assert_eq!(back.as_ref(), Ok(&def));
}

#[test]
fn dns_is_typed_and_round_trips() {
    let def = round_trip(&net(
        "<dns enable='yes' forwardPlainNames='no'>
           <forwarder addr='192.0.2.53'/>
           <forwarder domain='example.test' addr='2001:db8::53'/>
           <forwarder domain='local.test'/>
           <txt name='example' value='some text'/>
           <srv service='ldap' protocol='tcp' domain='example.test' target='ldap.example.test' port='389' priority='10' weight='20'/>
           <srv service='sip' protocol='udp'/>
           <host ip='192.168.122.10'><hostname>db</hostname><hostname>db.example.test</hostname></host>
         </dns>",
    ));
    let dns = def.dns.expect("dns parsed");
    assert_eq!(dns.enable, Some(true));
    assert_eq!(dns.forward_plain_names, Some(false));
    assert_eq!(dns.forwarders.len(), 3);
    assert_eq!(
        dns.forwarders[2],
        super::DnsForwarder {
            addr: None,
            domain: Some("local.test".into())
        }
    );
    assert_eq!(dns.srvs[0].port, Some(389));
    assert_eq!(dns.srvs[1].target, None);
    assert_eq!(dns.hosts[0].hostnames, ["db", "db.example.test"]);
    assert_eq!(dns.txts[0].value, "some text");
}

#[test]
fn dns_errors_name_the_record() {
    bad(
        &net("<dns><forwarder/></dns>"),
        "/network/dns/forwarder[1]",
        None,
    );
    bad(
        &net("<dns><forwarder addr='192.0.2.300'/></dns>"),
        "/network/dns/forwarder[1]@addr",
        Some("192.0.2.300"),
    );
    bad(
        &net("<dns><txt name='a b' value='x'/></dns>"),
        "/network/dns/txt[1]@name",
        Some("a b"),
    );
    bad(
        &net("<dns><txt name='a'/></dns>"),
        "/network/dns/txt[1]@value",
        None,
    );
    bad(
        &net("<dns><srv protocol='tcp'/></dns>"),
        "/network/dns/srv[1]@service",
        None,
    );
    bad(
        &net("<dns><srv service='ldap' protocol='sctp'/></dns>"),
        "/network/dns/srv[1]@protocol",
        Some("sctp"),
    );
    bad(
        &net("<dns><srv service='ldap' protocol='tcp' port='389'/></dns>"),
        "/network/dns/srv[1]@port",
        Some("389"),
    );
    bad(
        &net("<dns><srv service='ldap' protocol='tcp' target='t' port='70000'/></dns>"),
        "/network/dns/srv[1]@port",
        Some("70000"),
    );
    bad(
        &net("<dns><host ip='192.168.1.1'/></dns>"),
        "/network/dns/host[1]/hostname",
        Some("192.168.1.1"),
    );
    bad(
        &net("<dns><host><hostname>a</hostname></host></dns>"),
        "/network/dns/host[1]@ip",
        None,
    );
    bad(
        &net("<dns enable='no'><forwarder addr='192.0.2.1'/></dns>"),
        "/network/dns@enable",
        Some("no"),
    );
    bad(
        &net("<dns enable='maybe'/>"),
        "/network/dns@enable",
        Some("maybe"),
    );
}

#[test]
fn bandwidth_vlan_portgroup_values_are_checked_like_libvirt() {
    bad(
        &net(
            "<forward/><ip address='10.9.0.1' prefix='24'/><bandwidth><inbound average='0'/></bandwidth>",
        ),
        "/network/bandwidth/inbound@average",
        Some("0"),
    );
    bad(
        &net(
            "<forward/><ip address='10.9.0.1' prefix='24'/><bandwidth><inbound peak='10'/></bandwidth>",
        ),
        "/network/bandwidth/inbound@average",
        None,
    );
    bad(
        &net(
            "<forward/><ip address='10.9.0.1' prefix='24'/><bandwidth><inbound average='10' floor='5'/></bandwidth>",
        ),
        "/network/bandwidth/inbound@floor",
        Some("5"),
    );
    bad(
        &net(
            "<forward/><ip address='10.9.0.1' prefix='24'/><portgroup name='a'><bandwidth><outbound average='10' floor='5'/></bandwidth></portgroup>",
        ),
        "/network/portgroup[1]/bandwidth/outbound@floor",
        Some("5"),
    );
    bad(
        &net(
            "<forward/><ip address='10.9.0.1' prefix='24'/><portgroup name='a'/><portgroup name='a'/>",
        ),
        "/network/portgroup[2]@name",
        Some("a"),
    );
    bad(
        &net(
            "<forward/><ip address='10.9.0.1' prefix='24'/><portgroup name='a' default='yes'/><portgroup name='b' default='yes'/>",
        ),
        "/network/portgroup[2]@default",
        Some("yes"),
    );
    bad(
        &net("<forward/><ip address='10.9.0.1' prefix='24'/><vlan><tag id='42'/></vlan>"),
        "/network/vlan",
        Some("nat"),
    );
    bad(
        &net("<forward mode='bridge'/><bridge name='br0'/><vlan><tag id='4096'/></vlan>"),
        "/network/vlan/tag[1]@id",
        Some("4096"),
    );
    bad(
        &net("<forward mode='bridge'/><bridge name='br0'/><virtualport type='magic'/>"),
        "/network/virtualport@type",
        Some("magic"),
    );
    parse_ok(&net(
        "<forward mode='bridge'/><bridge name='br0'/><virtualport type='openvswitch'/><vlan trunk='yes'><tag id='42' nativeMode='untagged'/><tag id='47'/></vlan>",
    ));
}

//! The check table: every check libvirt 9.0 makes when a network is defined
//! (the RelaxNG schema `network.rng` with `networkcommon.rng` and
//! `basictypes.rng`, the parsers in `src/conf/network_conf.c`,
//! `networkcommon_conf.c`, `netdev_bandwidth_conf.c`, `netdev_vlan_conf.c`,
//! `netdev_vport_profile_conf.c`, and the network driver's `networkValidate`
//! in `src/network/bridge_driver.c`), each with a minimal definition that
//! trips it and the element or attribute vxdp's refusal must name.
//!
//! [`vxdp_refuses_what_each_libvirt_check_refuses`] runs every row through
//! `vxdp net-define`; [`libvirt_answers_each_row_as_the_table_says`] runs the
//! same documents through `virsh net-define --validate` on a private libvirtd
//! 9.0, so a row cannot claim a check libvirt does not make. Where vxdp is
//! deliberately stricter or looser the row says so and why (the same list is
//! in docs/libvirt-xml.md).

use anyhow::{Context, Result, ensure};
use vxdp_tests::{
    corpus::{VxdpHost, network_name},
    libvirt::Libvirtd,
};

/// How vxdp's answer relates to libvirt's for a row.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Both refuse at define; vxdp names `path`.
    Same,
    /// vxdp refuses naming `path`; libvirt defines it (the reason).
    Stricter(&'static str),
    /// libvirt refuses; vxdp defines it (the reason).
    Looser(&'static str),
    /// Both define it: a corner where a check does *not* apply (the reason).
    Accepted(&'static str),
}

struct Check {
    /// libvirt's function (or schema define) and the check, in words.
    libvirt: &'static str,
    /// A whole definition that trips the check and nothing else.
    xml: String,
    /// The element or attribute path vxdp's error names.
    path: &'static str,
    kind: Kind,
}

/// `<network>` named `t` with `body`, and `attrs` on the root.
fn net_a(attrs: &str, body: &str) -> String {
    format!("<network{attrs}><name>t</name>{body}</network>")
}

fn net(body: &str) -> String {
    net_a("", body)
}

/// A NAT network (bridge named, so no generated name is needed) plus `extra`.
fn nat(extra: &str) -> String {
    net(&format!(
        "<forward mode='nat'/><ip address='192.168.50.1' prefix='24'/>{extra}"
    ))
}

/// An `<ip>` of 192.168.50.1/24 holding `inner`, on an isolated network.
fn ip(inner: &str) -> String {
    net(&format!(
        "<ip address='192.168.50.1' prefix='24'>{inner}</ip>"
    ))
}

/// An IPv6 `<ip>` of fd00:50::1/64 holding `inner`.
fn ip6(inner: &str) -> String {
    net(&format!(
        "<ip family='ipv6' address='fd00:50::1' prefix='64'>{inner}</ip>"
    ))
}

fn dhcp(inner: &str) -> String {
    ip(&format!("<dhcp>{inner}</dhcp>"))
}

fn dns(inner: &str) -> String {
    nat(&format!("<dns>{inner}</dns>"))
}

/// A route of the NAT network.
fn route(attrs: &str) -> String {
    nat(&format!("<route {attrs}/>"))
}

/// A vepa network on eth1 plus `extra`.
fn vepa(extra: &str) -> String {
    net(&format!(
        "<forward mode='vepa'><interface dev='eth1'/></forward>{extra}"
    ))
}

fn checks() -> Vec<Check> {
    use Kind::*;
    let c = |libvirt, xml: String, path, kind| Check {
        libvirt,
        xml,
        path,
        kind,
    };
    vec![
        // ---- network.rng: structure ------------------------------------------
        c(
            "network.rng: <network> is the root element",
            "<net><name>t</name></net>".into(),
            "/net",
            Same,
        ),
        c(
            "network.rng: unknown element",
            nat("<firewall/>"),
            "/network/firewall",
            Same,
        ),
        c(
            "network.rng: unknown attribute",
            net_a(" foo='1'", ""),
            "/network@foo",
            Same,
        ),
        c(
            "network.rng: <bridge> at most once",
            net("<bridge name='vb1'/><bridge name='vb2'/>"),
            "/network/bridge",
            Same,
        ),
        c(
            "network.rng: text inside <forward>",
            net("<forward mode='nat'>x</forward><ip address='192.168.50.1' prefix='24'/>"),
            "/network/forward",
            Same,
        ),
        c(
            "network.rng: connections is an unsignedInt",
            net_a(" connections='x'", ""),
            "/network@connections",
            Same,
        ),
        c(
            "network.rng: ipv6 is yes/no (virNetworkDefParseXML: Invalid ipv6 setting)",
            net_a(" ipv6='on'", ""),
            "/network@ipv6",
            Same,
        ),
        c(
            "network.rng: trustGuestRxFilters is yes/no",
            net_a(" trustGuestRxFilters='1'", ""),
            "/network@trustGuestRxFilters",
            Same,
        ),
        c(
            "network.rng: uuid pattern (virNetworkDefParseXML: malformed uuid element)",
            net("<uuid>1234</uuid>"),
            "/network/uuid",
            Same,
        ),
        c(
            "network.rng: bridge name is a deviceName",
            net("<bridge name='vb%d'/>"),
            "/network/bridge@name",
            Same,
        ),
        c(
            "network.rng: bridge zone is a zoneName",
            net("<bridge name='vb1' zone='a.b'/>"),
            "/network/bridge@zone",
            Same,
        ),
        c(
            "network.rng: bridge stp is on/off",
            net("<bridge name='vb1' stp='yes'/>"),
            "/network/bridge@stp",
            Same,
        ),
        c(
            "network.rng: bridge delay is an unsignedLong (virNetworkDefParseXML: Invalid delay value)",
            net("<bridge name='vb1' delay='-1'/>"),
            "/network/bridge@delay",
            Same,
        ),
        c(
            "network.rng: macTableManager is kernel/libvirt (Invalid macTableManager setting)",
            net("<bridge name='vb1' macTableManager='none'/>"),
            "/network/bridge@macTableManager",
            Same,
        ),
        c(
            "network.rng: mac is a uniMacAddr (Invalid bridge mac address)",
            net("<mac address='52:54:00:00:01'/>"),
            "/network/mac@address",
            Same,
        ),
        c(
            "network.rng: mac is unicast (Invalid multicast bridge mac address)",
            net("<mac address='01:00:5e:00:00:01'/>"),
            "/network/mac@address",
            Same,
        ),
        c(
            "network.rng: mtu size is an unsignedShort (Invalid mtu size)",
            nat("<mtu size='65536'/>"),
            "/network/mtu@size",
            Same,
        ),
        c(
            "network.rng: domain name is a dnsName",
            nat("<domain name='a_b'/>"),
            "/network/domain@name",
            Same,
        ),
        c(
            "network.rng: domain localOnly is yes/no",
            nat("<domain name='ex' localOnly='1'/>"),
            "/network/domain@localOnly",
            Same,
        ),
        c(
            "network.rng: port isolated is yes/no (virNetworkPortOptionsParseXML)",
            net("<port isolated='1'/>"),
            "/network/port@isolated",
            Same,
        ),
        c(
            "network.rng: forward mode values (virNetworkForwardDefParseXML: unknown forwarding type)",
            net("<forward mode='nta'/>"),
            "/network/forward@mode",
            Same,
        ),
        c(
            "network.rng: forward managed is yes/no",
            net("<forward mode='hostdev' managed='1'/>"),
            "/network/forward@managed",
            Same,
        ),
        c(
            "network.rng: forward lists <interface> or <address>, not both",
            net(
                "<forward mode='hostdev'><interface dev='eth1'/><address type='pci' domain='0' bus='1' slot='0' function='1'/></forward>",
            ),
            "/network/forward/address",
            Same,
        ),
        c(
            "network.rng: forward driver name is kvm/vfio (Unknown forward <driver name>)",
            net(
                "<forward mode='hostdev'><driver name='xen'/><address type='pci' domain='0' bus='1' slot='0' function='1'/></forward>",
            ),
            "/network/forward/driver@name",
            Same,
        ),
        c(
            "network.rng: NAT address start is an ipv4Addr (Bad ipv4 start address)",
            net(
                "<forward mode='nat'><nat><address start='fd00::1' end='192.0.2.9'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/address@start",
            Same,
        ),
        c(
            "network.rng: NAT port start is a port (Missing or invalid 'start' attribute in <port>)",
            net(
                "<forward mode='nat'><nat><port start='0' end='2000'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/port@start",
            Same,
        ),
        c(
            "network.rng: ip address is an ipAddr (virNetworkIPDefParseXML: Invalid address)",
            net("<ip address='10.0.0.256' prefix='24'/>"),
            "/network/ip[1]@address",
            Same,
        ),
        c(
            "network.rng: ip netmask or prefix, not both (cannot have both a prefix and a netmask)",
            net("<ip address='192.168.50.1' netmask='255.255.255.0' prefix='24'/>"),
            "/network/ip[1]@prefix",
            Same,
        ),
        c(
            "network.rng: ip family is ipv4/ipv6 (Unrecognized family)",
            net("<ip family='inet' address='192.168.50.1' prefix='24'/>"),
            "/network/ip[1]@family",
            Same,
        ),
        c(
            "network.rng: ip localPtr is yes/no",
            net("<ip address='192.168.50.1' prefix='24' localPtr='1'/>"),
            "/network/ip[1]@localPtr",
            Same,
        ),
        c(
            "network.rng: <tftp> needs root",
            ip("<tftp/>"),
            "/network/ip[1]/tftp@root",
            Same,
        ),
        c(
            "network.rng: dhcp host has mac or id, not both",
            ip6(
                "<dhcp><host mac='52:54:00:00:00:01' id='00:04:00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f' ip='fd00:50::9'/></dhcp>",
            ),
            "/network/ip[1]/dhcp/host[1]@mac",
            Same,
        ),
        c(
            "network.rng: dhcp host id is a DUID (type 1-4 patterns)",
            ip6("<dhcp><host id='00:09:01' ip='fd00:50::9'/></dhcp>"),
            "/network/ip[1]/dhcp/host[1]@id",
            Same,
        ),
        c(
            "network.rng: bootp needs file",
            dhcp("<bootp server='192.168.50.2'/>"),
            "/network/ip[1]/dhcp/bootp@file",
            Same,
        ),
        c(
            "network.rng: bootp file is a filePath (non-empty)",
            dhcp("<bootp file=''/>"),
            "/network/ip[1]/dhcp/bootp@file",
            Same,
        ),
        c(
            "network.rng: lease expiry is an unsignedLong",
            dhcp("<range start='192.168.50.2' end='192.168.50.9'><lease expiry='+5'/></range>"),
            "/network/ip[1]/dhcp/range[1]/lease@expiry",
            Same,
        ),
        c(
            "network.rng: lease unit is seconds/minutes/hours",
            dhcp(
                "<range start='192.168.50.2' end='192.168.50.9'><lease expiry='5' unit='days'/></range>",
            ),
            "/network/ip[1]/dhcp/range[1]/lease@unit",
            Same,
        ),
        c(
            "network.rng: route metric is an unsignedInt",
            route("address='10.1.0.0' prefix='16' gateway='192.168.50.2' metric='x'"),
            "/network/route[1]@metric",
            Same,
        ),
        c(
            "network.rng: txt name is a dnsName (virNetworkDNSTxtDefParseXML: prohibited character)",
            dns("<txt name='a,b' value='v'/>"),
            "/network/dns/txt[1]@name",
            Same,
        ),
        c(
            "network.rng: srv protocol is tcp/udp",
            dns("<srv service='ldap' protocol='sctp'/>"),
            "/network/dns/srv[1]@protocol",
            Same,
        ),
        c(
            "network.rng: srv priority is an unsignedShort (Invalid DNS SRV priority)",
            dns("<srv service='ldap' protocol='tcp' target='h' port='1' priority='65536'/>"),
            "/network/dns/srv[1]@priority",
            Same,
        ),
        c(
            "network.rng: dns host ip is an ipAddr (Invalid IP address in DNS HOST record)",
            dns("<host ip='x'><hostname>a</hostname></host>"),
            "/network/dns/host[1]@ip",
            Same,
        ),
        c(
            "network.rng: dns forwarder addr is an ipAddr (Invalid forwarder IP address)",
            dns("<forwarder addr='1.2.3'/>"),
            "/network/dns/forwarder[1]@addr",
            Same,
        ),
        c(
            "network.rng: portgroup name is a deviceName",
            nat("<portgroup name='a b'/>"),
            "/network/portgroup[1]@name",
            Same,
        ),
        c(
            "network.rng: portgroup default is yes/no",
            nat("<portgroup name='a' default='1'/>"),
            "/network/portgroup[1]@default",
            Same,
        ),
        c(
            "network.rng: vlan trunk is only 'yes'",
            net(
                "<forward mode='passthrough'><interface dev='eth1'/></forward><vlan trunk='no'><tag id='5'/></vlan>",
            ),
            "/network/vlan@trunk",
            Same,
        ),
        c(
            "network.rng: vlan tag nativeMode is tagged/untagged",
            net(
                "<forward mode='passthrough'><interface dev='eth1'/></forward><vlan trunk='yes'><tag id='5' nativeMode='x'/><tag id='6'/></vlan>",
            ),
            "/network/vlan/tag[1]@nativeMode",
            Same,
        ),
        c(
            "network.rng: bandwidth classID is a positiveInteger",
            nat("<bandwidth classID='0'><inbound average='10'/></bandwidth>"),
            "/network/bandwidth@classID",
            Same,
        ),
        c(
            "network.rng: speed is at least 1",
            nat("<bandwidth><inbound average='0'/></bandwidth>"),
            "/network/bandwidth/inbound@average",
            Same,
        ),
        c(
            "network.rng: virtualPortProfile: parameters belong to the type",
            vepa("<virtualport type='802.1Qbg'><parameters profileid='finance'/></virtualport>"),
            "/network/virtualport/parameters@profileid",
            Same,
        ),
        c(
            "network.rng: virtualPortProfile: midonet needs parameters interfaceid",
            vepa("<virtualport type='midonet'/>"),
            "/network/virtualport/parameters@interfaceid",
            Same,
        ),
        c(
            "network.rng: virtualPortProfileID has at most 39 characters (virNetDevVPortProfileParse: profileid parameter too long)",
            vepa(
                "<virtualport type='802.1Qbh'><parameters profileid='0123456789012345678901234567890123456789'/></virtualport>",
            ),
            "/network/virtualport/parameters@profileid",
            Same,
        ),
        c(
            "network.rng: dnsmasq:option needs value",
            net(
                "<dnsmasq:options xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><dnsmasq:option/></dnsmasq:options>",
            ),
            "/network/dnsmasq:options/dnsmasq:option[1]@value",
            Same,
        ),
        // ---- network_conf.c: virNetworkDefParseXML ---------------------------
        c(
            "virNetworkDefParseXML: a name is required",
            "<network><forward mode='nat'/></network>".into(),
            "/network/name",
            Same,
        ),
        c(
            "virNetworkDefParseXML: the name has no '/' (virXMLCheckIllegalChars)",
            "<network><name>a/b</name></network>".into(),
            "/network/name",
            Same,
        ),
        c(
            "virNetworkDefParseXML: unreachable static route gateway",
            route("address='10.1.0.0' prefix='16' gateway='192.168.60.2'"),
            "/network/route[1]@gateway",
            Same,
        ),
        c(
            "virNetworkDefParseXML: nat forwarding requested, but no IP address",
            net("<forward mode='nat'/>"),
            "/network/forward@mode",
            Same,
        ),
        c(
            "virNetworkDefParseXML: route forwarding requested, but no IP address",
            net("<forward mode='route'/>"),
            "/network/forward@mode",
            Same,
        ),
        c(
            "virNetworkDefParseXML: multiple forwarding interfaces in nat/route/open",
            net(
                "<forward mode='route'><interface dev='eth1'/><interface dev='eth2'/></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/interface[2]@dev",
            Same,
        ),
        c(
            "virNetworkDefParseXML: forward dev not allowed with mode open",
            net("<forward mode='open' dev='eth1'/><ip address='192.168.50.1' prefix='24'/>"),
            "/network/forward@dev",
            Same,
        ),
        c(
            "virNetworkDefParseXML: bridge name not allowed in private/vepa/passthrough/hostdev mode",
            net("<bridge name='vb1'/><forward mode='private'/>"),
            "/network/bridge@name",
            Same,
        ),
        c(
            "virNetworkDefParseXML: bridge zone not allowed in private/vepa/passthrough/hostdev mode",
            net("<bridge zone='trusted'/><forward mode='vepa'><interface dev='eth1'/></forward>"),
            "/network/bridge@zone",
            Same,
        ),
        c(
            "virNetworkDefParseXML: bridge macTableManager not allowed in private/vepa/passthrough/hostdev mode",
            net(
                "<bridge macTableManager='kernel'/><forward mode='passthrough'><interface dev='eth1'/></forward>",
            ),
            "/network/bridge@macTableManager",
            Same,
        ),
        c(
            "virNetworkDefParseXML: bridge delay/stp/zone only in route, nat, open and isolated mode",
            net("<bridge name='br0' stp='off'/><forward mode='bridge'/>"),
            "/network/bridge@stp",
            Same,
        ),
        c(
            "virNetworkDefParseXML: bridge delay in bridge mode",
            net("<bridge name='br0' delay='2'/><forward mode='bridge'/>"),
            "/network/bridge@delay",
            Same,
        ),
        c(
            "virNetworkDefParseXML: bridge zone in bridge mode",
            net("<bridge name='br0' zone='trusted'/><forward mode='bridge'/>"),
            "/network/bridge@zone",
            Same,
        ),
        c(
            "virNetworkDefParseXML: a bridge name or a forward dev, not both",
            net("<bridge name='br0'/><forward mode='bridge' dev='eth1'/>"),
            "/network/bridge@name",
            Same,
        ),
        c(
            "virNetworkDefParseXML: mtu only in open, route, nat and isolated mode",
            net("<bridge name='br0'/><forward mode='bridge'/><mtu size='9000'/>"),
            "/network/mtu@size",
            Same,
        ),
        // ---- virNetworkForwardDefParseXML / virNetworkForwardNatDefParseXML ---
        c(
            "virNetworkForwardNatDefParseXML: <nat> only with mode nat",
            net("<forward mode='route'><nat/></forward><ip address='192.168.50.1' prefix='24'/>"),
            "/network/forward/nat",
            Same,
        ),
        c(
            "virNetworkForwardNatDefParseXML: ipv6 is yes/no",
            net(
                "<forward mode='nat'><nat ipv6='1'/></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat@ipv6",
            Same,
        ),
        c(
            "virNetworkForwardNatDefParseXML: only one <address>",
            net(
                "<forward mode='nat'><nat><address start='192.0.2.1' end='192.0.2.2'/><address start='192.0.2.3' end='192.0.2.4'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/address",
            Same,
        ),
        c(
            "virNetworkForwardNatDefParseXML: missing 'end' in <address>",
            net(
                "<forward mode='nat'><nat><address start='192.0.2.1'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/address@end",
            Same,
        ),
        c(
            "virNetworkForwardNatDefParseXML: address range reversed (virSocketAddrGetRange)",
            net(
                "<forward mode='nat'><nat><address start='192.0.2.9' end='192.0.2.1'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/address@end",
            Same,
        ),
        c(
            "virNetworkForwardNatDefParseXML: only one <port>",
            net(
                "<forward mode='nat'><nat><port start='1' end='2'/><port start='3' end='4'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/port",
            Same,
        ),
        c(
            "virNetworkForwardNatDefParseXML: port end before start",
            net(
                "<forward mode='nat'><nat><port start='2000' end='1000'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat/port@end",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: only one <nat>",
            net(
                "<forward mode='nat'><nat/><nat/></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "/network/forward/nat",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: dev not with <address> or <pf>",
            net("<forward mode='passthrough' dev='eth1'><pf dev='eth2'/></forward>"),
            "/network/forward@dev",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: <interface> needs dev",
            net("<forward mode='passthrough'><interface/></forward>"),
            "/network/forward/interface[1]@dev",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: <forward dev> must match the first <interface dev>",
            net("<forward mode='passthrough' dev='eth1'><interface dev='eth2'/></forward>"),
            "/network/forward/interface[1]@dev",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: an interface only once",
            net(
                "<forward mode='passthrough'><interface dev='eth1'/><interface dev='eth1'/></forward>",
            ),
            "/network/forward/interface[2]@dev",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: address type is pci (unknown address type)",
            net("<forward mode='hostdev'><address type='usb' bus='1'/></forward>"),
            "/network/forward/address[1]@type",
            Same,
        ),
        c(
            "pciaddress / virPCIDeviceAddressParseXML: slot at most 31",
            net(
                "<forward mode='hostdev'><address type='pci' domain='0' bus='1' slot='32' function='1'/></forward>",
            ),
            "/network/forward/address[1]@slot",
            Same,
        ),
        c(
            "pciaddress / virPCIDeviceAddressParseXML: function at most 7",
            net(
                "<forward mode='hostdev'><address type='pci' domain='0' bus='1' slot='0' function='8'/></forward>",
            ),
            "/network/forward/address[1]@function",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: a PCI device only once",
            net(
                "<forward mode='hostdev'><address type='pci' domain='0' bus='1' slot='0' function='1'/><address type='pci' domain='0x0' bus='0x01' slot='0' function='1'/></forward>",
            ),
            "/network/forward/address[2]",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: only one <pf>",
            net("<forward mode='passthrough'><pf dev='eth1'/><pf dev='eth2'/></forward>"),
            "/network/forward/pf",
            Same,
        ),
        c(
            "virNetworkForwardDefParseXML: <pf> needs dev",
            net("<forward mode='passthrough'><pf/></forward>"),
            "/network/forward/pf@dev",
            Same,
        ),
        c(
            "network.rng: <pf dev> is a deviceName (not empty), in any forward mode",
            net(
                "<forward mode='route'><pf dev=''/></forward><ip address='192.168.150.1' prefix='24'/>",
            ),
            "/network/forward/pf@dev",
            Same,
        ),
        // ---- virNetworkIPDefParseXML ------------------------------------------
        c(
            "virNetworkIPDefParseXML: address is required",
            net("<ip prefix='24'/>"),
            "/network/ip[1]@address",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: no family given for a non-IPv4 address",
            net("<ip address='fd00:50::1' prefix='64'/>"),
            "/network/ip[1]@family",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: ipv4 family given for a non-IPv4 address",
            net("<ip family='ipv4' address='fd00:50::1' prefix='64'/>"),
            "/network/ip[1]@family",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: invalid IPv4 prefix (> 32)",
            net("<ip address='192.168.50.1' prefix='33'/>"),
            "/network/ip[1]@prefix",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: ipv6 family given for a non-IPv6 address",
            net("<ip family='ipv6' address='192.168.50.1' prefix='24'/>"),
            "/network/ip[1]@family",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: netmask not allowed for IPv6",
            net("<ip family='ipv6' address='fd00:50::1' netmask='255.255.255.0'/>"),
            "/network/ip[1]@netmask",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: invalid IPv6 prefix (> 128)",
            net("<ip family='ipv6' address='fd00:50::1' prefix='129'/>"),
            "/network/ip[1]@prefix",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: <tftp> only in an IPv4 <ip>",
            ip6("<tftp root='/srv'/>"),
            "/network/ip[1]/tftp",
            Same,
        ),
        c(
            "virNetworkIPDefPrefix: a non-contiguous netmask has no prefix",
            net("<ip address='192.168.50.1' netmask='255.0.255.0'/>"),
            "/network/ip[1]@netmask",
            Stricter(
                "libvirt defines it and fails at net-start; the prefix length is needed for everything vxdp does with the <ip>",
            ),
        ),
        c(
            "virNetworkIPDefPrefix: class D/E without netmask or prefix has no prefix",
            net("<ip address='224.0.0.1'/>"),
            "/network/ip[1]@address",
            Stricter(
                "libvirt defines it and fails at net-start; the prefix length is needed for everything vxdp does with the <ip>",
            ),
        ),
        // ---- DHCP -------------------------------------------------------------
        c(
            "virNetworkDHCPRangeDefParseXML: range start is required",
            dhcp("<range end='192.168.50.9'/>"),
            "/network/ip[1]/dhcp/range[1]@start",
            Same,
        ),
        c(
            "virSocketAddrGetRange: range family differs from the network",
            dhcp("<range start='fd00:50::2' end='fd00:50::9'/>"),
            "/network/ip[1]/dhcp/range[1]@start",
            Same,
        ),
        c(
            "virSocketAddrGetRange: range not entirely within the network",
            dhcp("<range start='192.168.50.2' end='192.168.51.9'/>"),
            "/network/ip[1]/dhcp/range[1]@end",
            Same,
        ),
        c(
            "virSocketAddrGetRange: range starts at the network address",
            dhcp("<range start='192.168.50.0' end='192.168.50.9'/>"),
            "/network/ip[1]/dhcp/range[1]@start",
            Same,
        ),
        c(
            "virSocketAddrGetRange: range ends at the broadcast address",
            dhcp("<range start='192.168.50.2' end='192.168.50.255'/>"),
            "/network/ip[1]/dhcp/range[1]@end",
            Same,
        ),
        c(
            "virSocketAddrGetRange: network and broadcast address of a /31 as well",
            net(
                "<ip address='192.168.50.0' prefix='31'><dhcp><range start='192.168.50.0' end='192.168.50.0'/></dhcp></ip>",
            ),
            "/network/ip[1]/dhcp/range[1]@start",
            Same,
        ),
        c(
            "virSocketAddrGetRange: range is too large (> 65535)",
            net(
                "<ip address='10.0.0.1' prefix='8'><dhcp><range start='10.0.0.2' end='10.1.0.9'/></dhcp></ip>",
            ),
            "/network/ip[1]/dhcp/range[1]@end",
            Same,
        ),
        c(
            "virSocketAddrGetRange: range is reversed",
            dhcp("<range start='192.168.50.9' end='192.168.50.2'/>"),
            "/network/ip[1]/dhcp/range[1]@end",
            Same,
        ),
        c(
            "virNetworkDHCPLeaseTimeDefParseXML: the minimum lease time is two minutes",
            dhcp(
                "<range start='192.168.50.2' end='192.168.50.9'><lease expiry='119' unit='seconds'/></range>",
            ),
            "/network/ip[1]/dhcp/range[1]/lease@expiry",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: no MAC address in an IPv6 static host",
            ip6("<dhcp><host mac='52:54:00:00:00:01' name='a' ip='fd00:50::9'/></dhcp>"),
            "/network/ip[1]/dhcp/host[1]@mac",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: expected unicast mac address",
            dhcp("<host mac='01:00:00:00:00:01' ip='192.168.50.9'/>"),
            "/network/ip[1]/dhcp/host[1]@mac",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: host name starts with a letter or digit",
            dhcp("<host name='-a' ip='192.168.50.9'/>"),
            "/network/ip[1]/dhcp/host[1]@name",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: invalid IP address in a static host",
            dhcp("<host name='a' ip='192.168.50.x'/>"),
            "/network/ip[1]/dhcp/host[1]@ip",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: an IPv4 static host has mac or name",
            dhcp(
                "<host id='00:04:00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f' ip='192.168.50.9'/>",
            ),
            "/network/ip[1]/dhcp/host[1]",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: an IPv6 static host has id or name (schema: mac or id or name)",
            ip6("<dhcp><host ip='fd00:50::9'/></dhcp>"),
            "/network/ip[1]/dhcp/host[1]",
            Same,
        ),
        c(
            "virNetworkDHCPHostDefParseXML: missing IP address in a static host",
            dhcp("<host name='a'/>"),
            "/network/ip[1]/dhcp/host[1]@ip",
            Same,
        ),
        c(
            "virNetworkDHCPDefParseXML: bootp server is an address (virSocketAddrParse)",
            dhcp("<bootp file='pxe' server='0x10'/>"),
            "/network/ip[1]/dhcp/bootp@server",
            Stricter(
                "libvirt parses the server with getaddrinfo, which also takes inet_aton forms such as '0x10'; vxdp wants a plain address",
            ),
        ),
        c(
            "networkValidate: dhcp only for one IPv4 <ip> (Multiple IPv4 dhcp sections)",
            net(
                "<ip address='192.168.50.1' prefix='24'><dhcp><range start='192.168.50.2' end='192.168.50.9'/></dhcp></ip><ip address='192.168.60.1' prefix='24'><dhcp><range start='192.168.60.2' end='192.168.60.9'/></dhcp></ip>",
            ),
            "/network/ip[2]/dhcp",
            Same,
        ),
        c(
            "networkValidate: dhcp only for one IPv6 <ip> (Multiple IPv6 dhcp sections)",
            net(
                "<ip family='ipv6' address='fd00:50::1' prefix='64'><dhcp><range start='fd00:50::2' end='fd00:50::9'/></dhcp></ip><ip family='ipv6' address='fd00:60::1' prefix='64'><dhcp><range start='fd00:60::2' end='fd00:60::9'/></dhcp></ip>",
            ),
            "/network/ip[2]/dhcp",
            Same,
        ),
        c(
            "(vxdp) a static host inside its <ip>'s subnet",
            dhcp("<host mac='52:54:00:00:00:01' ip='192.168.60.9'/>"),
            "/network/ip[1]/dhcp/host[1]@ip",
            Stricter("dnsmasq never serves a host outside the subnet (issue 4)"),
        ),
        c(
            "(vxdp) static host names fit dnsmasq's host file",
            dhcp("<host name='a,b' ip='192.168.50.9'/>"),
            "/network/ip[1]/dhcp/host[1]@name",
            Stricter(
                "the name goes into dnsmasq's host file; libvirt only checks the first character",
            ),
        ),
        // ---- DNS ----------------------------------------------------------------
        c(
            "virNetworkDNSDefParseXML: enable is yes/no",
            nat("<dns enable='1'/>"),
            "/network/dns@enable",
            Same,
        ),
        c(
            "virNetworkDNSDefParseXML: a forwarder has addr or domain",
            dns("<forwarder/>"),
            "/network/dns/forwarder[1]",
            Same,
        ),
        c(
            "virNetworkDNSDefParseXML: extra data in a disabled <dns>",
            dns("<forwarder addr='192.0.2.53'/>").replace("<dns>", "<dns enable='no'>"),
            "/network/dns@enable",
            Same,
        ),
        c(
            "virNetworkDNSHostDefParseXML: a DNS host has a hostname",
            dns("<host ip='192.168.50.9'/>"),
            "/network/dns/host[1]/hostname",
            Same,
        ),
        c(
            "virNetworkDNSHostDefParseXML: missing IP address in a DNS host",
            dns("<host><hostname>a</hostname></host>"),
            "/network/dns/host[1]@ip",
            Same,
        ),
        c(
            "virNetworkDNSSrvDefParseXML: service is required",
            dns("<srv protocol='tcp'/>"),
            "/network/dns/srv[1]@service",
            Same,
        ),
        c(
            "virNetworkDNSSrvDefParseXML: invalid character in service",
            dns("<srv service='a.b' protocol='tcp'/>"),
            "/network/dns/srv[1]@service",
            Same,
        ),
        c(
            "virNetworkDNSSrvDefParseXML: port not permitted without target",
            dns("<srv service='ldap' protocol='tcp' port='389'/>"),
            "/network/dns/srv[1]@port",
            Same,
        ),
        c(
            "virNetworkDNSSrvDefParseXML: invalid DNS SRV port (0)",
            dns("<srv service='ldap' protocol='tcp' target='h' port='0'/>"),
            "/network/dns/srv[1]@port",
            Same,
        ),
        c(
            "virNetworkDNSTxtDefParseXML: name is required",
            dns("<txt value='v'/>"),
            "/network/dns/txt[1]@name",
            Same,
        ),
        c(
            "virNetworkDNSTxtDefParseXML: value is required",
            dns("<txt name='n'/>"),
            "/network/dns/txt[1]@value",
            Same,
        ),
        c(
            "(vxdp) SRV targets are DNS names",
            dns("<srv service='ldap' protocol='tcp' target='a,b'/>"),
            "/network/dns/srv[1]@target",
            Stricter("the target goes into dnsmasq's configuration (a ',' would add fields)"),
        ),
        // ---- routes (networkcommon_conf.c: virNetDevIPRouteCreate) --------------
        c(
            "virNetDevIPRouteCreate: address is required",
            route("prefix='16' gateway='192.168.50.2'"),
            "/network/route[1]@address",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: gateway is required",
            route("address='10.1.0.0' prefix='16'"),
            "/network/route[1]@gateway",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: no family given for a non-IPv4 address",
            route("address='fd00:1::' prefix='64' gateway='192.168.50.2'"),
            "/network/route[1]@family",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: gateway of another family",
            route("address='10.1.0.0' prefix='16' gateway='fd00:50::2'"),
            "/network/route[1]@gateway",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: prefix and netmask both given",
            route("address='10.1.0.0' prefix='16' netmask='255.255.0.0' gateway='192.168.50.2'"),
            "/network/route[1]@prefix",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: invalid prefix (> 32)",
            route("address='10.1.0.0' prefix='33' gateway='192.168.50.2'"),
            "/network/route[1]@prefix",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: netmask invalid for IPv6",
            nat(
                "<ip family='ipv6' address='fd00:50::1' prefix='64'/><route family='ipv6' address='fd00:1::' netmask='255.255.0.0' gateway='fd00:50::2'/>",
            ),
            "/network/route[1]@netmask",
            Same,
        ),
        c(
            "virNetDevIPRouteCreate: address is not a network address",
            route("address='10.1.0.1' prefix='16' gateway='192.168.50.2'"),
            "/network/route[1]@address",
            Same,
        ),
        c(
            "virNetDevIPRouteParseXML: metric is not zero (VIR_XML_PROP_NONZERO)",
            route("address='10.1.0.0' prefix='16' gateway='192.168.50.2' metric='0'"),
            "/network/route[1]@metric",
            Same,
        ),
        // ---- bandwidth, vlan, virtualport, portgroups -----------------------------
        c(
            "virNetDevBandwidthParse: classID not supported on a network's bandwidth",
            nat("<bandwidth classID='3'><inbound average='10'/></bandwidth>"),
            "/network/bandwidth@classID",
            Same,
        ),
        c(
            "virNetDevBandwidthParseRate: missing mandatory average (or floor)",
            nat("<bandwidth><inbound peak='10'/></bandwidth>"),
            "/network/bandwidth/inbound@average",
            Same,
        ),
        c(
            "virNetDevBandwidthParseRate: floor not supported in a network's bandwidth",
            nat("<bandwidth><inbound average='10' floor='5'/></bandwidth>"),
            "/network/bandwidth/inbound@floor",
            Same,
        ),
        c(
            "virNetDevVlanParse: at least one <tag>",
            net("<forward mode='passthrough'><interface dev='eth1'/></forward><vlan/>"),
            "/network/vlan/tag",
            Same,
        ),
        c(
            "virNetDevVlanParse: vlan tag id too large (maximum 4095)",
            net(
                "<forward mode='passthrough'><interface dev='eth1'/></forward><vlan><tag id='4096'/></vlan>",
            ),
            "/network/vlan/tag[1]@id",
            Same,
        ),
        c(
            "virNetDevVlanParse: duplicate native vlan setting",
            net(
                "<forward mode='passthrough'><interface dev='eth1'/></forward><vlan trunk='yes'><tag id='5' nativeMode='tagged'/><tag id='6' nativeMode='untagged'/></vlan>",
            ),
            "/network/vlan/tag[2]@nativeMode",
            Same,
        ),
        c(
            "virNetDevVPortProfileParse: unknown virtualport type",
            vepa("<virtualport type='vmware'/>"),
            "/network/virtualport@type",
            Same,
        ),
        c(
            "virNetDevVPortProfileParse: missing required virtualport type (network-wide)",
            vepa("<virtualport/>"),
            "/network/virtualport@type",
            Same,
        ),
        c(
            "virNetDevVPortProfileParse: managerid out of range",
            vepa("<virtualport type='802.1Qbg'><parameters managerid='256'/></virtualport>"),
            "/network/virtualport/parameters@managerid",
            Same,
        ),
        c(
            "virNetDevVPortProfileParse: typeid out of range",
            vepa("<virtualport type='802.1Qbg'><parameters typeid='16777216'/></virtualport>"),
            "/network/virtualport/parameters@typeid",
            Same,
        ),
        c(
            "virNetDevVPortProfileParse: instanceid is a uuid",
            vepa("<virtualport type='802.1Qbg'><parameters instanceid='x'/></virtualport>"),
            "/network/virtualport/parameters@instanceid",
            Same,
        ),
        c(
            "virNetworkPortGroupParseXML: name is required",
            nat("<portgroup/>"),
            "/network/portgroup[1]@name",
            Same,
        ),
        c(
            "virNetworkPortGroupParseXML: trustGuestRxFilters is yes/no",
            nat("<portgroup name='a' trustGuestRxFilters='1'/>"),
            "/network/portgroup[1]@trustGuestRxFilters",
            Same,
        ),
        // ---- networkValidate (bridge_driver.c) ----------------------------------
        c(
            "networkValidate: no <mac> in a direct mode",
            vepa("<mac address='52:54:00:00:00:01'/>"),
            "/network/mac@address",
            Same,
        ),
        c(
            "networkValidate: no <ip> in a direct mode",
            vepa("<ip address='192.168.50.1' prefix='24'/>"),
            "/network/ip[1]",
            Same,
        ),
        c(
            "networkValidate: no <dns> records in a direct mode",
            vepa("<dns><txt name='a' value='b'/></dns>"),
            "/network/dns/txt[1]",
            Same,
        ),
        c(
            "networkValidate: no <domain> in a direct mode",
            vepa("<domain name='example'/>"),
            "/network/domain@name",
            Same,
        ),
        c(
            "networkValidate: network-wide <bandwidth> only where the mode can shape",
            vepa("<bandwidth><inbound average='10'/></bandwidth>"),
            "/network/bandwidth",
            Same,
        ),
        c(
            "networkValidate: hostdev devices by PCI address, not by name",
            net("<forward mode='hostdev'><interface dev='eth1'/></forward>"),
            "/network/forward/interface[1]@dev",
            Same,
        ),
        c(
            "networkValidate: PCI addresses only in hostdev mode",
            net(
                "<forward mode='passthrough'><address type='pci' domain='0' bus='1' slot='0' function='1'/></forward>",
            ),
            "/network/forward/address[1]",
            Same,
        ),
        c(
            "networkValidate: <vlan> only where something can tag",
            nat("<vlan><tag id='5'/></vlan>"),
            "/network/vlan",
            Same,
        ),
        c(
            "networkValidate: a portgroup's <vlan> needs an Open vSwitch virtualport",
            nat("<portgroup name='a'><vlan><tag id='5'/></vlan></portgroup>"),
            "/network/portgroup[1]/vlan",
            Same,
        ),
        c(
            "networkValidate: only one default portgroup",
            nat("<portgroup name='a' default='yes'/><portgroup name='b' default='yes'/>"),
            "/network/portgroup[2]@default",
            Same,
        ),
        c(
            "networkValidate: portgroup names are unique",
            nat("<portgroup name='a'/><portgroup name='a'/>"),
            "/network/portgroup[2]@name",
            Same,
        ),
        c(
            "networkValidate: a portgroup's <bandwidth> only where the mode can shape",
            vepa("<portgroup name='a'><bandwidth><inbound average='10'/></bandwidth></portgroup>"),
            "/network/portgroup[1]/bandwidth",
            Same,
        ),
        c(
            "networkValidate: no portgroup <bandwidth> in hostdev mode",
            net(
                "<forward mode='hostdev'><address type='pci' domain='0' bus='1' slot='0' function='1'/></forward><portgroup name='a'><bandwidth><inbound average='10'/></bandwidth></portgroup>",
            ),
            "/network/portgroup[1]/bandwidth",
            Same,
        ),
        c(
            "networkValidate: forward devices are SR-IOV virtual functions (sysfs)",
            net(
                "<forward mode='hostdev'><address type='pci' domain='0' bus='1' slot='0' function='1'/></forward>",
            ),
            "",
            Looser(
                "vxdp does not look devices up in sysfs at define time (this machine has no SR-IOV hardware to compare with)",
            ),
        ),
        c(
            "(vxdp) a host-bridge network names its bridge or a device",
            net("<forward mode='bridge'/>"),
            "/network/forward@mode",
            Stricter("libvirt defines it and fails only when starting it"),
        ),
        c(
            "(vxdp) device names the kernel accepts",
            net("<forward mode='passthrough'><interface dev='eth:1'/></forward>"),
            "/network/forward/interface[1]@dev",
            Stricter("libvirt's deviceName allows ':' and '/' and finds out when starting"),
        ),
        c(
            "(vxdp) network names that are safe file names and program arguments",
            "<network><name>-n</name></network>".into(),
            "/network/name",
            Stricter("the name names files and is passed to programs"),
        ),
        c(
            "(vxdp) <bootp> only under IPv4",
            ip6("<dhcp><bootp file='pxe'/></dhcp>"),
            "/network/ip[1]/dhcp/bootp",
            Stricter("libvirt silently drops it"),
        ),
        c(
            "(vxdp) bridge delay in 32 bits",
            net("<bridge name='vb1' delay='4294967296'/>"),
            "/network/bridge@delay",
            Stricter("vxdp keeps the delay in 32 bits; the kernel takes at most 30 s"),
        ),
        c(
            "network.rng 9.0: no <title> (later libvirt has it)",
            net("<title>t</title>"),
            "",
            Looser("libvirt 9.0's schema has no <title>/<description>; later libvirt accepts them"),
        ),
        c(
            "(vxdp) namespace-well-formed XML",
            nat("<metadata><app:owner>x</app:owner></metadata>"),
            "/",
            Stricter("an undeclared prefix is not namespace-well-formed; libxml2 only warns"),
        ),
        c(
            "network.rng 9.0: no <domain register> (later libvirt has it)",
            nat("<domain name='ex' register='yes'/>"),
            "",
            Looser("libvirt 9.0's schema has no register attribute; later libvirt accepts it"),
        ),
        // ---- corners where libvirt does not refuse (both define) ----------------
        c(
            "virNetworkDefParseXML: <mtu size='0'> means no MTU, so not refused in bridge mode",
            net("<bridge name='br0'/><forward mode='bridge'/><mtu size='0'/>"),
            "",
            Accepted("libvirt tests def->mtu, which is 0"),
        ),
        c(
            "networkValidate: an empty <bandwidth/> is dropped, so not refused in vepa mode",
            vepa("<bandwidth/>"),
            "",
            Accepted("virNetDevBandwidthParse keeps no bandwidth without <inbound>/<outbound>"),
        ),
        c(
            "networkValidate: <pf> next to <interface> is ignored, so no mutual-exclusion error",
            net("<forward mode='private'><pf dev='eth2'/><interface dev='eth1'/></forward>"),
            "",
            Accepted("virNetworkForwardDefParseXML reads <pf> only without other devices"),
        ),
        c(
            "virNetworkDHCPHostDefParseXML: an IPv4 static host may carry an id next to its name",
            dhcp(
                "<host id='00:04:00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f' name='a' ip='192.168.50.9'/>",
            ),
            "",
            Accepted("only IPv6 hosts refuse mac; IPv4 hosts need mac or name"),
        ),
        c(
            "network.rng: mtu size is an xsd:integer, so '+1500' is a size",
            nat("<mtu size='+1500'/>"),
            "",
            Accepted("libxml2 reads xsd:integer with a leading '+'"),
        ),
        c(
            "network.rng: a NAT port is an xsd:integer, so '+1024' is a port",
            net(
                "<forward mode='nat'><nat><port start='+1024' end='2000'/></nat></forward><ip address='192.168.50.1' prefix='24'/>",
            ),
            "",
            Accepted("libxml2 reads xsd:integer with a leading '+'"),
        ),
        c(
            "network.rng: ipPrefix is an unsignedInt, which takes no '+'",
            net("<ip address='192.168.50.1' prefix='+24'/>"),
            "/network/ip[1]@prefix",
            Same,
        ),
        c(
            "virNetworkIPDefParseXML: <tftp root=''> reads as no tftp",
            ip("<tftp root=''/>"),
            "",
            Accepted("virXPathString returns nothing for an empty string"),
        ),
        c(
            "virNetworkDNSTxtDefParseXML: an empty TXT value",
            dns("<txt name='n' value=''/>"),
            "",
            Accepted("only a missing value is refused"),
        ),
        c(
            "netdev_vport_profile_conf.c: managerid in hex",
            vepa("<virtualport type='802.1Qbg'><parameters managerid='0x10'/></virtualport>"),
            "",
            Accepted("uint8 is 0x-hex or decimal, read with strtoul base 0"),
        ),
        c(
            "virNetworkIPDefPrefix: prefix='0' on an <ip> means the classful default",
            net(
                "<ip address='192.168.50.1' prefix='0'><dhcp><range start='192.168.50.2' end='192.168.50.9'/></dhcp></ip>",
            ),
            "",
            Accepted("virSocketAddrGetIPPrefix treats 0 as not given"),
        ),
    ]
}

#[test]
fn vxdp_refuses_what_each_libvirt_check_refuses() -> Result<()> {
    let host = VxdpHost::new("lck")?;
    let rows = checks();
    let mut wrong = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let file = host.write(&format!("check{i}.xml"), &row.xml)?;
        let f = file.to_str().context("path")?;
        let out = host.vxdp_status(&["net-define", f])?;
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            let name = network_name(&row.xml).context("row without a name")?;
            host.vxdp(&["net-undefine", "--", &name])?;
        }
        // The table as it runs: the check, the path vxdp names, how it relates.
        let relation = match row.kind {
            Kind::Same => String::new(),
            Kind::Stricter(why) => format!(" [vxdp stricter: {why}]"),
            Kind::Looser(why) => format!(" [vxdp looser: {why}]"),
            Kind::Accepted(why) => format!(" [defined by both: {why}]"),
        };
        println!("{} -> {}{relation}", row.libvirt, row.path);
        match row.kind {
            Kind::Same | Kind::Stricter(_) => {
                let named = err.contains(&format!("{f}: {}:", row.path));
                if out.status.success() || !named {
                    wrong.push(format!(
                        "{}\n  {}\n  expected a refusal naming {}, got: {}",
                        row.libvirt,
                        row.xml,
                        row.path,
                        if out.status.success() {
                            "defined"
                        } else {
                            &err
                        }
                    ));
                }
            }
            Kind::Looser(_) | Kind::Accepted(_) => {
                if !out.status.success() {
                    wrong.push(format!(
                        "{}\n  {}\n  vxdp is listed as defining this but refuses: {err}",
                        row.libvirt, row.xml
                    ));
                }
            }
        }
    }
    println!("{} checks, {} wrong", rows.len(), wrong.len());
    ensure!(
        wrong.is_empty(),
        "{} rows of the check table do not hold:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok(())
}

#[test]
fn libvirt_answers_each_row_as_the_table_says() -> Result<()> {
    let lv = Libvirtd::start("lck")?;
    let work = std::env::temp_dir().join(format!("vxlck{}-libvirt-rows", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let rows = checks();
    let mut wrong = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let file = work.join(format!("check{i}.xml"));
        std::fs::write(&file, &row.xml)?;
        let out = lv.virsh(&["net-define", "--validate", file.to_str().context("path")?])?;
        let err = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " ");
        if out.status.success() {
            let name = network_name(&row.xml).context("row without a name")?;
            let u = lv.virsh(&["net-undefine", "--", &name])?;
            ensure!(
                u.status.success(),
                "libvirt net-undefine {name} after row {i}: {}",
                String::from_utf8_lossy(&u.stderr).trim()
            );
        }
        let refuses = matches!(row.kind, Kind::Same | Kind::Looser(_));
        if out.status.success() == refuses {
            wrong.push(format!(
                "{}\n  {}\n  libvirt {}",
                row.libvirt,
                row.xml,
                if out.status.success() {
                    "defines it".to_string()
                } else {
                    format!("refuses it: {err}")
                }
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "{} rows, {} answered otherwise by libvirt",
        rows.len(),
        wrong.len()
    );
    ensure!(
        wrong.is_empty(),
        "libvirt 9.0 answers {} rows otherwise than the table says:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok(())
}

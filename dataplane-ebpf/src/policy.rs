//! Forwarding policy: which guest packets stay inside the network (left to
//! the bridge), and which inbound packets are refused.

use vxdp_common::{DropReason, Endpoint, NetworkConfig, Subnet6Key, SubnetKey, SubnetOwner, endpoint_flags, network_flags};
use aya_ebpf::maps::lpm_trie::Key;

use crate::{
    maps::{VXDP_SUBNETS, VXDP_SUBNETS6},
    parse::{ArpSender, Ipv4},
};

/// 224.0.0.0/4 in memory order: the first octet is the lowest byte.
#[inline(always)]
pub fn is_multicast(addr: u32) -> bool {
    addr.to_ne_bytes()[0] & 0xf0 == 0xe0
}

/// Where a guest's packet is headed.
pub enum GuestDestination {
    /// Within the network, the host's bridge address, broadcast or
    /// multicast: the kernel bridge handles it (ARP, DHCP, mDNS, ...).
    /// libvirt never NATs 224.0.0.0/24 or 255.255.255.255 either.
    Stays,
    /// Leaves the network's subnet: subject to the mode's forwarding.
    Leaves,
}

#[inline(always)]
pub fn guest_destination(net: &NetworkConfig, ip: &Ipv4) -> GuestDestination {
    if ip.dst & net.netmask == net.subnet || ip.dst == u32::MAX || is_multicast(ip.dst) {
        GuestDestination::Stays
    } else {
        GuestDestination::Leaves
    }
}

/// A guest may only send to the outside from an address of its subnet;
/// anything else is spoofed and must not be forwarded.
#[inline(always)]
pub fn source_in_subnet(net: &NetworkConfig, ip: &Ipv4) -> bool {
    ip.src & net.netmask == net.subnet
}

#[inline(always)]
pub fn active(net: &NetworkConfig) -> bool {
    net.flags & network_flags::ACTIVE != 0
}

/// The network whose IPv4 subnet holds `dst`, if any.
#[inline(always)]
pub fn subnet_owner(dst: u32) -> Option<SubnetOwner> {
    VXDP_SUBNETS.get(&Key::new(32, SubnetKey { addr: dst })).copied()
}

/// The network whose IPv6 subnet holds `dst`, if any.
#[inline(always)]
pub fn subnet6_owner(dst: &[u8; 16]) -> Option<SubnetOwner> {
    VXDP_SUBNETS6.get(&Key::new(128, Subnet6Key { addr: *dst })).copied()
}

/// Compares MACs byte by byte (an array `==` may become a `bcmp` call,
/// which BPF has no implementation of).
#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

/// Anti-spoofing, MAC: a port with a known guest MAC sends only from it.
#[inline(always)]
pub fn mac_allowed(ep: &Endpoint, src: &[u8; 6]) -> bool {
    ep.flags & endpoint_flags::MAC_KNOWN == 0 || mac_eq(&ep.mac, src)
}

/// Anti-spoofing, IPv4: once the guest's address is known it is the only
/// source allowed. 0.0.0.0 stays allowed for DHCP (UDP) and ARP probes
/// (`udp_or_arp`), so a guest can (re)acquire its lease.
#[inline(always)]
pub fn ipv4_allowed(ep: &Endpoint, src: u32, udp_or_arp: bool) -> bool {
    ep.flags & endpoint_flags::IPV4_KNOWN == 0 || src == ep.ipv4 || (src == 0 && udp_or_arp)
}

/// Why an ARP packet's sender (MAC and IPv4) is refused, if it is.
#[inline(always)]
pub fn arp_refusal(ep: &Endpoint, arp: &ArpSender) -> Option<DropReason> {
    if !mac_allowed(ep, &arp.mac) {
        return Some(DropReason::SpoofedMac);
    }
    if !ipv4_allowed(ep, arp.ipv4, true) {
        return Some(DropReason::SpoofedSource);
    }
    None
}

/// Whether `src` is an IPv6 source the guest may send from: any until its
/// address is known; then that address, a link-local one (neighbour and
/// router discovery) or the unspecified one (duplicate address detection).
#[inline(always)]
pub fn ipv6_allowed(ep: &Endpoint, src: &[u8; 16]) -> bool {
    if ep.flags & endpoint_flags::IPV6_KNOWN == 0 || (src[0] == 0xfe && src[1] & 0xc0 == 0x80) {
        return true;
    }
    let a = u128::from_ne_bytes(*src);
    a == u128::from_ne_bytes(ep.ipv6) || a == 0
}

/// Whether the host has an address on the network's bridge (a network with
/// an `<ip>`); without one the network is "very isolated".
#[inline(always)]
pub fn host_on_bridge(net: &NetworkConfig) -> bool {
    net.flags & network_flags::HOST_ADDRESS != 0
}

//! Forwarding policy: which guest packets stay inside the network (left to
//! the bridge), and which inbound packets are refused.

use vxdp_common::{NetworkConfig, SubnetKey, SubnetOwner, mode, network_flags};
use aya_ebpf::maps::lpm_trie::Key;

use crate::{maps::VXDP_SUBNETS, parse::Ipv4};

/// 224.0.0.0/4 in memory order: the first octet is the lowest byte.
#[inline(always)]
fn is_multicast(addr: u32) -> bool {
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

/// The NAT network whose subnet holds `dst`, if any: inbound packets to it
/// that conntrack does not expect are refused.
#[inline(always)]
pub fn nat_network_owning(dst: u32) -> Option<u32> {
    let owner: &SubnetOwner = VXDP_SUBNETS.get(&Key::new(32, SubnetKey { addr: dst }))?;
    if owner.mode == mode::NAT { Some(owner.network_id) } else { None }
}

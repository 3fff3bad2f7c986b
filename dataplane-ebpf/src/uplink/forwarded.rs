//! `vxdp_bridge_out` (TC egress on the bridges vxdp creates): what the
//! host's stack forwards into a network from any interface — a second NIC,
//! a VPN, a VLAN sub-interface, another network's bridge — meets the same
//! refusals as what arrives on the uplink (`policy::inbound_refusal`). With
//! forwarding on and no firewall the kernel would otherwise route it in;
//! libvirt's rules cover every interface too. Only packets the host
//! forwards are judged: the host's own (received on no interface) and the
//! network's own (received on its bridge) pass, and frames the bridge
//! switches between ports or vxdp redirects to a port never come here.
//! Every IP packet here is charged to its network's inbound limit when the
//! network has one (`<bandwidth>` on the network: libvirt shapes what the
//! bridge device sends).

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use vxdp_common::DropReason;

use crate::base::{
    ctx::{tc_ifindex, tc_received_on},
    maps::VXDP_NETWORKS,
    parse::{self, ETH_P_IP, ETH_P_IPV6},
    police, policy,
    stats::Drop,
};

/// `vxdp_bridge_out`.
#[inline(always)]
pub fn bridge_egress(ctx: &TcContext) -> Result<i32, Drop> {
    let received_on = tc_received_on(ctx);
    // The host's own packets and the network's own: not refused, but
    // charged to the network's inbound limit like the rest.
    let own = received_on == 0 || received_on == tc_ifindex(ctx);
    let malformed = Drop::new(DropReason::Malformed, 0);
    let (owner, ipv6) = match parse::ether_type(ctx) {
        // The host's own frames it cannot read are the host's business.
        Ok(ETH_P_IP) => match parse::ipv4(ctx) {
            Ok(ip) => (policy::subnet_owner(ip.dst), false),
            Err(_) if own => return Ok(TC_ACT_OK),
            Err(_) => return Err(malformed),
        },
        Ok(ETH_P_IPV6) => match parse::ipv6(ctx) {
            Ok(ip) => (policy::subnet6_owner(&ip.dst), true),
            Err(_) if own => return Ok(TC_ACT_OK),
            Err(_) => return Err(malformed),
        },
        // ARP and the rest: the host's own business on its bridge.
        _ => return Ok(TC_ACT_OK),
    };
    let Some(owner) = owner else {
        return Ok(TC_ACT_OK);
    };
    // The network's inbound (`<bandwidth>` on the network): what the host
    // sends into it through its bridge, its own packets included.
    if let Some(net) = VXDP_NETWORKS.get(owner.network_id)
        && !police::network_inbound(net, owner.network_id, ctx.len())
    {
        return Err(Drop::new(DropReason::RateLimited, owner.network_id));
    }
    if own {
        return Ok(TC_ACT_OK);
    }
    match policy::inbound_refusal(&owner, ipv6, received_on) {
        Some(reason) => Err(Drop::new(reason, owner.network_id)),
        None => Ok(TC_ACT_OK),
    }
}

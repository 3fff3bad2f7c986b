//! `vxdp_bridge_out` (TC egress on the bridges vxdp creates): what the
//! host's stack forwards into a network from any interface — a second NIC,
//! a VPN, a VLAN sub-interface, another network's bridge — meets the same
//! refusals as what arrives on the uplink (`policy::inbound_refusal`). With
//! forwarding on and no firewall the kernel would otherwise route it in;
//! libvirt's rules cover every interface too. Only packets the host
//! forwards are judged: the host's own (received on no interface) and the
//! network's own (received on its bridge) pass, and frames the bridge
//! switches between ports or vxdp redirects to a port never come here.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use vxdp_common::DropReason;

use crate::base::{
    ctx::{tc_ifindex, tc_received_on},
    parse::{self, ETH_P_IP, ETH_P_IPV6},
    policy,
    stats::Drop,
};

/// `vxdp_bridge_out`.
#[inline(always)]
pub fn bridge_egress(ctx: &TcContext) -> Result<i32, Drop> {
    let received_on = tc_received_on(ctx);
    if received_on == 0 || received_on == tc_ifindex(ctx) {
        return Ok(TC_ACT_OK);
    }
    let malformed = Drop::new(DropReason::Malformed, 0);
    let (owner, ipv6) = match parse::ether_type(ctx) {
        Ok(ETH_P_IP) => {
            let ip = parse::ipv4(ctx).map_err(|_| malformed)?;
            (policy::subnet_owner(ip.dst), false)
        }
        Ok(ETH_P_IPV6) => {
            let ip = parse::ipv6(ctx).map_err(|_| malformed)?;
            (policy::subnet6_owner(&ip.dst), true)
        }
        // ARP and the rest: the host's own business on its bridge.
        _ => return Ok(TC_ACT_OK),
    };
    let Some(owner) = owner else {
        return Ok(TC_ACT_OK);
    };
    match policy::inbound_refusal(&owner, ipv6, received_on) {
        Some(reason) => Err(Drop::new(reason, owner.network_id)),
        None => Ok(TC_ACT_OK),
    }
}

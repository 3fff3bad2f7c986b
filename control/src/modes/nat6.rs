//! IPv6 in NAT networks on the control side: what `VXDP_NAT6` holds for a
//! network (routed IPv6, or NAT66 with `<nat ipv6='yes'>` and the address
//! it masquerades to), picking that address on the uplink, and the NAT66
//! conntrack table (`VXDP_CONNTRACK6`) for listing, flushing and expiry.

use std::net::Ipv6Addr;

use vxdp_common::{Nat6Config, mode, nat6_flags};

use crate::{
    host::netlink::Netlink,
    modes::{plan::NetworkPlan, shared::ModeError},
};

/// Whether the definition asks for NAT66 (`<forward mode='nat'><nat
/// ipv6='yes'/>`) and has an IPv6 `<ip>` to masquerade.
pub fn masquerades(plan: &NetworkPlan) -> bool {
    plan.mode == mode::NAT
        && plan.ipv6.is_some()
        && plan
            .def
            .forward
            .as_ref()
            .and_then(|f| f.nat.as_ref())
            .is_some_and(|n| n.ipv6)
}

/// The `VXDP_NAT6` entry of a network: only NAT networks with an IPv6
/// `<ip>` have one (routed IPv6; with NAT66 also the address to masquerade
/// to). `None`: the slot stays zeroed.
pub fn config(plan: &NetworkPlan, nat6_addr: Option<Ipv6Addr>) -> Option<Nat6Config> {
    if plan.mode != mode::NAT || plan.ipv6.is_none() {
        return None;
    }
    let mut flags = nat6_flags::IPV6;
    let mut addr = [0u8; 16];
    if masquerades(plan)
        && let Some(a) = nat6_addr
    {
        flags |= nat6_flags::MASQUERADE;
        addr = a.octets();
    }
    Some(Nat6Config {
        flags,
        _pad0: 0,
        addr,
    })
}

/// Refuses to turn IPv6 forwarding on where that would silently cut the
/// host off: with forwarding on, the kernel ignores router advertisements
/// on interfaces whose `accept_ra` is not 2, so the routes it learned from
/// them (typically the IPv6 default route) expire. libvirt refuses to start
/// such a network too ("enabling IPv6 forwarding with RA routes without
/// accept_ra set to 2 is likely to cause routes loss"). Applies to every
/// network vxdp turns IPv6 forwarding on for (route, open, NAT with IPv6).
pub async fn check_ipv6_forwarding(nl: &Netlink) -> Result<(), ModeError> {
    let mut at_risk = Vec::new();
    for index in nl.ipv6_ra_route_interfaces().await? {
        let Some(link) = nl.link_by_index(index).await? else {
            continue;
        };
        let path = format!("/proc/sys/net/ipv6/conf/{}/accept_ra", link.name);
        if crate::host::sysctl::read(&path)? != "2" {
            at_risk.push(link.name);
        }
    }
    if at_risk.is_empty() {
        Ok(())
    } else {
        Err(ModeError::RaRoutesAtRisk(at_risk.join(", ")))
    }
}

/// The address NAT66 masquerades to: the uplink's first global IPv6
/// address (configured ones before autoconfigured ones), as the IPv4 path
/// takes the uplink's first IPv4 address.
pub async fn uplink_address(
    nl: &Netlink,
    uplink_index: u32,
    uplink_name: &str,
) -> Result<Ipv6Addr, ModeError> {
    let addrs = nl.ipv6_global_addresses(uplink_index).await?;
    addrs
        .first()
        .map(|(a, _)| *a)
        .ok_or_else(|| ModeError::UplinkWithoutIpv6Address(uplink_name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::plan::plan;

    fn net(inner: &str) -> String {
        format!("<network><name>n</name>{inner}</network>")
    }

    #[test]
    fn nat6_entry_follows_the_definition() {
        let v4 = "<ip address='192.168.150.1' prefix='24'/>";
        let v6 = "<ip family='ipv6' address='2001:db8:150::1' prefix='64'/>";
        let a: Ipv6Addr = "2001:db8:2::2".parse().unwrap();

        let p = plan(
            &net(&format!(
                "<forward mode='nat'><nat ipv6='yes'/></forward>{v4}{v6}"
            )),
            "t.xml",
        )
        .unwrap();
        assert!(masquerades(&p));
        assert_eq!(
            config(&p, Some(a)),
            Some(Nat6Config {
                flags: nat6_flags::IPV6 | nat6_flags::MASQUERADE,
                _pad0: 0,
                addr: a.octets()
            })
        );

        // Without ipv6='yes' the network's IPv6 is routed, as with libvirt.
        let p = plan(&net(&format!("<forward mode='nat'/>{v4}{v6}")), "t.xml").unwrap();
        assert!(!masquerades(&p));
        assert_eq!(
            config(&p, None),
            Some(Nat6Config {
                flags: nat6_flags::IPV6,
                _pad0: 0,
                addr: [0; 16]
            })
        );

        // No IPv6 <ip>: nothing to route or masquerade; other modes: no entry.
        let p = plan(
            &net(&format!(
                "<forward mode='nat'><nat ipv6='yes'/></forward>{v4}"
            )),
            "t.xml",
        )
        .unwrap();
        assert!(!masquerades(&p) && config(&p, Some(a)).is_none());
        let p = plan(&net(&format!("<forward mode='route'/>{v4}{v6}")), "t.xml").unwrap();
        assert!(config(&p, None).is_none());
    }
}

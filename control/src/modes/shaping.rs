//! A guest port's `<bandwidth>` on the host. vxdp's own programs decide
//! where a guest's frames go, so the shaping has to sit where every path
//! passes:
//! - **outbound** (what the guest sends): a token bucket in
//!   `VXDP_RATE_LIMITS`, charged by the guest-port program before anything
//!   else. libvirt polices the tap's ingress with a tc filter; vxdp's TCX
//!   program runs before such filters and redirects past them.
//! - **inbound** (what the guest receives): an HTB qdisc on the port, as
//!   libvirt does. Every frame to the guest goes through it: the bridge's,
//!   a sibling's redirected by TC, the uplink's redirected by TC. The uplink's
//!   XDP redirect would not (a tap's `ndo_xdp_xmit` has no qdisc), so a
//!   shaped port's endpoint lacks `XDP_FRAMES` (`shared::port_endpoint`).

use crate::{
    dataplane::Maps,
    host::{
        netlink::Netlink,
        state::PortRecord,
        undo::{Step, Undo},
    },
    modes::shared::ModeError,
};

/// Shapes `port` as its record says; undone by `undo` when given.
pub async fn apply(
    nl: &Netlink,
    maps: &Maps,
    port: &PortRecord,
    undo: Option<&mut Undo>,
) -> Result<(), ModeError> {
    let Some(bw) = port.bandwidth else {
        return Ok(());
    };
    if let Some(limit) = bw.outbound_limit() {
        maps.set_rate_limit(port.ifindex, &limit)?;
    }
    if let Some(htb) = bw.inbound_htb() {
        if let Some(u) = undo {
            u.push(Step::ClearQdisc {
                ifindex: port.ifindex,
            });
        }
        nl.set_htb(port.ifindex, &htb).await?;
    }
    Ok(())
}

/// Puts back what of `port`'s shaping is missing: its bucket when the map
/// lacks it, and, when the port came back as another device (`moved`),
/// its qdisc. Returns whether it changed anything.
pub async fn repair(
    nl: &Netlink,
    maps: &Maps,
    port: &PortRecord,
    moved: bool,
) -> Result<bool, ModeError> {
    let Some(bw) = port.bandwidth else {
        return Ok(false);
    };
    let mut changed = false;
    if let Some(limit) = bw.outbound_limit()
        && maps.rate_limit(port.ifindex)?.is_none()
    {
        maps.set_rate_limit(port.ifindex, &limit)?;
        changed = true;
    }
    if moved && let Some(htb) = bw.inbound_htb() {
        nl.set_htb(port.ifindex, &htb).await?;
        changed = true;
    }
    Ok(changed)
}

/// Takes `port`'s shaping away (the device stays; a tap vxdp created goes
/// with its qdisc anyway).
pub async fn clear(nl: &Netlink, maps: &Maps, port: &PortRecord) -> Result<(), ModeError> {
    maps.remove_rate_limit(port.ifindex)?;
    if port.bandwidth.is_some_and(|b| b.inbound.is_some()) {
        nl.clear_root_qdisc(port.ifindex).await?;
    }
    Ok(())
}

//! The guest port a program runs for: its endpoint and network, the
//! verdicts every guest path shares, the tail call, and [`GuestHook`], what
//! differs between the guest port's TC program (every port) and its XDP
//! program (taps with `--guest-xdp`), which run the same code.

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, xdp_action},
    helpers::bpf_redirect,
    programs::{TcContext, XdpContext},
};
use vxdp_common::{Action, DropReason, Endpoint, NetworkConfig, endpoint_flags};

use crate::{
    base::{
        ctx::{PacketCtx, tc_vlan_present},
        fib::{self, FibParams},
        maps::{VXDP_ENDPOINTS, VXDP_GUEST_JUMP, VXDP_GUEST_XDP_JUMP, VXDP_NETWORKS, VXDP_PORTS},
        parse::HEADERS_MAX,
        policy,
        stats::{self, Drop, count},
    },
    flow::{
        deliver::{pass_judged, xdp_port_takes},
        partial_csum,
    },
};

/// What differs between the guest port's TC and XDP programs.
///
/// The XDP program runs in the tap's writer (native XDP, for frames that
/// are not GSO and fit a page) or on a socket buffer (generic XDP, after a
/// copy). It judges only frames it can finish: a frame larger than the
/// port's MTU (a GSO frame), one whose L4 checksum it can neither prove
/// finished nor finish itself (see [`GuestHook::finish_csum`]), one of a
/// rate-limited port or network (the bucket is charged once, by TC), and
/// any path XDP cannot take (direct networks, hairpin, an unresolved next
/// hop, an egress device that takes no XDP frames) are left to the TC
/// program untouched ([`GuestHook::defer`]): nothing is counted, charged or
/// written before.
pub trait GuestHook: PacketCtx + EbpfContext {
    type Verdict: Copy;
    /// XDP: paths it cannot take are deferred ([`GuestHook::defer`]).
    const DEFERS: bool;
    /// On to the kernel (the bridge), judged here.
    fn to_kernel(&self) -> Self::Verdict;
    /// XDP: the frame goes to the TC program as it came, unjudged.
    fn defer(&self) -> Self::Verdict;
    /// Whether the kernel moved a VLAN tag out of the frame (TC only).
    fn vlan_present(&self) -> bool;
    /// Makes the first [`HEADERS_MAX`] bytes directly readable.
    fn pull_headers(&self);
    /// Straight to another guest's `port`; `None`: the usual path.
    fn to_port(&self, port: u32, net_id: u32) -> Option<Result<Self::Verdict, Drop>>;
    /// Continues in the path program of `slot`.
    fn tail(&self, slot: u32, net_id: u32) -> Result<Self::Verdict, Drop>;
    /// Whether this hook can send a frame along the route `p` (`resolved`:
    /// the next hop's MAC is known). Asked before the frame is rewritten.
    fn can_forward(&self, p: &FibParams, resolved: bool) -> bool;
    /// Readies the frame's L4 checksum for a redirect, right before the
    /// first write of a path that ends in one. XDP: a TCP or UDP checksum
    /// a guest left unfinished (virtio-net NEEDS_CSUM: the field holds the
    /// pseudo-header sum; redirected, no socket buffer says so) is finished
    /// here (`flow::partial_csum::finish`), so the rewrites' incremental
    /// updates start from a real checksum; `false`: it could not be, the
    /// frame is untouched and goes to TC. Not earlier: a frame passed to
    /// the kernel keeps CHECKSUM_PARTIAL and needs the pseudo-header sum.
    /// TC: the socket buffer keeps that state itself.
    fn finish_csum(&self) -> bool;
    /// Sends the frame out along the route `p`, to be counted as `action`
    /// of `net_id` (XDP: in flight until the kernel reports on it).
    fn forward(
        &self,
        p: &FibParams,
        resolved: bool,
        net_id: u32,
        action: Action,
    ) -> Result<Self::Verdict, ()>;
}

impl GuestHook for TcContext {
    type Verdict = i32;
    const DEFERS: bool = false;

    #[inline(always)]
    fn to_kernel(&self) -> i32 {
        TC_ACT_OK
    }

    #[inline(always)]
    fn defer(&self) -> i32 {
        TC_ACT_OK
    }

    #[inline(always)]
    fn vlan_present(&self) -> bool {
        tc_vlan_present(self)
    }

    #[inline(always)]
    fn pull_headers(&self) {
        // Offloaded or GRO'd socket buffers may keep headers out of the
        // linear area that direct packet access sees.
        let linear = (self.data_end() - self.data()) as u32;
        let want = if self.len() < HEADERS_MAX {
            self.len()
        } else {
            HEADERS_MAX
        };
        if linear < want {
            let _ = self.pull_data(want);
        }
    }

    #[inline(always)]
    fn to_port(&self, port: u32, net_id: u32) -> Option<Result<i32, Drop>> {
        if unsafe { bpf_redirect(port, 0) } as i32 != TC_ACT_REDIRECT {
            return Some(Err(Drop::new(DropReason::RedirectFailed, net_id)));
        }
        Some(Ok(TC_ACT_REDIRECT))
    }

    #[inline(always)]
    fn tail(&self, slot: u32, net_id: u32) -> Result<i32, Drop> {
        unsafe { VXDP_GUEST_JUMP.tail_call(self, slot) };
        Err(Drop::new(DropReason::TailCallFailed, net_id))
    }

    #[inline(always)]
    fn can_forward(&self, _p: &FibParams, _resolved: bool) -> bool {
        true
    }

    #[inline(always)]
    fn finish_csum(&self) -> bool {
        true
    }

    #[inline(always)]
    fn forward(&self, p: &FibParams, resolved: bool, _: u32, _: Action) -> Result<i32, ()> {
        fib::tc_redirect_fib(p, resolved)
    }
}

impl GuestHook for XdpContext {
    type Verdict = u32;
    const DEFERS: bool = true;

    #[inline(always)]
    fn to_kernel(&self) -> u32 {
        pass_judged(self)
    }

    #[inline(always)]
    fn defer(&self) -> u32 {
        xdp_action::XDP_PASS
    }

    #[inline(always)]
    fn vlan_present(&self) -> bool {
        // XDP sees tags in the frame.
        false
    }

    #[inline(always)]
    fn pull_headers(&self) {}

    #[inline(always)]
    fn to_port(&self, port: u32, net_id: u32) -> Option<Result<u32, Drop>> {
        // A port that takes no XDP frames gets it from the bridge, and so
        // does a frame whose checksum cannot be finished here (the
        // bridge's path keeps its CHECKSUM_PARTIAL).
        if !xdp_port_takes(self, port) || !self.finish_csum() {
            return None;
        }
        let verdict = match VXDP_PORTS.redirect(port, 0) {
            Ok(v) => v,
            Err(_) => return Some(Err(Drop::new(DropReason::RedirectFailed, net_id))),
        };
        // The kernel may still refuse it after the program returns: the
        // tracepoint programs settle it (`uplink::refused`).
        stats::inflight_add(port, net_id, Action::PortForwarded, self.packet_len());
        Some(Ok(verdict))
    }

    #[inline(always)]
    fn tail(&self, slot: u32, net_id: u32) -> Result<u32, Drop> {
        unsafe { VXDP_GUEST_XDP_JUMP.tail_call(self, slot) };
        // An empty slot (direct, hairpin): the TC program's path.
        let _ = net_id;
        Ok(self.defer())
    }

    #[inline(always)]
    fn can_forward(&self, p: &FibParams, resolved: bool) -> bool {
        // The next hop's MAC is resolved by the TC program's
        // bpf_redirect_neigh; the egress device must take XDP frames (an
        // uplink with vxdp's native XDP program: `UPLINK_XDP_FRAMES`).
        resolved && egress_takes_xdp(p.ifindex)
    }

    #[inline(always)]
    fn finish_csum(&self) -> bool {
        partial_csum::finish(self)
    }

    #[inline(always)]
    fn forward(&self, p: &FibParams, _: bool, net_id: u32, action: Action) -> Result<u32, ()> {
        let verdict = VXDP_PORTS.redirect(p.ifindex, 0).map_err(|_| ())?;
        // The kernel may still refuse it (`uplink::refused` settles it by
        // the sending port's network).
        stats::inflight_add(p.ifindex, net_id, action, self.packet_len());
        Ok(verdict)
    }
}

/// Whether XDP may redirect to `ifindex`: it is in `VXDP_PORTS` (guest
/// ports, and an uplink control found to take XDP frames).
#[inline(always)]
fn egress_takes_xdp(ifindex: u32) -> bool {
    VXDP_PORTS.get_ifindex(ifindex).is_some()
}

/// Where a NAT network's guest packet goes by its route lookup's answer
/// (`rc`, `p` filled, `FIB_*`): `Some(resolved)` out of the uplink
/// (`resolved`: the next hop's MAC is in `p`); `None` to the kernel — to the
/// host itself (not NATed, as with libvirt), unroutable (the kernel
/// answers), or larger than the uplink's MTU when `may_answer_too_big` (DF
/// set, or IPv6: the kernel answers "fragmentation needed" / "packet too
/// big", so path MTU discovery works); a drop otherwise (IPv4 without DF:
/// the kernel would fragment it un-NATed).
#[inline(always)]
pub fn nat_exit(
    rc: i64,
    p: &FibParams,
    net: &NetworkConfig,
    net_id: u32,
    may_answer_too_big: bool,
) -> Result<Option<bool>, Drop> {
    match rc {
        fib::FIB_SUCCESS | fib::FIB_NO_NEIGH if p.ifindex == net.uplink_ifindex => {
            Ok(Some(rc == fib::FIB_SUCCESS))
        }
        fib::FIB_SUCCESS | fib::FIB_NO_NEIGH => {
            Err(Drop::new(DropReason::RouteNotViaUplink, net_id))
        }
        fib::FIB_NOT_FWDED | fib::FIB_BLACKHOLE..=fib::FIB_PROHIBIT => Ok(None),
        fib::FIB_FWD_DISABLED => Err(Drop::new(DropReason::ForwardingDisabled, net_id)),
        fib::FIB_FRAG_NEEDED if may_answer_too_big => Ok(None),
        fib::FIB_FRAG_NEEDED => Err(Drop::new(DropReason::FragmentationNeeded, net_id)),
        _ => Err(Drop::new(DropReason::RouteNotViaUplink, net_id)),
    }
}

/// Sends a frame out along the route `p` (rewritten already), counted as
/// `action` once the redirect is accepted: a failed one is a drop only.
#[inline(always)]
pub fn redirect<C: GuestHook>(
    ctx: &C,
    net_id: u32,
    p: &FibParams,
    resolved: bool,
    action: Action,
) -> Result<C::Verdict, Drop> {
    let verdict = ctx
        .forward(p, resolved, net_id, action)
        .map_err(|_| Drop::new(DropReason::RedirectFailed, net_id))?;
    count(ctx, net_id, action);
    Ok(verdict)
}

/// Left to the bridge (other guests, the host, ARP, DHCP, broadcast).
#[inline(always)]
pub fn pass<C: GuestHook>(ctx: &C, net_id: u32) -> Result<C::Verdict, Drop> {
    count(ctx, net_id, Action::GuestPassed);
    Ok(ctx.to_kernel())
}

/// The port's endpoint and its (active) network.
#[inline(always)]
pub fn port_network<C: PacketCtx>(
    ctx: &C,
) -> Result<(u32, &'static Endpoint, &'static NetworkConfig), Drop> {
    let ifindex = ctx.ingress_ifindex();
    let endpoint =
        unsafe { VXDP_ENDPOINTS.get(&ifindex) }.ok_or(Drop::new(DropReason::UnknownPort, 0))?;
    let net = VXDP_NETWORKS
        .get(endpoint.network_id)
        .filter(|n| policy::active(n))
        .ok_or(Drop::new(DropReason::UnknownPort, endpoint.network_id))?;
    Ok((ifindex, endpoint, net))
}

/// Continues in the program of `slot`; returns only if that fails (XDP:
/// an empty slot defers to the TC program).
#[inline(always)]
pub fn tail<C: GuestHook>(ctx: &C, slot: u32, net_id: u32) -> Result<C::Verdict, Drop> {
    ctx.tail(slot, net_id)
}

/// Whether a guest port's rate limits are charged on this frame's path: the
/// XDP program leaves rate-limited ports and networks to TC.
#[inline(always)]
pub fn policed_elsewhere<C: GuestHook>(endpoint: &Endpoint, net: &NetworkConfig) -> bool {
    C::DEFERS
        && (endpoint.flags & endpoint_flags::RATE_LIMITED != 0
            || net.flags & vxdp_common::network_flags::RATE_LIMITED_OUT != 0)
}

//! Admission control: a guest port, and a network, may hold only so many
//! NAT flows (`VXDP_FLOW_QUOTAS`). Without it one guest creating flows fast
//! fills the shared LRU table and evicts every other guest's established
//! flows. A port's or network's entry is created on its first flow with the
//! default limit the control plane wrote at load; no default, no limit (a
//! control plane that predates admission control).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::BPF_NOEXIST;
use vxdp_common::{DropReason, FlowOwner, FlowQuota, flow_quota};

use crate::base::{clock, maps::VXDP_FLOW_QUOTAS};

/// The quota entry `key`, created from the default at `default_key` when
/// missing.
#[inline(always)]
fn entry(key: u32, default_key: u32) -> Option<*mut FlowQuota> {
    if let Some(q) = VXDP_FLOW_QUOTAS.get_ptr_mut(&key) {
        return Some(q);
    }
    let default = unsafe { VXDP_FLOW_QUOTAS.get(&default_key) }?;
    // A new count of 0 is exact: as fresh as the daemon's last pass, which
    // stamps the defaults too.
    let fresh = FlowQuota {
        count: 0,
        limit: default.limit,
        recounted_ns: default.recounted_ns,
    };
    let _ = VXDP_FLOW_QUOTAS.insert(&key, &fresh, BPF_NOEXIST as u64);
    VXDP_FLOW_QUOTAS.get_ptr_mut(&key)
}

/// Whether `q` refuses a new flow (`flow_quota::refuses`: at its limit,
/// counted recently by the daemon).
#[inline(always)]
fn full(q: *mut FlowQuota) -> bool {
    let q = unsafe { &*q };
    flow_quota::refuses(q.count, q.limit, q.recounted_ns, clock::now())
}

#[inline(always)]
fn add(q: Option<*mut FlowQuota>, delta: u32) {
    if let Some(q) = q {
        // One atomic add (BPF's XADD): other CPUs count on the same entry.
        // core has no atomic types for BPF; the intrinsic is what they use.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*q).count, delta) };
    }
}

/// A new flow of guest port `ifindex` in network `net_id`: refused when the
/// guest or its network holds its limit: the drop reason's number, 0 when
/// admitted. (A BPF subprogram: its keys stay
/// off the NAT programs' frames, which share 512 bytes with the port
/// search's callback.)
#[inline(never)]
pub fn admit(owner: &FlowOwner) -> u32 {
    if entry(owner.ifindex, flow_quota::GUEST_DEFAULT).is_some_and(full) {
        return DropReason::GuestFlowLimit as u32;
    }
    let net = flow_quota::network(owner.network_id as u32);
    if entry(net, flow_quota::NETWORK_DEFAULT).is_some_and(full) {
        return DropReason::NetworkFlowLimit as u32;
    }
    0
}

/// Counts a flow created by guest port `ifindex` of network `net_id`.
#[inline(never)]
pub fn created(ifindex: u32, net_id: u32) {
    add(VXDP_FLOW_QUOTAS.get_ptr_mut(&ifindex), 1);
    add(
        VXDP_FLOW_QUOTAS.get_ptr_mut(&flow_quota::network(net_id)),
        1,
    );
}

/// Uncounts a flow the programs removed.
#[inline(always)]
pub fn removed(ifindex: u32, net_id: u32) {
    add(VXDP_FLOW_QUOTAS.get_ptr_mut(&ifindex), u32::MAX);
    add(
        VXDP_FLOW_QUOTAS.get_ptr_mut(&flow_quota::network(net_id)),
        u32::MAX,
    );
}

//! Per-port counters (`VXDP_PORT_STATS`, a per-CPU hash): the same
//! action and drop-reason slots as `VXDP_COUNTERS`, split by the interface
//! the packet arrived on, so metrics can carry an `interface` label. Events
//! that belong to no packet (conntrack bookkeeping) are only in
//! `VXDP_COUNTERS`.

use bytemuck::{Pod, Zeroable};

use crate::user_pod;

/// Key of `VXDP_PORT_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PortCounterKey {
    /// The interface the packet arrived on (guest port or uplink).
    pub ifindex: u32,
    /// The network the packet was charged to (0: none).
    pub network_id: u16,
    /// A counter slot (`Action::slot` or `DropReason::slot`).
    pub slot: u16,
}
const _: () = assert!(core::mem::size_of::<PortCounterKey>() == 8);

/// Capacity of `VXDP_PORT_STATS`: a guest port uses a handful of slots,
/// an uplink a handful per network. Entries are allocated on first use
/// (`BPF_F_NO_PREALLOC`), so the size costs nothing until used; when full,
/// the per-network counters still count.
pub const MAX_PORT_COUNTERS: u32 = 16_384;

user_pod!(PortCounterKey);

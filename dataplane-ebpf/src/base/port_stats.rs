//! Per-port counters (`VXDP_PORT_STATS`): every packet counted in
//! `VXDP_COUNTERS` is also counted under the interface it arrived on.

use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::PerCpuHashMap};
use vxdp_common::{Counter, MAX_PORT_COUNTERS, PortCounterKey};

/// `BPF_F_NO_PREALLOC`: entries are allocated when a port first counts.
const NO_PREALLOC: u32 = 1;

#[map]
pub static VXDP_PORT_STATS: PerCpuHashMap<PortCounterKey, Counter> =
    PerCpuHashMap::pinned(MAX_PORT_COUNTERS, NO_PREALLOC);

#[inline(always)]
pub fn add(ifindex: u32, network_id: u32, slot: u32, bytes: u32) {
    add_many(ifindex, network_id, slot, 1, bytes as u64)
}

/// Takes packets back out of a per-port slot (this CPU counted them).
#[inline(always)]
pub fn sub(ifindex: u32, network_id: u32, slot: u32, packets: u64, bytes: u64) {
    let key = PortCounterKey {
        ifindex,
        network_id: network_id as u16,
        slot: slot as u16,
    };
    if let Some(c) = VXDP_PORT_STATS.get_ptr_mut(&key) {
        unsafe {
            (*c).packets = (*c).packets.saturating_sub(packets);
            (*c).bytes = (*c).bytes.saturating_sub(bytes);
        }
    }
}

#[inline(always)]
pub fn add_many(ifindex: u32, network_id: u32, slot: u32, packets: u64, bytes: u64) {
    let key = PortCounterKey {
        ifindex,
        network_id: network_id as u16,
        slot: slot as u16,
    };
    let mut counter = VXDP_PORT_STATS.get_ptr_mut(&key);
    if counter.is_none() {
        // First packet of this (port, slot): create it. A concurrent CPU
        // may win the insert (NOEXIST), then its entry is used; a full map
        // leaves the packet counted per network only.
        let _ = VXDP_PORT_STATS.insert(&key, &Counter::default(), BPF_NOEXIST as u64);
        counter = VXDP_PORT_STATS.get_ptr_mut(&key);
    }
    if let Some(c) = counter {
        // Per-CPU value: no other writer.
        unsafe {
            (*c).packets += packets;
            (*c).bytes += bytes;
        }
    }
}

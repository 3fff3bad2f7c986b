//! New-flow setup: every generated packet is a new 5-tuple (64,512 source
//! ports per destination, then the next destination address, as masquerade
//! has only that many ports per destination), counted at the sink; then
//! what the table holds and what it costs in memory per flow.

use std::{net::SocketAddrV4, process::Command};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, Map, MapData};
use vxdp_common::{ConntrackEntry, ConntrackKey};

use crate::{
    forward::{DST_PORT, Rate},
    progs::Traffic,
    topo::{GUEST_ADDR, GUEST_MAC, OUTSIDE, Topology},
};

pub const PORTS_PER_DST: u32 = 64512;

/// Flows `first..first+count` of the flow-setup sequence.
pub fn traffic(topo: &Topology, total: u32) -> Traffic {
    Traffic {
        eth_src: GUEST_MAC,
        eth_dst: topo.bridge_mac,
        src: SocketAddrV4::new(GUEST_ADDR.parse().unwrap(), 1024),
        dst: SocketAddrV4::new(OUTSIDE.parse().unwrap(), DST_PORT),
        flows: total,
        ports_per_dst: PORTS_PER_DST,
        vary_dst_port: false,
    }
}

/// Sends the next `count` new flows (the sequence continues from the last
/// call; [`start`] restarts it).
pub fn setup(topo: &mut Topology, count: u32, cpu: usize) -> Result<Rate> {
    let before = topo.progs.sink_count()?;
    let ns = topo.guest.name.clone();
    let time = topo.progs.generate(&ns, "eth0", count, cpu)?;
    let delivered = topo.progs.sink_count()? - before;
    Ok(Rate::new(count, delivered, time))
}

/// Empties the table and points the generator at flow 0 of `t`.
pub fn start(topo: &mut Topology, t: &Traffic) -> Result<()> {
    topo.flush_conntrack()?;
    topo.progs.set_traffic(t);
    // Freed conntrack objects go back to the slab after an RCU grace period.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(())
}

/// Bytes in use in the slab caches conntrack allocates from: its own
/// (`nf_conntrack`, the `struct nf_conn`) and the generic `kmalloc-*` ones
/// (its extensions: NAT, events, ...). Other tenants' allocations are noise
/// in this; the flow counts are large enough to dwarf it.
pub fn conntrack_slab_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo")?;
    let mut total = 0u64;
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ours = f.first().is_some_and(|n| {
            *n == "nf_conntrack"
                || n.starts_with("kmalloc-")
                    && !n.starts_with("kmalloc-cg")
                    && !n.starts_with("kmalloc-rcl")
        });
        if ours && f.len() > 3 {
            let (active, size): (u64, u64) = (f[1].parse().unwrap_or(0), f[3].parse().unwrap_or(0));
            total += active * size;
        }
    }
    Ok(total)
}

/// The size of one `struct nf_conn` (the `nf_conntrack` slab's object size).
pub fn nf_conn_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo")?;
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"nf_conntrack"))
                .then(|| f.get(3)?.parse().ok())
                .flatten()
        })
        .context("no nf_conntrack slab in /proc/slabinfo")
}

/// Kernel conntrack entries in the topology's hypervisor namespace.
pub fn kernel_entries(topo: &Topology) -> Result<u64> {
    let out = topo
        .hyp
        .exec("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Entries in vxdp's (pinned) conntrack table: two per flow.
pub fn vxdp_entries(topo: &Topology) -> Result<u64> {
    let pin = topo.conntrack_pin().context("not a vxdp topology")?;
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    let map: HashMap<_, ConntrackKey, ConntrackEntry> = HashMap::try_from(Map::LruHashMap(data))?;
    Ok(map.keys().filter(|k| k.is_ok()).count() as u64)
}

/// The memory the kernel charges for vxdp's conntrack map (bpftool's
/// `bytes_memlock`).
pub fn vxdp_map_bytes(topo: &Topology) -> Result<u64> {
    let pin = topo.conntrack_pin().context("not a vxdp topology")?;
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(&pin)
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool map show pinned {}: {}",
            pin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["bytes_memlock"]
        .as_u64()
        .context("bpftool printed no bytes_memlock")
}

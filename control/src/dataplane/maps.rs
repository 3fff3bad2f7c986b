//! Handles on the pinned maps: typed access to each map family (networks,
//! subnets, endpoints and MACs, direct NICs and ports, conntrack, NAT66,
//! counters). What the pinned set holds is the [`super::layout`]'s answer.

use aya::maps::{
    Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
    lpm_trie::Key as LpmKey,
};
use vxdp_common::flow::FlowEntry;
use vxdp_common::{
    COUNTER_SLOTS, Conntrack6Entry, Conntrack6Key, ConntrackEntry, ConntrackKey, Counter,
    DIR_ORIGINAL, DirectNic, DirectPort, Endpoint, FlowQuota, Forward, ForwardKey,
    HostSocketConfig, MacKey, MacPort, Nat6Config, NetworkConfig, PortCounterKey, RateLimit,
    RouteOwner, Subnet6Key, SubnetKey, SubnetOwner, counter_index, endpoint_flags, flow_quota,
    names,
};

use super::{
    DataplaneError, Pins,
    layout::{self, Feature, Layout},
    map_err,
};

fn open_map(pins: &Pins, name: &'static str) -> Result<Map, DataplaneError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(DataplaneError::NotLoaded(pins.root.clone()));
    }
    let data = MapData::from_pin(&path).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

macro_rules! typed_map {
    ($fn:ident, $name:expr, $ty:ty) => {
        pub fn $fn(&self) -> Result<$ty, DataplaneError> {
            <$ty>::try_from(open_map(&self.pins, $name)?).map_err(|e| match e {
                MapError::InvalidKeySize { size, expected }
                | MapError::InvalidValueSize { size, expected } => {
                    layout::older_map($name, &self.pins, size, expected).into()
                }
                e => map_err($name)(e),
            })
        }
    };
}

/// A conntrack table's entries, optionally of one network (`network_of`
/// reads an entry's network id).
fn entries_of<K: aya::Pod, V: aya::Pod>(
    table: &HashMap<MapData, K, V>,
    network_id: Option<u32>,
    network_of: impl Fn(&V) -> u32,
) -> Vec<(K, V)> {
    // Entries can vanish (LRU) between key and value reads.
    table
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| network_id.is_none_or(|id| network_of(v) == id))
        .collect()
}

/// Removes the entries of a conntrack table (optionally of one network)
/// that `pick` chooses; returns how many went.
fn remove_where<K: aya::Pod, V: aya::Pod + FlowEntry>(
    table: &mut HashMap<MapData, K, V>,
    network_id: Option<u32>,
    pick: impl Fn(&K, &V) -> bool,
) -> usize {
    let keys: Vec<K> = entries_of(table, network_id, FlowEntry::network_id)
        .into_iter()
        .filter(|(k, v)| pick(k, v))
        .map(|(k, _)| k)
        .collect();
    keys.iter().filter(|k| table.remove(k).is_ok()).count()
}

/// Handles on the pinned maps.
pub struct Maps {
    pins: Pins,
    layout: Layout,
}

impl Maps {
    pub fn open(pins: &Pins) -> Result<Self, DataplaneError> {
        if !pins.is_loaded() {
            return Err(DataplaneError::NotLoaded(pins.root.clone()));
        }
        Ok(Self {
            pins: pins.clone(),
            layout: layout::detect(pins)?,
        })
    }

    typed_map!(networks, names::MAP_NETWORKS, Array<MapData, NetworkConfig>);
    typed_map!(endpoints, names::MAP_ENDPOINTS, HashMap<MapData, u32, Endpoint>);
    typed_map!(subnets, names::MAP_SUBNETS, LpmTrie<MapData, SubnetKey, SubnetOwner>);
    typed_map!(subnets6, names::MAP_SUBNETS6, LpmTrie<MapData, Subnet6Key, SubnetOwner>);
    typed_map!(conntrack, names::MAP_CONNTRACK, HashMap<MapData, ConntrackKey, ConntrackEntry>);
    typed_map!(counter_array, names::MAP_COUNTERS, PerCpuArray<MapData, Counter>);
    typed_map!(ports, names::MAP_PORTS, DevMapHash<MapData>);
    typed_map!(macs, names::MAP_MACS, HashMap<MapData, MacKey, MacPort>);
    typed_map!(timeouts, names::MAP_TIMEOUTS, Array<MapData, u64>);
    typed_map!(direct_nics, names::MAP_DIRECT_NICS, HashMap<MapData, u32, DirectNic>);
    typed_map!(direct_ports, names::MAP_DIRECT_PORTS, HashMap<MapData, u32, DirectPort>);
    typed_map!(port_counters, names::MAP_PORT_COUNTERS, PerCpuHashMap<MapData, PortCounterKey, Counter>);
    typed_map!(conntrack6, names::MAP_CONNTRACK6, HashMap<MapData, Conntrack6Key, Conntrack6Entry>);
    typed_map!(nat6, names::MAP_NAT6, Array<MapData, Nat6Config>);
    typed_map!(flow_quotas, names::MAP_FLOW_QUOTAS, HashMap<MapData, u32, FlowQuota>);
    typed_map!(rate_limits, names::MAP_RATE_LIMITS, HashMap<MapData, u32, RateLimit>);
    typed_map!(host_config, names::MAP_HOST_CONFIG, Array<MapData, HostSocketConfig>);

    /// Tells the cgroup socket programs which network namespace they serve
    /// (0: none).
    pub fn set_host_netns_cookie(&self, netns_cookie: u64) -> Result<(), DataplaneError> {
        self.layout.require(&self.pins, Feature::HostForwards)?;
        self.host_config()?
            .set(0, &HostSocketConfig { netns_cookie }, 0)
            .map_err(map_err(names::MAP_HOST_CONFIG))
    }

    /// The network namespace the cgroup socket programs serve (None on a
    /// layout without them, 0 when off).
    pub fn host_netns_cookie(&self) -> Result<Option<u64>, DataplaneError> {
        if !self.layout.has(Feature::HostForwards) {
            return Ok(None);
        }
        let cfg = self
            .host_config()?
            .get(&0, 0)
            .map_err(map_err(names::MAP_HOST_CONFIG))?;
        Ok(Some(cfg.netns_cookie))
    }

    /// Sets (or replaces, starting full) guest port `ifindex`'s outbound
    /// token bucket. Refused on an older layout: the port would go
    /// unshaped.
    pub fn set_rate_limit(&self, ifindex: u32, limit: &RateLimit) -> Result<(), DataplaneError> {
        self.layout.require(&self.pins, Feature::RateLimits)?;
        self.rate_limits()?
            .insert(&ifindex, limit, 0)
            .map_err(map_err(names::MAP_RATE_LIMITS))
    }

    /// Guest port `ifindex`'s outbound token bucket, if it has one.
    pub fn rate_limit(&self, ifindex: u32) -> Result<Option<RateLimit>, DataplaneError> {
        if !self.layout.has(Feature::RateLimits) {
            return Ok(None);
        }
        match self.rate_limits()?.get(&ifindex, 0) {
            Ok(l) => Ok(Some(l)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_RATE_LIMITS)(e)),
        }
    }

    /// Forgets network `id`'s two network-wide buckets (stopped).
    pub fn remove_network_rate_limits(&self, id: u32) -> Result<(), DataplaneError> {
        self.remove_rate_limit(vxdp_common::rate_key::network_out(id))?;
        self.remove_rate_limit(vxdp_common::rate_key::network_in(id))
    }

    /// Forgets guest port `ifindex`'s bucket (unplugged).
    pub fn remove_rate_limit(&self, ifindex: u32) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::RateLimits) {
            return Ok(());
        }
        match self.rate_limits()?.remove(&ifindex) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_RATE_LIMITS)(e)),
        }
    }

    typed_map!(forwards, names::MAP_FORWARDS, HashMap<MapData, ForwardKey, Forward>);

    /// Every port forward in `VXDP_FORWARDS` (none on a layout without
    /// them).
    pub fn forward_entries(&self) -> Result<Vec<(ForwardKey, Forward)>, DataplaneError> {
        if !self.layout.has(Feature::PortForwards) {
            return Ok(Vec::new());
        }
        Ok(self.forwards()?.iter().filter_map(Result::ok).collect())
    }

    /// Makes guest port `ifindex`'s forwards exactly `want`: entries of the
    /// port not in it go, the rest are written (an entry that already
    /// leads to the same place keeps its counter). Forwards need the
    /// current layout; removing none works on any.
    pub fn set_port_forwards(
        &self,
        ifindex: u32,
        want: &[(ForwardKey, Forward)],
    ) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::PortForwards) {
            if want.is_empty() {
                return Ok(());
            }
            return Err(self
                .layout
                .require(&self.pins, Feature::PortForwards)
                .unwrap_err()
                .into());
        }
        let mut map = self.forwards()?;
        let have: Vec<(ForwardKey, Forward)> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.ifindex == ifindex)
            .collect();
        for (k, _) in &have {
            if !want.iter().any(|(w, _)| w == k) {
                match map.remove(k) {
                    Ok(()) => {}
                    Err(e) if absent(&e) => {}
                    Err(e) => return Err(map_err(names::MAP_FORWARDS)(e)),
                }
            }
        }
        for (k, v) in want {
            let same = |h: &Forward| {
                Forward {
                    opened: h.opened,
                    ..*v
                } == *h
            };
            if have.iter().any(|(hk, hv)| hk == k && same(hv)) {
                continue;
            }
            map.insert(k, v, 0).map_err(map_err(names::MAP_FORWARDS))?;
        }
        Ok(())
    }

    typed_map!(routes, names::MAP_ROUTES, LpmTrie<MapData, SubnetKey, RouteOwner>);

    /// Writes a static route's entry (IPv4 prefix → network and gateway
    /// guest). A dataplane pinned before `VXDP_ROUTES` cannot hold it:
    /// refused with the way out.
    pub fn set_route(
        &self,
        addr: u32,
        prefix: u32,
        owner: &RouteOwner,
    ) -> Result<(), DataplaneError> {
        self.layout.require(&self.pins, Feature::StaticRoutes)?;
        self.routes()?
            .insert(&LpmKey::new(prefix, SubnetKey { addr }), owner, 0)
            .map_err(map_err(names::MAP_ROUTES))
    }

    pub fn remove_route(&self, addr: u32, prefix: u32) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::StaticRoutes) {
            return Ok(());
        }
        match self
            .routes()?
            .remove(&LpmKey::new(prefix, SubnetKey { addr }))
        {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_ROUTES)(e)),
        }
    }

    /// The entry `VXDP_ROUTES` holds for exactly `addr/prefix`, if any.
    pub fn route(&self, addr: u32, prefix: u32) -> Result<Option<RouteOwner>, DataplaneError> {
        if !self.layout.has(Feature::StaticRoutes) {
            return Ok(None);
        }
        match self
            .routes()?
            .get(&LpmKey::new(prefix, SubnetKey { addr }), 0)
        {
            Ok(r) => Ok(Some(r)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(map_err(names::MAP_ROUTES)(e)),
        }
    }

    /// Writes the default flow limits the programs give a guest port and a
    /// network on their first flow (0: no limit). Entries that exist keep
    /// theirs.
    pub fn set_flow_limits(&self, per_guest: u32, per_network: u32) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::FlowQuotas) {
            return Ok(());
        }
        let mut q = self.flow_quotas()?;
        for (key, limit) in [
            (flow_quota::GUEST_DEFAULT, per_guest),
            (flow_quota::NETWORK_DEFAULT, per_network),
        ] {
            let defaults = FlowQuota {
                limit,
                ..FlowQuota::default()
            };
            q.insert(&key, &defaults, 0)
                .map_err(map_err(names::MAP_FLOW_QUOTAS))?;
        }
        Ok(())
    }

    /// A guest port's or network's quota entry (see `flow_quota`), if any.
    pub fn flow_quota(&self, key: u32) -> Result<Option<FlowQuota>, DataplaneError> {
        if !self.layout.has(Feature::FlowQuotas) {
            return Ok(None);
        }
        match self.flow_quotas()?.get(&key, 0) {
            Ok(q) => Ok(Some(q)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_FLOW_QUOTAS)(e)),
        }
    }

    /// Forgets a guest port's or network's quota (unplugged, stopped): what
    /// gets its ifindex or id next starts from zero.
    pub fn remove_flow_quota(&self, key: u32) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::FlowQuotas) {
            return Ok(());
        }
        match self.flow_quotas()?.remove(&key) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_FLOW_QUOTAS)(e)),
        }
    }

    /// Sets every quota's count to the flows the tables hold (original
    /// entries of both tables, by port and network) and stamps it: the
    /// programs cannot uncount what timed out unseen, what LRU eviction or
    /// the control plane removed; a limit holds only while stamped recently.
    pub fn recount_flow_quotas(&self) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::FlowQuotas) {
            return Ok(());
        }
        let mut held: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        let mut tally = |ifindex: u32, net: u32| {
            *held.entry(ifindex).or_default() += 1;
            *held.entry(flow_quota::network(net)).or_default() += 1;
        };
        for (_, e) in self.conntrack_entries(None)? {
            if e.direction == DIR_ORIGINAL {
                tally(e.ifindex, e.network_id as u32);
            }
        }
        for (_, e) in self.conntrack6_entries(None)? {
            if e.direction == DIR_ORIGINAL {
                tally(e.ifindex, e.network_id as u32);
            }
        }
        let mut q = self.flow_quotas()?;
        // The defaults are stamped too (their count stays 0): the entries
        // the programs create from them start as fresh as this pass.
        let keys: Vec<u32> = q.keys().filter_map(Result::ok).collect();
        let now = super::monotonic_ns();
        for key in keys {
            let Ok(mut quota) = q.get(&key, 0) else {
                continue;
            };
            quota.count = held.get(&key).copied().unwrap_or(0);
            quota.recounted_ns = now;
            // BPF_EXIST: an entry removed meanwhile stays removed.
            let _ = q.insert(&key, &quota, 2);
        }
        Ok(())
    }

    /// The pinned map layout: what the maps hold (see [`layout`]).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Writes network `id`'s `VXDP_NAT6` entry (zeroed: none).
    pub fn set_nat6(&self, id: u32, cfg: &Nat6Config) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::Nat66) {
            if *cfg == Nat6Config::default() {
                return Ok(());
            }
            self.layout.require(&self.pins, Feature::Nat66)?;
        }
        self.nat6()?
            .set(id, cfg, 0)
            .map_err(map_err(names::MAP_NAT6))
    }

    /// All NAT66 conntrack entries (both directions), optionally of one network.
    pub fn conntrack6_entries(
        &self,
        network_id: Option<u32>,
    ) -> Result<Vec<(Conntrack6Key, Conntrack6Entry)>, DataplaneError> {
        if !self.layout.has(Feature::Nat66) {
            return Ok(Vec::new());
        }
        Ok(entries_of(&self.conntrack6()?, network_id, |v| {
            v.network_id as u32
        }))
    }

    pub fn set_network(&self, id: u32, cfg: &NetworkConfig) -> Result<(), DataplaneError> {
        self.networks()?
            .set(id, cfg, 0)
            .map_err(map_err(names::MAP_NETWORKS))
    }

    pub fn set_subnet(
        &self,
        addr: u32,
        prefix: u32,
        owner: &SubnetOwner,
    ) -> Result<(), DataplaneError> {
        self.subnets()?
            .insert(&LpmKey::new(prefix, SubnetKey { addr }), owner, 0)
            .map_err(map_err(names::MAP_SUBNETS))
    }

    pub fn remove_subnet(&self, addr: u32, prefix: u32) -> Result<(), DataplaneError> {
        match self
            .subnets()?
            .remove(&LpmKey::new(prefix, SubnetKey { addr }))
        {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_SUBNETS)(e)),
        }
    }

    /// The owner `VXDP_SUBNETS` gives `addr/prefix` (longest match, as the
    /// programs look it up), if any.
    pub fn subnet_owner(
        &self,
        addr: u32,
        prefix: u32,
    ) -> Result<Option<SubnetOwner>, DataplaneError> {
        match self
            .subnets()?
            .get(&LpmKey::new(prefix, SubnetKey { addr }), 0)
        {
            Ok(o) => Ok(Some(o)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_SUBNETS)(e)),
        }
    }

    /// [`Self::subnet_owner`] in `VXDP_SUBNETS6`.
    pub fn subnet6_owner(
        &self,
        addr: [u8; 16],
        prefix: u32,
    ) -> Result<Option<SubnetOwner>, DataplaneError> {
        match self
            .subnets6()?
            .get(&LpmKey::new(prefix, Subnet6Key { addr }), 0)
        {
            Ok(o) => Ok(Some(o)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_SUBNETS6)(e)),
        }
    }

    pub fn set_subnet6(
        &self,
        addr: [u8; 16],
        prefix: u32,
        owner: &SubnetOwner,
    ) -> Result<(), DataplaneError> {
        self.subnets6()?
            .insert(&LpmKey::new(prefix, Subnet6Key { addr }), owner, 0)
            .map_err(map_err(names::MAP_SUBNETS6))
    }

    pub fn remove_subnet6(&self, addr: [u8; 16], prefix: u32) -> Result<(), DataplaneError> {
        match self
            .subnets6()?
            .remove(&LpmKey::new(prefix, Subnet6Key { addr }))
        {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_SUBNETS6)(e)),
        }
    }

    /// Plugs a guest port in: its endpoint, its redirect slot and (MAC
    /// known) its `VXDP_MACS` entry. A MAC or network the port had before
    /// loses its entry.
    pub fn set_endpoint(&self, ifindex: u32, ep: &Endpoint) -> Result<(), DataplaneError> {
        if let Some(old) = self.endpoint(ifindex)?
            && (old.mac != ep.mac
                || old.network_id != ep.network_id
                || ep.flags & endpoint_flags::MAC_KNOWN == 0)
        {
            self.remove_mac(ifindex, &old)?;
        }
        self.endpoints()?
            .insert(&ifindex, ep, 0)
            .map_err(map_err(names::MAP_ENDPOINTS))?;
        if ep.flags & endpoint_flags::MAC_KNOWN != 0 && self.layout.has(Feature::MacTable) {
            let key = MacKey {
                network_id: ep.network_id,
                mac: ep.mac,
                _pad0: [0; 2],
            };
            self.macs()?
                .insert(&key, &MacPort { ifindex, _pad0: 0 }, 0)
                .map_err(map_err(names::MAP_MACS))?;
        }
        self.ports()?
            .insert(ifindex, ifindex, None, 0)
            .map_err(DataplaneError::Ports)
    }

    /// Lets the tap guest ports' XDP programs redirect out of the uplink
    /// `ifindex` (`on`: the kernel says it takes XDP frames) or not. Guest
    /// ports' own entries are left alone.
    pub fn set_xdp_target(&self, ifindex: u32, on: bool) -> Result<(), DataplaneError> {
        if self.endpoint(ifindex)?.is_some() {
            return Ok(());
        }
        let mut ports = self.ports()?;
        if on {
            return ports
                .insert(ifindex, ifindex, None, 0)
                .map_err(DataplaneError::Ports);
        }
        match ports.remove(ifindex) {
            Err(e) if !absent(&e) => Err(map_err(names::MAP_PORTS)(e)),
            _ => Ok(()),
        }
    }

    /// Removes `ep`'s MAC entry if it still points at `ifindex`.
    fn remove_mac(&self, ifindex: u32, ep: &Endpoint) -> Result<(), DataplaneError> {
        if !self.layout.has(Feature::MacTable) {
            return Ok(());
        }
        let key = MacKey {
            network_id: ep.network_id,
            mac: ep.mac,
            _pad0: [0; 2],
        };
        let mut macs = self.macs()?;
        match macs.get(&key, 0) {
            Ok(p) if p.ifindex == ifindex => match macs.remove(&key) {
                Ok(()) => Ok(()),
                Err(e) if absent(&e) => Ok(()),
                Err(e) => Err(map_err(names::MAP_MACS)(e)),
            },
            Ok(_) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_MACS)(e)),
        }
    }

    /// Whether `VXDP_MACS` holds what `ep` (the endpoint of `ifindex`) needs.
    pub fn mac_entry_current(&self, ifindex: u32, ep: &Endpoint) -> Result<bool, DataplaneError> {
        if ep.flags & endpoint_flags::MAC_KNOWN == 0 || !self.layout.has(Feature::MacTable) {
            return Ok(true);
        }
        Ok(self.mac_port(ep.network_id, ep.mac)? == Some(ifindex))
    }

    /// The port `VXDP_MACS` names for `mac` in network `network_id`.
    pub fn mac_port(&self, network_id: u32, mac: [u8; 6]) -> Result<Option<u32>, DataplaneError> {
        match self.macs()?.get(
            &MacKey {
                network_id,
                mac,
                _pad0: [0; 2],
            },
            0,
        ) {
            Ok(p) => Ok(Some(p.ifindex)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_MACS)(e)),
        }
    }

    /// The endpoint of a guest port, if it is plugged in.
    pub fn endpoint(&self, ifindex: u32) -> Result<Option<Endpoint>, DataplaneError> {
        match self.endpoints()?.get(&ifindex, 0) {
            Ok(ep) => Ok(Some(ep)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_ENDPOINTS)(e)),
        }
    }

    /// Unplugs a guest port: its endpoint, MAC and port entries, its rate
    /// limit, its port forwards, and every flow it created (replies must
    /// not reach whatever is plugged next with this ifindex).
    pub fn remove_endpoint(&self, ifindex: u32) -> Result<(), DataplaneError> {
        if let Some(old) = self.endpoint(ifindex)? {
            self.remove_mac(ifindex, &old)?;
        }
        self.flush_port_flows(ifindex)?;
        self.remove_flow_quota(ifindex)?;
        self.remove_rate_limit(ifindex)?;
        // Its port forwards lead nowhere now.
        self.set_port_forwards(ifindex, &[])?;
        for r in [
            self.endpoints()?.remove(&ifindex),
            self.ports()?.remove(ifindex),
        ] {
            match r {
                Ok(()) => {}
                // Removing what is gone is done (an unplug finished after a
                // crash): a devmap says so with ENOENT, a hash map with
                // KeyNotFound.
                Err(e) if absent(&e) => {}
                Err(e) => return Err(map_err(names::MAP_ENDPOINTS)(e)),
            }
        }
        Ok(())
    }

    /// Removes guest port `port` from its direct device's port list and
    /// the port-to-device entry (no-op when it has none).
    pub fn unplug_direct_port(&self, port: u32) -> Result<(), DataplaneError> {
        let Some(nic_index) = self.direct_port(port)? else {
            return Ok(());
        };
        if let Some(mut nic) = self.direct_nic(nic_index)? {
            let used = (nic.port_count as usize).min(vxdp_common::DIRECT_MAX_PORTS);
            let kept: Vec<u32> = nic.ports[..used]
                .iter()
                .copied()
                .filter(|p| *p != port)
                .collect();
            nic.ports = [0; vxdp_common::DIRECT_MAX_PORTS];
            nic.ports[..kept.len()].copy_from_slice(&kept);
            nic.port_count = kept.len() as u32;
            self.set_direct_nic(nic_index, &nic)?;
        }
        self.remove_direct_port(port)
    }

    /// A direct network's NIC entry, if any.
    pub fn direct_nic(&self, nic: u32) -> Result<Option<DirectNic>, DataplaneError> {
        match self.direct_nics()?.get(&nic, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_DIRECT_NICS)(e)),
        }
    }

    pub fn set_direct_nic(&self, nic: u32, v: &DirectNic) -> Result<(), DataplaneError> {
        self.direct_nics()?
            .insert(&nic, v, 0)
            .map_err(map_err(names::MAP_DIRECT_NICS))
    }

    pub fn remove_direct_nic(&self, nic: u32) -> Result<(), DataplaneError> {
        match self.direct_nics()?.remove(&nic) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_DIRECT_NICS)(e)),
        }
    }

    /// The NIC a direct guest port is on, if any.
    pub fn direct_port(&self, port: u32) -> Result<Option<u32>, DataplaneError> {
        match self.direct_ports()?.get(&port, 0) {
            Ok(v) => Ok(Some(v.nic_ifindex)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(names::MAP_DIRECT_PORTS)(e)),
        }
    }

    pub fn set_direct_port(&self, port: u32, nic: u32) -> Result<(), DataplaneError> {
        self.direct_ports()?
            .insert(
                &port,
                &DirectPort {
                    nic_ifindex: nic,
                    _pad0: 0,
                },
                0,
            )
            .map_err(map_err(names::MAP_DIRECT_PORTS))
    }

    pub fn remove_direct_port(&self, port: u32) -> Result<(), DataplaneError> {
        match self.direct_ports()?.remove(&port) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(names::MAP_DIRECT_PORTS)(e)),
        }
    }

    /// All conntrack entries (both directions), optionally of one network.
    pub fn conntrack_entries(
        &self,
        network_id: Option<u32>,
    ) -> Result<Vec<(ConntrackKey, ConntrackEntry)>, DataplaneError> {
        Ok(entries_of(&self.conntrack()?, network_id, |v| {
            v.network_id as u32
        }))
    }

    /// Removes the conntrack entries (both directions, IPv4 and NAT66) of
    /// the flows guest port `ifindex` created; returns how many.
    pub fn flush_port_flows(&self, ifindex: u32) -> Result<usize, DataplaneError> {
        let mut n = remove_where(&mut self.conntrack()?, None, |_, v| v.ifindex == ifindex);
        if self.layout.has(Feature::Nat66) {
            n += remove_where(&mut self.conntrack6()?, None, |_, v| v.ifindex == ifindex);
        }
        Ok(n)
    }

    /// Removes network `network_id`'s flows translated to `nat`, its old
    /// masquerade address (after the uplink's address changed): original
    /// entries that rewrite to it and reply entries keyed by it. Returns how
    /// many entries went.
    pub fn flush_nat_address(
        &self,
        network_id: u32,
        nat: std::net::IpAddr,
    ) -> Result<usize, DataplaneError> {
        use vxdp_common::{DIR_ORIGINAL, DIR_REPLY};
        let id = Some(network_id);
        Ok(match nat {
            std::net::IpAddr::V4(a) => {
                let a = u32::from_ne_bytes(a.octets());
                remove_where(&mut self.conntrack()?, id, |k, v| {
                    (v.direction == DIR_ORIGINAL && v.rewrite_addr == a)
                        || (v.direction == DIR_REPLY && k.dst_addr == a)
                })
            }
            std::net::IpAddr::V6(_) if !self.layout.has(Feature::Nat66) => 0,
            std::net::IpAddr::V6(a) => {
                let a = a.octets();
                remove_where(&mut self.conntrack6()?, id, |k, v| {
                    (v.direction == DIR_ORIGINAL && v.rewrite_addr == a)
                        || (v.direction == DIR_REPLY && k.dst_addr == a)
                })
            }
        })
    }

    /// Removes a network's conntrack entries, IPv4 and NAT66; returns how many.
    pub fn flush_conntrack(&self, network_id: u32) -> Result<usize, DataplaneError> {
        let id = Some(network_id);
        let mut n = remove_where(&mut self.conntrack()?, id, |_, _| true);
        if self.layout.has(Feature::Nat66) {
            n += remove_where(&mut self.conntrack6()?, id, |_, _| true);
        }
        Ok(n)
    }

    /// Counters of one network summed over CPUs: (slot, counter).
    pub fn counters(&self, network_id: u32) -> Result<Vec<(u32, Counter)>, DataplaneError> {
        let arr = self.counter_array()?;
        let mut out = Vec::with_capacity(COUNTER_SLOTS as usize);
        for slot in 0..COUNTER_SLOTS {
            let per_cpu = arr
                .get(&counter_index(network_id, slot), 0)
                .map_err(map_err(names::MAP_COUNTERS))?;
            let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            out.push((slot, sum));
        }
        Ok(out)
    }

    /// Zeroes a network's counters (when its id is reused).
    pub fn reset_counters(&self, network_id: u32) -> Result<(), DataplaneError> {
        let mut arr = self.counter_array()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        for slot in 0..COUNTER_SLOTS {
            let zero =
                aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus.get() as usize])
                    .map_err(|source| DataplaneError::Io {
                        path: "VXDP_COUNTERS".into(),
                        source,
                    })?;
            arr.set(counter_index(network_id, slot), zero, 0)
                .map_err(map_err(names::MAP_COUNTERS))?;
        }
        Ok(())
    }
}

/// Whether a map error says the key was not there.
fn absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

//! Thin, typed wrapper around `rtnetlink` 0.24 for the link / address / route
//! operations vxdp needs to stand up libvirt-style virtual networks.
//!
//! A [`Netlink`] talks to the network namespace that the *calling thread* was
//! in when [`Netlink::connect`] was called: the netlink socket is bound to that
//! namespace at creation time, so it does not matter on which runtime worker
//! the connection task later runs.
//!
//! Every error names the operation and the interface at fault, e.g.
//! `creating bridge virbr0: File exists (os error 17)`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::packet_route::link::{
    BridgeStpState, InfoBridge, InfoBridgePort, InfoData, InfoPortData, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkUnspec, RouteMessageBuilder};

use crate::model::bandwidth::HtbRate;

/// Maximum interface name length in bytes (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// Errors returned by [`Netlink`]. Every variant carries a human readable
/// description of the operation, which includes the interface (by name when
/// known, otherwise by ifindex).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The rtnetlink socket could not be opened (or no tokio runtime).
    #[error("opening rtnetlink socket: {0}")]
    Connect(#[source] io::Error),

    /// The interface the operation needed does not exist.
    #[error("{op}: no such interface {iface}")]
    NotFound {
        /// e.g. `"setting up ifindex 42"`
        op: String,
        /// e.g. `"virbr0"` or `"ifindex 42"`
        iface: String,
    },

    /// An argument was rejected before anything was sent to the kernel.
    #[error("{op}: {reason}")]
    InvalidArgument {
        op: String,
        iface: String,
        reason: String,
    },

    /// The kernel (or the netlink transport) reported an error.
    #[error("{op}: {source}")]
    Failed {
        op: String,
        iface: String,
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The errno reported by the kernel, if this error came from one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Connect(e) | NetlinkError::Failed { source: e, .. } => e.raw_os_error(),
            NetlinkError::NotFound { .. } => Some(libc::ENODEV),
            NetlinkError::InvalidArgument { .. } => None,
        }
    }

    /// The interface the error is about (name or `ifindex N`), if any.
    pub fn interface(&self) -> Option<&str> {
        match self {
            NetlinkError::Connect(_) => None,
            NetlinkError::NotFound { iface, .. }
            | NetlinkError::InvalidArgument { iface, .. }
            | NetlinkError::Failed { iface, .. } => Some(iface),
        }
    }

    /// True if the kernel said the object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.raw_os_error() == Some(libc::EEXIST)
    }
}

/// A network interface as seen through RTM_GETLINK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// IFLA_ADDRESS when it is a 6-byte (Ethernet) address.
    pub mac: Option<[u8; 6]>,
    /// IFLA_INFO_KIND: "bridge", "veth", "tun", ... (`None` for e.g. `lo` or
    /// physical NICs).
    pub kind: Option<String>,
    /// IFLA_MASTER: ifindex of the bridge/bond this link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub mtu: Option<u32>,
    /// A bridge that filters the frames it forwards itself: VLAN filtering,
    /// or calls into iptables/ip6tables/arptables. Guests on it must not go
    /// port to port past it.
    pub bridge_filters: bool,
    /// A bridge port with port isolation on (it may talk only to ports
    /// that are not isolated).
    pub bridge_port_isolated: bool,
}

/// Default IPv4 route from the main routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Output interface index.
    pub oif: u32,
    /// IPv4 gateway, `None` for a device route (or a non-IPv4 `via`).
    pub gateway: Option<Ipv4Addr>,
}

/// rtnetlink handle bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// Convert an rtnetlink error into an `io::Error`, keeping the errno when the
/// kernel sent one.
fn to_io(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is reserved"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(format!(
            "interface name {name:?} contains '/', ':', NUL or whitespace"
        ));
    }
    Ok(())
}

fn link_info_from_message(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        kind: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
        bridge_filters: false,
        bridge_port_isolated: false,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Address(addr) => {
                info.mac = <[u8; 6]>::try_from(addr.as_slice()).ok();
            }
            LinkAttribute::Controller(master) if *master != 0 => info.master = Some(*master),
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(kind) => info.kind = Some(kind.to_string()),
                        NlLinkInfo::Data(InfoData::Bridge(attrs)) => {
                            info.bridge_filters = attrs.iter().any(|a| {
                                matches!(
                                    a,
                                    InfoBridge::VlanFiltering(true)
                                        | InfoBridge::NfCallIpTables(true)
                                        | InfoBridge::NfCallIp6Tables(true)
                                        | InfoBridge::NfCallArpTables(true)
                                )
                            });
                        }
                        NlLinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                            info.bridge_port_isolated = attrs
                                .iter()
                                .any(|a| matches!(a, InfoBridgePort::Isolated(true)));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn ipv4_gateway(attrs: &[RouteAttribute]) -> Option<Ipv4Addr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
        RouteAttribute::Via(RouteVia::Inet(gw)) => Some(*gw),
        _ => None,
    })
}

/// Extract (metric, DefaultRoute) from an IPv4 main-table default route.
fn default_route_from_message(msg: &RouteMessage) -> Option<(u32, DefaultRoute)> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet
        || h.destination_prefix_length != 0
        || h.kind != RouteType::Unicast
        || route_table(msg) != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    let mut metric = 0;
    let mut oif = None;
    let mut multipath_first = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::MultiPath(hops) => {
                multipath_first = hops.first().map(|nh| DefaultRoute {
                    oif: nh.interface_index,
                    gateway: ipv4_gateway(&nh.attributes),
                });
            }
            _ => {}
        }
    }
    let route = match oif {
        Some(oif) => DefaultRoute {
            oif,
            gateway: ipv4_gateway(&msg.attributes),
        },
        None => multipath_first?,
    };
    Some((metric, route))
}

impl Netlink {
    /// Open an rtnetlink socket in the calling thread's current network
    /// namespace and spawn its connection task on the current tokio runtime.
    ///
    /// Returns [`NetlinkError::Connect`] (instead of panicking) when called
    /// outside a tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| NetlinkError::Connect(io::Error::other(e)))?;
        let (conn, handle, _messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        rt.spawn(conn);
        Ok(Netlink { handle })
    }

    /// A stream that yields once per link change the kernel announces in
    /// the calling thread's network namespace (RTM_NEWLINK, RTM_DELLINK:
    /// created, deleted, enslaved, released, up, down). Only "something
    /// changed": the caller looks at the links itself. The connection runs
    /// on the current tokio runtime.
    pub fn link_changes() -> Result<impl futures::Stream<Item = ()> + Unpin, NetlinkError> {
        use futures::StreamExt;
        use rtnetlink::sys::{AsyncSocket, SocketAddr};
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| NetlinkError::Connect(io::Error::other(e)))?;
        let (mut conn, _handle, messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        conn.socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))
            .map_err(NetlinkError::Connect)?;
        rt.spawn(conn);
        Ok(messages.map(|_| ()))
    }

    /// "name (ifindex N)" when the link can be resolved, else "ifindex N".
    async fn describe(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(Some(l)) => format!("{} (ifindex {index})", l.name),
            _ => format!("ifindex {index}"),
        }
    }

    /// Map an rtnetlink error for an operation on `index`.
    async fn index_err(&self, op: &str, index: u32, err: rtnetlink::Error) -> NetlinkError {
        if errno_of(&err) == Some(libc::ENODEV) {
            return NetlinkError::NotFound {
                op: format!("{op} ifindex {index}"),
                iface: format!("ifindex {index}"),
            };
        }
        let iface = self.describe(index).await;
        NetlinkError::Failed {
            op: format!("{op} {iface}"),
            iface,
            source: to_io(err),
        }
    }

    async fn get_one(
        &self,
        req: rtnetlink::LinkGetRequest,
        op: String,
        iface: String,
    ) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut stream = std::pin::pin!(req.execute());
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_info_from_message(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetlinkError::Failed {
                op,
                iface,
                source: to_io(e),
            }),
        }
    }

    /// Look up a link by name. `Ok(None)` if it does not exist (names that
    /// cannot be valid interface names also give `Ok(None)`).
    ///
    /// Note: the kernel also resolves alternative names (`ip link property
    /// add altname`), so the returned `name` may differ from `name`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        if validate_ifname(name).is_err() {
            return Ok(None);
        }
        let req = self.handle.link().get().match_name(name);
        self.get_one(req, format!("looking up link {name}"), name.to_string())
            .await
    }

    /// Look up a link by ifindex. `Ok(None)` if it does not exist.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        if index == 0 {
            return Ok(None);
        }
        let req = self.handle.link().get().match_index(index);
        self.get_one(
            req,
            format!("looking up link ifindex {index}"),
            format!("ifindex {index}"),
        )
        .await
    }

    /// All links in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| link_info_from_message(&m))
            .try_collect()
            .await
            .map_err(|e| NetlinkError::Failed {
                op: "listing links".into(),
                iface: "*".into(),
                source: to_io(e),
            })
    }

    /// Create a bridge (administratively *down*) and return its ifindex.
    ///
    /// `mac` fixes the bridge MAC (so it does not follow its ports);
    /// `stp` selects kernel STP; `forward_delay_cs` is IFLA_BR_FORWARD_DELAY
    /// in centiseconds (USER_HZ clock_t), e.g. 200 = 2 s. With `stp` the
    /// kernel raises the delay to its 2 s minimum (as it does for libvirt).
    pub async fn create_bridge(
        &self,
        name: &str,
        mac: Option<[u8; 6]>,
        stp: bool,
        forward_delay_cs: u32,
    ) -> Result<u32, NetlinkError> {
        let op = format!("creating bridge {name}");
        if let Err(reason) = validate_ifname(name) {
            return Err(NetlinkError::InvalidArgument {
                op,
                iface: name.to_string(),
                reason,
            });
        }
        // LinkBridge::new() sets IFF_UP; keep the bridge down until the
        // caller has configured it.
        let mut builder = LinkBridge::new(name)
            .down()
            .forward_delay(forward_delay_cs)
            .stp_state(if stp {
                BridgeStpState::KernelStp
            } else {
                BridgeStpState::Disabled
            });
        if let Some(mac) = mac {
            builder = builder.address(mac.to_vec());
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| NetlinkError::Failed {
                op: op.clone(),
                iface: name.to_string(),
                source: to_io(e),
            })?;
        match self.link_by_name(name).await? {
            Some(link) => Ok(link.index),
            None => Err(NetlinkError::NotFound {
                op: format!("{op} (looking it up after creation)"),
                iface: name.to_string(),
            }),
        }
    }

    /// Delete a link (RTM_DELLINK). Deleting one end of a veth pair removes
    /// both ends.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        // Resolve the name first: afterwards it is gone.
        let iface = self.describe(index).await;
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Err(NetlinkError::NotFound {
                op: format!("deleting link ifindex {index}"),
                iface: format!("ifindex {index}"),
            }),
            Err(e) => Err(NetlinkError::Failed {
                op: format!("deleting link {iface}"),
                iface,
                source: to_io(e),
            }),
        }
    }

    async fn set_link(&self, op: &str, index: u32, msg: LinkMessage) -> Result<(), NetlinkError> {
        if index == 0 {
            return Err(NetlinkError::NotFound {
                op: format!("{op} ifindex 0"),
                iface: "ifindex 0".into(),
            });
        }
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.index_err(op, index, e).await),
        }
    }

    /// Set a link administratively up.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link("setting up", index, msg).await
    }

    /// Set a link administratively down.
    pub async fn set_down(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.set_link("setting down", index, msg).await
    }

    /// Enslave `index` to the bridge (or bond, ...) `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), NetlinkError> {
        if index == 0 {
            return Err(NetlinkError::NotFound {
                op: format!("attaching ifindex 0 to master ifindex {master}"),
                iface: "ifindex 0".into(),
            });
        }
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        let Err(e) = self.handle.link().set(msg).execute().await else {
            return Ok(());
        };
        let master_desc = self.describe(master).await;
        match errno_of(&e) {
            Some(libc::ENODEV) => Err(NetlinkError::NotFound {
                op: format!("attaching ifindex {index} to master {master_desc}"),
                iface: format!("ifindex {index}"),
            }),
            // The kernel answers EINVAL (not ENODEV) when the master is
            // missing; report that as NotFound for the master.
            Some(libc::EINVAL) if matches!(self.link_by_index(master).await, Ok(None)) => {
                let iface = self.describe(index).await;
                Err(NetlinkError::NotFound {
                    op: format!("attaching {iface} to master ifindex {master}"),
                    iface: format!("ifindex {master}"),
                })
            }
            _ => {
                let iface = self.describe(index).await;
                Err(NetlinkError::Failed {
                    op: format!("attaching {iface} to master {master_desc}"),
                    iface,
                    source: to_io(e),
                })
            }
        }
    }

    /// Release `index` from its master (IFLA_MASTER = 0).
    pub async fn set_nomaster(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).nocontroller().build();
        self.set_link("detaching from master", index, msg).await
    }

    /// Add an IPv4 or IPv6 address (for IPv4 the broadcast address is
    /// derived from the prefix, like `ip addr add ... brd +`).
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            let iface = self.describe(index).await;
            return Err(NetlinkError::InvalidArgument {
                op: format!("adding address {addr}/{prefix} to {iface}"),
                iface,
                reason: format!("prefix length {prefix} exceeds {max}"),
            });
        }
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .index_err(&format!("adding address {addr}/{prefix} to"), index, e)
                .await),
        }
    }

    /// Adds a static route to `dest/prefix` via `gateway` on link `index`
    /// (IPv4 or IPv6, main table, `metric` when given), as libvirt adds a
    /// network's `<route>`. The kernel removes it with the link.
    pub async fn add_route(
        &self,
        index: u32,
        dest: IpAddr,
        prefix: u8,
        gateway: IpAddr,
        metric: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let msg = match (dest, gateway) {
            (IpAddr::V4(d), IpAddr::V4(g)) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(d, prefix)
                    .gateway(g)
                    .output_interface(index);
                if let Some(m) = metric {
                    b = b.priority(m);
                }
                b.build()
            }
            (IpAddr::V6(d), IpAddr::V6(g)) => {
                let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(d, prefix)
                    .gateway(g)
                    .output_interface(index);
                if let Some(m) = metric {
                    b = b.priority(m);
                }
                b.build()
            }
            _ => {
                let iface = self.describe(index).await;
                return Err(NetlinkError::InvalidArgument {
                    op: format!("adding route {dest}/{prefix} via {gateway}"),
                    iface,
                    reason: "the gateway's family differs from the destination's".into(),
                });
            }
        };
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .index_err(
                    &format!("adding route {dest}/{prefix} via {gateway} on"),
                    index,
                    e,
                )
                .await),
        }
    }

    /// Whether the main table holds a route to exactly `dest/prefix` via
    /// `gateway` on link `index`.
    pub async fn has_route(
        &self,
        index: u32,
        dest: IpAddr,
        prefix: u8,
        gateway: IpAddr,
    ) -> Result<bool, NetlinkError> {
        let routes = self.dump_routes(dest.is_ipv6()).await?;
        let addr = |a: &RouteAddress| match a {
            RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
            RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
            _ => None,
        };
        Ok(routes.iter().any(|r| {
            r.header.destination_prefix_length == prefix
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Destination(d) if addr(d) == Some(dest)))
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Gateway(g) if addr(g) == Some(gateway)))
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
        }))
    }

    /// Sets bridge port `index`'s `isolated` flag (`bridge link set dev
    /// ... isolated on`): isolated ports of a bridge exchange no frames
    /// with each other, only with the bridge and non-isolated ports.
    pub async fn set_bridge_port_isolated(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        if index == 0 {
            return Err(NetlinkError::NotFound {
                op: "isolating bridge port ifindex 0".into(),
                iface: "ifindex 0".into(),
            });
        }
        let msg = LinkBridgePort::new(index)
            .append_info_data(InfoBridgePort::Isolated(on))
            .build();
        match self.handle.link().set_port(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.index_err("isolating bridge port", index, e).await),
        }
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(&format!("setting MTU {mtu} on"), index, msg)
            .await
    }

    /// IPv4 addresses of a link as (address, prefix length), primary
    /// addresses first (kernel order otherwise preserved). A nonexistent
    /// ifindex yields an empty list.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut req = self.handle.address().get().set_link_index_filter(index);
        req.message_mut().header.family = AddressFamily::Inet;
        let msgs: Vec<_> = match req.execute().try_collect().await {
            Ok(m) => m,
            Err(e) => return Err(self.index_err("listing IPv4 addresses of", index, e).await),
        };
        let mut out: Vec<(bool, Ipv4Addr, u8)> = msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
            .filter_map(|m| {
                // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
                // peer on point-to-point links, so prefer IFA_LOCAL.
                let pick = |want_local: bool| {
                    m.attributes.iter().find_map(|a| match (a, want_local) {
                        (AddressAttribute::Local(IpAddr::V4(ip)), true)
                        | (AddressAttribute::Address(IpAddr::V4(ip)), false) => Some(*ip),
                        _ => None,
                    })
                };
                let ip = pick(true).or_else(|| pick(false))?;
                let secondary = m.header.flags.contains(AddressHeaderFlags::Secondary);
                Some((secondary, ip, m.header.prefix_len))
            })
            .collect();
        out.sort_by_key(|(secondary, _, _)| *secondary); // stable
        Ok(out.into_iter().map(|(_, ip, p)| (ip, p)).collect())
    }

    /// The interface's global IPv6 addresses with their prefix length,
    /// permanent (configured) ones first, link-local and deprecated ones
    /// left out: what NAT66 can masquerade to.
    pub async fn ipv6_global_addresses(
        &self,
        index: u32,
    ) -> Result<Vec<(std::net::Ipv6Addr, u8)>, NetlinkError> {
        let mut req = self.handle.address().get().set_link_index_filter(index);
        req.message_mut().header.family = AddressFamily::Inet6;
        let msgs: Vec<_> = match req.execute().try_collect().await {
            Ok(m) => m,
            Err(e) => return Err(self.index_err("listing IPv6 addresses of", index, e).await),
        };
        let mut out: Vec<(bool, std::net::Ipv6Addr, u8)> = msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet6 && m.header.index == index)
            .filter(|m| m.header.scope == rtnetlink::packet_route::address::AddressScope::Universe)
            .filter(|m| !m.header.flags.contains(AddressHeaderFlags::Deprecated))
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                    _ => None,
                })?;
                // Scope alone would let an fe80:: address with a global
                // scope through.
                if ip.segments()[0] & 0xffc0 == 0xfe80 || ip.is_multicast() || ip.is_loopback() {
                    return None;
                }
                let permanent = m.header.flags.contains(AddressHeaderFlags::Permanent);
                Some((!permanent, ip, m.header.prefix_len))
            })
            .collect();
        out.sort_by_key(|(not_permanent, _, _)| *not_permanent); // stable
        Ok(out.into_iter().map(|(_, ip, p)| (ip, p)).collect())
    }

    /// Every route of one family, all tables.
    async fn dump_routes(&self, ipv6: bool) -> Result<Vec<RouteMessage>, NetlinkError> {
        let req = if ipv6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        self.handle
            .route()
            .get(req)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::Failed {
                op: format!("dumping IPv{} routes", if ipv6 { 6 } else { 4 }),
                iface: "*".into(),
                source: to_io(e),
            })
    }

    /// The interfaces (ifindex) that hold IPv6 routes learned from router
    /// advertisements (protocol `ra`, any table).
    pub async fn ipv6_ra_route_interfaces(&self) -> Result<Vec<u32>, NetlinkError> {
        let routes = self.dump_routes(true).await?;
        let mut out: Vec<u32> = routes
            .iter()
            .filter(|m| m.header.address_family == AddressFamily::Inet6)
            .filter(|m| m.header.protocol == rtnetlink::packet_route::route::RouteProtocol::Ra)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(o) => Some(*o),
                    _ => None,
                })
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The interface of the IPv4 default route ([`Self::default_route_v4`]),
    /// if there is one and it still exists.
    pub async fn default_route_link_v4(&self) -> Result<Option<LinkInfo>, NetlinkError> {
        match self.default_route_v4().await? {
            Some(route) => self.link_by_index(route.oif).await,
            None => Ok(None),
        }
    }

    /// The IPv4 default route of the main table with the lowest metric.
    /// For a multipath route the first next hop is reported.
    pub async fn default_route_v4(&self) -> Result<Option<DefaultRoute>, NetlinkError> {
        let routes = self.dump_routes(false).await?;
        Ok(routes
            .iter()
            .filter_map(default_route_from_message)
            .min_by_key(|(metric, _)| *metric)
            .map(|(_, r)| r))
    }
}

/// `struct tc_ratespec` (`linux/pkt_sched.h`): cell_log, linklayer,
/// overhead, cell_align, mpu, rate (32 bits; `TCA_HTB_RATE64` beyond).
fn tc_ratespec(bytes_per_sec: u64) -> [u8; 12] {
    const TC_LINKLAYER_ETHERNET: u8 = 1;
    let mut out = [0u8; 12];
    out[1] = TC_LINKLAYER_ETHERNET;
    out[8..12].copy_from_slice(&(bytes_per_sec.min(u32::MAX as u64) as u32).to_ne_bytes());
    out
}

/// The time to send `bytes` at `bytes_per_sec`, in the kernel's psched
/// ticks (64 ns: `PSCHED_SHIFT`), as HTB's `buffer`/`cbuffer` want it.
fn psched_ticks(bytes: u64, bytes_per_sec: u64) -> u32 {
    let ns = (bytes as u128 * 1_000_000_000) / bytes_per_sec.max(1) as u128;
    (ns >> 6).min(u32::MAX as u128) as u32
}

impl Netlink {
    /// Sends one traffic-control request and waits for the kernel's answer.
    async fn tc_request(
        &self,
        op: &str,
        index: u32,
        msg: rtnetlink::packet_route::RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        use futures::StreamExt;
        use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut resp = match handle.request(req) {
            Ok(r) => r,
            Err(e) => return Err(self.index_err(op, index, e).await),
        };
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload
                && e.code.is_some()
            {
                return Err(self
                    .index_err(op, index, rtnetlink::Error::NetlinkError(e))
                    .await);
            }
        }
        Ok(())
    }

    /// Shapes what interface `index` transmits with one HTB class (libvirt's
    /// `<bandwidth><inbound>` on a tap): root qdisc `1:` (replacing the
    /// device's own), every frame in its default class `1:1`.
    pub async fn set_htb(&self, index: u32, r: &HtbRate) -> Result<(), NetlinkError> {
        use rtnetlink::packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE};
        use rtnetlink::packet_route::RouteNetlinkMessage;
        use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
        const TCA_HTB_PARMS: u16 = 1;
        const TCA_HTB_INIT: u16 = 2;
        const TCA_HTB_RATE64: u16 = 6;
        const TCA_HTB_CEIL64: u16 = 7;
        // struct tc_htb_glob: version 3, rate2quantum 10, defcls 1,
        // debug 0, direct_pkts 0.
        let glob: Vec<u8> = [3u32, 10, 1, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut qdisc = TcMessage::with_index(index as i32);
        qdisc.header.parent = TcHandle::ROOT;
        qdisc.header.handle = TcHandle { major: 1, minor: 0 };
        qdisc.attributes.push(TcAttribute::Kind("htb".into()));
        qdisc
            .attributes
            .push(TcAttribute::Options(vec![TcOption::Other(
                DefaultNla::new(TCA_HTB_INIT, glob),
            )]));
        self.tc_request(
            "adding an htb qdisc to",
            index,
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await?;
        // struct tc_htb_opt: rate, ceil, buffer, cbuffer, quantum (0: the
        // kernel's rate / rate2quantum), level, prio.
        let mut opt = Vec::with_capacity(44);
        opt.extend_from_slice(&tc_ratespec(r.rate));
        opt.extend_from_slice(&tc_ratespec(r.ceil));
        opt.extend_from_slice(&psched_ticks(r.burst, r.rate).to_ne_bytes());
        opt.extend_from_slice(&psched_ticks(r.cburst, r.ceil).to_ne_bytes());
        opt.extend_from_slice(&[0u8; 12]);
        let mut opts = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, opt))];
        if r.rate > u32::MAX as u64 {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_HTB_RATE64,
                r.rate.to_ne_bytes().to_vec(),
            )));
        }
        if r.ceil > u32::MAX as u64 {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_HTB_CEIL64,
                r.ceil.to_ne_bytes().to_vec(),
            )));
        }
        let mut class = TcMessage::with_index(index as i32);
        class.header.parent = TcHandle { major: 1, minor: 0 };
        class.header.handle = TcHandle { major: 1, minor: 1 };
        class.attributes.push(TcAttribute::Kind("htb".into()));
        class.attributes.push(TcAttribute::Options(opts));
        self.tc_request(
            "adding an htb class to",
            index,
            RouteNetlinkMessage::NewTrafficClass(class),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Removes interface `index`'s root qdisc (the kernel puts its default
    /// back); nothing to do when it has only the default.
    pub async fn clear_root_qdisc(&self, index: u32) -> Result<(), NetlinkError> {
        use rtnetlink::packet_route::RouteNetlinkMessage;
        use rtnetlink::packet_route::tc::{TcHandle, TcMessage};
        let mut qdisc = TcMessage::with_index(index as i32);
        qdisc.header.parent = TcHandle::ROOT;
        match self
            .tc_request(
                "removing the root qdisc of",
                index,
                RouteNetlinkMessage::DelQueueDiscipline(qdisc),
                0,
            )
            .await
        {
            // ENOENT/EINVAL: only the default qdisc is there; ENODEV: gone.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A uniquely named network namespace, deleted on drop (even on panic).
    struct NetnsGuard {
        name: String,
    }

    impl NetnsGuard {
        fn new() -> Self {
            let name = format!(
                "nlwork-{}-{}",
                std::process::id(),
                NS_COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            let st = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("running ip netns add");
            assert!(st.success(), "ip netns add {name} failed");
            NetnsGuard { name }
        }

        /// Run `ip -n <ns> <args>` (executes inside the namespace only).
        fn ip(&self, args: &[&str]) {
            let out = Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(args)
                .output()
                .expect("running ip");
            assert!(
                out.status.success(),
                "ip -n {} {:?} failed: {}",
                self.name,
                args,
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Run `f` with a `Netlink` connected inside this namespace, on a
        /// dedicated thread that has setns()'d into it and runs its own
        /// current-thread runtime. Panics propagate after the thread ends.
        fn run<F, Fut>(&self, f: F)
        where
            F: FnOnce(Netlink) -> Fut + Send + 'static,
            Fut: std::future::Future<Output = ()>,
        {
            let path = format!("/run/netns/{}", self.name);
            let handle = std::thread::spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns file");
                let ns_ino = file.metadata().expect("stat netns").ino();
                // SAFETY: valid fd; only affects this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                // Safety net: never touch anything unless we are really in
                // the test namespace.
                let cur = std::fs::metadata("/proc/thread-self/ns/net")
                    .expect("stat own netns")
                    .ino();
                assert_eq!(cur, ns_ino, "thread is not in the test namespace");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let nl = Netlink::connect().expect("connect");
                    f(nl).await;
                });
            });
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }

    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn ipv6_global_addresses_skip_link_local_and_deprecated() {
        let ns = NetnsGuard::new();
        ns.ip(&[
            "link", "add", "nlv6a", "type", "veth", "peer", "name", "nlv6b",
        ]);
        ns.ip(&["link", "set", "nlv6a", "up"]);
        // Autoconfigured-like (with lifetimes: not permanent) first, then a
        // configured one, a deprecated one and a link-local one.
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:0:4::2/64",
            "dev",
            "nlv6a",
            "nodad",
            "valid_lft",
            "600",
            "preferred_lft",
            "600",
        ]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:0:2::2/64",
            "dev",
            "nlv6a",
            "nodad",
        ]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:0:3::2/64",
            "dev",
            "nlv6a",
            "nodad",
            "valid_lft",
            "600",
            "preferred_lft",
            "0",
        ]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "fe80::1234/64",
            "dev",
            "nlv6a",
            "nodad",
        ]);
        ns.run(|nl| async move {
            let idx = nl
                .link_by_name("nlv6a")
                .await
                .unwrap()
                .expect("veth exists")
                .index;
            let got = nl.ipv6_global_addresses(idx).await.unwrap();
            let want: Vec<(std::net::Ipv6Addr, u8)> = vec![
                ("2001:db8:0:2::2".parse().unwrap(), 64),
                ("2001:db8:0:4::2".parse().unwrap(), 64),
            ];
            assert_eq!(
                got, want,
                "configured before autoconfigured; no deprecated or link-local address"
            );
        });
    }

    #[test]
    fn ra_routes_are_found_by_interface() {
        let ns = NetnsGuard::new();
        ns.ip(&[
            "link", "add", "nlra0", "type", "veth", "peer", "name", "nlra1",
        ]);
        ns.ip(&["link", "set", "nlra0", "up"]);
        ns.ip(&["link", "set", "nlra1", "up"]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:0:5::2/64",
            "dev",
            "nlra1",
            "nodad",
        ]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:77::/64",
            "dev",
            "nlra0",
            "proto",
            "ra",
        ]);
        ns.run(|nl| async move {
            let ra0 = nl
                .link_by_name("nlra0")
                .await
                .unwrap()
                .expect("veth exists")
                .index;
            assert_eq!(
                nl.ipv6_ra_route_interfaces().await.unwrap(),
                vec![ra0],
                "only the proto ra route's interface"
            );
        });
    }

    #[test]
    fn connect_outside_runtime_is_an_error() {
        let err = Netlink::connect().unwrap_err();
        assert!(matches!(err, NetlinkError::Connect(_)), "{err}");
    }

    #[test]
    fn bridge_lifecycle_and_addresses() {
        let ns = NetnsGuard::new();
        ns.run(|nl| async move {
            assert_eq!(nl.link_by_name("nlbr0").await.unwrap(), None);

            let idx = nl
                .create_bridge("nlbr0", Some(MAC), false, 0)
                .await
                .unwrap();
            let link = nl
                .link_by_name("nlbr0")
                .await
                .unwrap()
                .expect("bridge exists");
            assert_eq!(link.index, idx);
            assert_eq!(link.name, "nlbr0");
            assert_eq!(link.kind.as_deref(), Some("bridge"));
            assert_eq!(link.mac, Some(MAC));
            assert_eq!(link.master, None);
            assert!(!link.up, "created down");
            assert_eq!(link.mtu, Some(1500));
            assert_eq!(nl.link_by_index(idx).await.unwrap(), Some(link.clone()));
            assert!(nl.links().await.unwrap().contains(&link));

            nl.set_up(idx).await.unwrap();
            assert!(nl.link_by_index(idx).await.unwrap().unwrap().up);
            nl.set_down(idx).await.unwrap();
            assert!(!nl.link_by_index(idx).await.unwrap().unwrap().up);
            nl.set_up(idx).await.unwrap();

            // Addresses: primary first, secondary after.
            nl.add_address(idx, "192.168.122.1".parse().unwrap(), 24)
                .await
                .unwrap();
            nl.add_address(idx, "192.168.122.2".parse().unwrap(), 24)
                .await
                .unwrap();
            nl.add_address(idx, "198.51.100.1".parse().unwrap(), 25)
                .await
                .unwrap();
            nl.add_address(idx, "2001:db8::1".parse().unwrap(), 64)
                .await
                .unwrap();
            let addrs = nl.ipv4_addresses(idx).await.unwrap();
            assert_eq!(addrs.len(), 3, "{addrs:?}");
            assert_eq!(addrs[0], ("192.168.122.1".parse().unwrap(), 24));
            assert_eq!(
                addrs.last().unwrap(),
                &("192.168.122.2".parse().unwrap(), 24)
            );
            assert!(addrs.contains(&("198.51.100.1".parse().unwrap(), 25)));

            // Duplicate address -> EEXIST, naming the bridge.
            let err = nl
                .add_address(idx, "192.168.122.1".parse().unwrap(), 24)
                .await
                .unwrap_err();
            assert!(err.is_exists(), "{err}");
            assert!(err.to_string().contains("nlbr0"), "{err}");
            let err = nl
                .add_address(idx, "192.168.122.9".parse().unwrap(), 33)
                .await
                .unwrap_err();
            assert!(matches!(err, NetlinkError::InvalidArgument { .. }), "{err}");

            // Existing name -> error naming the bridge.
            let err = nl.create_bridge("nlbr0", None, false, 0).await.unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("creating bridge nlbr0"), "{msg}");
            assert!(err.is_exists(), "{msg}");
            assert_eq!(err.interface(), Some("nlbr0"));

            let err = nl
                .create_bridge("this-name-is-too-long", None, false, 0)
                .await;
            assert!(matches!(err, Err(NetlinkError::InvalidArgument { .. })));

            nl.delete_link(idx).await.unwrap();
            assert_eq!(nl.link_by_name("nlbr0").await.unwrap(), None);
            assert_eq!(nl.link_by_index(idx).await.unwrap(), None);
            assert_eq!(nl.ipv4_addresses(idx).await.unwrap(), vec![]);

            // Operations on a missing ifindex -> NotFound.
            for err in [
                nl.delete_link(idx).await.unwrap_err(),
                nl.set_up(idx).await.unwrap_err(),
                nl.set_nomaster(idx).await.unwrap_err(),
                nl.add_address(idx, "192.0.2.1".parse().unwrap(), 24)
                    .await
                    .unwrap_err(),
            ] {
                assert!(matches!(err, NetlinkError::NotFound { .. }), "{err}");
                assert!(err.to_string().contains(&format!("ifindex {idx}")), "{err}");
            }
        });
    }

    #[test]
    fn bridge_with_stp_and_random_mac() {
        let ns = NetnsGuard::new();
        ns.run(|nl| async move {
            let idx = nl.create_bridge("nlbr1", None, true, 0).await.unwrap();
            let link = nl.link_by_index(idx).await.unwrap().unwrap();
            assert_eq!(link.kind.as_deref(), Some("bridge"));
            assert!(link.mac.is_some());
            let idx2 = nl.create_bridge("nlbr2", None, true, 300).await.unwrap();
            assert_ne!(idx, idx2);
            nl.create_bridge("nlbr3", None, false, 0).await.unwrap();
        });
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-d", "link", "show", "nlbr1"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("stp_state 1"), "{s}");
        // The kernel raises forward_delay to its 2 s minimum when it starts
        // kernel STP (br_stp_start), so 0 reads back as 200.
        assert!(s.contains("forward_delay 200 "), "{s}");
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-d", "link", "show", "nlbr2"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("forward_delay 300 "), "{s}");
        assert!(s.contains("stp_state 1"), "{s}");
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-d", "link", "show", "nlbr3"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("forward_delay 0 "), "{s}");
        assert!(s.contains("stp_state 0"), "{s}");
    }

    #[test]
    fn veth_enslave_and_release() {
        let ns = NetnsGuard::new();
        ns.ip(&[
            "link", "add", "nlv0", "type", "veth", "peer", "name", "nlv1",
        ]);
        ns.run(|nl| async move {
            let br = nl
                .create_bridge("nlbr0", Some(MAC), false, 0)
                .await
                .unwrap();
            let v0 = nl.link_by_name("nlv0").await.unwrap().expect("veth");
            assert_eq!(v0.kind.as_deref(), Some("veth"));
            assert_eq!(v0.master, None);

            nl.set_master(v0.index, br).await.unwrap();
            assert_eq!(
                nl.link_by_index(v0.index).await.unwrap().unwrap().master,
                Some(br)
            );
            // Bridge MAC stays the configured one after gaining a port.
            assert_eq!(nl.link_by_index(br).await.unwrap().unwrap().mac, Some(MAC));

            nl.set_nomaster(v0.index).await.unwrap();
            assert_eq!(
                nl.link_by_index(v0.index).await.unwrap().unwrap().master,
                None
            );

            // Missing master -> NotFound naming the master.
            let err = nl.set_master(v0.index, 999_999).await.unwrap_err();
            assert!(matches!(err, NetlinkError::NotFound { .. }), "{err}");
            assert_eq!(err.interface(), Some("ifindex 999999"));
            assert!(err.to_string().contains("nlv0"), "{err}");

            // Enslaving to a non-master device fails, naming both.
            let v1 = nl.link_by_name("nlv1").await.unwrap().unwrap();
            let err = nl.set_master(v0.index, v1.index).await.unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("nlv0") && msg.contains("nlv1"), "{msg}");

            // Deleting one veth end removes both.
            nl.delete_link(v0.index).await.unwrap();
            assert_eq!(nl.link_by_name("nlv1").await.unwrap(), None);
        });
    }

    #[test]
    fn default_route() {
        let ns = NetnsGuard::new();
        ns.ip(&[
            "link", "add", "nlv0", "type", "veth", "peer", "name", "nlv1",
        ]);
        ns.ip(&["link", "set", "nlv0", "up"]);
        ns.ip(&["link", "set", "nlv1", "up"]);
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "nlv0"]);
        ns.ip(&["addr", "add", "203.0.113.1/24", "dev", "nlv1"]);
        let name = ns.name.clone();
        ns.run(|nl| async move {
            assert_eq!(nl.default_route_v4().await.unwrap(), None);
            let v0 = nl.link_by_name("nlv0").await.unwrap().unwrap().index;
            let v1 = nl.link_by_name("nlv1").await.unwrap().unwrap().index;

            let ip = |args: &[&str]| {
                let st = Command::new("ip")
                    .arg("-n")
                    .arg(&name)
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "{args:?}");
            };
            // A default route in another table must be ignored.
            ip(&[
                "route",
                "add",
                "default",
                "via",
                "203.0.113.254",
                "table",
                "100",
            ]);
            assert_eq!(nl.default_route_v4().await.unwrap(), None);

            ip(&[
                "route",
                "add",
                "default",
                "via",
                "192.0.2.254",
                "dev",
                "nlv0",
                "metric",
                "100",
            ]);
            assert_eq!(
                nl.default_route_v4().await.unwrap(),
                Some(DefaultRoute {
                    oif: v0,
                    gateway: Some("192.0.2.254".parse().unwrap())
                })
            );
            // Lower metric wins; device route has no gateway.
            ip(&["route", "add", "default", "dev", "nlv1", "metric", "50"]);
            assert_eq!(
                nl.default_route_v4().await.unwrap(),
                Some(DefaultRoute {
                    oif: v1,
                    gateway: None
                })
            );
        });
    }

    #[test]
    fn missing_links() {
        let ns = NetnsGuard::new();
        ns.run(|nl| async move {
            assert_eq!(nl.link_by_name("nosuchlink").await.unwrap(), None);
            assert_eq!(nl.link_by_name("").await.unwrap(), None);
            assert_eq!(nl.link_by_name("much-too-long-a-name").await.unwrap(), None);
            assert_eq!(nl.link_by_index(0).await.unwrap(), None);
            assert_eq!(nl.link_by_index(123_456).await.unwrap(), None);
            let lo = nl.link_by_name("lo").await.unwrap().expect("lo");
            assert_eq!(lo.index, 1);
            assert_eq!(lo.kind, None);
            assert_eq!(nl.links().await.unwrap(), vec![lo]);
        });
    }
}

//! The host side of a network, outside the eBPF dataplane: links and
//! addresses (netlink), taps, the state directory, dnsmasq and users.

pub mod dnsmasq;
pub mod netlink;
pub mod state;
pub mod tap;
pub mod users;

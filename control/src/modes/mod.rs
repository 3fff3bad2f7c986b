//! Realizing each kind of network on the host: bridged networks (NAT,
//! route, open, isolated, host bridge) with IPv6 and NAT66, and direct
//! (macvtap-like) networks.

pub mod bridged;
pub mod direct;
pub mod nat6;

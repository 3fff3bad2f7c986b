//! Realizing each kind of network on the host. [`plan`] decides from the
//! definition what a network needs (no I/O); [`bridged`] starts NAT,
//! route, open, isolated and host bridge networks, [`nat6`] adds their
//! IPv6 side, [`direct`] starts, plugs and repairs direct (macvtap-like)
//! networks; [`shared`] holds what several of them use.

pub mod bridged;
pub mod direct;
pub mod nat6;
pub mod plan;
pub mod shared;

//! The uplink (and a direct network's NIC): `ingress` runs the uplink
//! logic from XDP and TC; `route_in` delivers inbound traffic of route and
//! open networks; `icmp_error` translates ICMP errors about NAT flows;
//! `forwarded` refuses, at the bridges' egress, what the host forwards
//! into a network from any other interface;
//! `refused` settles XDP redirects the kernel dropped afterwards.

pub mod forwarded;
pub mod icmp_error;
pub mod ingress;
pub mod refused;
pub mod route_in;

pub mod corpus;
pub mod fuzz;
pub mod ipv6nat;
pub mod libvirt;
pub mod macvtap;
pub mod matrix;
pub mod progtest;

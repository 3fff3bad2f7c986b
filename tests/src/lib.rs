pub mod corpus;
pub mod ipv6nat;
pub mod libvirt;
pub mod macvtap;
pub mod matrix;
pub mod progtest;
pub mod testbed;
pub mod packet6;

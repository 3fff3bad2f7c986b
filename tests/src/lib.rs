pub mod corpus;
pub mod libvirt;
pub mod macvtap;
pub mod matrix;
pub mod progtest;
pub mod testbed;

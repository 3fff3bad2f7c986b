
pub mod corpus;
pub mod libvirt;
pub mod progtest;
pub mod testbed;

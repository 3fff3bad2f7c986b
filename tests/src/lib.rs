
pub mod progtest;
pub mod testbed;
pub mod matrix;
pub mod libvirt;

//! The host side of a network, outside the eBPF dataplane: links and
//! addresses (netlink), taps, sysctls, the state directory, dnsmasq and
//! users, libvirt through `virsh`; [`Context`] says where one vxdp instance keeps its state and pins,
//! [`undo`] reverts a partly applied change.

pub mod dnsmasq;
pub mod fault;
pub mod libvirt;
pub mod netlink;
pub mod random;
pub mod state;
pub mod sysctl;
pub mod tap;
pub mod undo;
pub mod users;
pub mod xdp_features;

use std::path::PathBuf;

use crate::dataplane::{LoadOptions, Pins};

/// Host paths and load options; every path is configurable so several
/// instances (tests) can run side by side.
#[derive(Clone, Debug)]
pub struct Context {
    pub state_dir: PathBuf,
    pub pins: Pins,
    pub load: LoadOptions,
}

//! The verbs: starting and stopping networks ([`lifecycle`]), the started
//! ones ([`networks`]), persistent
//! definitions ([`definitions`]), guest ports ([`ports`]) and their port
//! forwards ([`forwards`]), libvirt networks
//! taken over and given back ([`libvirt`]), and reconciling
//! the host with the started networks ([`reconcile`]); their errors in
//! [`error`].

pub mod definitions;
pub mod error;
pub mod forwards;
pub mod libvirt;
pub mod lifecycle;
pub mod networks;
pub mod ports;
pub mod reconcile;

pub use error::OpsError;

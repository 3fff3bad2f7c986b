//! The verbs: persistent definitions and their lifecycle, guest ports from
//! domain XML, and reconciling the host with the started networks.

pub mod definitions;
pub mod ports;
pub mod reconcile;

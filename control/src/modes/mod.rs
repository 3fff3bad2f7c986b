//! Realizing each kind of network on the host. [`plan`] decides from the
//! definition what a network needs (no I/O); [`bridged`] realizes NAT,
//! route, open, isolated and host bridge networks, [`nat6`] adds their
//! IPv6 side, [`direct`] realizes direct (macvtap-like) networks;
//! [`shared`] holds what several of them use. [`Realization`] is the one
//! place that sends a network to its mode's start, plug and reconcile.
//! Stopping and unplugging work from the records for every mode
//! ([`crate::ops::lifecycle::stop`], [`crate::ops::ports::unplug`]).

pub mod bridged;
pub mod direct;
pub mod follow;
pub mod nat6;
pub mod plan;
pub mod shaping;
pub mod shared;

use crate::{
    dataplane::{Maps, Pins},
    host::{Context, netlink::Netlink, state::NetworkRecord, undo::Undo},
    model::mode,
    modes::{
        plan::NetworkPlan,
        shared::{ModeError, Repairs},
    },
};

/// How a network is realized: around a Linux bridge, or on physical
/// devices without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Realization {
    Bridged,
    Direct,
}

impl Realization {
    /// The realization of mode `m` (one of `vxdp_common::mode`).
    pub fn of(m: u32) -> Self {
        if mode::is_direct(m) {
            Realization::Direct
        } else {
            Realization::Bridged
        }
    }

    /// The realization of a started network.
    pub fn of_record(rec: &NetworkRecord) -> Self {
        if rec.is_direct() {
            Realization::Direct
        } else {
            Realization::Bridged
        }
    }

    /// Starts a network from its plan; undone completely on failure.
    pub async fn start(
        self,
        ctx: &Context,
        plan: &NetworkPlan,
        file: &str,
    ) -> Result<NetworkRecord, ModeError> {
        match self {
            Realization::Bridged => bridged::start(ctx, plan, file).await,
            Realization::Direct => direct::start(ctx, plan, file).await,
        }
    }

    /// Puts guest port `ifindex` (`dev`) into the network's layer 2: its
    /// bridge, or one of its devices. Returns what it joined, for the log.
    #[allow(clippy::too_many_arguments)]
    pub async fn plug(
        self,
        nl: &Netlink,
        pins: &Pins,
        maps: &Maps,
        rec: &NetworkRecord,
        ifindex: u32,
        dev: &str,
        undo: &mut Undo,
    ) -> Result<String, ModeError> {
        match self {
            Realization::Bridged => {
                bridged::plug(nl, rec, ifindex, undo).await?;
                Ok(format!("bridge {}", rec.bridge))
            }
            Realization::Direct => {
                let nic = direct::plug(pins, maps, rec, ifindex, dev, undo)?;
                Ok(format!("device {nic}"))
            }
        }
    }

    /// Repairs a started network (see [`crate::ops::reconcile`]);
    /// `others` are the other started networks.
    #[allow(clippy::too_many_arguments)]
    pub async fn reconcile(
        self,
        ctx: &Context,
        nl: &Netlink,
        maps: &Maps,
        rec: &mut NetworkRecord,
        plan: &NetworkPlan,
        others: &[NetworkRecord],
        repairs: &mut Repairs,
    ) -> Result<(), ModeError> {
        match self {
            Realization::Bridged => {
                bridged::reconcile(ctx, nl, maps, rec, plan, others, repairs).await
            }
            Realization::Direct => direct::reconcile(ctx, nl, maps, rec, plan, repairs).await,
        }
    }
}

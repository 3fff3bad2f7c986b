//! The started networks, as the state directory records them.

use crate::{
    host::{
        Context,
        state::{NetworkRecord, StateDir},
    },
    ops::error::OpsError,
};

/// The started networks.
pub fn list(ctx: &Context) -> Result<Vec<NetworkRecord>, OpsError> {
    Ok(StateDir::open(&ctx.state_dir)?.networks()?)
}

pub fn find(ctx: &Context, name: &str) -> Result<NetworkRecord, OpsError> {
    StateDir::open(&ctx.state_dir)?
        .network(name)?
        .ok_or_else(|| OpsError::NotStarted(name.into()))
}

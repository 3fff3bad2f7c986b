//! The errors of the verbs, in the library's words (the CLI adds its own,
//! such as which option a bad value came from).

use crate::{
    dataplane::DataplaneError,
    host::{
        dnsmasq::DnsmasqError,
        netlink::NetlinkError,
        state::{NetworkRecord, StateError},
        sysctl::SysctlError,
        tap::TapError,
    },
    modes::{plan::PlanError, shared::ModeError},
    xml::XmlError,
};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Boxed: the host's errors are large, the verbs' results should not be.
    #[error(transparent)]
    Mode(Box<ModeError>),
    #[error("network '{0}' is not started (see `vxdp net-list`)")]
    NotStarted(String),
    #[error("network '{0}' is not defined (see `vxdp net-list --all`)")]
    NotDefined(String),
    #[error(
        "network '{0}' is transient (started with net-create, not defined): define it first with `vxdp net-define`"
    )]
    Transient(String),
    #[error("interface {dev} is already plugged into network '{network}'")]
    PortInUse { dev: String, network: String },
    #[error("interface {dev} is not plugged into network '{network}'")]
    PortNotFound { dev: String, network: String },
    /// A guest's static address that does not fit the network.
    #[error("{ip}: {reason}")]
    GuestAddress { ip: String, reason: String },
    #[error("{0}")]
    Tap(#[from] TapError),
    /// A libvirt step of `libvirt-adopt`/`libvirt-release` failed (the
    /// steps before it were undone).
    #[error("{step}: {source} (nothing was changed)")]
    Libvirt {
        step: String,
        source: crate::host::libvirt::LibvirtError,
    },
    #[error("{0}")]
    LibvirtRefused(String),
    /// A port forward refused: it overlaps another, a host socket has its
    /// port, or it leads where forwards may not.
    #[error("port forward {what}: {reason}")]
    Forward { what: String, reason: String },
}

impl From<ModeError> for OpsError {
    fn from(e: ModeError) -> Self {
        OpsError::Mode(Box::new(e))
    }
}

impl OpsError {
    pub fn already_started(name: &str) -> Self {
        ModeError::AlreadyStarted(name.into()).into()
    }
    pub fn no_such_interface(name: &str) -> Self {
        ModeError::NoSuchInterface(name.into()).into()
    }
}

macro_rules! via_mode {
    ($($t:ty),*) => {$(
        impl From<$t> for OpsError {
            fn from(e: $t) -> Self {
                OpsError::Mode(Box::new(e.into()))
            }
        }
    )*};
}
via_mode!(
    PlanError,
    XmlError,
    NetlinkError,
    DataplaneError,
    StateError,
    DnsmasqError,
    SysctlError
);

impl OpsError {
    /// Where guest port `dev` is in a started network's record; refused
    /// naming the port and the network when it is not there.
    pub(crate) fn port_index(rec: &NetworkRecord, dev: &str) -> Result<usize, OpsError> {
        rec.ports
            .iter()
            .position(|p| p.dev == dev)
            .ok_or_else(|| OpsError::PortNotFound {
                dev: dev.into(),
                network: rec.name.clone(),
            })
    }
}

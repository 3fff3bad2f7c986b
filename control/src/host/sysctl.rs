//! Reading and writing sysctls under /proc/sys.

use std::io;

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SysctlError {
    pub path: String,
    pub source: io::Error,
}

pub fn write(path: &str, value: &str) -> Result<(), SysctlError> {
    std::fs::write(path, value).map_err(|source| SysctlError {
        path: path.into(),
        source,
    })
}

/// The value, without its trailing newline.
pub fn read(path: &str) -> Result<String, SysctlError> {
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_string())
        .map_err(|source| SysctlError {
            path: path.into(),
            source,
        })
}

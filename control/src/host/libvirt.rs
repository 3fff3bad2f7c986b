//! libvirt, through its own client (`virsh -c URI`): network definitions
//! and state, running domains and their interfaces. vxdp never reads or
//! writes libvirt's files; every change goes through libvirt.

use std::{
    io::Write,
    process::{Command, Stdio},
};

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("running virsh: {0} (is libvirt-clients installed?)")]
    Run(#[source] std::io::Error),
    #[error("`virsh {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("`virsh {args}`: unexpected output: {what}")]
    Output { args: String, what: String },
}

/// A connection to one libvirt daemon (`qemu:///system` unless told).
#[derive(Clone, Debug)]
pub struct Virsh {
    pub uri: String,
}

/// `virsh net-info`: what libvirt says of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInfo {
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
}

/// One row of `virsh domiflist`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainInterface {
    /// The host-side device (`vnetN`, `<target dev>`); `-` when none.
    pub dev: String,
    /// `network`, `bridge`, `direct`, …
    pub kind: String,
    /// The network's or bridge's name.
    pub source: String,
    pub mac: String,
}

impl Virsh {
    pub fn new(uri: &str) -> Self {
        Self { uri: uri.into() }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, LibvirtError> {
        let mut child = Command::new("virsh")
            .args(["-q", "-c", &self.uri])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(LibvirtError::Run)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(LibvirtError::Run)?;
        }
        let out = child.wait_with_output().map_err(LibvirtError::Run)?;
        if !out.status.success() {
            return Err(LibvirtError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The network's definition: the persistent one with `inactive`, else
    /// the running one.
    pub fn net_dumpxml(&self, name: &str, inactive: bool) -> Result<String, LibvirtError> {
        if inactive {
            self.run(&["net-dumpxml", "--inactive", name], None)
        } else {
            self.run(&["net-dumpxml", name], None)
        }
    }

    pub fn net_info(&self, name: &str) -> Result<NetInfo, LibvirtError> {
        let args = ["net-info", name];
        let text = self.run(&args, None)?;
        let field = |key: &str| -> Result<bool, LibvirtError> {
            text.lines()
                .find_map(|l| l.strip_prefix(key).map(str::trim))
                .map(|v| v == "yes")
                .ok_or_else(|| LibvirtError::Output {
                    args: args.join(" "),
                    what: format!("no `{key}` line"),
                })
        };
        Ok(NetInfo {
            active: field("Active:")?,
            persistent: field("Persistent:")?,
            autostart: field("Autostart:")?,
        })
    }

    /// `virsh net-define` of `xml` (a new definition, or one replacing
    /// the network of the same name and UUID).
    pub fn net_define(&self, xml: &str) -> Result<(), LibvirtError> {
        self.run(&["net-define", "/dev/stdin"], Some(xml)).map(drop)
    }

    pub fn net_start(&self, name: &str) -> Result<(), LibvirtError> {
        self.run(&["net-start", name], None).map(drop)
    }

    pub fn net_destroy(&self, name: &str) -> Result<(), LibvirtError> {
        self.run(&["net-destroy", name], None).map(drop)
    }

    pub fn net_autostart(&self, name: &str, enable: bool) -> Result<(), LibvirtError> {
        if enable {
            self.run(&["net-autostart", name], None).map(drop)
        } else {
            self.run(&["net-autostart", "--disable", name], None)
                .map(drop)
        }
    }

    /// The running domains' names.
    pub fn running_domains(&self) -> Result<Vec<String>, LibvirtError> {
        Ok(self
            .run(&["list", "--name"], None)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// A domain's interfaces (`virsh domiflist`).
    pub fn domiflist(&self, domain: &str) -> Result<Vec<DomainInterface>, LibvirtError> {
        let text = self.run(&["domiflist", domain], None)?;
        Ok(parse_domiflist(&text))
    }
}

/// The rows of `virsh -q domiflist`: interface, type, source, model, MAC.
fn parse_domiflist(text: &str) -> Vec<DomainInterface> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5).then(|| DomainInterface {
                dev: f[0].into(),
                kind: f[1].into(),
                source: f[2].into(),
                mac: f[4].into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domiflist_rows() {
        let text = " vnet0      network   default   virtio   52:54:00:12:34:56\n \
                    -          user      -         e1000    52:54:00:00:00:01\n\n";
        let rows = parse_domiflist(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            DomainInterface {
                dev: "vnet0".into(),
                kind: "network".into(),
                source: "default".into(),
                mac: "52:54:00:12:34:56".into(),
            }
        );
    }
}

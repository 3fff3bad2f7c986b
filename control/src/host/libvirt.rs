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

/// One IPv4 lease of `virsh net-dhcp-leases` (libvirt's dnsmasq's, read
/// through libvirt's API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetLease {
    /// Seconds since the epoch.
    pub expiry: u64,
    pub mac: String,
    pub ip: std::net::Ipv4Addr,
    pub hostname: Option<String>,
    pub client_id: Option<String>,
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

    /// The network's current IPv4 DHCP leases (`virsh net-dhcp-leases`);
    /// the network must be running.
    pub fn net_dhcp_leases(&self, name: &str) -> Result<Vec<NetLease>, LibvirtError> {
        let text = self.run(&["net-dhcp-leases", name], None)?;
        Ok(parse_net_dhcp_leases(&text, local_to_epoch))
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

/// `YYYY-MM-DD HH:MM:SS` in the local time zone (virsh prints lease
/// expiry times so) as seconds since the epoch.
fn local_to_epoch(date: &str, time: &str) -> Option<u64> {
    let d: Vec<i32> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let t: Vec<i32> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let ([y, mo, da], [h, mi, s]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // SAFETY: `tm` is a plain C struct, all-zero is a valid value; mktime
    // only reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = *da;
    tm.tm_hour = *h;
    tm.tm_min = *mi;
    tm.tm_sec = *s;
    tm.tm_isdst = -1;
    let secs = unsafe { libc::mktime(&mut tm) };
    u64::try_from(secs).ok()
}

/// The IPv4 rows of `virsh -q net-dhcp-leases`: expiry date and time,
/// MAC, protocol, address/prefix, hostname (`-` when none), client id.
fn parse_net_dhcp_leases(text: &str, epoch: impl Fn(&str, &str) -> Option<u64>) -> Vec<NetLease> {
    let dash = |s: Option<&&str>| s.filter(|s| **s != "-").map(|s| s.to_string());
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[3] != "ipv4" {
                return None;
            }
            Some(NetLease {
                expiry: epoch(f[0], f[1])?,
                mac: f[2].to_string(),
                ip: f[4].split('/').next()?.parse().ok()?,
                hostname: dash(f.get(5)),
                client_id: dash(f.get(6)),
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

    #[test]
    fn net_dhcp_leases_rows() {
        let text = " 2026-12-07 08:30:00   52:54:00:12:34:56   ipv4       192.168.122.45/24    vm1   01:52:54:00:12:34:56\n \
                    2026-12-07 08:31:00   52:54:00:12:34:57   ipv4       192.168.122.46/24    -     -\n \
                    2026-12-07 08:31:00   -                   ipv6       fd00::5/64           vm1   00:04:aa\n";
        let rows = parse_net_dhcp_leases(text, |d, t| {
            (d == "2026-12-07").then(|| if t == "08:30:00" { 100 } else { 160 })
        });
        assert_eq!(
            rows,
            vec![
                NetLease {
                    expiry: 100,
                    mac: "52:54:00:12:34:56".into(),
                    ip: "192.168.122.45".parse().unwrap(),
                    hostname: Some("vm1".into()),
                    client_id: Some("01:52:54:00:12:34:56".into()),
                },
                NetLease {
                    expiry: 160,
                    mac: "52:54:00:12:34:57".into(),
                    ip: "192.168.122.46".parse().unwrap(),
                    hostname: None,
                    client_id: None,
                },
            ]
        );
    }

    #[test]
    fn local_times_convert() {
        // The same wall-clock minute apart is 60 s apart (away from DST changes).
        let a = local_to_epoch("2026-01-15", "10:00:00").unwrap();
        let b = local_to_epoch("2026-01-15", "10:01:00").unwrap();
        assert_eq!(b - a, 60);
        assert!(local_to_epoch("2026-01-15", "10:00").is_none());
    }
}

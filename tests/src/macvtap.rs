//! Guests on libvirt's direct (macvtap) networks, for the differential test.
//!
//! libvirt creates a guest's macvtap device only when a domain starts, and
//! qemu then moves frames between the device's character device
//! (`/dev/tapN`, N = ifindex) and the VM's NIC. There is no qemu here, so
//! this module plays both parts:
//!
//! - [`allocate_port`] asks libvirt itself which device and mode a guest gets
//!   (`virsh net-port-create`: the network driver picks the `<interface dev>`
//!   and reports `<plug type='direct' dev=… mode=…>`, and refuses a second
//!   guest in passthrough mode);
//! - [`MacvtapNic::plug`] creates the macvtap device on that uplink as libvirt
//!   would (the guest's MAC; in passthrough the uplink takes the guest's MAC
//!   first, as libvirt's `virNetDevSetNetConfig` does), replaces the guest's
//!   veth by a tap device named `eth0` inside the guest's namespace (the VM's
//!   NIC: the guest's kernel sees frames exactly as they come out of the
//!   macvtap device, and nothing in the hypervisor's stack sees them on the
//!   way), and runs a relay thread that copies frames between the macvtap's
//!   character device and the guest's tap, as qemu does.
//!
//! The macvtap fd is opened through a device node made in a private
//! directory from the major:minor the hypervisor namespace's sysfs reports
//! (the `/dev/tapN` udev would make is named after an ifindex, which is only
//! unique per namespace); the node is removed as soon as it is open. The
//! virtio-net header macvtap prepends by default (`IFF_VNET_HDR`) is turned
//! off with `TUNSETIFF`, so the device completes checksums and segments as
//! for a guest without offloads, like the tap on the guest's side.
//!
//! The relay stops when [`MacvtapNic`] is dropped (or after
//! [`RELAY_LIFETIME`] at the latest); its fds close with it, which deletes
//! the guest's tap, and the macvtap device is deleted.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::libvirt::Libvirtd;

use vxdp_testkit::{Guest, Netns};

/// The longest a relay runs, whatever happens to the test.
pub const RELAY_LIFETIME: Duration = Duration::from_secs(600);

/// Where libvirt plugs a guest of a direct network: `<plug type='direct'>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectPlug {
    /// The port's UUID (for `net-port-delete`).
    pub uuid: String,
    /// The uplink the macvtap device sits on.
    pub dev: String,
    /// libvirt's mode name: bridge, vepa, private or passthrough.
    pub mode: String,
}

/// The value of attribute `name` in the first `<element …>` of `xml`.
fn attribute(xml: &str, element: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{element} "))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    for quote in ['\'', '"'] {
        let key = format!("{name}={quote}");
        if let Some(i) = tag.find(&key) {
            let rest = &tag[i + key.len()..];
            return rest.find(quote).map(|end| rest[..end].to_string());
        }
    }
    None
}

/// Asks libvirt for a port on `network` for a guest with `mac`
/// (`virsh net-port-create`), and returns where libvirt plugs it. Fails with
/// virsh's message when libvirt refuses the port.
pub fn allocate_port(
    libvirt: &Libvirtd,
    dir: &Path,
    network: &str,
    owner: &str,
    mac: &str,
) -> Result<DirectPlug> {
    // Any valid UUIDs identify the port and its owner; derive them from
    // the MAC (libvirt 9.0 wants the port's UUID from the caller).
    let hex: String = mac.split(':').collect();
    let owner_uuid = format!("00000000-0000-4000-8000-{hex:0>12}");
    let port_uuid = format!("00000000-0000-4000-9000-{hex:0>12}");
    let xml = format!(
        "<networkport><uuid>{port_uuid}</uuid><owner><name>{owner}</name><uuid>{owner_uuid}</uuid></owner>\
         <mac address='{mac}'/></networkport>"
    );
    let file = dir.join(format!("port-{owner}.xml"));
    std::fs::write(&file, xml)?;
    let out = libvirt.virsh(&["net-port-create", network, file.to_str().context("path")?])?;
    ensure!(
        out.status.success(),
        "virsh net-port-create {network} ({owner}, {mac}) failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let uuid = port_uuid;
    let out = libvirt.virsh(&["net-port-dumpxml", network, &uuid])?;
    ensure!(
        out.status.success(),
        "virsh net-port-dumpxml {uuid}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let port = String::from_utf8(out.stdout)?;
    let kind = attribute(&port, "plug", "type");
    ensure!(
        kind.as_deref() == Some("direct"),
        "libvirt plugs {owner} as {kind:?}, not direct: {port}"
    );
    let dev =
        attribute(&port, "plug", "dev").with_context(|| format!("<plug> without dev: {port}"))?;
    let mode =
        attribute(&port, "plug", "mode").with_context(|| format!("<plug> without mode: {port}"))?;
    Ok(DirectPlug { uuid, dev, mode })
}

/// `struct ifreq` as TUNSETIFF/TUNGETIFF use it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn set_iff(fd: RawFd, name: &str, flags: libc::c_int) -> std::io::Result<()> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn get_iff(fd: RawFd) -> std::io::Result<libc::c_int> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    if unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(req.flags as libc::c_int & 0xffff)
}

fn open_rw(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "opening {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Frames the relay moved, per direction.
#[derive(Debug, Default)]
pub struct RelayCounts {
    /// Guest NIC → macvtap (what the guest sent).
    pub from_guest: AtomicU64,
    /// macvtap → guest NIC (what libvirt's device delivered).
    pub to_guest: AtomicU64,
    /// Frames a write refused (counted, not retried: a NIC drops too).
    pub dropped: AtomicU64,
}

/// One guest's NIC behind a macvtap device, with the relay playing qemu.
pub struct MacvtapNic {
    /// The macvtap device in the hypervisor namespace.
    pub macvtap: String,
    pub counts: Arc<RelayCounts>,
    hyp: String,
    stop: Arc<AtomicBool>,
    relay: Option<JoinHandle<()>>,
}

impl MacvtapNic {
    /// Gives `guest` a macvtap device named `name` on `plug.dev` in `hyp`,
    /// in `plug`'s mode, and a tap NIC `eth0` in its namespace with its MAC
    /// (addresses and routes are the caller's), then starts the relay.
    /// `dir` is a private directory for the device node.
    pub fn plug(
        hyp: &Netns,
        guest: &Guest,
        name: &str,
        plug: &DirectPlug,
        dir: &Path,
    ) -> Result<Self> {
        let mode = match plug.mode.as_str() {
            "passthrough" => "passthru",
            m @ ("bridge" | "vepa" | "private") => m,
            other => {
                bail!("libvirt plugs {name} in direct mode {other:?}, which macvtap does not have")
            }
        };
        if mode == "passthru" {
            // libvirt gives the NIC the guest's MAC before creating the macvtap.
            hyp.ip(&["link", "set", &plug.dev, "address", &guest.mac])?;
        }
        hyp.ip(&[
            "link", "add", "link", &plug.dev, "name", name, "address", &guest.mac, "type",
            "macvtap", "mode", mode,
        ])?;
        // From here on Drop deletes the device, whatever fails next.
        let mut nic = Self {
            macvtap: name.to_string(),
            counts: Arc::default(),
            hyp: hyp.name.clone(),
            stop: Arc::default(),
            relay: None,
        };
        hyp.ip(&["link", "set", name, "up"])?;
        let sys = |file: &str| -> Result<String> {
            Ok(String::from_utf8(
                hyp.exec("cat", &[&format!("/sys/class/net/{name}/{file}")])?
                    .stdout,
            )?
            .trim()
            .to_string())
        };
        let ifindex = sys("ifindex")?;
        let devno = sys(&format!("tap{ifindex}/dev"))?;
        let (major, minor) = devno
            .split_once(':')
            .with_context(|| format!("{name}: odd device number {devno:?}"))?;
        let node = dir.join(format!("tap{ifindex}"));
        let c = CString::new(node.as_os_str().as_bytes())?;
        if unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major.parse()?, minor.parse()?),
            )
        } != 0
        {
            bail!(
                "mknod {} ({devno}): {}",
                node.display(),
                std::io::Error::last_os_error()
            );
        }
        let opened = open_rw(&node);
        let _ = std::fs::remove_file(&node);
        let macvtap_fd = opened?;
        // No virtio-net header: whole Ethernet frames both ways.
        set_iff(macvtap_fd.as_raw_fd(), "", libc::IFF_TAP | libc::IFF_NO_PI)
            .with_context(|| format!("TUNSETIFF on {name}'s character device"))?;
        let flags =
            get_iff(macvtap_fd.as_raw_fd()).with_context(|| format!("TUNGETIFF on {name}"))?;
        ensure!(
            flags & libc::IFF_VNET_HDR == 0,
            "{name} still prepends a virtio-net header (flags {flags:#x})"
        );

        // The VM's NIC replaces the guest's veth (deleting one end deletes both).
        hyp.ip(&["link", "del", &guest.port])?;
        let tap_fd = guest.ns.enter(|| -> Result<OwnedFd> {
            let fd = open_rw(Path::new("/dev/net/tun"))?;
            set_iff(fd.as_raw_fd(), "eth0", libc::IFF_TAP | libc::IFF_NO_PI)
                .context("TUNSETIFF eth0 on /dev/net/tun")?;
            Ok(fd)
        })??;
        guest
            .ns
            .ip(&["link", "set", "eth0", "address", &guest.mac])?;
        guest.ns.ip(&["link", "set", "eth0", "up"])?;

        let (stop, counts) = (nic.stop.clone(), nic.counts.clone());
        let thread_name = format!("relay-{name}");
        nic.relay = Some(
            std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || relay(tap_fd, macvtap_fd, &stop, &counts))?,
        );
        Ok(nic)
    }

    /// Whether the relay is still running.
    pub fn running(&self) -> bool {
        self.relay.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for MacvtapNic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.relay.take() {
            let _ = t.join();
        }
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.hyp, "link", "del", &self.macvtap])
            .output();
    }
}

/// Copies frames between the guest's tap and the macvtap device until told
/// to stop, [`RELAY_LIFETIME`] passes, or either side goes away.
fn relay(guest: OwnedFd, macvtap: OwnedFd, stop: &AtomicBool, counts: &RelayCounts) {
    let deadline = Instant::now() + RELAY_LIFETIME;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let mut fds = [
            libc::pollfd {
                fd: guest.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: macvtap.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) } <= 0 {
            continue;
        }
        if fds
            .iter()
            .any(|p| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
        {
            return;
        }
        for (i, (src, dst, count)) in [
            (&guest, &macvtap, &counts.from_guest),
            (&macvtap, &guest, &counts.to_guest),
        ]
        .into_iter()
        .enumerate()
        {
            if fds[i].revents & libc::POLLIN == 0 {
                continue;
            }
            // A bounded batch per wakeup, so neither direction starves.
            for _ in 0..64 {
                let n = unsafe { libc::read(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                let written =
                    unsafe { libc::write(dst.as_raw_fd(), buf.as_ptr().cast(), n as usize) };
                if written == n {
                    count.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A private directory for device nodes and port XML, removed on drop.
pub struct PrivateDir(pub PathBuf);

impl PrivateDir {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{tag}-macvtap"));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::attribute;

    #[test]
    fn reads_plug_attributes() {
        let xml = "<networkport>\n  <plug type='direct' dev='up0' mode='vepa'/>\n</networkport>";
        assert_eq!(attribute(xml, "plug", "dev").as_deref(), Some("up0"));
        assert_eq!(attribute(xml, "plug", "mode").as_deref(), Some("vepa"));
        assert_eq!(attribute(xml, "plug", "type").as_deref(), Some("direct"));
        assert_eq!(attribute(xml, "plug", "bridge"), None);
        assert_eq!(
            attribute("<plug dev=\"eth1\"/>", "plug", "dev").as_deref(),
            Some("eth1")
        );
    }
}

//! Path MTU discovery through vxdp's NAT: a guest packet larger than the
//! uplink's MTU must not vanish. With the don't-fragment flag (IPv4) or
//! always (IPv6), the NAT program leaves it to the kernel, which answers the
//! guest with "fragmentation needed" / "packet too big"; the guest's stack
//! then lowers its path MTU. Before, the frame was redirected and dropped
//! silently, and the guest kept sending packets that never arrived.
//!
//! The hypervisor's uplink (`up0`, in the test's namespace) gets MTU 1400;
//! everything else keeps the kernel's defaults (MTU 1500, offloads on).
//! Needs root (network namespaces, BPF).

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, udp_echo};
use vxdp_tests::ipv6nat::{OUTSIDE6, topology, wait_ping6, xml};

const UPLINK_MTU: i32 = 1400;

/// The socket options of one family: (level, "discover" option, "do"
/// value, "current path MTU" option), and the IP + UDP header bytes.
struct Family {
    level: i32,
    discover: i32,
    mtu: i32,
    headers: usize,
}

const V4: Family = Family {
    level: libc::IPPROTO_IP,
    discover: libc::IP_MTU_DISCOVER,
    mtu: libc::IP_MTU,
    headers: 20 + 8,
};

const V6: Family = Family {
    level: libc::IPPROTO_IPV6,
    discover: libc::IPV6_MTU_DISCOVER,
    mtu: libc::IPV6_MTU,
    headers: 40 + 8,
};

fn path_mtu(s: &UdpSocket, f: &Family) -> Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            f.level,
            f.mtu,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(
        rc == 0,
        "getsockopt(path MTU): {}",
        std::io::Error::last_os_error()
    );
    Ok(v)
}

/// From the guest: a small datagram is answered through NAT; a 1500-byte
/// packet with DF is sent; the guest's path MTU to the server must drop to
/// the uplink's within 5 s, and a packet of the old size is then refused
/// locally (EMSGSIZE).
fn guest_learns_the_path_mtu(
    topo: &NatTopology,
    server_bind: &str,
    f: &'static Family,
) -> Result<()> {
    let (server, echo) = udp_echo(&topo.wan, server_bind, 1)?;
    topo.hyp
        .ip(&["link", "set", "up0", "mtu", &UPLINK_MTU.to_string()])?;
    let result = topo.guests[0].ns.enter(move || -> Result<(i32, i32)> {
        let any: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let s = UdpSocket::bind(any)?;
        s.connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let on: libc::c_int = if f.level == libc::IPPROTO_IP {
            libc::IP_PMTUDISC_DO
        } else {
            libc::IPV6_PMTUDISC_DO
        };
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                f.level,
                f.discover,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        ensure!(
            rc == 0,
            "setsockopt(DF): {}",
            std::io::Error::last_os_error()
        );
        s.send(&[1u8; 200])?;
        let mut buf = [0u8; 2048];
        s.recv(&mut buf)
            .context("no answer to a small datagram through NAT")?;
        let before = path_mtu(&s, f)?;

        let big = vec![2u8; 1500 - f.headers];
        s.send(&big)
            .context("the first 1500-byte packet was refused locally")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut now = path_mtu(&s, f)?;
        while now > UPLINK_MTU && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            now = path_mtu(&s, f)?;
        }
        if now <= UPLINK_MTU {
            match s.send(&big) {
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {}
                other => {
                    bail!("a packet above the learnt path MTU {now} was not refused: {other:?}")
                }
            }
        }
        Ok((before, now))
    })??;
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))??;
    let (before, after) = result;
    ensure!(
        after == UPLINK_MTU,
        "the guest's path MTU stayed {after} (was {before}): the too-big packet vanished \
         without a 'fragmentation needed' / 'packet too big' answer"
    );
    println!("guest path MTU {before} -> {after} after one too-big packet");
    Ok(())
}

#[test]
fn ipv4_path_mtu_discovery_through_nat() -> Result<()> {
    let mut topo = NatTopology::new("pm4", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    guest_learns_the_path_mtu(&topo, &format!("{OUTSIDE_HOST}:0"), &V4)?;
    topo.stop()
}

#[test]
fn ipv6_path_mtu_discovery_through_nat66() -> Result<()> {
    let mut topo = topology("pm6")?;
    topo.start(&xml(true))?;
    wait_ping6(&topo, 0, OUTSIDE6)?;
    guest_learns_the_path_mtu(&topo, &format!("[{OUTSIDE6}]:0"), &V6)?;
    topo.stop()
}

//! IPv4 fragments through vxdp's NAT, both ways. Only a datagram's first
//! fragment carries the ports; vxdp translates it by its flow and records
//! the datagram, and the later fragments follow. Before, every fragment
//! leaving a NAT network was dropped (`fragment`) and later fragments of
//! replies went to the host, which answered the outside with ICMP: large
//! UDP answers (DNS, IKE) and large pings never arrived.
//!
//! Every link keeps MTU 1500 and the kernel's defaults; the senders'
//! kernels fragment. Needs root (network namespaces, BPF).

use std::{net::UdpSocket, time::Duration};

use anyhow::{Context, Result, ensure};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR, pattern, udp_echo};

#[test]
fn large_udp_datagrams_cross_nat_in_fragments_both_ways() -> Result<()> {
    let mut topo = NatTopology::new("frg", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let (f0, _) = topo.counter("default", "fragment")?;
    // The echo answers with "<sender>|<payload>": 4000 bytes out in three
    // fragments, a little more back in three.
    let (server, echo) = udp_echo(&topo.wan, &format!("{OUTSIDE_HOST}:0"), 3)?;
    let answers = topo.guests[0].ns.enter(move || -> Result<Vec<Vec<u8>>> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(server)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = Vec::new();
        for (i, len) in [4000usize, 9000, 1200].into_iter().enumerate() {
            s.send(&pattern(len, i as u64))?;
            let mut buf = vec![0u8; 16384];
            let n = s
                .recv(&mut buf)
                .with_context(|| format!("no answer to the {len}-byte datagram"))?;
            buf.truncate(n);
            out.push(buf);
        }
        Ok(out)
    })??;
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))??;
    for (i, (answer, len)) in answers.iter().zip([4000usize, 9000, 1200]).enumerate() {
        let sep = answer
            .iter()
            .position(|&b| b == b'|')
            .context("malformed echo")?;
        let seen_as = String::from_utf8_lossy(&answer[..sep]);
        ensure!(
            seen_as.starts_with(&format!("{UPLINK_ADDR}:")),
            "datagram {i}: the server saw {seen_as}, not the NAT address"
        );
        ensure!(
            answer[sep + 1..] == pattern(len, i as u64)[..],
            "datagram {i} ({len} bytes) came back altered or cut ({} bytes)",
            answer.len() - sep - 1
        );
    }
    let (f1, _) = topo.counter("default", "fragment")?;
    ensure!(f1 == f0, "fragments were dropped: fragment {f0} -> {f1}");
    println!("4000, 9000 and 1200-byte datagrams crossed NAT both ways");
    topo.stop()
}

#[test]
fn large_pings_cross_nat() -> Result<()> {
    let mut topo = NatTopology::new("frp", 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(20))?;
    let out = topo.guests[0].ns.exec_status(
        "ping",
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-s",
            "3000",
            OUTSIDE_HOST,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("3 received") {
        let stats = topo.vxdp(&["stats", "--all"])?;
        anyhow::bail!(
            "3000-byte pings through NAT were lost: {text}\nvxdp stats:\n{}",
            String::from_utf8_lossy(&stats.stdout)
        );
    }
    topo.stop()
}

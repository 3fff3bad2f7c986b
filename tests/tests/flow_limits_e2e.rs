//! Admission control: one guest creating flows fast must not evict another
//! guest's established flows from the shared conntrack table. Each guest
//! port (and network) may hold only so many NAT flows
//! (`--max-flows-per-guest`, `--max-flows-per-network`); new flows over the
//! share are dropped and counted (`guest_flow_limit`), existing ones keep
//! working. Without limits (`--max-flows-per-guest 0
//! --max-flows-per-network 0`, as before admission control) guest A's 3000
//! new UDP flows fill the 4096-entry table, the LRU evicts guest B's idle
//! TCP connection, and the outside host's next segment to B finds no flow:
//! B never gets it (measured: 0 of 65536 bytes).
//!
//! Limits hold while `vxdp serve` keeps the counts fresh: the test runs it.
//! Needs root (network namespaces, BPF).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use vxdp_common::flow_quota;
use vxdp_control::dataplane::{Maps, Pins};
use vxdp_testkit::{DEFAULT_XML, NatTopology, OUTSIDE_HOST, Serve, pattern, vxdp_bin};

const FLOOD: u16 = 3000;
const ROUNDS: u64 = 3;
const PAYLOAD: usize = 64 * 1024;

#[test]
fn a_guest_flood_does_not_evict_another_guests_connection() -> Result<()> {
    let mut topo = NatTopology::new("fl", 2)?;
    // A small table (2048 flows) and a share of 256 flows per guest, set
    // when the dataplane is first loaded.
    topo.vxdp(&[
        "--conntrack-entries",
        "4096",
        "--max-flows-per-guest",
        "256",
        "load",
    ])?;
    topo.start(DEFAULT_XML)?;
    for i in 0..2 {
        topo.wait_ping(i, OUTSIDE_HOST, Duration::from_secs(20))?;
    }

    // Guest B's connection: established, then idle while A floods.
    let listener = topo.wan.enter(|| TcpListener::bind((OUTSIDE_HOST, 0)))??;
    let addr = listener.local_addr()?;
    let (go, wait) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut s, _) = listener.accept()?;
        wait.recv()?;
        s.write_all(&pattern(PAYLOAD, 7))?;
        Ok(())
    });
    let mut b = topo.guests[1]
        .ns
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
    b.set_read_timeout(Some(Duration::from_secs(10)))?;

    // Limits hold while the daemon keeps the counts fresh: start it and
    // wait for its first recount (it stamps the defaults).
    let serve = Serve::spawn(&topo, Serve::command(&topo, &vxdp_bin()?), &[], "fl", &[])?;
    let maps = Maps::open(&Pins::new(&topo.bpffs))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while maps
        .flow_quota(flow_quota::GUEST_DEFAULT)?
        .is_none_or(|q| q.recounted_ns == 0)
    {
        ensure!(
            Instant::now() < deadline,
            "vxdp serve did not recount the flow quotas within 10 s; its log:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Guest A: two datagrams to each of 3000 ports of the outside host,
    // three rounds. A flow used more than once looks recently used to the
    // LRU, as any real flow does; a flood of single packets only evicts
    // its own entries.
    let (limited0, _) = topo.counter("default", "guest_flow_limit")?;
    topo.guests[0].ns.enter(|| -> Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..ROUNDS {
            for port in 20000..20000 + FLOOD {
                s.send_to(b"flood", (OUTSIDE_HOST, port))?;
                s.send_to(b"flood", (OUTSIDE_HOST, port))?;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })??;
    let (limited1, _) = topo.counter("default", "guest_flow_limit")?;

    // The outside host now sends to B over the old connection.
    go.send(())?;
    let mut got = Vec::new();
    let read = b.read_to_end(&mut got);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    ensure!(
        read.is_ok() && got == pattern(PAYLOAD, 7),
        "guest B's connection broke after guest A's flood ({read:?}, {} of {PAYLOAD} bytes): \
         its flow was evicted",
        got.len()
    );
    ensure!(
        limited1 - limited0 >= 2 * ROUNDS * (u64::from(FLOOD) - 256),
        "guest A's flows over its share were not refused: guest_flow_limit {limited0} -> {limited1}"
    );
    println!(
        "guest A: {} of {ROUNDS} x {FLOOD} new flows refused; guest B's connection delivered {PAYLOAD} bytes",
        limited1 - limited0
    );
    drop(serve);
    topo.stop()
}

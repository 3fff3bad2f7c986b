//! End to end: TCP connections through libvirt's default NAT network keep
//! working when one side half-closes, and an attacker on the outside who
//! knows the NAT port cannot end them with RSTs at wrong sequence numbers
//! (issue 15, item 7).
//!
//! The short "closing" timeout is set to 2 s in the pinned
//! `VXDP_TIMEOUTS` (vxdp has no option for it), and each test idles longer
//! than that at the point a wrongly closed flow would expire.
//!
//! Needs root (network namespaces, BPF).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use vxdp_common::{names, timeout_class};
use vxdp_control::dataplane::Pins;
use vxdp_testkit::{
    DEFAULT_XML, NatTopology, OUTSIDE_HOST, UPLINK_ADDR,
    packet::{Packet, TCP_ACK, TCP_RST, sock},
};

const CLOSING_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer than the closing timeout plus conntrack's 1 s refresh interval.
const IDLE: Duration = Duration::from_secs(4);

/// Starts the default network with one guest and a 2 s closing timeout.
fn topology(tag: &str) -> Result<NatTopology> {
    let mut topo = NatTopology::new(tag, 1)?;
    topo.start(DEFAULT_XML)?;
    topo.wait_ping(0, OUTSIDE_HOST, Duration::from_secs(15))?;
    let pin = Pins::new(&topo.bpffs).map(names::MAP_TIMEOUTS);
    let key = timeout_class::TCP_CLOSING
        .to_le_bytes()
        .map(|b| b.to_string());
    let value = (CLOSING_TIMEOUT.as_nanos() as u64)
        .to_le_bytes()
        .map(|b| b.to_string());
    let pin = pin.to_str().context("pin path")?;
    let mut args = vec!["map", "update", "pinned", pin, "key"];
    args.extend(key.iter().map(String::as_str));
    args.push("value");
    args.extend(value.iter().map(String::as_str));
    vxdp_testkit::run("bpftool", &args).context("setting the TCP closing timeout")?;
    Ok(topo)
}

/// A TCP connection from the guest to a server on the outside host:
/// (guest's end, server's end, the NAT address and port the server sees).
fn connect(topo: &NatTopology) -> Result<(TcpStream, TcpStream, SocketAddr)> {
    let listener = topo
        .wan
        .enter(|| TcpListener::bind(format!("{OUTSIDE_HOST}:0")))??;
    let addr = listener.local_addr()?;
    let client = topo.guests[0]
        .ns
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
    let (server, peer) = listener.accept()?;
    ensure!(
        peer.ip().to_string() == UPLINK_ADDR,
        "the server saw {peer}, not the uplink address"
    );
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
    }
    Ok((client, server, peer))
}

fn read_n(s: &mut TcpStream, n: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf)
        .with_context(|| format!("reading {what}"))?;
    Ok(buf)
}

#[test]
fn a_half_closed_connection_keeps_delivering_past_the_closing_timeout() -> Result<()> {
    let topo = topology("thc")?;
    let (mut client, mut server, _) = connect(&topo)?;
    // The guest sends its request and shuts down its write side.
    client.write_all(b"request")?;
    client.shutdown(Shutdown::Write)?;
    let mut request = Vec::new();
    server.read_to_end(&mut request)?;
    ensure!(request == b"request", "server got {request:?}");
    server.write_all(b"part one")?;
    ensure!(read_n(&mut client, 8, "part one")? == b"part one");
    let ct = String::from_utf8(topo.vxdp(&["conntrack", "list"])?.stdout)?;
    ensure!(
        ct.contains("fin-guest"),
        "the flow is not shown half-closed by the guest:\n{ct}"
    );
    // The server takes its time: longer than the closing timeout.
    std::thread::sleep(IDLE);
    server.write_all(b"part two")?;
    server.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .context("the guest lost the rest of a half-closed connection")?;
    ensure!(rest == b"part two", "guest got {rest:?} after idling");
    Ok(())
}

/// Sends raw IPv4 packets (headers included) from the outside host's
/// namespace.
fn send_raw(topo: &NatTopology, packets: Vec<Vec<u8>>, to: Ipv4Addr) -> Result<()> {
    topo.wan.enter(move || -> Result<()> {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.octets()),
            },
            sin_zero: [0; 8],
        };
        let mut result = Ok(());
        for p in &packets {
            let n = unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if n != p.len() as isize {
                result = Err(anyhow::anyhow!(
                    "sendto: {}",
                    std::io::Error::last_os_error()
                ));
                break;
            }
        }
        unsafe { libc::close(fd) };
        result
    })?
}

#[test]
fn rsts_at_wrong_sequence_numbers_do_not_kill_a_guests_connection() -> Result<()> {
    let topo = topology("trs")?;
    let (mut client, mut server, nat) = connect(&topo)?;
    client.write_all(b"ping")?;
    ensure!(read_n(&mut server, 4, "ping")? == b"ping");
    server.write_all(b"pong")?;
    ensure!(read_n(&mut client, 4, "pong")? == b"pong");

    // An attacker on the outside knows the server's port and the NAT port
    // but not the sequence numbers: RSTs spread over the sequence space.
    const SPRAY: u32 = 2000;
    let server_port = server.local_addr()?.port();
    let outside: Ipv4Addr = OUTSIDE_HOST.parse()?;
    let uplink: Ipv4Addr = UPLINK_ADDR.parse()?;
    let packets = (0..SPRAY)
        .map(|i| {
            let flags = if i % 2 == 0 {
                TCP_RST
            } else {
                TCP_RST | TCP_ACK
            };
            let seq = i.wrapping_mul(0x0020_c49b);
            Packet::tcp(sock(outside, server_port), sock(uplink, nat.port()), flags)
                .seq_ack(seq, seq ^ 0x5555_5555)
                .build()[14..]
                .to_vec()
        })
        .collect();
    let (ignored0, _) = topo.counter("default", "tcp_rst_ignored")?;
    send_raw(&topo, packets, uplink)?;
    let (ignored1, _) = topo.counter("default", "tcp_rst_ignored")?;
    ensure!(
        ignored1 - ignored0 >= u64::from(SPRAY),
        "{} of {SPRAY} sprayed RSTs reached conntrack as ignored",
        ignored1 - ignored0
    );
    let ct = String::from_utf8(topo.vxdp(&["conntrack", "list"])?.stdout)?;
    ensure!(
        ct.lines()
            .any(|l| l.contains(&format!(":{}", nat.port())) && l.contains("established")),
        "the flow is no longer established after the RST spray:\n{ct}"
    );

    // Idle past the closing timeout (a flow the spray had moved to closing
    // would be gone), then both directions still work.
    std::thread::sleep(IDLE);
    server.write_all(b"still here")?;
    ensure!(read_n(&mut client, 10, "data after the spray")? == b"still here");
    client.write_all(b"me too")?;
    ensure!(read_n(&mut server, 6, "the guest's data after the spray")? == b"me too");
    Ok(())
}

//! Traffic between namespaces: a TCP server and client, a UDP echo, and
//! deterministic payloads to check transfers with.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Result;

use crate::netns::Netns;

/// the client's address. Returns the listening address.
pub fn serve_payload(
    ns: &Netns,
    bind: &str,
    payload: Vec<u8>,
) -> Result<(SocketAddr, std::thread::JoinHandle<Result<SocketAddr>>)> {
    let bind = bind.to_string();
    let listener = ns.enter(move || TcpListener::bind(bind))??;
    let addr = listener.local_addr()?;
    let handle = std::thread::spawn(move || -> Result<SocketAddr> {
        let (mut s, peer) = listener.accept()?;
        s.write_all(&payload)?;
        Ok(peer)
    });
    Ok((addr, handle))
}

/// Connects from `ns` to `addr` and reads until EOF.
pub fn fetch(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<Vec<u8>> {
    let stream = ns.enter(move || TcpStream::connect_timeout(&addr, timeout))??;
    let mut stream = stream;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    Ok(buf)
}

/// A UDP echo in `ns` answering `count` datagrams, prefixing them with the
/// sender's address as the server saw it.
pub fn udp_echo(
    ns: &Netns,
    bind: &str,
    count: usize,
) -> Result<(SocketAddr, std::thread::JoinHandle<Result<()>>)> {
    let bind = bind.to_string();
    let sock = ns.enter(move || UdpSocket::bind(bind))??;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let addr = sock.local_addr()?;
    let handle = std::thread::spawn(move || -> Result<()> {
        // Room for any UDP datagram.
        let mut buf = vec![0u8; 65536];
        for _ in 0..count {
            let (n, peer) = sock.recv_from(&mut buf)?;
            let mut reply = format!("{peer}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            sock.send_to(&reply, peer)?;
        }
        Ok(())
    });
    Ok((addr, handle))
}

/// Deterministic pseudo-random bytes (xorshift), to check transfers.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

//! Ethernet/IPv6 frames: [`Packet6`] builds TCP, UDP and ICMPv6 echo frames
//! with correct checksums, [`Frame6`] reads what a program returned and
//! recomputes every checksum from scratch.

use std::net::{Ipv6Addr, SocketAddrV6};

use crate::packet::{Mac, checksum};

pub const ETH_P_IPV6: u16 = 0x86dd;
pub use crate::packet::{PROTO_TCP, PROTO_UDP};
pub const PROTO_ICMPV6: u8 = 58;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// `[addr]:port`, for building packets tersely.
pub fn sock6(addr: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(addr, port, 0, 0)
}

/// The L4 part of a [`Packet6`].
#[derive(Clone, Debug)]
pub enum L4Spec6 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Echo {
        request: bool,
        id: u16,
        seq: u16,
    },
    /// Any next header with this raw payload (extension headers, ...).
    Raw {
        next_header: u8,
        payload: Vec<u8>,
    },
}

/// An Ethernet/IPv6 frame to build (hop limit 64 unless set).
#[derive(Clone, Debug)]
pub struct Packet6 {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub l4: L4Spec6,
    pub payload: Vec<u8>,
}

impl Packet6 {
    fn new(src: Ipv6Addr, dst: Ipv6Addr, l4: L4Spec6) -> Self {
        Self {
            eth_src: [0; 6],
            eth_dst: [0; 6],
            src,
            dst,
            hop_limit: 64,
            l4,
            payload: b"vxdp nat66".to_vec(),
        }
    }
    pub fn tcp(src: SocketAddrV6, dst: SocketAddrV6, flags: u8) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4Spec6::Tcp {
                src_port: src.port(),
                dst_port: dst.port(),
                flags,
            },
        )
    }
    pub fn udp(src: SocketAddrV6, dst: SocketAddrV6) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4Spec6::Udp {
                src_port: src.port(),
                dst_port: dst.port(),
            },
        )
    }
    pub fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Self {
        Self::new(
            src,
            dst,
            L4Spec6::Echo {
                request: true,
                id,
                seq,
            },
        )
    }
    pub fn echo_reply(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Self {
        Self::new(
            src,
            dst,
            L4Spec6::Echo {
                request: false,
                id,
                seq,
            },
        )
    }
    pub fn raw(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Self {
        Self::new(
            src,
            dst,
            L4Spec6::Raw {
                next_header,
                payload: payload.to_vec(),
            },
        )
    }
    pub fn macs(mut self, src: Mac, dst: Mac) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }
    pub fn hop_limit(mut self, h: u8) -> Self {
        self.hop_limit = h;
        self
    }
    pub fn next_header(&self) -> u8 {
        match &self.l4 {
            L4Spec6::Tcp { .. } => PROTO_TCP,
            L4Spec6::Udp { .. } => PROTO_UDP,
            L4Spec6::Echo { .. } => PROTO_ICMPV6,
            L4Spec6::Raw { next_header, .. } => *next_header,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut l4 = match &self.l4 {
            L4Spec6::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                let mut h = Vec::with_capacity(20);
                h.extend_from_slice(&src_port.to_be_bytes());
                h.extend_from_slice(&dst_port.to_be_bytes());
                h.extend_from_slice(&0x1000_0000u32.to_be_bytes());
                h.extend_from_slice(&0u32.to_be_bytes());
                h.push(5 << 4);
                h.push(*flags);
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
                h.extend_from_slice(&self.payload);
                h
            }
            L4Spec6::Udp { src_port, dst_port } => {
                let mut h = Vec::with_capacity(8);
                h.extend_from_slice(&src_port.to_be_bytes());
                h.extend_from_slice(&dst_port.to_be_bytes());
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&self.payload);
                h
            }
            L4Spec6::Echo { request, id, seq } => {
                let mut h = vec![
                    if *request {
                        ICMPV6_ECHO_REQUEST
                    } else {
                        ICMPV6_ECHO_REPLY
                    },
                    0,
                    0,
                    0,
                ];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(&self.payload);
                h
            }
            L4Spec6::Raw { payload, .. } => payload.clone(),
        };
        let nh = self.next_header();
        if let Some(off) = csum_offset(nh) {
            let mut c = checksum(&pseudo_header6(self.src, self.dst, nh, &l4));
            if nh == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut f = Vec::with_capacity(54 + l4.len());
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        f.push(nh);
        f.push(self.hop_limit);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&l4);
        f
    }
}

/// Offset of the checksum in the L4 header of the protocols vxdp
/// translates.
fn csum_offset(nh: u8) -> Option<usize> {
    match nh {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        PROTO_ICMPV6 => Some(2),
        _ => None,
    }
}

/// The IPv6 pseudo-header (RFC 8200 section 8.1) followed by the segment.
fn pseudo_header6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, l4: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + l4.len());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, nh]);
    v.extend_from_slice(l4);
    v
}

/// A read-only view of an Ethernet/IPv6 frame a program returned.
pub struct Frame6<'a>(pub &'a [u8]);

impl Frame6<'_> {
    fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }
    fn addr_at(&self, off: usize) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.0[off..off + 16]);
        Ipv6Addr::from(a)
    }
    pub fn eth_dst(&self) -> Mac {
        self.0[0..6].try_into().unwrap()
    }
    pub fn eth_src(&self) -> Mac {
        self.0[6..12].try_into().unwrap()
    }
    pub fn next_header(&self) -> u8 {
        self.0[20]
    }
    pub fn hop_limit(&self) -> u8 {
        self.0[21]
    }
    pub fn src(&self) -> Ipv6Addr {
        self.addr_at(22)
    }
    pub fn dst(&self) -> Ipv6Addr {
        self.addr_at(38)
    }
    fn l4(&self) -> &[u8] {
        &self.0[54..]
    }
    /// TCP/UDP source port; ICMPv6 echo: the identifier.
    pub fn src_port(&self) -> u16 {
        self.u16_at(
            54 + if self.next_header() == PROTO_ICMPV6 {
                4
            } else {
                0
            },
        )
    }
    /// TCP/UDP destination port; ICMPv6 echo: the identifier.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(
            54 + if self.next_header() == PROTO_ICMPV6 {
                4
            } else {
                2
            },
        )
    }
    /// The payload after the L4 header (TCP without options).
    pub fn payload(&self) -> &[u8] {
        let h = match self.next_header() {
            PROTO_TCP => 20,
            _ => 8,
        };
        &self.l4()[h..]
    }
    /// Checks the L4 checksum by recomputing it over pseudo-header and
    /// segment (a correct one sums to zero).
    pub fn check_checksum(&self) -> Result<(), String> {
        let nh = self.next_header();
        let off = csum_offset(nh)
            .ok_or_else(|| format!("next header {nh} has no checksum vxdp maintains"))?;
        let stored = self.u16_at(54 + off);
        if nh == PROTO_UDP && stored == 0 {
            return Err("UDP over IPv6 with checksum 0 (invalid: RFC 8200 section 8.1)".into());
        }
        let mut l4 = self.l4().to_vec();
        l4[off..off + 2].copy_from_slice(&[0, 0]);
        let mut want = checksum(&pseudo_header6(self.src(), self.dst(), nh, &l4));
        if nh == PROTO_UDP && want == 0 {
            want = 0xffff;
        }
        if stored != want {
            return Err(format!("L4 checksum {stored:#06x}, recomputed {want:#06x}"));
        }
        Ok(())
    }
    #[track_caller]
    pub fn assert_checksum(&self, what: &str) {
        if let Err(e) = self.check_checksum() {
            panic!("{what}: {e}");
        }
    }
}

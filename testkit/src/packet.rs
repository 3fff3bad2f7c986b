//! Ethernet/IPv4 frames: [`Packet`] builds TCP, UDP and ICMP echo frames
//! with correct checksums (or deliberately without), [`Frame`] reads the
//! bytes a program or a socket returned and recomputes every checksum from
//! scratch; [`arp`] and [`bootp`] build the other frames guests send.

use std::net::{Ipv4Addr, SocketAddrV4};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ETH_P_ARP: u16 = 0x0806;

/// The address as it sits in a packet or map (network byte order).
pub fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The address from its in-memory (network byte order) form.
pub fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

pub fn fmt_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `addr:port`, for building packets tersely.
pub fn sock(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// An ARP request or reply (`op` 1 or 2) for Ethernet/IPv4 in a broadcast-
/// or unicast-addressed frame from `eth_src`.
pub fn arp(
    op: u16,
    eth_src: Mac,
    eth_dst: Mac,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender.0);
    f.extend_from_slice(&sender.1.octets());
    f.extend_from_slice(&target.0);
    f.extend_from_slice(&target.1.octets());
    f
}

pub const ETH_P_IP: u16 = 0x0800;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_RST: u8 = 0x04;

#[derive(Clone, Debug)]
pub enum L4Spec {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        no_checksum: bool,
    },
    IcmpEcho {
        request: bool,
        id: u16,
        seq: u16,
    },
}

/// An Ethernet/IPv4 frame to build. Defaults: TTL 64, DF set, no options.
#[derive(Clone, Debug)]
pub struct Packet {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub ip_id: u16,
    pub l4: L4Spec,
    pub payload: Vec<u8>,
}

impl Packet {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4Spec) -> Self {
        Self {
            eth_src: [0x02, 0, 0, 0, 0xee, 0x01],
            eth_dst: [0x02, 0, 0, 0, 0xee, 0x02],
            src,
            dst,
            ttl: 64,
            ip_id: 0x1c46,
            l4,
            payload: Vec::new(),
        }
    }

    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4Spec::Tcp {
                src_port: src.port(),
                dst_port: dst.port(),
                flags,
                seq: 0x0102_0304,
                ack: 0,
            },
        )
    }

    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4Spec::Udp {
                src_port: src.port(),
                dst_port: dst.port(),
                no_checksum: false,
            },
        )
        .payload(b"vxdp udp payload, odd length!")
    }

    pub fn icmp_echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        Self::new(
            src,
            dst,
            L4Spec::IcmpEcho {
                request: true,
                id,
                seq,
            },
        )
        .payload(b"ping payload 0123456789")
    }

    pub fn icmp_echo_reply(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        Self::new(
            src,
            dst,
            L4Spec::IcmpEcho {
                request: false,
                id,
                seq,
            },
        )
        .payload(b"ping payload 0123456789")
    }

    pub fn macs(mut self, src: Mac, dst: Mac) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }

    /// TCP only: the sequence and acknowledgement numbers (by default
    /// 0x01020304 and 0).
    pub fn seq_ack(mut self, seq_no: u32, ack_no: u32) -> Self {
        if let L4Spec::Tcp { seq, ack, .. } = &mut self.l4 {
            (*seq, *ack) = (seq_no, ack_no);
        }
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// UDP only: send with checksum 0 ("no checksum").
    pub fn udp_no_checksum(mut self) -> Self {
        if let L4Spec::Udp { no_checksum, .. } = &mut self.l4 {
            *no_checksum = true;
        }
        self
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4Spec::Tcp { .. } => PROTO_TCP,
            L4Spec::Udp { .. } => PROTO_UDP,
            L4Spec::IcmpEcho { .. } => PROTO_ICMP,
        }
    }

    /// The frame's bytes, every checksum correct.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        match self.l4 {
            L4Spec::Tcp {
                src_port,
                dst_port,
                flags,
                seq,
                ack,
            } => {
                l4.extend_from_slice(&src_port.to_be_bytes());
                l4.extend_from_slice(&dst_port.to_be_bytes());
                l4.extend_from_slice(&seq.to_be_bytes());
                l4.extend_from_slice(&ack.to_be_bytes());
                l4.push(5 << 4);
                l4.push(flags);
                l4.extend_from_slice(&64240u16.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            }
            L4Spec::Udp {
                src_port, dst_port, ..
            } => {
                l4.extend_from_slice(&src_port.to_be_bytes());
                l4.extend_from_slice(&dst_port.to_be_bytes());
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            L4Spec::IcmpEcho { request, id, seq } => {
                l4.push(if request { 8 } else { 0 });
                l4.push(0);
                l4.extend_from_slice(&[0, 0]);
                l4.extend_from_slice(&id.to_be_bytes());
                l4.extend_from_slice(&seq.to_be_bytes());
            }
        }
        l4.extend_from_slice(&self.payload);
        let proto = self.proto();
        let csum = match self.l4 {
            L4Spec::Udp {
                no_checksum: true, ..
            } => 0,
            L4Spec::IcmpEcho { .. } => checksum(&l4),
            L4Spec::Udp { .. } => match checksum(&pseudo_header(self.src, self.dst, proto, &l4)) {
                0 => 0xffff,
                c => c,
            },
            L4Spec::Tcp { .. } => checksum(&pseudo_header(self.src, self.dst, proto, &l4)),
        };
        let off = l4_csum_offset(proto);
        l4[off..off + 2].copy_from_slice(&csum.to_be_bytes());

        let mut ip = Vec::with_capacity(20);
        ip.push(0x45);
        ip.push(0);
        ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&self.ip_id.to_be_bytes());
        ip.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip.push(self.ttl);
        ip.push(proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::with_capacity(14 + ip.len() + l4.len());
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

fn l4_csum_offset(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => 2,
    }
}

/// A BOOTP/DHCP message of `op` (1 request, 2 reply) for client hardware
/// address `chaddr`, 300 bytes as clients send them: the magic cookie, a
/// message-type option and the end option. The guest program checks that
/// a client speaks only for its own MAC.
pub fn bootp(op: u8, chaddr: Mac) -> Vec<u8> {
    let mut b = vec![0u8; 300];
    b[0] = op;
    b[1] = 1;
    b[2] = 6;
    b[28..34].copy_from_slice(&chaddr);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b[240..243].copy_from_slice(&[53, 1, 1]);
    b[243] = 255;
    b
}

/// The Internet checksum (RFC 1071) of `data`, computed from scratch.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let (pairs, rest) = data.as_chunks::<2>();
    for c in pairs {
        sum += u16::from_be_bytes(*c) as u32;
    }
    if let [last] = rest {
        sum += (*last as u32) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 pseudo-header followed by the L4 segment.
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + l4.len());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.push(0);
    v.push(proto);
    v.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    v.extend_from_slice(l4);
    v
}

/// 0x0000 and 0xffff are the same one's complement number: a receiver
/// accepts either where the other is computed.
fn csum_same(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

/// A read-only view of an Ethernet/IPv4 frame a program returned.
pub struct Frame<'a>(pub &'a [u8]);

impl Frame<'_> {
    fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }
    pub fn eth_dst(&self) -> Mac {
        self.0[0..6].try_into().unwrap()
    }
    pub fn eth_src(&self) -> Mac {
        self.0[6..12].try_into().unwrap()
    }
    pub fn ihl(&self) -> usize {
        (self.0[14] & 0x0f) as usize * 4
    }
    pub fn ttl(&self) -> u8 {
        self.0[14 + 8]
    }
    pub fn proto(&self) -> u8 {
        self.0[14 + 9]
    }
    pub fn ip_id(&self) -> u16 {
        self.u16_at(14 + 4)
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[26], self.0[27], self.0[28], self.0[29])
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[30], self.0[31], self.0[32], self.0[33])
    }
    fn l4_off(&self) -> usize {
        14 + self.ihl()
    }
    fn l4_end(&self) -> usize {
        (14 + self.u16_at(16) as usize).min(self.0.len())
    }
    /// TCP/UDP source port; ICMP echo: the identifier.
    pub fn src_port(&self) -> u16 {
        match self.proto() {
            PROTO_ICMP => self.icmp_id(),
            _ => self.u16_at(self.l4_off()),
        }
    }
    /// TCP/UDP destination port; ICMP echo: the identifier.
    pub fn dst_port(&self) -> u16 {
        match self.proto() {
            PROTO_ICMP => self.icmp_id(),
            _ => self.u16_at(self.l4_off() + 2),
        }
    }
    pub fn icmp_id(&self) -> u16 {
        self.u16_at(self.l4_off() + 4)
    }
    pub fn sock_src(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.src(), self.src_port())
    }
    pub fn sock_dst(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.dst(), self.dst_port())
    }
    /// L4 payload after the fixed header.
    pub fn payload(&self) -> &[u8] {
        let hdr = match self.proto() {
            PROTO_TCP => 20,
            _ => 8,
        };
        &self.0[self.l4_off() + hdr..self.l4_end()]
    }
    pub fn ip_checksum(&self) -> u16 {
        self.u16_at(24)
    }
    pub fn l4_checksum(&self) -> u16 {
        self.u16_at(self.l4_off() + l4_csum_offset(self.proto()))
    }

    /// The IPv4 header checksum computed from scratch over the header as it is.
    pub fn expected_ip_checksum(&self) -> u16 {
        let mut h = self.0[14..14 + self.ihl()].to_vec();
        h[10] = 0;
        h[11] = 0;
        checksum(&h)
    }

    /// The L4 checksum computed from scratch (with the pseudo-header for TCP
    /// and UDP; UDP's computed 0 is sent as 0xffff).
    pub fn expected_l4_checksum(&self) -> u16 {
        let proto = self.proto();
        let mut l4 = self.0[self.l4_off()..self.l4_end()].to_vec();
        let off = l4_csum_offset(proto);
        l4[off] = 0;
        l4[off + 1] = 0;
        match proto {
            PROTO_ICMP => checksum(&l4),
            PROTO_UDP => match checksum(&pseudo_header(self.src(), self.dst(), proto, &l4)) {
                0 => 0xffff,
                c => c,
            },
            _ => checksum(&pseudo_header(self.src(), self.dst(), proto, &l4)),
        }
    }

    /// Checks that the IPv4 and L4 checksums are what a receiver computes
    /// (a UDP checksum of 0, "none", is accepted only if `udp_zero_ok`);
    /// `Err` says what a receiver would see wrong.
    pub fn check_checksums(&self, udp_zero_ok: bool) -> Result<(), String> {
        let (got, want) = (self.ip_checksum(), self.expected_ip_checksum());
        if !csum_same(got, want) {
            return Err(format!(
                "IPv4 header checksum is {got:#06x}, a receiver computes {want:#06x}: the packet would be dropped on arrival"
            ));
        }
        let name = match self.proto() {
            PROTO_TCP => "TCP",
            PROTO_UDP => "UDP",
            PROTO_ICMP => "ICMP",
            _ => "L4",
        };
        let got = self.l4_checksum();
        if self.proto() == PROTO_UDP && got == 0 {
            return if udp_zero_ok {
                Ok(())
            } else {
                Err(
                    "UDP checksum is 0 (\"none\") but the sender had one: checksum protection lost"
                        .into(),
                )
            };
        }
        let want = self.expected_l4_checksum();
        if !csum_same(got, want) {
            return Err(format!(
                "{name} checksum is {got:#06x}, a receiver computes {want:#06x} (pseudo-header {} -> {}): the packet would be dropped on arrival",
                self.src(),
                self.dst()
            ));
        }
        Ok(())
    }

    /// [`Frame::check_checksums`] as an assertion.
    #[track_caller]
    pub fn assert_checksums(&self, what: &str, udp_zero_ok: bool) {
        if let Err(e) = self.check_checksums(udp_zero_ok) {
            panic!("{what}: {e}");
        }
    }
}

//! IPv4 fragments of NAT flows. Only a datagram's first fragment carries
//! the ports conntrack keys on; the others carry the IP header alone. When
//! NAT translates a first fragment (either way) it records the IP
//! identification of the datagram in `VXDP_FRAGS` with the address the
//! rest must get, and the rest of the datagram follows that record: the
//! same address rewrite, IP header only (the L4 checksum, in the first
//! fragment, already covers the whole datagram). A fragment arriving before
//! its first fragment is not translated (see `docs/security.md`). NAT66
//! fragments (an extension header) are not translated.

use vxdp_common::{Action, DropReason, FRAG_INBOUND, FRAG_OUTBOUND, FragEntry, FragKey};

use super::{
    conntrack,
    deliver::{Hook, prepare_for_guest},
};
use crate::base::{
    ctx::PacketCtx,
    family::Family,
    maps::VXDP_FRAGS,
    parse::{IP_DST_OFF, IP_SRC_OFF, Ipv4},
    stats::Drop,
};

/// How long a datagram's record is followed: the kernel's default
/// reassembly timeout (`net.ipv4.ipfrag_time`, 30 s).
const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;

/// A family whose fragments NAT follows: IPv4. IPv6's fragments sit behind
/// an extension header and are not followed.
pub trait Fragments: Family {
    /// After a first fragment was translated: records where the rest of
    /// its datagram goes. `inbound`: a reply from the outside (`new_addr`
    /// the guest's) or a guest's packet (`new_addr` the NAT address).
    fn remember(
        &self,
        inbound: bool,
        new_addr: &Self::Addr,
        ifindex: u32,
        net_id: u32,
        mac: &[u8; 6],
    );
}

impl Fragments for Ipv4 {
    #[inline(always)]
    fn remember(&self, inbound: bool, new_addr: &u32, ifindex: u32, net_id: u32, mac: &[u8; 6]) {
        // A whole packet, or offset 0 with more fragments to come.
        if !self.fragment {
            return;
        }
        let entry = FragEntry {
            created_ns: conntrack::now(),
            addr: *new_addr,
            ifindex,
            network_id: net_id as u16,
            mac: *mac,
        };
        let _ = VXDP_FRAGS.insert(&key(self, inbound), &entry, 0);
    }
}

impl Fragments for crate::base::parse::Ipv6 {
    #[inline(always)]
    fn remember(&self, _: bool, _: &[u8; 16], _: u32, _: u32, _: &[u8; 6]) {}
}

#[inline(always)]
fn key(ip: &Ipv4, inbound: bool) -> FragKey {
    FragKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        id: ip.id,
        proto: ip.proto,
        direction: if inbound { FRAG_INBOUND } else { FRAG_OUTBOUND },
    }
}

/// The record of the datagram a later fragment (non-zero offset) belongs
/// to, if its first fragment was translated less than 30 s ago.
#[inline(always)]
pub fn follow(ip: &Ipv4, inbound: bool) -> Option<FragEntry> {
    let entry = *unsafe { VXDP_FRAGS.get(&key(ip, inbound)) }?;
    if conntrack::now().saturating_sub(entry.created_ns) > FRAG_TIMEOUT_NS {
        return None;
    }
    Some(entry)
}

/// Rewrites a later fragment: its source (outbound) or destination
/// (inbound) address, the TTL and the IP header checksum.
#[inline(always)]
pub fn rewrite<C: PacketCtx>(ctx: &C, ip: &Ipv4, inbound: bool, new_addr: u32) -> Result<(), ()> {
    let (off, old) = if inbound {
        (IP_DST_OFF, ip.dst)
    } else {
        (IP_SRC_OFF, ip.src)
    };
    Ipv4::write_addr(ctx, off, &new_addr)?;
    let ttl_word = ip.write_ttl(ctx)?;
    Ipv4::header_csum_addr(ctx, &old, &new_addr)?;
    Ipv4::header_csum_ttl(ctx, ttl_word)
}

/// The uplink: a later fragment of a reply whose first fragment went to a
/// guest goes to that guest (`None`: no such datagram).
#[inline(always)]
pub fn inbound_rest<C: Hook>(ctx: &C, ip: &Ipv4) -> Result<Option<C::Verdict>, Drop> {
    let Some(e) = follow(ip, true) else {
        return Ok(None);
    };
    if !ctx.deliverable(e.ifindex) {
        return Ok(Some(ctx.defer()));
    }
    let net_id = e.network_id as u32;
    prepare_for_guest(ctx, net_id, ip.ttl, &e.mac)?;
    rewrite(ctx, ip, true, e.addr)
        .map_err(|_| Drop::new(DropReason::ChecksumUpdateFailed, net_id))?;
    ctx.to_port(e.ifindex, net_id, Action::DnatForwarded)
        .map(Some)
}

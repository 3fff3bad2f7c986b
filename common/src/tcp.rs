//! TCP state tracking for conntrack: when a flow's FINs and RSTs may end
//! it. Pure functions over what each direction's entry recorded, shared by
//! the programs (both conntrack tables) and the host tests.
//!
//! The reference is the kernel's conntrack, reduced to what a NAT needs to
//! decide a flow's timeout safely against an off-path attacker:
//! - **FIN per direction.** A FIN moves an established flow to
//!   [`ct_state::FIN_ORIGINAL`] or [`ct_state::FIN_REPLY`] (half-closed, the
//!   established timeout still applies); only the second direction's FIN
//!   moves it to [`ct_state::CLOSING`] (the short timeout).
//! - **RST only at the exact sequence number** (RFC 5961 §3): an RST ends
//!   the flow only when its sequence number is exactly what the receiver
//!   expects next (the last acknowledgement the receiver sent), or exactly
//!   the end of the sender's last in-sequence segment (an RST right after
//!   the sender's own data, before the receiver acknowledged it), or, while
//!   the flow is new, when it acknowledges exactly the opener's SYN (a
//!   refused connection). Any other RST leaves the flow's state alone; it is
//!   still forwarded, and the endpoint's own stack judges it (Linux answers
//!   an in-window one with a challenge ACK and drops the rest).
//! - **What the outside says is checked, what the guest says is not.** A
//!   guest's entry is written only by frames from its own port (the flow is
//!   bound to it, its source checked), so the guest's sequence numbers and
//!   acknowledgements are recorded as they come. The outside's are recorded
//!   only from segments that start exactly where the outside's stream is
//!   known to continue (the end of its last recorded segment, or the
//!   guest's last acknowledgement), so a blind attacker cannot move them
//!   without guessing a 32-bit number either.
//!
//! No window is tracked (the window scale sits in SYN options vxdp does not
//! parse): an RST that is in the receiver's window but not exact is not
//! told apart from one outside it, and both leave the state alone.

use crate::ct_state;

/// TCP header flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Bits of a conntrack entry's `tcp_known`: which of its TCP fields hold a
/// recorded value.
pub mod tcp_known {
    /// `tcp_end` is the end of a segment this direction sent.
    pub const END: u8 = 1;
    /// `tcp_ack` is an acknowledgement this direction sent.
    pub const ACK: u8 = 2;
}

/// What conntrack reads of a TCP segment (host byte order). All zero for
/// other protocols.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Payload bytes.
    pub len: u32,
}

impl Segment {
    /// The sequence number after this segment (SYN and FIN count one).
    #[inline(always)]
    pub fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.len)
            .wrapping_add((self.flags & TCP_SYN != 0) as u32)
            .wrapping_add((self.flags & TCP_FIN != 0) as u32)
    }
}

/// What one direction's sender was seen sending, as kept in that
/// direction's conntrack entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// [`tcp_known`] bits.
    pub known: u8,
    /// The end of the last recorded segment (highest, for the guest).
    pub end: u32,
    /// The last acknowledgement sent: the sender's next expected byte.
    pub ack: u32,
}

impl Sender {
    #[inline(always)]
    fn end(&self) -> Option<u32> {
        (self.known & tcp_known::END != 0).then_some(self.end)
    }
    #[inline(always)]
    fn ack(&self) -> Option<u32> {
        (self.known & tcp_known::ACK != 0).then_some(self.ack)
    }
}

/// `a` comes after `b` in sequence space.
#[inline(always)]
pub fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What a reset did to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rst {
    /// Not a reset.
    None,
    /// An exact reset: the flow closes.
    Accepted,
    /// A reset at any other sequence number: the state is kept.
    Ignored,
}

/// A flow's entry after one packet: its state (mirrored onto the other
/// direction's entry) and what its sender was seen sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub state: u8,
    pub sender: Sender,
    pub rst: Rst,
}

/// The first segment of a flow (the opener's SYN) as its sender's record.
#[inline(always)]
pub fn opened(seg: &Segment) -> Sender {
    if seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
        Sender {
            known: tcp_known::END,
            end: seg.end(),
            ack: 0,
        }
    } else {
        Sender::default()
    }
}

/// Applies a packet to an entry: `state` is the flow's, `from_reply` says
/// which direction sent it (the reply direction is the outside's, whose
/// numbers are checked before they are recorded), `sender` is this
/// direction's record and `receiver` the other's (`None`: its entry is
/// missing). For protocols other than TCP pass `tcp = false`: a reply only
/// establishes the flow.
#[inline(always)]
pub fn track(
    tcp: bool,
    state: u8,
    from_reply: bool,
    seg: &Segment,
    sender: Sender,
    receiver: Option<Sender>,
) -> Tracked {
    let replied = if from_reply && state == ct_state::NEW {
        ct_state::ESTABLISHED
    } else {
        state
    };
    if !tcp {
        return Tracked {
            state: replied,
            sender,
            rst: Rst::None,
        };
    }
    // TCP: only a reply that continues the flow's numbers establishes it
    // (see `in_sequence` below), not any packet with its tuple.
    let receiver = receiver.unwrap_or_default();
    if seg.flags & TCP_RST != 0 {
        let exact = receiver.ack() == Some(seg.seq)
            || sender.end() == Some(seg.seq)
            || (state == ct_state::NEW
                && seg.flags & TCP_ACK != 0
                && receiver.end() == Some(seg.ack));
        return if exact {
            Tracked {
                state: ct_state::CLOSING,
                sender,
                rst: Rst::Accepted,
            }
        } else {
            Tracked {
                state,
                sender,
                rst: Rst::Ignored,
            }
        };
    }
    let syn = seg.flags & TCP_SYN != 0;
    let ack = seg.flags & TCP_ACK != 0;
    if syn && !ack {
        // An opener: the guest's first SYN (recorded when the flow was
        // created), a retransmission, or the tuple reused after the flow
        // closed. The outside does not open NAT flows.
        let state = if !from_reply && state == ct_state::CLOSING {
            ct_state::NEW
        } else {
            state
        };
        let sender = if from_reply { sender } else { opened(seg) };
        return Tracked {
            state,
            sender,
            rst: Rst::None,
        };
    }
    // Whether this direction's numbers may be recorded: always the guest's;
    // the outside's when the segment continues its known stream exactly
    // (or, for its SYN/ACK, acknowledges exactly the guest's SYN).
    let in_sequence = !from_reply
        || if syn {
            receiver.end() == Some(seg.ack)
        } else {
            sender.end() == Some(seg.seq) || receiver.ack() == Some(seg.seq)
        };
    if !in_sequence {
        return Tracked {
            state,
            sender,
            rst: Rst::None,
        };
    }
    let mut rec = sender;
    let end = seg.end();
    match rec.end() {
        Some(known) if !syn && !seq_after(end, known) => {}
        _ => {
            rec.end = end;
            rec.known |= tcp_known::END;
        }
    }
    if ack {
        rec.ack = seg.ack;
        rec.known |= tcp_known::ACK;
    }
    let state = if seg.flags & TCP_FIN != 0 {
        fin(replied, from_reply)
    } else {
        replied
    };
    Tracked {
        state,
        sender: rec,
        rst: Rst::None,
    }
}

/// The state after a FIN from one direction: the first half-closes the
/// flow, the other direction's closes it. A FIN before any reply (the flow
/// is still new) is not recorded.
#[inline(always)]
fn fin(state: u8, from_reply: bool) -> u8 {
    let (own, other) = if from_reply {
        (ct_state::FIN_REPLY, ct_state::FIN_ORIGINAL)
    } else {
        (ct_state::FIN_ORIGINAL, ct_state::FIN_REPLY)
    };
    match state {
        ct_state::ESTABLISHED => own,
        s if s == other => ct_state::CLOSING,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_state::{CLOSING, ESTABLISHED, FIN_ORIGINAL, FIN_REPLY, NEW};

    const GUEST_ISN: u32 = 1_000;
    const REMOTE_ISN: u32 = u32::MAX - 10; // wraps during the exchange

    fn seg(flags: u8, seq: u32, ack: u32, len: u32) -> Segment {
        Segment {
            flags,
            seq,
            ack,
            len,
        }
    }

    /// A flow's two records and state, driven packet by packet as the
    /// programs do.
    struct Flow {
        state: u8,
        guest: Sender,
        remote: Sender,
    }

    impl Flow {
        /// The guest's SYN created the flow: new, nothing from the remote.
        fn opened_by_guest() -> Self {
            Flow {
                state: NEW,
                guest: opened(&seg(TCP_SYN, GUEST_ISN, 0, 0)),
                remote: Sender::default(),
            }
        }

        /// The guest's SYN created the flow; the remote answered and the
        /// guest acknowledged: established, both directions known.
        fn established() -> Self {
            let mut f = Self::opened_by_guest();
            assert_eq!(
                f.remote(seg(TCP_SYN | TCP_ACK, REMOTE_ISN, GUEST_ISN + 1, 0)),
                Rst::None
            );
            assert_eq!(f.state, ESTABLISHED);
            f.guest(seg(TCP_ACK, GUEST_ISN + 1, REMOTE_ISN.wrapping_add(1), 0));
            f
        }

        fn guest(&mut self, s: Segment) -> Rst {
            let t = track(true, self.state, false, &s, self.guest, Some(self.remote));
            self.state = t.state;
            self.guest = t.sender;
            t.rst
        }

        fn remote(&mut self, s: Segment) -> Rst {
            let t = track(true, self.state, true, &s, self.remote, Some(self.guest));
            self.state = t.state;
            self.remote = t.sender;
            t.rst
        }
    }

    #[test]
    fn the_handshake_records_both_directions() {
        let f = Flow::established();
        assert_eq!(f.guest.ack(), Some(REMOTE_ISN.wrapping_add(1)));
        assert_eq!(f.guest.end(), Some(GUEST_ISN + 1));
        assert_eq!(f.remote.end(), Some(REMOTE_ISN.wrapping_add(1)));
        assert_eq!(f.remote.ack(), Some(GUEST_ISN + 1));
    }

    #[test]
    fn a_half_close_keeps_the_flow_until_the_other_side_finishes() {
        let mut f = Flow::established();
        let r0 = REMOTE_ISN.wrapping_add(1);
        // The guest shuts down its write side.
        f.guest(seg(TCP_FIN | TCP_ACK, GUEST_ISN + 1, r0, 0));
        assert_eq!(f.state, FIN_ORIGINAL);
        // The remote keeps sending (its sequence wraps), the guest acks.
        let mut seq = r0;
        for _ in 0..5 {
            f.remote(seg(TCP_ACK, seq, GUEST_ISN + 2, 1000));
            seq = seq.wrapping_add(1000);
            f.guest(seg(TCP_ACK, GUEST_ISN + 2, seq, 0));
            assert_eq!(f.state, FIN_ORIGINAL, "data after a half-close");
        }
        assert_eq!(f.remote.end(), Some(seq));
        // A second FIN from the guest (retransmission) changes nothing.
        f.guest(seg(TCP_FIN | TCP_ACK, GUEST_ISN + 1, seq, 0));
        assert_eq!(f.state, FIN_ORIGINAL);
        // The remote's FIN closes.
        f.remote(seg(TCP_FIN | TCP_ACK, seq, GUEST_ISN + 2, 0));
        assert_eq!(f.state, CLOSING);
    }

    #[test]
    fn the_remote_may_close_first() {
        let mut f = Flow::established();
        let r0 = REMOTE_ISN.wrapping_add(1);
        f.remote(seg(TCP_FIN | TCP_ACK, r0, GUEST_ISN + 1, 10));
        assert_eq!(f.state, FIN_REPLY);
        f.guest(seg(TCP_ACK, GUEST_ISN + 1, r0.wrapping_add(11), 500));
        assert_eq!(f.state, FIN_REPLY);
        f.guest(seg(
            TCP_FIN | TCP_ACK,
            GUEST_ISN + 501,
            r0.wrapping_add(11),
            0,
        ));
        assert_eq!(f.state, CLOSING);
    }

    #[test]
    fn a_blind_fin_from_outside_is_not_recorded() {
        let mut f = Flow::established();
        for seq in [0, 1, GUEST_ISN, REMOTE_ISN, REMOTE_ISN.wrapping_add(2)] {
            f.remote(seg(TCP_FIN | TCP_ACK, seq, 0, 0));
            assert_eq!(f.state, ESTABLISHED, "FIN at {seq}");
        }
        // Nor its data or acknowledgements.
        let before = f.remote;
        f.remote(seg(TCP_ACK, 12345, 777, 100));
        assert_eq!(f.remote, before);
    }

    #[test]
    fn only_an_exact_rst_closes() {
        let r0 = REMOTE_ISN.wrapping_add(1);
        // Everything but the guest's next expected number (and the
        // remote's recorded end, which is the same here) is ignored.
        for seq in [
            0,
            r0.wrapping_sub(1),
            r0.wrapping_add(1),
            r0.wrapping_add(1000),
            GUEST_ISN + 1,
        ] {
            let mut f = Flow::established();
            assert_eq!(f.remote(seg(TCP_RST, seq, 0, 0)), Rst::Ignored, "{seq}");
            assert_eq!(f.state, ESTABLISHED, "RST at {seq}");
            assert_eq!(
                f.remote(seg(TCP_RST | TCP_ACK, seq, GUEST_ISN + 1, 0)),
                Rst::Ignored
            );
        }
        let mut f = Flow::established();
        assert_eq!(f.remote(seg(TCP_RST, r0, 0, 0)), Rst::Accepted);
        assert_eq!(f.state, CLOSING);
        // The guest's reset at its own next sequence number.
        let mut f = Flow::established();
        assert_eq!(f.guest(seg(TCP_RST, GUEST_ISN + 2, 0, 0)), Rst::Ignored);
        assert_eq!(f.guest(seg(TCP_RST, GUEST_ISN + 1, 0, 0)), Rst::Accepted);
        assert_eq!(f.state, CLOSING);
    }

    #[test]
    fn an_rst_after_unacknowledged_data_closes() {
        // The remote sends data then aborts: its RST carries the sequence
        // number after the data, which the guest has not acknowledged yet.
        let mut f = Flow::established();
        let r0 = REMOTE_ISN.wrapping_add(1);
        f.remote(seg(TCP_ACK, r0, GUEST_ISN + 1, 1400));
        f.remote(seg(TCP_ACK, r0.wrapping_add(1400), GUEST_ISN + 1, 600));
        assert_eq!(
            f.remote(seg(TCP_RST, r0.wrapping_add(1000), 0, 0)),
            Rst::Ignored
        );
        assert_eq!(
            f.remote(seg(TCP_RST, r0.wrapping_add(2000), 0, 0)),
            Rst::Accepted
        );
        assert_eq!(f.state, CLOSING);
    }

    #[test]
    fn a_refused_connection_closes_a_new_flow() {
        let mut f = Flow::opened_by_guest();
        // Not acknowledging the SYN: ignored.
        assert_eq!(
            f.remote(seg(TCP_RST | TCP_ACK, 0, GUEST_ISN, 0)),
            Rst::Ignored
        );
        assert_eq!(f.remote(seg(TCP_RST, 0, 0, 0)), Rst::Ignored);
        assert_eq!(f.state, NEW);
        // A blind SYN/ACK does not make the remote's numbers known.
        f.remote(seg(TCP_SYN | TCP_ACK, 5, GUEST_ISN + 7, 0));
        assert_eq!(f.remote, Sender::default());
        assert_eq!(f.state, NEW, "a blind SYN/ACK established the flow");
        // Linux's answer to a SYN on a closed port.
        assert_eq!(
            f.remote(seg(TCP_RST | TCP_ACK, 0, GUEST_ISN + 1, 0)),
            Rst::Accepted
        );
        assert_eq!(f.state, CLOSING);
        // The guest opens again with the same tuple.
        f.guest(seg(TCP_SYN, GUEST_ISN + 99, 0, 0));
        assert_eq!(f.state, NEW);
        assert_eq!(f.guest.end(), Some(GUEST_ISN + 100));
    }

    #[test]
    fn the_outside_stream_resynchronises_on_the_guests_ack() {
        let mut f = Flow::established();
        let r0 = REMOTE_ISN.wrapping_add(1);
        // A segment lost before vxdp: the next one does not continue the
        // recorded stream and is not recorded...
        f.remote(seg(TCP_ACK, r0.wrapping_add(100), GUEST_ISN + 1, 100));
        assert_eq!(f.remote.end(), Some(r0));
        // ...until the retransmission fills the gap and the guest acks all.
        f.remote(seg(TCP_ACK, r0, GUEST_ISN + 1, 100));
        f.guest(seg(TCP_ACK, GUEST_ISN + 1, r0.wrapping_add(200), 0));
        f.remote(seg(TCP_ACK, r0.wrapping_add(200), GUEST_ISN + 1, 50));
        assert_eq!(f.remote.end(), Some(r0.wrapping_add(250)));
    }

    #[test]
    fn entries_without_records_close_only_on_fins() {
        // An entry recreated after eviction has no records: no RST is
        // exact, FINs from the guest still count.
        let mut f = Flow {
            state: ESTABLISHED,
            guest: Sender::default(),
            remote: Sender::default(),
        };
        assert_eq!(f.remote(seg(TCP_RST, 0, 0, 0)), Rst::Ignored);
        f.guest(seg(TCP_FIN | TCP_ACK, 10, 20, 0));
        assert_eq!(f.state, FIN_ORIGINAL);
        // The remote continues exactly where the guest acknowledged.
        f.remote(seg(TCP_FIN | TCP_ACK, 20, 11, 0));
        assert_eq!(f.state, CLOSING);
    }

    #[test]
    fn other_protocols_are_established_by_a_reply() {
        let none = Segment::default();
        let s = Sender::default();
        assert_eq!(track(false, NEW, false, &none, s, None).state, NEW);
        assert_eq!(track(false, NEW, true, &none, s, None).state, ESTABLISHED);
        assert_eq!(
            track(false, ESTABLISHED, true, &none, s, None).rst,
            Rst::None
        );
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_after(1, 0));
        assert!(seq_after(5, u32::MAX - 5));
        assert!(!seq_after(u32::MAX - 5, 5));
        assert!(!seq_after(7, 7));
    }
}

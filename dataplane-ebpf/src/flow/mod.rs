//! Flows, above `base` and below the modes: connection tracking
//! (`conntrack`), masquerade NAT over both address families (`snat`), the
//! host's own sockets a NAT port must not take (`sockets`), IPv4 fragments
//! of NAT flows (`frag`), admission control (`quota`), and delivery to
//! a guest port from the uplink's XDP or TC program (`deliver`, with
//! `partial_csum` deciding what XDP may deliver).

pub mod conntrack;
pub mod deliver;
pub mod forward;
pub mod frag;
pub mod partial_csum;
pub mod quota;
pub mod snat;
pub mod sockets;

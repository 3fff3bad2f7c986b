//! The guest port's programs (TC ingress): `vxdp_guest_in` (`ingress`:
//! anti-spoofing and the mode's policy) and the programs it tail-calls by
//! mode, each verified on its own: `nat4`, `nat6`, `route` (and the direct
//! mode's, `crate::direct`). `port` is what they share. The same code runs
//! as XDP on taps with `--guest-xdp` (`xdp`), leaving to the TC program
//! what it cannot finish.

pub mod ingress;
pub mod nat4;
pub mod nat6;
pub mod port;
pub mod route;
pub mod xdp;

//! What every path stands on: the context trait and the one bounds-checked
//! accessor (`ctx`), header parsing (`parse`), checksum arithmetic (`csum`),
//! the clock (`clock`), Ethernet rewrites (`l2`), what the address families differ in
//! (`family`), route lookups and redirects (`fib`), the maps (`maps`),
//! counters (`stats`, `port_stats`), the policy predicates (`policy`) and
//! the guest ports' outbound rate limits (`police`).
//! Nothing here knows about flows or modes.

pub mod clock;
pub mod csum;
pub mod ctx;
pub mod family;
pub mod fib;
pub mod l2;
pub mod maps;
pub mod parse;
pub mod police;
pub mod policy;
pub mod port_stats;
pub mod stats;

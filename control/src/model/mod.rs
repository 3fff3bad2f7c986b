//! Plain values with no I/O that every layer uses: MAC addresses, network
//! modes, address arithmetic.

pub mod addr;
pub mod bandwidth;
pub mod mac;
pub mod mode;

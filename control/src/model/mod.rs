//! Plain values with no I/O that every layer uses: MAC addresses, network
//! modes, address arithmetic, port forwards.

pub mod addr;
pub mod bandwidth;
pub mod forward;
pub mod mac;
pub mod mode;

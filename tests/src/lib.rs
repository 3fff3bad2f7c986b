
pub mod progtest;
pub mod testbed;

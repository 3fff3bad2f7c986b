
pub mod corpus;
pub mod progtest;
pub mod testbed;

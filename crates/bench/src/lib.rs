//! Benchmarks that ship with mortar, run as `mortar bench <name>`.
//!
//! Benchmarks measure; they never assert. Each prints its numbers beside a
//! baseline measured in the same run, because this machine is shared and
//! absolute numbers drift.

pub mod bus;
pub mod cpu;
pub mod cqrs;
pub mod disk;
pub mod http;
pub mod start;
pub mod stats;

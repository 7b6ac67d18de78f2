//! Helpers shared by mortar's cross-process tests.
//!
//! Tests run the real binaries (`mortar`, the shop's services, the fixture
//! service) as separate processes and look at them the way a user would:
//! through the CLI, HTTP, signals and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod auth;
pub mod bins;
pub mod browser;
pub mod cli;
pub mod consumer;
pub mod dns;
pub mod files;
pub mod golden;
pub mod http;
pub mod load;
pub mod nats;
pub mod node;
pub mod openssl;
pub mod pgproxy;
pub mod registry;
pub mod service;
pub mod shop;
pub mod stores;
pub mod tls;
pub mod wait;

pub use bins::{binary, example};
pub use node::RunningNode;
pub use wait::{eventually, wait_for};

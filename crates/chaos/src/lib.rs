//! Testing a running application by breaking it: `mortar chaos`.
//!
//! [`faults`] kills (SIGKILL) or pauses (SIGSTOP, then SIGCONT) an
//! instance of a running node, found through the node's status API, and
//! measures how long its service takes to be fully ready again.
//! [`scenario`] drives the reference shop through its gateway with a client
//! that never retries — sign-ups, browsing, orders — while a scripted
//! sequence of faults plays, waits for the read model and the notifier to
//! catch up, and returns a [`Scorecard`]: what the client saw, what was
//! acknowledged and what arrived where. Nothing acknowledged may be lost.

pub mod faults;
pub mod scenario;
mod scorecard;
mod shop;

pub use faults::{Fault, FaultError};
pub use scenario::{Scenario, ScenarioError};
pub use scorecard::{Recovery, Scorecard};

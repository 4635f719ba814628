//! Progressive delivery of Blueprint changes: blast radius before anything moves, revisions, and the rollout plan.
//!
//! `diff`, `revision`, `order` and `plan` are pure; `controller` and `prometheus` do the reading and writing.

pub mod controller;
pub mod diff;
pub mod order;
pub mod plan;
pub mod prometheus;
pub mod revision;

//! Progressive delivery of Blueprint changes: blast radius before anything moves, revisions, and the rollout plan.
//!
//! `diff`, `revision`, `order` and `plan` are pure; the controller and `plinth rollout` do the reading and writing.

pub mod diff;
pub mod order;
pub mod plan;
pub mod revision;

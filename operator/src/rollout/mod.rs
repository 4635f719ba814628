//! Progressive delivery of Blueprint changes: blast radius before anything moves, revisions, and the rollout plan.

pub mod diff;

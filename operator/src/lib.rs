//! Plinth's engine and operator: render Applications through Blueprints, validate them, and reconcile them in a cluster.
//!
//! The pure parts (`yaml`, `schema`, `render`, `validate`) do no I/O and hold most of the logic;
//! `cli` is the thin layer that reads files and prints.

pub mod cli;
pub mod problem;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod schema;
pub mod validate;
pub mod yaml;

//! The rendering engine: Blueprint templates expand an Application into typed Kubernetes objects. Pure: no I/O.

pub mod blueprint;
pub mod bundled;
pub mod context;
pub mod emit;
mod engine;
pub mod escape;
pub mod guardrails;
mod helpers;
pub mod objects;
pub mod security;
pub mod slots;
mod typed;

pub use blueprint::LoadedBlueprint;
pub use context::Platform;
pub use engine::{Rendered, RenderedObject, check, is_dns1035_label, merge, render};
pub use objects::Object;

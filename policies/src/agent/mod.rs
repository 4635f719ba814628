//! The node agent: sources of the world (file, Kubernetes), the apply loop, flow events and metrics.

pub mod routes;

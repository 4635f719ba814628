//! Test fixtures shared by the end-to-end suites.
//!
//! - [`control_plane`]: a real Kubernetes control plane (etcd, kube-apiserver,
//!   kube-controller-manager) on loopback, or any cluster named by
//!   `PLINTH_TEST_KUBECONFIG`.
//! - [`operator`]: the operator in-process under the Helm chart's ServiceAccount and RBAC.
#![allow(
    clippy::expect_used,
    reason = "test fixture: a failure must stop the test with a message"
)]

pub mod control_plane;
pub mod operator;

pub use control_plane::{ControlPlane, TestNamespace};

//! Plinth custom resource types.

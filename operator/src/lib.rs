//! Plinth rendering engine.

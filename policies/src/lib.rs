//! Plinth eBPF datapath.

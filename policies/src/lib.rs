//! Plinth's eBPF NetworkPolicy datapath: compiler, reference evaluator, loader and node agent.
//!
//! Pure parts (always built): [`world`], [`compile`], [`reference`],
//! [`scenario`], [`flows`] types, [`abi`]. With the `bpf` feature: the BPF
//! object, [`load`], [`agent`], the network-namespace fixture [`netns`],
//! crafted packets [`testrun`] and the conformance runner [`conformance`].

pub mod abi;
pub mod compile;
pub mod flows;
pub mod net;
pub mod reference;
pub mod scenario;
pub mod world;

#[cfg(feature = "bpf")]
pub mod agent;
#[cfg(feature = "bpf")]
pub mod conformance;
#[cfg(feature = "bpf")]
pub mod load;
#[cfg(feature = "bpf")]
pub mod netns;
#[cfg(feature = "bpf")]
pub mod testrun;

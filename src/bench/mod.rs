//! `v4train bench RECIPE.toml`: the throughput of a recipe's training step — tokens/s, model
//! FLOPs per token ([`flops`]), achieved FLOP/s and MFU against the device's peak
//! ([`devices`]), peak memory ([`peak_memory`]) and where the time goes ([`phases`]).

pub mod devices;
pub mod flops;
pub mod peak_memory;
pub mod phases;
pub mod run;

pub use flops::{flops_per_token, PhaseFlops};
pub use run::{bench, BenchOptions, BenchReport, PhaseSecs};

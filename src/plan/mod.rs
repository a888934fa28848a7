//! Checks before compute (issue #14): what a training run will need — estimated from the recipe
//! and the model config alone, nothing is allocated — and what the machine has left.
//!
//! - [`estimate_training`]: peak resident memory of training on the CPU backend, split into
//!   f32 weights, f32 gradients (the parameters a step differentiates), optimizer state (Muon
//!   momentum / AdamW moments by parameter routing), the activations autodiff keeps for one
//!   micro-batch — counted layer by layer from the V4 forward as `v4-model` computes it, mHC
//!   streams and Sinkhorn, window and compressed attention scores (quadratic in `seq_len`),
//!   compressors, the lightning indexer and its KL loss, MoE, the `[T, vocab]` logits of the
//!   head and of the MTP block — and the runtime (process, tokenizer, allocator slack); plus
//!   the host copies a checkpoint save makes. Calibrated against measured peak RSS
//!   ([`memory`] has the table).
//! - [`checkpoint_bytes`]: disk taken by one checkpoint directory ([`run_checkpoint_bytes`]:
//!   by all a run keeps at once).
//! - [`ns_batches`]: the Newton–Schulz calls of a Muon step (batched per expert stack).
//! - [`available_host_memory`], [`available_disk`] and, with the `cuda` feature,
//!   `available_device_memory`: what is left to use.

pub mod activations;
pub mod available;
pub mod disk;
pub mod memory;
pub mod muon_batches;
pub mod params;

pub use activations::{activations, Activations};
#[cfg(feature = "cuda")]
pub use available::available_device_memory;
pub use available::{available_disk, available_host_memory};
pub use disk::{
    checkpoint_bytes, checkpoint_size, checkpoints_on_disk, run_checkpoint_bytes, CheckpointSize,
};
pub use memory::{estimate_training, MemoryEstimate};
pub use muon_batches::{ns_batches, step_ns_batches, NsBatch};
pub use params::{gets_gradient, param_bytes, ParamBytes};

//! Generation (`v4train generate`, and the sampler the on-policy distillation trainer will
//! call): incremental decoding with the V4 KV cache under a sampling policy, returning each
//! completion's tokens, their log-probabilities under the policy, and why it ended.

pub mod generator;
pub mod sampler;

pub use generator::{generate, Completion, FinishReason, GenerateParams};
pub use sampler::{Sampled, Sampler, SamplingParams};

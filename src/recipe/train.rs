//! `[train]`: run length, batch geometry, seed, precision and numerical policies.

use serde::{Deserialize, Serialize};

/// Parameter / compute precision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// bfloat16 compute with f32 master weights and optimizer state.
    Bf16,
}

/// What to do when the loss or a gradient is not finite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    /// Drop the step (no optimizer update) and go on.
    #[default]
    Skip,
    /// Stop the run with an error.
    Stop,
}

/// Attention implementation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    /// V4 sparse attention (sliding window + CSA top-k + HCA), as in the release.
    #[default]
    Sparse,
    /// Dense reference attention (same math, all blocks; slow, for checks).
    Dense,
}

/// What autodiff keeps for backward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationCheckpointing {
    /// Every activation of the forward pass (fastest).
    #[default]
    None,
    /// Only each block's input streams; backward recomputes one block at a time (the same
    /// gradients, about one more forward pass of compute, far less memory at long context).
    Block,
}

/// Which parameters learn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freeze {
    /// Every parameter (default).
    #[default]
    None,
    /// Only the lightning indexers (`*.attn.indexer.*`): the indexer warm-up stage of V3.2/V4,
    /// normally with `attention = "dense"`.
    AllButIndexer,
}

/// `[train]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Total optimizer steps of the run; a resumed run continues up to this count (default 1000).
    pub steps: u64,
    /// Sequences per forward/backward pass (default 1).
    pub micro_batch: usize,
    /// Tokens per training sequence (default 4096).
    pub seq_len: usize,
    /// Micro-batches accumulated per optimizer step (default 1).
    pub grad_accum: usize,
    /// Seed of parameter initialisation and every other random choice of the trainer (default 0).
    pub seed: u64,
    /// `"f32"` (default) or `"bf16"`.
    pub dtype: Dtype,
    /// Non-finite loss/gradients: `"skip"` the step (default) or `"stop"`.
    pub nan_policy: NanPolicy,
    /// `"sparse"` (default) or `"dense"` attention.
    pub attention: Attention,
    /// Simulate the release's FP8/FP4 quantisation in the forward pass (default false).
    pub fake_quant: bool,
    /// Fake-quantize routed expert weights to FP4 (e2m1, 1×32 ue8m0 blocks) in the forward pass,
    /// straight-through in backward, so a fine-tune stays faithful to the FP4 release
    /// (default false).
    pub expert_fp4_qat: bool,
    /// `"none"` (default) or `"all-but-indexer"` (indexer warm-up).
    pub freeze: Freeze,
    /// With `nan_policy = "skip"`: stop with an error after this many consecutive skipped
    /// steps (default 10).
    pub max_consecutive_skips: u64,
    /// Skip the start-up check that the estimated peak memory of a step fits the device
    /// (default false).
    pub skip_memory_check: bool,
    /// `"none"` (default) or `"block"`: recompute each block in backward instead of keeping its
    /// activations (not needed, and not applied, with `freeze = "all-but-indexer"`: only the
    /// indexers record a graph then).
    pub activation_checkpointing: ActivationCheckpointing,
    /// Queries per chunk of the lightning indexer's score pass, whose live tensor is
    /// `[chunk, index_n_heads, seq_len / 4]` (default 0: automatic, at most 256 MiB of scores).
    pub indexer_chunk: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            micro_batch: 1,
            seq_len: 4096,
            grad_accum: 1,
            seed: 0,
            dtype: Dtype::F32,
            nan_policy: NanPolicy::Skip,
            attention: Attention::Sparse,
            fake_quant: false,
            expert_fp4_qat: false,
            freeze: Freeze::None,
            max_consecutive_skips: 10,
            skip_memory_check: false,
            activation_checkpointing: ActivationCheckpointing::None,
            indexer_chunk: 0,
        }
    }
}

/// Most tokens in one forward pass (`micro_batch × seq_len`): ids and positions are 32-bit
/// integers on the CPU backend.
pub const MAX_MICRO_TOKENS: u64 = i32::MAX as u64;
/// Most tokens in one optimizer step (`micro_batch × seq_len × grad_accum`; V4 used 2^26).
pub const MAX_STEP_TOKENS: u64 = 1 << 40;

impl TrainConfig {
    /// Sequences per optimizer step.
    pub fn global_batch(&self) -> usize {
        self.micro_batch * self.grad_accum
    }

    /// The batch geometry's first broken size limit, as (key, message).
    pub(crate) fn size_error(&self) -> Option<(&'static str, String)> {
        let (b, s, a) = (
            self.micro_batch as u64,
            self.seq_len as u64,
            self.grad_accum as u64,
        );
        if b.checked_mul(s).is_none_or(|n| n > MAX_MICRO_TOKENS) {
            return Some((
                "seq_len",
                format!(
                    "× micro_batch = {s} × {b} tokens per forward pass; at most {MAX_MICRO_TOKENS} are supported"
                ),
            ));
        }
        if (b * s).checked_mul(a).is_none_or(|n| n > MAX_STEP_TOKENS) {
            return Some((
                "grad_accum",
                format!(
                    "= {a} makes {a} × {b} × {s} tokens per optimizer step; at most {MAX_STEP_TOKENS} are supported"
                ),
            ));
        }
        None
    }

    /// Keys that must be ≥ 1, with their values.
    pub(crate) fn positive(&self) -> [(&'static str, u64); 5] {
        [
            ("steps", self.steps),
            ("max_consecutive_skips", self.max_consecutive_skips),
            ("micro_batch", self.micro_batch as u64),
            ("seq_len", self.seq_len as u64),
            ("grad_accum", self.grad_accum as u64),
        ]
    }
}

//! The per-call switches of a forward pass (spec §2.5 CSA selection, training spec §4–§5 side
//! losses and quantization-aware training): which attention mode CSA layers use, which side
//! losses to compute, and where FP8/FP4 fake quantization applies. The batch's sample layout
//! (packed samples) travels separately, in [`crate::sample_layout::SampleLayout`].

use crate::precision::Precision;

/// How CSA layers choose compressed blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMode {
    /// The reference: the lightning indexer's top-k.
    #[default]
    Sparse,
    /// Every visible compressed block (dense warm-up stage).
    Dense,
}

/// Per-call switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOptions {
    /// FP8/FP4 fake quantization of KV and indexer paths (on for reference parity).
    pub fake_quant: bool,
    /// CSA block selection.
    pub attention: AttentionMode,
    /// Compute each CSA block's lightning-indexer KL loss ([`LayerAux::indexer_loss`]).
    ///
    /// [`LayerAux::indexer_loss`]: crate::LayerAux::indexer_loss
    pub indexer_loss: bool,
    /// Compute each score-routed MoE layer's sequence-wise balance loss.
    pub balance_loss: bool,
    /// FP4 (e2m1, 1×32 blocks) weight fake quantization of routed experts (QAT for the FP4
    /// release), straight-through in backward.
    pub expert_fp4: bool,
    /// Queries per chunk of the lightning indexer's score pass (0: automatic, within
    /// [`crate::indexer::CHUNK_BUDGET_BYTES`] of live scores). The result does not depend on it.
    pub indexer_chunk: usize,
    /// Compute precision of the bf16-eligible matmuls ([`crate::precision`]).
    pub precision: Precision,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            fake_quant: true,
            attention: AttentionMode::Sparse,
            indexer_loss: false,
            balance_loss: false,
            expert_fp4: false,
            indexer_chunk: 0,
            precision: Precision::F32,
        }
    }
}

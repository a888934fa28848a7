//! The phases of a V4 training step (spec §2.3, §2.7, §2.8) that `v4train bench` splits its
//! FLOPs and its time into: attention, the lightning indexer, MoE, mHC, the optimizer and the
//! rest.

use serde::Serialize;
use std::ops::AddAssign;

/// One amount per phase of a step (FLOPs per token, or seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Attention projections, compressors and the attention core (window + compressed),
    /// without the indexer.
    pub attention: f64,
    /// Lightning indexers (their compressors, projections, scores).
    pub indexer: f64,
    /// Router, top-k routed experts, shared expert.
    pub moe: f64,
    /// mHC mixes, weighted sums and write-backs.
    pub mhc: f64,
    /// The optimizer update (Newton–Schulz of the Muon step).
    pub optimizer: f64,
    /// Everything else: embedding, output heads, MTP input projections, loss, bookkeeping.
    pub other: f64,
}

impl Phases {
    /// Sum of the phases.
    pub fn total(&self) -> f64 {
        self.attention + self.indexer + self.moe + self.mhc + self.optimizer + self.other
    }
}

impl AddAssign for Phases {
    fn add_assign(&mut self, o: Phases) {
        self.attention += o.attention;
        self.indexer += o.indexer;
        self.moe += o.moe;
        self.mhc += o.mhc;
        self.optimizer += o.optimizer;
        self.other += o.other;
    }
}

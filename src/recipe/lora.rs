//! `[lora]`: the adapters of a `[finetune] mode = "lora"` run (see `v4_model::lora`): rank, α,
//! dropout, rsLoRA scaling, targets (shorthands `attention`, `compressor`, `indexer`,
//! `shared_experts`, `experts`, `mtp`, or globs over release names), per-target ranks and the
//! optimizer that trains them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use v4_model::lora::LoraSpec;

/// The optimizer of the adapters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterOptimizer {
    /// AdamW (`[optim.adamw]`; the usual LoRA choice).
    #[default]
    Adamw,
    /// Muon (`[optim.muon]`), each adapter matrix orthogonalised as a matrix.
    Muon,
}

/// `[lora]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraRecipe {
    /// Rank `r` (default 16).
    pub rank: usize,
    /// `α` (default 32): the update is scaled by `α / r` (`α / √r` with `rslora`).
    pub alpha: f64,
    /// Dropout on each adapter's input during training (default 0).
    pub dropout: f64,
    /// rsLoRA scaling `α / √r`.
    pub rslora: bool,
    /// Which projections get adapters (default: attention, shared and routed experts).
    pub targets: Vec<String>,
    /// Per-target ranks, e.g. `{ experts = 8 }`; the longest matching target wins.
    pub rank_pattern: BTreeMap<String, usize>,
    /// `"adamw"` (default) or `"muon"`.
    pub optimizer: AdapterOptimizer,
}

impl Default for LoraRecipe {
    fn default() -> Self {
        let d = LoraSpec::default();
        Self {
            rank: d.rank,
            alpha: d.alpha,
            dropout: d.dropout,
            rslora: d.rslora,
            targets: d.targets,
            rank_pattern: BTreeMap::new(),
            optimizer: AdapterOptimizer::Adamw,
        }
    }
}

impl LoraRecipe {
    /// The model-side spec, with the run's seed for the `A` initialisation.
    pub fn spec(&self, seed: u64) -> LoraSpec {
        LoraSpec {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            rslora: self.rslora,
            targets: self.targets.clone(),
            rank_pattern: self
                .rank_pattern
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            seed,
        }
    }
}

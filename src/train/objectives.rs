//! The V4 training objectives beyond next-token CE (issue #6; spec `v4-training.md` §4.2–§5):
//! the lightning indexer's KL loss (V3.2 DSA, dense warm-up with everything but the indexer
//! frozen, then sparse), the sequence-wise balance loss α·Σᵢ fᵢ·Pᵢ, the auxiliary-loss-free
//! bias update driven by the expert load of each step, and the MTP weight schedule
//! (0.3, then 0.1 from the start of LR decay). The model computes the per-layer terms
//! ([`LayerAux`]); this module weighs them, accumulates loads over micro-batches, and freezes.

use crate::recipe::{Attention, Dtype, FinetuneMode, Freeze, Recipe};
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::collections::HashSet;
use v4_model::lora::is_adapter;
use v4_model::{load_ratios, AttentionMode, ForwardOptions, LayerAux, Precision, V4Model};

/// Forward switches of a training step of `model` under `recipe`: the indexer KL is computed
/// only when something it reaches trains (in a LoRA run, only adapters of the indexer).
pub fn step_options<B: AutodiffBackend>(recipe: &Recipe, model: &V4Model<B>) -> ForwardOptions {
    let mut opts = forward_options(recipe);
    if recipe.finetune.mode == FinetuneMode::Lora {
        let mut indexer_adapters = false;
        model.visit_named(&mut |name, _| {
            indexer_adapters |= is_adapter(&name) && name.contains(".attn.indexer.");
        });
        opts.indexer_loss &= indexer_adapters;
    }
    opts
}

/// Forward switches of a training step under `recipe`.
pub fn forward_options(recipe: &Recipe) -> ForwardOptions {
    ForwardOptions {
        fake_quant: recipe.train.fake_quant,
        attention: match recipe.train.attention {
            Attention::Sparse => AttentionMode::Sparse,
            Attention::Dense => AttentionMode::Dense,
        },
        indexer_loss: recipe.loss.indexer_weight > 0.0,
        balance_loss: recipe.loss.balance_alpha > 0.0,
        expert_fp4: recipe.train.expert_fp4_qat,
        indexer_chunk: recipe.train.indexer_chunk,
        precision: match recipe.train.dtype {
            Dtype::F32 => Precision::F32,
            Dtype::Bf16 => Precision::Bf16,
        },
    }
}

/// The auxiliary part of one micro-batch's loss.
pub struct AuxLoss<B: AutodiffBackend> {
    /// `indexer_weight · Σ KL + balance_alpha · Σ balance`, when any term is present.
    pub loss: Option<Tensor<B, 1>>,
    /// Σ over CSA layers of the indexer KL (unweighted).
    pub indexer_kl: Option<f64>,
    /// Σ over score-routed layers of Σᵢ fᵢ·Pᵢ (without α).
    pub balance: Option<f64>,
}

/// Weighs the per-layer terms of one forward pass.
pub fn aux_loss<B: AutodiffBackend>(
    aux: &[LayerAux<B>],
    indexer_weight: f64,
    balance_alpha: f64,
) -> AuxLoss<B> {
    let sum = |terms: Vec<Tensor<B, 1>>| -> Option<Tensor<B, 1>> {
        terms.into_iter().reduce(|a, b| a + b)
    };
    let kl = sum(aux.iter().filter_map(|a| a.indexer_loss.clone()).collect());
    let bal = sum(aux.iter().filter_map(|a| a.balance_loss.clone()).collect());
    let (indexer_kl, balance) = aux_values(aux);
    let weighted = [
        kl.map(|t| t.mul_scalar(indexer_weight)),
        bal.map(|t| t.mul_scalar(balance_alpha)),
    ];
    AuxLoss {
        loss: weighted.into_iter().flatten().reduce(|a, b| a + b),
        indexer_kl,
        balance,
    }
}

/// The values of [`aux_loss`]'s sums (Σ indexer KL, Σ balance), read without recording
/// anything on the autodiff graph.
pub fn aux_values<B: AutodiffBackend>(aux: &[LayerAux<B>]) -> (Option<f64>, Option<f64>) {
    let value = |terms: Vec<Tensor<B::InnerBackend, 1>>| {
        terms
            .into_iter()
            .reduce(|a, b| a + b)
            .map(|t| v4_model::util::to_vec(t)[0] as f64)
    };
    let inner = |t: &Option<Tensor<B, 1>>| t.clone().map(|t| t.inner());
    (
        value(aux.iter().filter_map(|a| inner(&a.indexer_loss)).collect()),
        value(aux.iter().filter_map(|a| inner(&a.balance_loss)).collect()),
    )
}

/// Expert load of one optimizer step, summed over its micro-batches, per block (main blocks,
/// then MTP blocks, as in [`v4_model::ModelOutput::aux`]).
#[derive(Debug, Clone, Default)]
pub struct StepLoads {
    /// Per block, (token, slot) pairs per routed expert.
    pub loads: Vec<Vec<u64>>,
    /// Per block, whether it is score-routed (has a selection bias).
    pub biased: Vec<bool>,
}

impl StepLoads {
    /// Adds one forward pass's loads.
    pub fn add<B: AutodiffBackend>(&mut self, aux: &[LayerAux<B>]) {
        v4_model::balance::add_loads(&mut self.loads, aux);
        self.biased.resize(self.loads.len(), false);
        for (flag, a) in self.biased.iter_mut().zip(aux) {
            *flag = a.biased;
        }
    }

    /// Per block, (max/mean, min/mean) of its load.
    pub fn ratios(&self) -> Vec<(f64, f64)> {
        self.loads.iter().map(|l| load_ratios(l)).collect()
    }

    /// Worst max/mean over score-routed blocks (1.0 = balanced; `None` without such blocks).
    pub fn worst_biased_ratio(&self) -> Option<f64> {
        self.ratios()
            .iter()
            .zip(&self.biased)
            .filter(|(_, b)| **b)
            .map(|(r, _)| r.0)
            .reduce(f64::max)
    }
}

/// Whether the parameter `name` learns under `freeze` (`"all-but-indexer"` keeps only
/// `*.attn.indexer.*`).
pub fn trainable(name: &str, freeze: Freeze) -> bool {
    match freeze {
        Freeze::None => true,
        Freeze::AllButIndexer => name.contains(".attn.indexer."),
    }
}

/// Marks the parameters `learns` rejects (by name) as not requiring gradients, so backward never computes them (in
/// the indexer warm-up only the indexers' KL is differentiated) and the optimizer, which updates
/// only what has a gradient, leaves them alone. Returns the model and how many parameter
/// tensors stay trainable.
pub fn freeze_params<B: AutodiffBackend>(
    model: V4Model<B>,
    learns: &dyn Fn(&str) -> bool,
) -> (V4Model<B>, usize) {
    let mut frozen = HashSet::new();
    let mut kept = 0;
    model.visit_named(&mut |name, p| {
        if let Some((id, _)) = p.float_id() {
            if learns(&name) {
                kept += 1;
            } else {
                frozen.insert(id);
            }
        }
    });
    if frozen.is_empty() {
        return (model, kept);
    }
    (model.map(&mut Freezer { frozen }), kept)
}

struct Freezer {
    frozen: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Freezer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.frozen.contains(&param.id) {
            param.set_require_grad(false)
        } else {
            param
        }
    }
}

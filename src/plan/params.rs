//! Parameter memory: every tensor of the release inventory held as an f32 master copy; an f32
//! gradient for each parameter a step differentiates; its optimizer state by the routing of
//! `v4_optim::route` (Muon: one momentum, AdamW: two moments, both f32).

use super::activations::mtp_blocks_run;
use crate::recipe::Recipe;
use crate::train::objectives::trainable;
use v4_model::{inventory, ModelConfig, ReleaseDtype, TensorSpec};
use v4_optim::{route, OptimizerKind};

/// Bytes of the model's parameters, their gradients and their optimizer state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamBytes {
    /// Every parameter (f32; the integer `tid2eid` tables as i32, as Burn's backends hold them).
    pub weights: u64,
    /// f32 gradients of the differentiated parameters.
    pub gradients: u64,
    /// Muon momenta and AdamW moments (f32).
    pub optimizer: u64,
    /// Parameter tensors with a gradient (and optimizer state).
    pub trained_tensors: usize,
}

/// Elements of a tensor.
pub(crate) fn numel(spec: &TensorSpec) -> u64 {
    spec.shape.iter().map(|&d| d as u64).product()
}

/// Optimizer-state elements per parameter element (0 for excluded tensors).
pub(crate) fn state_factor(spec: &TensorSpec) -> u64 {
    match route(&spec.name, spec.shape.len()).map(|g| g.optimizer()) {
        Ok(OptimizerKind::Muon) => 1,
        Ok(OptimizerKind::AdamW) => 2,
        Ok(OptimizerKind::Excluded) | Err(_) => 0,
    }
}

/// Block index of a parameter name (`layers.N.` → N, `mtp.K.` → num_hidden_layers + K).
fn block_of(cfg: &ModelConfig, name: &str) -> Option<(usize, bool)> {
    let (rest, mtp) = if let Some(r) = name.strip_prefix("layers.") {
        (r, false)
    } else if let Some(r) = name.strip_prefix("mtp.") {
        (r, true)
    } else {
        return None;
    };
    let i: usize = rest.split('.').next()?.parse().ok()?;
    Some((if mtp { cfg.num_hidden_layers + i } else { i }, mtp))
}

/// Whether a training step gives parameter `spec` a gradient (hence optimizer state): not an
/// integer table or the router's selection bias; trainable under `[train] freeze`; and reached
/// by the loss:
/// - lightning-indexer tensors only through their KL loss (`indexer_weight > 0`; the selection
///   itself is discrete), and only when their block's sequence holds a complete 4-token block;
/// - compressor tensors only when their block's sequence holds a complete compressed block;
/// - MTP tensors only for the first MTP block (the only one with a loss), when MTP runs.
///
/// Every routed expert is assumed to receive tokens.
pub fn gets_gradient(cfg: &ModelConfig, recipe: &Recipe, spec: &TensorSpec) -> bool {
    if spec.dtype == ReleaseDtype::I64 || state_factor(spec) == 0 {
        return false;
    }
    let name = spec.name.as_str();
    if !trainable(name, recipe.train.freeze) {
        return false;
    }
    let s = recipe.train.seq_len;
    let Some((layer, mtp)) = block_of(cfg, name) else {
        return true; // embedding, head, final norm, hc_head
    };
    let positions = if mtp {
        let k = layer - cfg.num_hidden_layers;
        if k > 0 || mtp_blocks_run(cfg, recipe) == 0 {
            return false;
        }
        s - 1
    } else {
        s
    };
    let ratio = cfg.ratio(layer);
    if name.contains(".attn.indexer.") {
        return recipe.loss.indexer_weight > 0.0 && positions >= 4;
    }
    if name.contains(".attn.compressor.") {
        return positions >= ratio;
    }
    true
}

/// Parameter, gradient and optimizer bytes of `cfg` trained under `recipe`.
pub fn param_bytes(cfg: &ModelConfig, recipe: &Recipe) -> ParamBytes {
    let mut out = ParamBytes::default();
    for spec in inventory(cfg) {
        let n = numel(&spec);
        out.weights += n * 4;
        if gets_gradient(cfg, recipe, &spec) {
            out.gradients += n * 4;
            out.optimizer += n * 4 * state_factor(&spec);
            out.trained_tensors += 1;
        }
    }
    out
}

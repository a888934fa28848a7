//! Parameter memory: every tensor of the release inventory held as an f32 master copy; an f32
//! gradient for each parameter a step differentiates; its optimizer state by the routing of
//! `v4_optim::route` (Muon: one momentum, AdamW: two moments, both f32). A LoRA run
//! (`[finetune] mode = "lora"`) holds its frozen base as stored (FP8: a byte per weight, FP4:
//! half a byte, plus one E8M0 byte per scale block) or as f32, and gives gradients and optimizer
//! state to its adapters only ([`lora_param_bytes`]).

use super::activations::mtp_blocks_run;
use crate::recipe::{AdapterOptimizer, BaseStorage, FinetuneMode, Recipe};
use crate::train::objectives::trainable;
use v4_checkpoints::QuantFormat;
use v4_model::lora::LoraSpec;
use v4_model::named::stack_of;
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

/// Bytes a LoRA run's frozen base holds for `spec`: its stored size when kept stored and
/// quantized in the release, f32 otherwise.
pub fn base_bytes(spec: &TensorSpec, storage: BaseStorage) -> u64 {
    let n = numel(spec);
    let [r, c] = match spec.shape[..] {
        [r, c] => [r, c],
        _ => return n * 4,
    };
    let format = match (storage, spec.dtype) {
        (BaseStorage::Stored, ReleaseDtype::Fp8Block) => QuantFormat::Fp8Block,
        (BaseStorage::Stored, ReleaseDtype::Fp4Expert) => QuantFormat::Fp4Group,
        _ => return n * 4,
    };
    // Codes, plus one E8M0 byte per scale.
    let [sr, sc] = format.scale_shape(r, c);
    (format.data_len(r, c) + sr * sc) as u64
}

/// Adapter elements of the release tensor `spec` under `lora` (0 when not targeted): `r·(in +
/// out)` per matrix; a routed expert under its stack's name; `wo_a` per group.
pub fn adapter_elements(cfg: &ModelConfig, lora: &LoraSpec, spec: &TensorSpec) -> u64 {
    let [out, inp] = match spec.shape[..] {
        [o, i] => [o as u64, i as u64],
        _ => return 0,
    };
    let key = stack_of(&spec.name).map_or(spec.name.clone(), |(stack, _)| stack);
    let Some(r) = lora.rank_for(&key) else {
        return 0;
    };
    let r = r as u64;
    if spec.name.ends_with(".attn.wo_a.weight") {
        let g = cfg.o_groups as u64;
        return r * (g * inp + out);
    }
    r * (inp + out)
}

/// Parameter, gradient and optimizer bytes of a LoRA run: the frozen base (see [`base_bytes`])
/// plus f32 adapters, whose gradients and optimizer state are the only ones.
pub fn lora_param_bytes(cfg: &ModelConfig, recipe: &Recipe) -> ParamBytes {
    let Some(lr) = &recipe.lora else {
        return ParamBytes::default();
    };
    let spec = lr.spec(recipe.train.seed);
    let moments = match lr.optimizer {
        AdapterOptimizer::Adamw => 2,
        AdapterOptimizer::Muon => 1,
    };
    let mut out = ParamBytes::default();
    for t in inventory(cfg) {
        out.weights += base_bytes(&t, recipe.finetune.base);
        let a = adapter_elements(cfg, &spec, &t) * 4;
        out.weights += a;
        out.gradients += a;
        out.optimizer += a * moments;
        out.trained_tensors += usize::from(a > 0) * 2;
    }
    out
}

/// Parameter, gradient and optimizer bytes of `cfg` trained under `recipe`.
pub fn param_bytes(cfg: &ModelConfig, recipe: &Recipe) -> ParamBytes {
    if recipe.finetune.mode == FinetuneMode::Lora {
        return lora_param_bytes(cfg, recipe);
    }
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

//! The DeepSeek-V4 hyper-parameters (spec §1): a typed view of the release's Hugging Face
//! `config.json`, validated once so the modules can rely on every invariant.

use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// YaRN settings (`rope_scaling` in `config.json`); used only by compressed layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// Always `"yarn"` for V4.
    #[serde(rename = "type", default = "yarn")]
    pub kind: String,
    /// Interpolation factor (16 in the release).
    pub factor: f64,
    /// Context length the base model was trained on (65536 in the release).
    pub original_max_position_embeddings: usize,
    /// Fast boundary of the YaRN ramp (32).
    pub beta_fast: f64,
    /// Slow boundary of the YaRN ramp (1).
    pub beta_slow: f64,
}

fn yarn() -> String {
    "yarn".into()
}

/// Router scoring function; V4 uses `sqrtsoftplus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoringFunc {
    /// `sqrt(softplus(logits))` (DeepSeek-V4).
    Sqrtsoftplus,
    /// `sigmoid(logits)` (DeepSeek-V3).
    Sigmoid,
    /// `softmax(logits)`.
    Softmax,
}

/// The model's hyper-parameters under the release's `config.json` key names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model width d.
    pub hidden_size: usize,
    /// Number of main blocks (the MTP blocks come on top).
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Per-head dimension of q and of the single shared KV head.
    pub head_dim: usize,
    /// Rotary dimensions (the last ones of each head vector).
    pub qk_rope_head_dim: usize,
    /// Rank of the low-rank query projection.
    pub q_lora_rank: usize,
    /// Groups of the grouped low-rank output projection.
    pub o_groups: usize,
    /// Rank of each group of the output projection.
    pub o_lora_rank: usize,
    /// Sliding window length (tokens, including the query itself).
    pub sliding_window: usize,
    /// Compression ratio per block: 0 (window only), 4 (CSA) or 128 (HCA); one entry per main
    /// layer plus one per MTP layer.
    pub compress_ratios: Vec<usize>,
    /// Rope base of compressed layers (YaRN applies there).
    pub compress_rope_theta: f64,
    /// Rope base of window-only layers (no YaRN).
    pub rope_theta: f64,
    /// YaRN parameters.
    pub rope_scaling: RopeScaling,
    /// Lightning-indexer heads.
    pub index_n_heads: usize,
    /// Lightning-indexer head dimension.
    pub index_head_dim: usize,
    /// Compressed blocks each query selects in CSA layers.
    pub index_topk: usize,
    /// Number of hyper-connection streams.
    pub hc_mult: usize,
    /// Sinkhorn iterations of the mHC residual mix.
    pub hc_sinkhorn_iters: usize,
    /// Epsilon of the mHC mixes.
    pub hc_eps: f64,
    /// Routed experts per MoE layer.
    pub n_routed_experts: usize,
    /// Shared experts per MoE layer (V4: 1).
    pub n_shared_experts: usize,
    /// Experts each token is routed to.
    pub num_experts_per_tok: usize,
    /// The first layers that route by a fixed token-id hash (`tid2eid`).
    pub num_hash_layers: usize,
    /// Router scoring function.
    pub scoring_func: ScoringFunc,
    /// Multiplier of the renormalised routing weights.
    pub routed_scaling_factor: f64,
    /// SwiGLU clamp (0 disables it).
    pub swiglu_limit: f64,
    /// Hidden width of each expert.
    pub moe_intermediate_size: usize,
    /// Multi-token-prediction blocks.
    #[serde(default = "one")]
    pub num_nextn_predict_layers: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
}

fn one() -> usize {
    1
}

/// Keys that accompany the architecture in a release `config.json` and are written back on export.
pub const RELEASE_EXTRA_KEYS: &[&str] = &[
    "architectures",
    "model_type",
    "num_key_value_heads",
    "bos_token_id",
    "eos_token_id",
    "quantization_config",
    "expert_dtype",
];

impl ModelConfig {
    /// Reads and validates a Hugging Face `config.json` (unknown keys are ignored: the release
    /// carries many that do not shape the model).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::ConfigFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses and validates `config.json` text; `source_name` names it in errors.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self, ModelError> {
        let cfg: ModelConfig = serde_json::from_str(text).map_err(|e| ModelError::ConfigFile {
            path: source_name.to_string(),
            message: format!("not a V4 config.json: {e}"),
        })?;
        cfg.validate(source_name)?;
        Ok(cfg)
    }

    /// A built-in preset: `v4-flash` or `v4-pro` (values of the release, spec §1.1).
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        let cfg = match name {
            "v4-flash" => Self::v4_flash(),
            "v4-pro" => Self::v4_pro(),
            other => {
                return Err(ModelError::Config {
                    source_name: format!("preset `{other}`"),
                    message: "unknown preset; known: v4-flash, v4-pro".into(),
                })
            }
        };
        cfg.validate(name)?;
        Ok(cfg)
    }

    /// DeepSeek-V4-Flash (284B total, 13B active).
    pub fn v4_flash() -> Self {
        let mut ratios = vec![0, 0];
        for _ in 0..20 {
            ratios.extend([4, 128]);
        }
        ratios.extend([4, 0]);
        Self {
            hidden_size: 4096,
            num_hidden_layers: 43,
            num_attention_heads: 64,
            head_dim: 512,
            qk_rope_head_dim: 64,
            q_lora_rank: 1024,
            o_groups: 8,
            o_lora_rank: 1024,
            sliding_window: 128,
            compress_ratios: ratios,
            compress_rope_theta: 160000.0,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling {
                kind: yarn(),
                factor: 16.0,
                original_max_position_embeddings: 65536,
                beta_fast: 32.0,
                beta_slow: 1.0,
            },
            index_n_heads: 64,
            index_head_dim: 128,
            index_topk: 512,
            hc_mult: 4,
            hc_sinkhorn_iters: 20,
            hc_eps: 1e-6,
            n_routed_experts: 256,
            n_shared_experts: 1,
            num_experts_per_tok: 6,
            num_hash_layers: 3,
            scoring_func: ScoringFunc::Sqrtsoftplus,
            routed_scaling_factor: 1.5,
            swiglu_limit: 10.0,
            moe_intermediate_size: 2048,
            num_nextn_predict_layers: 1,
            vocab_size: 129280,
            rms_norm_eps: 1e-6,
        }
    }

    /// A toy V4 for tests: V4-Flash's structure at hidden size 64 — 2 main layers (layer 0
    /// hash-routed; layer 1 CSA, ratio 4) plus 1 MTP block, window 16, 8 routed experts (top-2)
    /// of width 32 and a shared expert. Valid as is; change fields, then [`ModelConfig::validate`].
    pub fn toy() -> Self {
        Self {
            vocab_size: 256,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_nextn_predict_layers: 1,
            compress_ratios: vec![0, 4, 0],
            num_hash_layers: 1,
            num_attention_heads: 4,
            head_dim: 96,
            qk_rope_head_dim: 32,
            q_lora_rank: 48,
            o_groups: 2,
            o_lora_rank: 32,
            sliding_window: 16,
            index_n_heads: 16,
            index_head_dim: 64,
            index_topk: 8,
            n_routed_experts: 8,
            num_experts_per_tok: 2,
            moe_intermediate_size: 32,
            ..Self::v4_flash()
        }
    }

    /// DeepSeek-V4-Pro (1.6T total, 49B active).
    pub fn v4_pro() -> Self {
        let mut ratios = vec![128, 128];
        for _ in 0..29 {
            ratios.extend([4, 128]);
        }
        ratios.extend([4, 0]);
        Self {
            hidden_size: 7168,
            num_hidden_layers: 61,
            num_attention_heads: 128,
            q_lora_rank: 1536,
            o_groups: 16,
            compress_ratios: ratios,
            index_topk: 1024,
            n_routed_experts: 384,
            routed_scaling_factor: 2.5,
            moe_intermediate_size: 3072,
            ..Self::v4_flash()
        }
    }

    /// Total blocks including the MTP blocks.
    pub fn total_blocks(&self) -> usize {
        self.num_hidden_layers + self.num_nextn_predict_layers
    }

    /// Compression ratio of block `layer_id` (main layers first, then MTP blocks).
    pub fn ratio(&self, layer_id: usize) -> usize {
        self.compress_ratios[layer_id]
    }

    /// Width of the mHC mixes: pre (hc) + post (hc) + comb (hc²).
    pub fn hc_mix_dim(&self) -> usize {
        (2 + self.hc_mult) * self.hc_mult
    }

    /// Checks every invariant the modules rely on; one error per broken rule, naming the key.
    pub fn validate(&self, source_name: &str) -> Result<(), ModelError> {
        let err = |message: String| {
            Err(ModelError::Config {
                source_name: source_name.to_string(),
                message,
            })
        };
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("head_dim", self.head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("q_lora_rank", self.q_lora_rank),
            ("o_groups", self.o_groups),
            ("o_lora_rank", self.o_lora_rank),
            ("sliding_window", self.sliding_window),
            ("index_n_heads", self.index_n_heads),
            ("index_head_dim", self.index_head_dim),
            ("index_topk", self.index_topk),
            ("hc_mult", self.hc_mult),
            ("hc_sinkhorn_iters", self.hc_sinkhorn_iters),
            ("n_routed_experts", self.n_routed_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("moe_intermediate_size", self.moe_intermediate_size),
            ("vocab_size", self.vocab_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return err(format!("`{key}` must be ≥ 1, got 0"));
            }
        }
        let total = self.total_blocks();
        if self.compress_ratios.len() != total {
            return err(format!(
                "`compress_ratios` has {} entries; it needs num_hidden_layers + num_nextn_predict_layers = {} + {} = {total}",
                self.compress_ratios.len(),
                self.num_hidden_layers,
                self.num_nextn_predict_layers
            ));
        }
        if let Some((i, r)) = self
            .compress_ratios
            .iter()
            .enumerate()
            .find(|(_, r)| ![0, 4, 128].contains(*r))
        {
            return err(format!(
                "`compress_ratios[{i}]` = {r}; V4 supports only 0 (window), 4 (CSA) and 128 (HCA)"
            ));
        }
        crate::config_limits::check_limits(self).or_else(err)?;
        if !self.qk_rope_head_dim.is_multiple_of(2) || self.qk_rope_head_dim > self.head_dim {
            return err(format!(
                "`qk_rope_head_dim` = {} must be even and ≤ head_dim = {}",
                self.qk_rope_head_dim, self.head_dim
            ));
        }
        if !self.index_head_dim.is_power_of_two() || self.index_head_dim < self.qk_rope_head_dim {
            return err(format!(
                "`index_head_dim` = {} must be a power of two ≥ qk_rope_head_dim = {} (Hadamard rotation)",
                self.index_head_dim, self.qk_rope_head_dim
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.o_groups) {
            return err(format!(
                "`num_attention_heads` = {} must be divisible by `o_groups` = {}",
                self.num_attention_heads, self.o_groups
            ));
        }
        if self.num_experts_per_tok > self.n_routed_experts {
            return err(format!(
                "`num_experts_per_tok` = {} exceeds `n_routed_experts` = {}",
                self.num_experts_per_tok, self.n_routed_experts
            ));
        }
        if self.n_shared_experts > 1 {
            return err(format!(
                "`n_shared_experts` = {}; V4 has one shared expert (0 or 1)",
                self.n_shared_experts
            ));
        }
        if self.num_hash_layers > self.num_hidden_layers {
            return err(format!(
                "`num_hash_layers` = {} exceeds `num_hidden_layers` = {}",
                self.num_hash_layers, self.num_hidden_layers
            ));
        }
        if self.rope_scaling.kind != "yarn" {
            return err(format!(
                "`rope_scaling.type` = {:?}; V4 uses \"yarn\"",
                self.rope_scaling.kind
            ));
        }
        let y = &self.rope_scaling;
        if !(y.factor.is_finite() && y.factor >= 1.0) {
            return err(format!("`rope_scaling.factor` = {} must be ≥ 1", y.factor));
        }
        for (key, v) in [("beta_fast", y.beta_fast), ("beta_slow", y.beta_slow)] {
            if !(v.is_finite() && v > 0.0) {
                return err(format!(
                    "`rope_scaling.{key}` must be a positive number, got {v}"
                ));
            }
        }
        if y.original_max_position_embeddings == 0 {
            return err(
                "`rope_scaling.original_max_position_embeddings` must be ≥ 1, got 0".into(),
            );
        }
        for (key, v) in [
            ("rope_theta", self.rope_theta),
            ("compress_rope_theta", self.compress_rope_theta),
            ("rms_norm_eps", self.rms_norm_eps),
            ("hc_eps", self.hc_eps),
            ("routed_scaling_factor", self.routed_scaling_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return err(format!("`{key}` must be a positive number, got {v}"));
            }
        }
        if !(self.swiglu_limit.is_finite() && self.swiglu_limit >= 0.0) {
            return err(format!(
                "`swiglu_limit` must be ≥ 0 (0 disables the clamp), got {}",
                self.swiglu_limit
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_is_valid() {
        let t = ModelConfig::toy();
        t.validate("toy").unwrap();
        assert_eq!(t.compress_ratios.len(), t.num_hidden_layers + 1);
        assert_eq!(t.num_hash_layers, 1);
    }

    #[test]
    fn presets_are_valid_and_match_the_release() {
        let f = ModelConfig::preset("v4-flash").unwrap();
        assert_eq!(f.compress_ratios.len(), 44);
        assert_eq!(f.compress_ratios.iter().filter(|r| **r == 4).count(), 21);
        assert_eq!(f.compress_ratios.iter().filter(|r| **r == 128).count(), 20);
        let p = ModelConfig::preset("v4-pro").unwrap();
        assert_eq!(p.compress_ratios.len(), 62);
        assert_eq!(p.compress_ratios.iter().filter(|r| **r == 128).count(), 31);
        assert_eq!(p.compress_ratios.iter().filter(|r| **r == 4).count(), 30);
        assert_eq!(p.hidden_size, 7168);
        assert!(ModelConfig::preset("v5").is_err());
    }

    fn broken(f: impl FnOnce(&mut ModelConfig)) -> String {
        let mut c = ModelConfig::v4_flash();
        f(&mut c);
        c.validate("test.json").unwrap_err().to_string()
    }

    #[test]
    fn each_invariant_has_its_own_error() {
        assert!(broken(|c| {
            c.compress_ratios.pop();
        })
        .contains("`compress_ratios` has 43"));
        assert!(broken(|c| c.compress_ratios[5] = 8).contains("compress_ratios[5]"));
        assert!(broken(|c| c.index_head_dim = 96).contains("index_head_dim"));
        assert!(broken(|c| c.index_head_dim = 32).contains("power of two ≥ qk_rope_head_dim"));
        assert!(broken(|c| c.o_groups = 7).contains("divisible by `o_groups`"));
        assert!(broken(|c| c.hidden_size = 0).contains("hidden_size"));
        assert!(broken(|c| c.num_experts_per_tok = 300).contains("num_experts_per_tok"));
        assert!(broken(|c| c.rope_theta = f64::NAN).contains("rope_theta"));
    }
}

//! Parameter routing (spec §2.3 "Which parameters get which optimizer"): AdamW for the embedding,
//! the LM head, every RMSNorm gain, the mHC static biases and scales (`hc_*_base`, `hc_*_scale`),
//! attention sinks and compressor position biases (`ape`); Muon for every other matrix
//! (projections, `hc_*_fn`, router `gate.weight`, experts, MTP `e_proj`/`h_proj`). The router
//! selection bias `gate.bias` and the hash table `tid2eid` are not gradient parameters. LoRA
//! adapters (`*.lora_A.weight`, `*.lora_B.weight`) form their own group, AdamW unless a run picks
//! Muon for them ([`crate::OptimSettings::adapter_optimizer`]).

use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// The optimizer a parameter is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Muon (matrices and matrix stacks).
    Muon,
    /// AdamW.
    AdamW,
    /// Not optimized by gradients.
    Excluded,
}

/// Routing group of a parameter; weight decay can be set per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamGroup {
    /// Token embedding (`embed.weight`).
    Embed,
    /// Output head (`head.weight`).
    Head,
    /// RMSNorm gains (`*norm.weight`).
    Norm,
    /// mHC static biases and gating scales (`hc_*_base`, `hc_*_scale`).
    HcStatic,
    /// Attention sink logits (`attn_sink`).
    AttnSink,
    /// Compressor absolute position biases (`ape`).
    Ape,
    /// Any other vector or scalar (AdamW fallback; no V4 tensor lands here).
    Vector,
    /// Matrices and stacked matrices (Muon).
    Matrix,
    /// LoRA adapter matrices (AdamW by default).
    Adapter,
    /// `gate.bias` and `tid2eid`.
    Excluded,
}

impl ParamGroup {
    /// All groups, in display order.
    pub const ALL: [ParamGroup; 10] = [
        ParamGroup::Embed,
        ParamGroup::Head,
        ParamGroup::Norm,
        ParamGroup::HcStatic,
        ParamGroup::AttnSink,
        ParamGroup::Ape,
        ParamGroup::Vector,
        ParamGroup::Matrix,
        ParamGroup::Adapter,
        ParamGroup::Excluded,
    ];

    /// The optimizer of this group by default (adapters: see
    /// [`crate::OptimSettings::optimizer_of`]).
    pub fn optimizer(self) -> OptimizerKind {
        match self {
            ParamGroup::Matrix => OptimizerKind::Muon,
            ParamGroup::Excluded => OptimizerKind::Excluded,
            _ => OptimizerKind::AdamW,
        }
    }

    /// Stable lowercase name (matches the serde name).
    pub fn name(self) -> &'static str {
        match self {
            ParamGroup::Embed => "embed",
            ParamGroup::Head => "head",
            ParamGroup::Norm => "norm",
            ParamGroup::HcStatic => "hc_static",
            ParamGroup::AttnSink => "attn_sink",
            ParamGroup::Ape => "ape",
            ParamGroup::Vector => "vector",
            ParamGroup::Matrix => "matrix",
            ParamGroup::Adapter => "adapter",
            ParamGroup::Excluded => "excluded",
        }
    }
}

/// Routes a parameter by its path (release or stacked-expert form) and rank.
pub fn route(name: &str, rank: usize) -> Result<ParamGroup> {
    if rank > 3 {
        return Err(OptimError::UnsupportedRank {
            name: name.to_string(),
            rank,
        });
    }
    let stem = name.strip_suffix(".weight").unwrap_or(name);
    let leaf = stem.rsplit('.').next().unwrap_or(stem);
    let parent = stem.rsplit('.').nth(1).unwrap_or("");
    let group = match leaf {
        "embed" => ParamGroup::Embed,
        "head" => ParamGroup::Head,
        "attn_sink" => ParamGroup::AttnSink,
        "ape" => ParamGroup::Ape,
        "tid2eid" => ParamGroup::Excluded,
        "lora_A" | "lora_B" => ParamGroup::Adapter,
        "bias" if parent == "gate" => ParamGroup::Excluded,
        l if l.ends_with("norm") => ParamGroup::Norm,
        l if l.starts_with("hc_") && (l.ends_with("_base") || l.ends_with("_scale")) => {
            ParamGroup::HcStatic
        }
        _ if rank >= 2 => ParamGroup::Matrix,
        _ => ParamGroup::Vector,
    };
    Ok(group)
}

/// Per-group weight decay (`[optim.weight_decay]`); unset groups use their optimizer's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupDecay {
    /// Embedding.
    pub embed: Option<f64>,
    /// Output head.
    pub head: Option<f64>,
    /// RMSNorm gains.
    pub norm: Option<f64>,
    /// mHC static biases and scales.
    pub hc_static: Option<f64>,
    /// Attention sinks.
    pub attn_sink: Option<f64>,
    /// Compressor position biases.
    pub ape: Option<f64>,
    /// Other vectors.
    pub vector: Option<f64>,
    /// Muon matrices.
    pub matrix: Option<f64>,
    /// LoRA adapters.
    pub adapter: Option<f64>,
}

impl GroupDecay {
    /// Checks every override is finite and non-negative.
    pub fn validate(&self) -> crate::error::Result<()> {
        let all = [
            ("embed", self.embed),
            ("head", self.head),
            ("norm", self.norm),
            ("hc_static", self.hc_static),
            ("attn_sink", self.attn_sink),
            ("ape", self.ape),
            ("vector", self.vector),
            ("matrix", self.matrix),
            ("adapter", self.adapter),
        ];
        for (group, v) in all {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(crate::error::OptimError::Config(format!(
                    "`weight_decay.{group}` = {v} must be finite and >= 0"
                )));
            }
        }
        Ok(())
    }

    /// The override for `group`, if any.
    pub fn get(&self, group: ParamGroup) -> Option<f64> {
        match group {
            ParamGroup::Embed => self.embed,
            ParamGroup::Head => self.head,
            ParamGroup::Norm => self.norm,
            ParamGroup::HcStatic => self.hc_static,
            ParamGroup::AttnSink => self.attn_sink,
            ParamGroup::Ape => self.ape,
            ParamGroup::Vector => self.vector,
            ParamGroup::Matrix => self.matrix,
            ParamGroup::Adapter => self.adapter,
            ParamGroup::Excluded => None,
        }
    }
}

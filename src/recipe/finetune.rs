//! `[finetune]`: what a run trains. `mode = "full"` (default) trains every parameter;
//! `mode = "lora"` trains LoRA adapters ([`super::LoraRecipe`], `[lora]`) on a frozen base read
//! from `[model] dir`, which `base = "stored"` keeps in its released FP8/FP4 form in memory
//! (dequantized where each weight is used) and `base = "f32"` dequantizes once at load.

use serde::{Deserialize, Serialize};

/// What a run trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinetuneMode {
    /// Every parameter (pretraining, full fine-tuning).
    #[default]
    Full,
    /// LoRA adapters only, on a frozen base.
    Lora,
}

/// How a LoRA run holds its frozen base weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseStorage {
    /// As stored in the checkpoint: FP8/FP4 codes and scales, dequantized on use in forward and
    /// backward (other tensors f32).
    #[default]
    Stored,
    /// Dequantized to f32 at load.
    F32,
}

/// `[finetune]` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// `"full"` or `"lora"`.
    pub mode: FinetuneMode,
    /// The frozen base of a LoRA run: `"stored"` (default) or `"f32"`.
    pub base: BaseStorage,
}

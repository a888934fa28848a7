//! `adapter_config.json` of the exported adapter: a PEFT `LoraConfig` naming every adapted
//! module exactly (full paths, so `kv_proj` does not also catch the compressor's), with
//! `rank_pattern` / `alpha_pattern` entries wherever a module's PEFT rank or α differs from the
//! global `r` / `lora_alpha`, so each module's scale is v4train's.

use super::modules::PeftModule;
use serde_json::{json, Map, Value};
use v4_model::lora::LoraSpec;

/// `name` as a regex matching exactly it (PEFT matches pattern keys as `(.*\.)?(key)$`).
pub fn regex_escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// The PEFT config of `modules`, for adapters described by `spec`, on the base at `base`.
pub fn adapter_config(spec: &LoraSpec, base: &str, modules: &[PeftModule]) -> Value {
    let (mut target_modules, mut target_parameters) = (Vec::new(), Vec::new());
    let (mut rank_pattern, mut alpha_pattern) = (Map::new(), Map::new());
    for m in modules {
        if m.param {
            target_parameters.push(m.target.clone());
        } else {
            target_modules.push(m.target.clone());
        }
        if m.rank != spec.rank {
            rank_pattern.insert(regex_escape(&m.target), json!(m.rank));
        }
        if m.alpha != spec.alpha {
            alpha_pattern.insert(regex_escape(&m.target), json!(m.alpha));
        }
    }
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "revision": null,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "use_rslora": spec.rslora,
        "target_modules": target_modules,
        "target_parameters": target_parameters,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        // Dropout acts only in training; PEFT refuses any with `target_parameters`.
        "lora_dropout": 0.0,
        "bias": "none",
        "lora_bias": false,
        "use_dora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_dots() {
        assert_eq!(regex_escape("model.layers.1.x_y"), r"model\.layers\.1\.x_y");
    }
}

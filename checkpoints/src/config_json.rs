//! The exported `config.json` (spec §1.1, §4 "Export"): the source config's keys, the model's
//! typed fields, the release's fixed keys where absent, and the quantization keys that match the
//! written dtype (`quantization_config` + `"expert_dtype": "fp4"` for fp8, neither otherwise).

use crate::plan::OutputDtype;
use serde_json::{json, Map, Value};
use v4_model::ModelConfig;

/// The release's `quantization_config`.
pub fn release_quantization_config() -> Value {
    json!({
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128]
    })
}

/// Builds the `config.json` to write: `source` (the original file, if any) overlaid with `cfg`,
/// release defaults for missing keys, and quantization keys for `dtype`.
pub fn release_config(source: Option<&Value>, cfg: &ModelConfig, dtype: OutputDtype) -> Value {
    let mut out: Map<String, Value> = source
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Ok(Value::Object(typed)) = serde_json::to_value(cfg) {
        for (k, v) in typed {
            // Keep the source's spelling of equal values (e.g. `16` vs `16.0`).
            if !out.get(&k).is_some_and(|old| same(old, &v)) {
                out.insert(k, v);
            }
        }
    }
    let max_pos =
        cfg.rope_scaling.original_max_position_embeddings as f64 * cfg.rope_scaling.factor;
    let defaults = [
        ("architectures", json!(["DeepseekV4ForCausalLM"])),
        ("model_type", json!("deepseek_v4")),
        ("num_key_value_heads", json!(1)),
        ("bos_token_id", json!(0)),
        ("eos_token_id", json!(1)),
        ("hidden_act", json!("silu")),
        ("norm_topk_prob", json!(true)),
        ("topk_method", json!("noaux_tc")),
        ("attention_bias", json!(false)),
        ("tie_word_embeddings", json!(false)),
        ("initializer_range", json!(0.02)),
        ("max_position_embeddings", json!(max_pos as u64)),
    ];
    for (k, v) in defaults {
        out.entry(k.to_string()).or_insert(v);
    }
    out.insert("torch_dtype".into(), json!("bfloat16"));
    match dtype {
        OutputDtype::Fp8 => {
            out.insert("quantization_config".into(), release_quantization_config());
            out.insert("expert_dtype".into(), json!("fp4"));
        }
        OutputDtype::Bf16 | OutputDtype::F32 => {
            out.remove("quantization_config");
            out.remove("expert_dtype");
        }
    }
    if dtype == OutputDtype::F32 {
        out.insert("torch_dtype".into(), json!("float32"));
    }
    Value::Object(out)
}

/// JSON equality that treats `16` and `16.0` as equal.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

//! Corrupted copies of the fixture model directories (`tiny_b`: float weights, `tiny_q`: the
//! release's FP8/FP4 storage): a bad `config.json`, a truncated or changed `model.safetensors`, a
//! lying shard index, missing files. Unchanged files are hard links to the fixture.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::gen::Gen;
use super::safetensors_gen::{rebuild_changed, Entry};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every key of a V4 `config.json` the model reads, `rope_scaling.*` included.
const CONFIG_KEYS: [&str; 38] = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "head_dim",
    "qk_rope_head_dim",
    "q_lora_rank",
    "o_groups",
    "o_lora_rank",
    "sliding_window",
    "compress_ratios",
    "compress_rope_theta",
    "rope_theta",
    "rope_scaling",
    "rope_scaling.type",
    "rope_scaling.factor",
    "rope_scaling.original_max_position_embeddings",
    "rope_scaling.beta_fast",
    "rope_scaling.beta_slow",
    "index_n_heads",
    "index_head_dim",
    "index_topk",
    "hc_mult",
    "hc_sinkhorn_iters",
    "hc_eps",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "num_hash_layers",
    "scoring_func",
    "routed_scaling_factor",
    "swiglu_limit",
    "moe_intermediate_size",
    "num_nextn_predict_layers",
    "vocab_size",
    "rms_norm_eps",
    "quantization_config",
    "max_position_embeddings",
    "architectures",
];

/// A JSON value of a random kind, often extreme.
pub fn json_value(g: &mut Gen) -> Value {
    match g.below(9) {
        0 | 1 => json!(g.int()),
        2 => json!(g.u64()),
        3 => {
            let f = g.float();
            serde_json::Number::from_f64(f).map_or(json!(f.to_string()), Value::Number)
        }
        4 => json!(g.string(8)),
        5 => json!(*g.pick(&[
            "sigmoid",
            "softmax",
            "sqrtsoftplus",
            "yarn",
            "NaN",
            "Infinity"
        ])),
        6 => Value::Null,
        7 => json!((0..g.below(8)).map(|_| g.int()).collect::<Vec<_>>()),
        _ => json!({ "type": "yarn", "factor": g.float() }),
    }
}

/// `config.json` text with one key changed, removed or the text itself damaged.
fn config_text(g: &mut Gen, original: &str) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_str::<Value>(original) else {
        return original.as_bytes().to_vec();
    };
    match g.below(10) {
        0 => return g.corrupt(original.as_bytes()),
        1 => return g.bytes_upto(200),
        2 => {
            let depth = 100 + g.below(100_000);
            return format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        _ => {}
    }
    for _ in 0..1 + g.below(2) {
        let key = *g.pick(&CONFIG_KEYS);
        let (parent, leaf) = match key.split_once('.') {
            Some((p, l)) => (v.get_mut(p), l),
            None => (Some(&mut v), key),
        };
        let Some(Value::Object(obj)) = parent else {
            continue;
        };
        if g.chance(0.15) {
            obj.remove(leaf);
        } else if leaf == "compress_ratios" && g.chance(0.5) {
            let n = g.below(9);
            let ratios: Vec<Value> = (0..n)
                .map(|_| json!(*g.pick(&[0, 4, 128, 1, -4])))
                .collect();
            obj.insert(leaf.into(), Value::Array(ratios));
        } else {
            obj.insert(leaf.into(), json_value(g));
        }
    }
    v.to_string().into_bytes()
}

/// A damaged copy of `tiny_b`'s `config.json`.
pub fn config_json(g: &mut Gen) -> Vec<u8> {
    let original =
        std::fs::read_to_string(fixture("tiny_b").join("config.json")).expect("fixture config");
    config_text(g, &original)
}

/// Writes `name` into `dir`: a hard link to `src` (a copy where links fail).
fn link(src: &Path, dir: &Path, name: &str) {
    let to = dir.join(name);
    if std::fs::hard_link(src, &to).is_err() {
        std::fs::copy(src, &to).expect("copy fixture file");
    }
}

/// A corrupted copy of `tiny_b` or `tiny_q` in `dir/model`.
pub fn corrupted(g: &mut Gen, dir: &Path) -> PathBuf {
    let base = fixture(if g.chance(0.6) { "tiny_b" } else { "tiny_q" });
    let model = dir.join("model");
    std::fs::create_dir_all(&model).expect("model dir");
    let config = std::fs::read_to_string(base.join("config.json")).expect("fixture config");
    let weights = base.join("model.safetensors");
    let what = g.below(10);
    // config.json
    if what < 3 {
        std::fs::write(model.join("config.json"), config_text(g, &config)).expect("write");
    } else if what != 3 {
        link(&base.join("config.json"), &model, "config.json");
    }
    // the weights: whole file, or sharded with an index
    let sharded = g.chance(0.3);
    let shard_name = if sharded {
        "model-00001-of-00001.safetensors"
    } else {
        "model.safetensors"
    };
    match what {
        4 | 5 => {
            let bytes = std::fs::read(&weights).expect("fixture weights");
            std::fs::write(model.join(shard_name), g.corrupt(&bytes)).expect("write");
        }
        6..=8 => {
            let bytes = std::fs::read(&weights).expect("fixture weights");
            std::fs::write(model.join(shard_name), rebuild_changed(g, &bytes)).expect("write");
        }
        9 if g.chance(0.5) => {}
        _ => link(&weights, &model, shard_name),
    }
    if sharded {
        let bytes = std::fs::read(&weights).expect("fixture weights");
        let names: Vec<String> = super::safetensors_gen::entries(&bytes)
            .into_iter()
            .map(|e: Entry| e.name)
            .collect();
        std::fs::write(
            model.join("model.safetensors.index.json"),
            index_text(g, &names, shard_name),
        )
        .expect("write index");
    }
    if g.chance(0.1) {
        std::fs::write(model.join("model-00002-of-00003.safetensors.tmp"), b"").expect("write");
    }
    model
}

/// A shard index for `names` in `shard`, often lying.
fn index_text(g: &mut Gen, names: &[String], shard: &str) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    for n in names {
        map.insert(n.clone(), json!(shard));
    }
    let mut index = json!({"metadata": {"total_size": 1}, "weight_map": map});
    match g.below(9) {
        0 => return g.corrupt(index.to_string().as_bytes()),
        1 => index["weight_map"] = json!({}),
        2 => index["weight_map"] = json_value(g),
        3 => {
            let bad = *g.pick(&[
                "../model.safetensors",
                "/etc/passwd",
                "",
                ".",
                "sub/x.safetensors",
            ]);
            if let Some(name) = names.get(g.below(names.len())) {
                index["weight_map"][name] = json!(bad);
            }
        }
        4 => {
            if let Some(name) = names.get(g.below(names.len())) {
                index["weight_map"][name] = json!("model-00002-of-00002.safetensors");
            }
        }
        5 => index["weight_map"]["not.in.the.shard"] = json!(shard),
        6 => index["metadata"] = json_value(g),
        _ => {}
    }
    index.to_string().into_bytes()
}

//! Recipe texts: random bytes, damaged TOML, deep nesting, and random valid TOML built from the
//! real sections and keys with values of every type at their extremes (u64::MAX-sized integers,
//! negatives, 1e308, inf, nan, empty strings), plus `--set` overrides of the same kind.

use toml::{Table, Value};

use super::gen::Gen;

/// Keys of each section (nested tables as `table.key`).
const KEYS: [(&str, &[&str]); 8] = [
    (
        "model",
        &[
            "preset",
            "dir",
            "hidden_size",
            "vocab_size",
            "num_hidden_layers",
            "compress_ratios",
            "n_routed_experts",
            "num_experts_per_tok",
            "sliding_window",
            "hc_mult",
            "hc_sinkhorn_iters",
            "rope_scaling.factor",
            "rope_scaling.beta_fast",
            "rms_norm_eps",
            "head_dim",
            "index_topk",
            "moe_intermediate_size",
            "num_nextn_predict_layers",
        ],
    ),
    (
        "data",
        &[
            "kind",
            "seed",
            "vocab",
            "path",
            "tensor",
            "seq_len",
            "batch_size",
            "mode",
            "sft_packing",
            "shuffle_block",
            "bad_rows",
            "prefetch",
            "repeat",
            "tokenizer",
            "chat.thinking_mode",
            "chat.drop_thinking",
        ],
    ),
    (
        "train",
        &[
            "steps",
            "micro_batch",
            "seq_len",
            "grad_accum",
            "seed",
            "dtype",
            "nan_policy",
            "attention",
            "fake_quant",
            "expert_fp4_qat",
            "freeze",
        ],
    ),
    (
        "optim",
        &[
            "max_grad_norm",
            "muon.variant",
            "muon.momentum",
            "muon.nesterov",
            "muon.ns_eps",
            "muon.gamma",
            "muon.weight_decay",
            "muon.ns_bf16",
            "muon.ns_schedule",
            "adamw.beta1",
            "adamw.beta2",
            "adamw.eps",
            "adamw.weight_decay",
            "weight_decay.embed",
            "weight_decay.matrix",
        ],
    ),
    (
        "schedule",
        &[
            "kind",
            "peak_lr",
            "warmup_steps",
            "total_steps",
            "decay_steps",
            "decay_shape",
            "min_lr_ratio",
        ],
    ),
    (
        "loss",
        &[
            "mtp_weight",
            "mtp_weight_late",
            "ignore_index",
            "indexer_weight",
            "balance_alpha",
            "balance_bias_rate",
        ],
    ),
    ("checkpoint", &["dir", "every", "keep_last", "resume"]),
    ("log", &["every", "jsonl", "tensorboard"]),
];

const STRINGS: [&str; 16] = [
    "",
    "v4-flash",
    "v4-pro",
    "synthetic",
    "tokens",
    "text",
    "auto",
    "sft",
    "pretrain",
    "skip",
    "stop",
    "dense",
    "sparse",
    "all-but-indexer",
    "x.safetensors",
    "\u{0}",
];

/// A TOML value of a random type, often extreme.
pub fn value(g: &mut Gen, depth: usize) -> Value {
    match g.below(if depth > 3 { 6 } else { 9 }) {
        0 | 1 => Value::Integer(g.int()),
        2 | 3 => Value::Float(g.float()),
        4 => Value::String(if g.chance(0.7) {
            g.pick(&STRINGS).to_string()
        } else {
            g.string(20)
        }),
        5 => Value::Boolean(g.chance(0.5)),
        6 => Value::Array((0..g.below(4)).map(|_| value(g, depth + 1)).collect()),
        7 => {
            let mut t = Table::new();
            for _ in 0..g.below(3) {
                t.insert(g.string(5), value(g, depth + 1));
            }
            Value::Table(t)
        }
        _ => Value::Datetime(toml::value::Datetime {
            date: Some(toml::value::Date {
                year: 2026,
                month: 1,
                day: 1,
            }),
            time: None,
            offset: None,
        }),
    }
}

/// A value of the type `key` expects (extreme more often than not).
fn typed(g: &mut Gen, key: &str) -> Value {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let small = |g: &mut Gen| Value::Integer(1 + g.below(64) as i64);
    match leaf {
        "preset" | "kind" | "mode" | "bad_rows" | "dtype" | "nan_policy" | "attention"
        | "freeze" | "variant" | "decay_shape" | "resume" | "thinking_mode" => {
            let options = [
                "v4-flash",
                "v4-pro",
                "synthetic",
                "tokens",
                "text",
                "sft",
                "pretrain",
                "skip",
                "stop",
                "error",
                "f32",
                "bf16",
                "dense",
                "sparse",
                "none",
                "all-but-indexer",
                "v4",
                "keller-jordan",
                "moonlight",
                "cosine",
                "linear",
                "wsd",
                "constant",
                "auto",
                "thinking",
                "chat",
                "",
            ];
            Value::String(g.pick(&options).to_string())
        }
        "path" | "tensor" | "dir" | "jsonl" | "tensorboard" | "tokenizer" => Value::String(
            g.pick(&["x.safetensors", "ids.npy", "", "/", "a/b.jsonl"])
                .to_string(),
        ),
        "sft_packing" | "repeat" | "drop_thinking" | "fake_quant" | "expert_fp4_qat"
        | "nesterov" | "ns_bf16" => Value::Boolean(g.chance(0.5)),
        "factor" | "beta_fast" | "rms_norm_eps" | "max_grad_norm" | "momentum" | "ns_eps"
        | "gamma" | "weight_decay" | "beta1" | "beta2" | "eps" | "peak_lr" | "min_lr_ratio"
        | "mtp_weight" | "mtp_weight_late" | "indexer_weight" | "balance_alpha"
        | "balance_bias_rate" | "embed" | "matrix" => Value::Float(g.float()),
        "compress_ratios" => Value::Array(
            (0..g.below(6))
                .map(|_| Value::Integer(*g.pick(&[0, 4, 128, 3])))
                .collect(),
        ),
        "ns_schedule" => Value::Array(
            (0..g.below(3))
                .map(|_| {
                    let mut t = Table::new();
                    t.insert("steps".into(), Value::Integer(g.int()));
                    let coeffs = (0..3).map(|_| Value::Float(g.float())).collect();
                    t.insert("coeffs".into(), Value::Array(coeffs));
                    Value::Table(t)
                })
                .collect(),
        ),
        _ if g.chance(0.3) => small(g),
        _ => Value::Integer(g.int()),
    }
}

/// Sets the dotted `key` in `table`.
fn set(table: &mut Table, key: &str, v: Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let entry = table
                .entry(head)
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(t) = entry {
                set(t, rest, v);
            }
        }
        None => {
            table.insert(key.into(), v);
        }
    }
}

/// A random recipe as TOML text, with the `--set` overrides to pass along.
pub fn recipe(g: &mut Gen) -> (String, Vec<String>) {
    let mut root = Table::new();
    let mut model = Table::new();
    match g.below(10) {
        0 => {}
        1 => {
            let dir = super::model_dir::fixture("tiny_b");
            model.insert(
                "dir".into(),
                Value::String(dir.to_string_lossy().into_owned()),
            );
        }
        _ => {
            model.insert("preset".into(), Value::String("v4-flash".into()));
            // Small models keep optim-plan fast; the extremes come on top.
            set(&mut model, "hidden_size", Value::Integer(64));
            set(&mut model, "vocab_size", Value::Integer(256));
        }
    }
    root.insert("model".into(), Value::Table(model));
    for _ in 0..g.below(8) {
        let (section, keys) = *g.pick(&KEYS);
        let key = *g.pick(keys);
        let section = if g.chance(0.03) { "extra" } else { section };
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = entry {
            let v = if g.chance(0.8) {
                typed(g, key)
            } else {
                value(g, 0)
            };
            set(t, key, v);
        }
    }
    if g.chance(0.05) {
        root.insert(g.pick(&KEYS).0.into(), value(g, 0));
    }
    let text = toml::to_string(&root).unwrap_or_default();
    let mut sets = Vec::new();
    for _ in 0..g.below(3) {
        let (section, keys) = *g.pick(&KEYS);
        let key = *g.pick(keys);
        let v = if g.chance(0.7) {
            typed(g, key)
        } else {
            value(g, 2)
        };
        let rendered = match v {
            Value::String(s) if g.chance(0.5) => s,
            v => v.to_string(),
        };
        let raw = match g.below(8) {
            0 => g.string(10),
            1 => format!("{section}={rendered}"),
            2 => format!(".{}={rendered}", g.pick(keys)),
            _ => format!("{section}.{key}={rendered}"),
        };
        sets.push(raw.replace('\0', "")); // argv cannot hold NUL
    }
    (text, sets)
}

/// Recipe text of any kind: mostly [`recipe`], else bytes, damaged or deeply nested TOML.
pub fn text(g: &mut Gen) -> (Vec<u8>, Vec<String>) {
    match g.below(10) {
        0 => (g.bytes_upto(200), Vec::new()),
        1 => {
            let (t, sets) = recipe(g);
            (g.corrupt(t.as_bytes()), sets)
        }
        2 => {
            let depth = 10 + g.below(50_000);
            let t = match g.below(3) {
                0 => format!(
                    "[model]\npreset = \"v4-flash\"\nx = {}1{}\n",
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
                1 => format!(
                    "[model]\nx = {}1{}\n",
                    "{a = ".repeat(depth),
                    "}".repeat(depth)
                ),
                _ => format!("[{}]\nk = 1\n", vec!["a"; depth].join(".")),
            };
            (t.into_bytes(), Vec::new())
        }
        _ => {
            let (t, sets) = recipe(g);
            (t.into_bytes(), sets)
        }
    }
}

/// The `[optim]` table as JSON (`optim-plan --optim`), with random keys and extreme values.
pub fn optim_json(g: &mut Gen) -> Vec<u8> {
    if g.chance(0.1) {
        return g.bytes_upto(100);
    }
    let mut optim = Table::new();
    let keys = KEYS[3].1;
    for _ in 0..g.below(5) {
        let key = *g.pick(keys);
        let v = if g.chance(0.8) {
            typed(g, key)
        } else {
            value(g, 0)
        };
        set(&mut optim, key, v);
    }
    let mut json = serde_json::to_value(&optim).unwrap_or_default();
    if g.chance(0.2) {
        // JSON reaches past TOML's i64: u64::MAX Newton–Schulz steps.
        json["muon"] = serde_json::json!({"ns_schedule": [
            {"steps": u64::MAX, "coeffs": [1.0, 0.0, 0.0]},
            {"steps": u64::MAX, "coeffs": [1.0, 0.0, 0.0]}
        ]});
    }
    json.to_string().into_bytes()
}

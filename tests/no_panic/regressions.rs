//! Named regressions: each input below used to panic, crash or hang `v4train` (or let NaN
//! through to training) and now fails with a message naming the file, key or position at
//! fault — or, for the long sliding window, runs and gives the right numbers.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use v4train::recipe::Recipe;

use super::forward_cases::ids_entry;
use super::model_dir::fixture;
use super::safetensors_gen::file;

fn v4train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_v4train"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run v4train")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Exit code 1 and a stderr holding `want` (and no panic).
fn fails_with(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(want), "expected {want:?} in:\n{err}");
}

/// `tiny_b` with `config.json` keys replaced.
fn tiny_b_with(dir: &Path, keys: &[(&str, Value)]) -> std::path::PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).expect("dir");
    let src = fixture("tiny_b");
    std::fs::copy(
        src.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .expect("copy");
    let text = std::fs::read_to_string(src.join("config.json")).expect("config");
    let mut cfg: Value = serde_json::from_str(&text).expect("json");
    for (k, v) in keys {
        cfg[*k] = v.clone();
    }
    std::fs::write(model.join("config.json"), cfg.to_string()).expect("write");
    model
}

#[test]
fn forward_rejects_ids_beyond_i32_naming_position_and_value() {
    // Used to panic in Burn ("Element cannot be represented ... i64 => i32"): the ids went into
    // an i32 tensor before they were range-checked.
    let dir = tempfile::tempdir().expect("tmp");
    let cases: [(&str, i64); 10] = [
        ("I64", 1 << 40),
        ("I64", 1 << 31),
        ("I64", i64::MAX),
        ("I64", i64::MIN),
        ("I64", -1),
        ("I64", 256),
        ("I32", i32::MAX as i64),
        ("I32", i32::MIN as i64),
        ("I32", -1),
        ("I32", 256),
    ];
    for (i, (dtype, bad)) in cases.into_iter().enumerate() {
        let input = dir.path().join(format!("ids{i}.safetensors"));
        std::fs::write(
            &input,
            file(&[ids_entry(dtype, vec![2, 3], &[3, 4, 5, 6, 7, bad])]),
        )
        .expect("write");
        let out = dir.path().join("out.safetensors");
        let o = v4train(&[
            "forward",
            "--model",
            s(&fixture("tiny_b")),
            "--input",
            s(&input),
            "--output",
            s(&out),
        ]);
        let want = format!(
            "{}: invalid input: input_ids[1, 2] = {bad} is outside the vocabulary [0, 256)",
            input.display()
        );
        fails_with(&o, &want);
        assert!(!out.exists(), "{dtype} {bad}: no output on error");
    }
}

#[test]
fn a_window_longer_than_the_sequence_is_full_causal_attention() {
    // `sliding_window` = 2^20 used to build a 2^20 × 2^21 host mask (OOM-killed); a window at
    // least as long as the sequence must equal full causal attention.
    let dir = tempfile::tempdir().expect("tmp");
    let ids: Vec<i64> = (0..40).map(|i| (i * 37 + 11) % 256).collect();
    let input = dir.path().join("ids.safetensors");
    std::fs::write(&input, file(&[ids_entry("I64", vec![1, 40], &ids)])).expect("write");
    let mut logits = Vec::new();
    for window in [40u64, 1 << 20] {
        let sub = dir.path().join(window.to_string());
        let model = tiny_b_with(&sub, &[("sliding_window", window.into())]);
        let out = sub.join("out.safetensors");
        let o = v4train(&[
            "forward",
            "--model",
            s(&model),
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--no-fake-quant",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).expect("output");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let v: Vec<f32> = st
            .tensor("logits")
            .expect("logits")
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        logits.push(v);
    }
    assert_eq!(logits[0].len(), 40 * 256);
    let max = logits[0]
        .iter()
        .zip(&logits[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-5, "window 40 vs 2^20: max abs difference {max}");
}

#[test]
fn absurd_config_sizes_are_named_errors_in_every_command() {
    // n_routed_experts = 2^40 made inventory() allocate 3·2^40 entries (OOM-killed); heads ×
    // head_dim and hc_mult² overflowed usize ("attempt to multiply with overflow").
    let cases: [(&[(&str, Value)], &str); 5] = [
        (
            &[("hidden_size", Value::from(1u64 << 40))],
            "invalid config: `hidden_size` = 1099511627776 exceeds the supported maximum 1048576",
        ),
        (
            &[("n_routed_experts", Value::from(1u64 << 40))],
            "invalid config: `n_routed_experts` = 1099511627776 exceeds the supported maximum 65536",
        ),
        (
            &[
                ("num_attention_heads", Value::from(1u64 << 32)),
                ("head_dim", Value::from(1u64 << 33)),
            ],
            "`head_dim` = 8589934592 exceeds the supported maximum 1048576",
        ),
        (
            &[("hc_mult", Value::from(1u64 << 33))],
            "`hc_mult` = 8589934592 exceeds the supported maximum 64",
        ),
        (
            &[
                ("n_routed_experts", Value::from(60_000)),
                ("num_hidden_layers", Value::from(4000)),
                ("num_hash_layers", Value::from(1)),
                ("compress_ratios", Value::from(vec![0; 4001])),
            ],
            "the model would have 720",
        ),
    ];
    for (i, (keys, want)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tmp");
        let model = tiny_b_with(dir.path(), keys);
        let config = model.join("config.json");
        let ids = fixture("tiny_b/io.safetensors");
        let out = dir.path().join("out");
        let runs = [
            v4train(&[
                "forward",
                "--model",
                s(&model),
                "--input",
                s(&ids),
                "--output",
                s(&out),
            ]),
            v4train(&["export", "--model", s(&model), "--out", s(&out)]),
            v4train(&["optim-plan", "--config", s(&config), "--summary-only"]),
        ];
        for o in &runs {
            fails_with(o, want);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                err.matches(s(&config)).count(),
                1,
                "case {i}: file named once:\n{err}"
            );
        }
    }
}

fn recipe_error(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match Recipe::from_str_named(text, "r.toml", &sets) {
        Ok(_) => panic!("expected an error for {text:?} {sets:?}"),
        Err(e) => e.to_string(),
    }
}

const TINY: &str = "[model]\npreset = \"v4-flash\"\nhidden_size = 64\nvocab_size = 256\n";

#[test]
fn batch_geometry_that_overflows_is_a_recipe_error() {
    // seq_len × micro_batch overflowed usize in the trainer (src/train/synthetic.rs:31,
    // "attempt to multiply with overflow") once training started.
    let e = recipe_error(
        TINY,
        &["train.seq_len=4611686018427387904", "train.micro_batch=4"],
    );
    assert_eq!(
        e,
        "--set train.seq_len=4611686018427387904: [train] seq_len × micro_batch = \
         4611686018427387904 × 4 tokens per forward pass; at most 2147483647 are supported"
    );
    let text = format!(
        "{TINY}[train]\nseq_len = 4096\nmicro_batch = 8\ngrad_accum = 9223372036854775807\n"
    );
    let e = recipe_error(&text, &[]);
    assert!(
        e.starts_with("r.toml:8: [train] grad_accum = 9223372036854775807 makes"),
        "{e}"
    );
    // the binary stops at the recipe, before training
    let o = v4train(&[
        "recipes/tiny-pretrain.toml",
        "--set",
        "train.seq_len=4611686018427387904",
        "--set",
        "train.micro_batch=4",
    ]);
    fails_with(&o, "[train] seq_len × micro_batch");
}

#[test]
fn non_finite_and_runaway_optimizer_values_are_recipe_errors() {
    // NaN ε / weight decay / rope factor used to pass validation and turn training into NaN; a
    // Newton–Schulz schedule of 2^63 steps ran forever (and overflowed `total_steps`).
    let cases = [
        ("[optim.adamw]\neps = nan\n", "r.toml:6: [optim.adamw] eps = NaN must be finite"),
        ("[optim.adamw]\nweight_decay = -inf\n", "[optim.adamw] weight_decay = -inf must be finite"),
        ("[optim.muon]\nns_eps = nan\n", "[optim.muon] ns_eps = NaN must be finite"),
        ("[optim.muon]\ngamma = inf\n", "[optim.muon] gamma = inf must be finite"),
        ("[optim.weight_decay]\nembed = nan\n", "[optim.weight_decay] embed = NaN must be finite"),
        (
            "[optim.muon]\nns_schedule = [{steps = 9223372036854775807, coeffs = [1.0, 0.0, 0.0]}]\n",
            "[optim.muon] ns_schedule runs 9223372036854775807 Newton–Schulz steps; at most 1000",
        ),
        (
            "[optim.muon]\nns_schedule = [{steps = 5, coeffs = [nan, 0.0, 0.0]}]\n",
            "[optim.muon] ns_schedule stage 0 has a coefficient NaN",
        ),
    ];
    for (section, want) in cases {
        let e = recipe_error(&format!("{TINY}{section}"), &[]);
        assert!(e.contains(want), "expected {want:?}, got {e:?}");
    }
    let e = recipe_error(TINY, &["model.rope_scaling.factor=nan"]);
    assert!(
        e.contains("[model.rope_scaling] factor = NaN must be ≥ 1"),
        "{e}"
    );
    // optim-plan reads [optim] as JSON too, where integers reach u64::MAX
    let dir = tempfile::tempdir().expect("tmp");
    let optim = dir.path().join("optim.json");
    let json = r#"{"muon": {"ns_schedule": [{"steps": 18446744073709551615, "coeffs": [1, 0, 0]},
        {"steps": 18446744073709551615, "coeffs": [1, 0, 0]}]}}"#;
    std::fs::write(&optim, json).expect("write");
    let o = v4train(&["optim-plan", "--optim", s(&optim), "--summary-only"]);
    fails_with(
        &o,
        "`muon.ns_schedule` runs 18446744073709551615 Newton–Schulz steps",
    );
}

#[test]
fn chat_encode_names_the_line_and_byte_of_invalid_utf8() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in.jsonl");
    let mut bytes = br#"{"messages": [{"role": "user", "content": "hi"}]}"#.to_vec();
    bytes.extend(b"\n{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}\n");
    std::fs::write(&input, bytes).expect("write");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizer/deepseek-v4");
    let o = v4train(&[
        "chat-encode",
        "--tokenizer",
        s(&tokenizer),
        "--input",
        s(&input),
    ]);
    fails_with(
        &o,
        &format!(
            "{}:2: malformed row: invalid UTF-8 at byte 43",
            input.display()
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "line 1 was encoded"
    );
}

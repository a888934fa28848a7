//! `v4train bench RECIPE.toml`: a timed training step of the tiny recipe reports its tokens,
//! FLOPs, phases and peak memory; `recipes/bench-1b.toml` is the ~1B shape of
//! `shared/baseline/bench-1b.json`.

use std::path::PathBuf;
use v4train::bench::flops_per_token;
use v4train::recipe::Recipe;

mod common;

fn v4train(args: &[&str]) -> std::process::Output {
    common::bin().args(args).output().unwrap()
}

fn recipe(name: &str) -> Recipe {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(name);
    Recipe::load(path, &[]).unwrap()
}

/// The JSON report of `v4train bench` on the tiny recipe at 64 tokens per sequence after one
/// warm-up step, with `extra` arguments.
fn bench_json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        "recipes/tiny-pretrain.toml",
        "--set",
        "train.seq_len=64",
        "--warmup",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = v4train(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn bench_of_the_tiny_recipe_reports_json() {
    let r = bench_json(&["--steps", "2", "--peak-tflops", "0.5"]);
    assert_eq!(r["dtype"], "f32");
    assert_eq!(r["device"], "cpu");
    // micro_batch 2 × seq_len 64.
    assert_eq!(r["tokens_per_step"], 128);
    assert_eq!(r["timed_steps"], 2);
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    let step = num("step_secs");
    assert!(step > 0.0);
    assert!((num("tokens_per_sec") - 128.0 / step).abs() < 1e-6 * num("tokens_per_sec"));
    let f = &r["flops_per_token"];
    let total: f64 = ["attention", "indexer", "moe", "mhc", "optimizer", "other"]
        .iter()
        .map(|k| f[*k].as_f64().unwrap())
        .sum();
    assert!((num("achieved_flops") - total * num("tokens_per_sec")).abs() < 1e-6 * total * 1e3);
    assert_eq!(r["peak_tflops"][0], 0.5);
    assert!((num("mfu") - num("achieved_flops") / 0.5e12).abs() < 1e-12);
    assert!(r["peak_memory"][0].as_u64().unwrap() > 1_000_000);
    let p = &r["phases"];
    for k in ["attention", "moe", "mhc", "optimizer"] {
        assert!(p[k].as_f64().unwrap() > 0.0, "{k}: {p}");
    }
    assert!(num("loss").is_finite() && num("loss") > 0.0);
    // Newton–Schulz timed per shape: together the FLOPs the optimizer phase counts.
    let ns = r["ns_shapes"].as_array().unwrap();
    assert!(ns.len() > 1, "{ns:?}");
    let ns_flops: f64 = ns
        .iter()
        .map(|n| {
            let v = |k: &str| n[k].as_f64().unwrap();
            v("calls") * v("flops_per_sec") * v("secs_per_call")
        })
        .sum();
    let counted = f["optimizer"].as_f64().unwrap() * 128.0;
    assert!(
        (ns_flops - counted).abs() < 1e-6 * counted,
        "{ns_flops} vs {counted}"
    );
}

#[test]
fn bench_rejects_a_bad_peak() {
    let o = v4train(&["bench", "recipes/tiny-pretrain.toml", "--peak-tflops", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("positive number of TFLOP/s"));
}

#[test]
fn bench_runs_in_bf16_and_says_so() {
    let r = bench_json(&["--set", "train.dtype=bf16", "--steps", "1"]);
    assert_eq!(r["dtype"], "bf16");
    assert!(r["loss"].as_f64().unwrap().is_finite());
}

#[test]
fn bench_1b_has_the_baseline_shape() {
    let r = recipe("bench-1b.toml");
    let cfg = r.model.resolve().unwrap();
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size),
        (1024, 8, 129280)
    );
    assert_eq!(cfg.compress_ratios, vec![0, 0, 4, 128, 4, 128, 4, 0, 0]);
    assert_eq!(
        (
            cfg.n_routed_experts,
            cfg.num_experts_per_tok,
            cfg.moe_intermediate_size
        ),
        (64, 6, 512)
    );
    assert_eq!(
        (cfg.index_topk, cfg.o_groups, cfg.o_lora_rank),
        (128, 4, 256)
    );
    let params: usize = v4_model::inventory(&cfg)
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    assert!((1.0e9..1.5e9).contains(&(params as f64)), "{params}");
    // MoE FLOPs per token: the router and top-6 + 1 shared expert (not all 64), ×2 FLOPs per
    // multiply-add, ×3 trained, over 8 blocks and the MTP block's 4095 of 4096 positions.
    let f = flops_per_token(&cfg, &r);
    let want = 6.0 * (8.0 + 4095.0 / 4096.0) * (1024.0 * 64.0 + 7.0 * 3.0 * 1024.0 * 512.0);
    assert!((f.moe - want).abs() < 1e-9 * want, "{} vs {want}", f.moe);
}

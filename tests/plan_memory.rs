//! The memory / disk estimator (`v4train::plan`): scaling laws of the estimate, parameter and
//! checkpoint accounting recomputed independently from the inventory, V4-Flash sanity, the
//! machine queries, and the calibration against measured peak RSS.

use v4_model::{inventory, ModelConfig, ReleaseDtype};
use v4_optim::{route, OptimizerKind};
use v4train::plan::{
    activations, available_disk, available_host_memory, checkpoint_bytes, checkpoint_size,
    checkpoints_on_disk, estimate_training, param_bytes, run_checkpoint_bytes,
};
use v4train::recipe::Recipe;

fn recipe(path: &str, sets: &[&str]) -> Recipe {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Recipe::load(path, &sets).unwrap()
}

fn tiny(sets: &[&str]) -> (ModelConfig, Recipe) {
    let r = recipe("recipes/tiny-pretrain.toml", sets);
    (r.model.resolve().unwrap(), r)
}

/// Activation bytes that scale with the tokens (all but autodiff's per-op bookkeeping).
fn token_bytes(cfg: &ModelConfig, r: &Recipe) -> f64 {
    let a = activations(cfg, r);
    (a.total() - a.graph) as f64
}

/// Peak RSS measured on a 2-core CPU machine: release binary, `v4train RECIPE --set
/// train.steps=3 --set schedule.warmup_steps=1 --set checkpoint.resume=never` (fresh checkpoint
/// and log directories), `/usr/bin/time -v` "Maximum resident set size" (KiB). The table with
/// the estimates is in the docs of `v4train::plan::memory`.
const MEASURED: &[(&str, &[&str], u64)] = &[
    ("recipes/tiny-pretrain.toml", &[], 159_620),
    (
        "recipes/tiny-pretrain.toml",
        &["train.micro_batch=1"],
        93_068,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.micro_batch=4"],
        236_252,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["loss.indexer_weight=0"],
        148_352,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=1024"],
        438_708,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=1024", "loss.indexer_weight=0"],
        402_356,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=4096"],
        1_274_564,
    ),
    ("recipes/tiny-sft.toml", &[], 1_939_060),
    ("recipes/tiny-sft.toml", &["train.seq_len=2048"], 6_109_428),
    (
        "recipes/tiny-sft.toml",
        &[
            "train.freeze=\"all-but-indexer\"",
            "train.attention=\"dense\"",
        ],
        826_800,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=1024", "train.grad_accum=2"],
        439_124,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.fake_quant=true", "train.expert_fp4_qat=true"],
        160_776,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=2048", "train.micro_batch=1"],
        537_524,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=1024", "train.attention=\"dense\""],
        437_368,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &[
            "train.seq_len=4096",
            "train.micro_batch=1",
            "train.activation_checkpointing=\"block\"",
        ],
        459_696,
    ),
    (
        "recipes/tiny-pretrain.toml",
        &["train.seq_len=8192", "train.micro_batch=1"],
        1_299_112,
    ),
];

#[test]
fn estimate_is_within_25_percent_of_measured_peak_rss() {
    for (path, sets, kib) in MEASURED {
        let mut all = vec!["train.steps=3", "schedule.warmup_steps=1"];
        all.extend_from_slice(sets);
        let r = recipe(path, &all);
        let cfg = r.model.resolve().unwrap();
        let est = estimate_training(&cfg, &r);
        let measured = kib * 1024;
        let ratio = est.total() as f64 / measured as f64;
        println!("{path} {sets:?}: measured {measured} estimate {est} ratio {ratio:.3}");
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{path} {sets:?}: estimate {est} vs measured {measured} B (ratio {ratio:.3})"
        );
    }
}

#[test]
fn activations_are_linear_in_micro_batch() {
    let (cfg, r1) = tiny(&["train.micro_batch=1"]);
    let (_, r2) = tiny(&["train.micro_batch=2"]);
    let (_, r4) = tiny(&["train.micro_batch=4"]);
    let (a1, a2, a4) = (
        token_bytes(&cfg, &r1),
        token_bytes(&cfg, &r2),
        token_bytes(&cfg, &r4),
    );
    assert!((a2 / a1 - 2.0).abs() < 1e-3, "{a1} {a2}");
    assert!((a4 / a1 - 4.0).abs() < 1e-3, "{a1} {a4}");
    // parameters do not move
    let (e1, e4) = (estimate_training(&cfg, &r1), estimate_training(&cfg, &r4));
    assert_eq!(
        (e1.weights, e1.gradients, e1.optimizer),
        (e4.weights, e4.gradients, e4.optimizer)
    );
    assert!(e4.total() > e1.total());
}

#[test]
fn dense_csa_activations_grow_faster_than_seq_len_and_sparse_ones_do_not() {
    let at = |s: usize, attention: &str| {
        let (cfg, r) = tiny(&[
            &format!("train.seq_len={s}"),
            &format!("train.attention=\"{attention}\""),
        ]);
        token_bytes(&cfg, &r)
    };
    let (a4, a8, a16) = (at(4096, "dense"), at(8192, "dense"), at(16384, "dense"));
    // dense: the attention's compressed-entry scores are [T, heads, T/4]: quadratic (the
    // indexer's KL runs in chunks of bounded size, reached from 4K on here)
    assert!(a8 / a4 > 2.2 && a16 / a8 > a8 / a4, "{a4} {a8} {a16}");
    // …and the quadratic part dominates at long sequences (close to 4× per doubling)
    assert!(at(65536, "dense") / at(32768, "dense") > 3.5);
    // sparse: window + top-k per query, the indexer's KL over the k chosen: about linear (HCA
    // stays dense over its S/128 entries, the one quadratic term left)
    let (s16, s64) = (at(16384, "sparse"), at(65536, "sparse"));
    assert!(s64 / s16 > 3.9 && s64 / s16 < 5.0, "{s16} {s64}");
    let (d16, d64) = (at(16384, "dense"), at(65536, "dense"));
    assert!(d64 / d16 > 12.0, "{d16} {d64}");
    // block recomputation keeps far less at long context
    let recompute = |s: usize| {
        let (cfg, r) = tiny(&[
            &format!("train.seq_len={s}"),
            "train.activation_checkpointing=\"block\"",
        ]);
        token_bytes(&cfg, &r)
    };
    let (r16, r64) = (recompute(16384), recompute(65536));
    assert!(r16 < 0.8 * s16, "{r16} {s16}");
    // (its per-block peak holds HCA's dense S/128 softmax, quadratic but small beside dense CSA)
    assert!(r64 / r16 < 0.5 * d64 / d16, "{r16} {r64}");

    // A model of window-only layers is linear in seq_len.
    let window = ["model.compress_ratios=[0, 0, 0, 0]", "train.seq_len=1024"];
    let (cfg, r) = tiny(&window);
    let w1 = token_bytes(&cfg, &r);
    let (_, r) = tiny(&["model.compress_ratios=[0, 0, 0, 0]", "train.seq_len=4096"]);
    let w4 = token_bytes(&cfg, &r);
    assert!((w4 / w1 - 4.0).abs() < 0.01, "{w1} {w4}");
}

#[test]
fn activations_grow_with_vocab_layers_and_experts() {
    let base = {
        let (cfg, r) = tiny(&[]);
        token_bytes(&cfg, &r)
    };
    let with = |sets: &[&str]| {
        let (cfg, r) = tiny(sets);
        token_bytes(&cfg, &r)
    };
    // the head: [T, V] logits (shifted logits per head, held MTP logits, 3 backward transients)
    let (cfg, r) = tiny(&[]);
    let t = (r.train.micro_batch * r.train.seq_len) as f64;
    let mtp_t = (r.train.micro_batch * (r.train.seq_len - 1)) as f64;
    let grown = with(&["model.vocab_size=32768"]);
    let logits = (32768.0 - cfg.vocab_size as f64) * 4.0 * (4.0 * t + 2.0 * mtp_t);
    assert!(((grown - base) / logits - 1.0).abs() < 1e-6);
    // one more window-only layer
    assert!(
        with(&[
            "model.num_hidden_layers=4",
            "model.compress_ratios=[0, 4, 128, 0, 0]"
        ]) > base
    );
    // more experts: only the router and autodiff's bookkeeping grow (top-k dispatch)
    let (cfg16, r16) = tiny(&["model.n_routed_experts=16"]);
    assert!(activations(&cfg16, &r16).total() > activations(&cfg, &r).total());
}

#[test]
fn freezing_all_but_the_indexer_leaves_only_its_gradients_and_state() {
    let (cfg, full) = tiny(&[]);
    let (_, frozen) = tiny(&[
        "train.freeze=\"all-but-indexer\"",
        "train.attention=\"dense\"",
    ]);
    let (mut grads, mut state) = (0u64, 0u64);
    for spec in inventory(&cfg) {
        if spec.name.contains(".attn.indexer.") {
            let n: u64 = spec.shape.iter().map(|&d| d as u64).product();
            grads += 4 * n;
            state += 4
                * n
                * match route(&spec.name, spec.shape.len()).unwrap().optimizer() {
                    OptimizerKind::Muon => 1,
                    OptimizerKind::AdamW => 2,
                    OptimizerKind::Excluded => 0,
                };
        }
    }
    let e = estimate_training(&cfg, &frozen);
    assert!(grads > 0);
    assert_eq!((e.gradients, e.optimizer), (grads, state));
    let all = estimate_training(&cfg, &full);
    assert_eq!(e.weights, all.weights);
    assert!(all.gradients > 5 * e.gradients);
    // only the indexers' ops are recorded: far fewer activations
    assert!(4 * e.activations < all.activations);
    // indexer_weight = 0 under the freeze: nothing is differentiated at all
    let (_, none) = tiny(&[
        "train.freeze=\"all-but-indexer\"",
        "train.attention=\"dense\"",
        "loss.indexer_weight=0",
    ]);
    assert_eq!(param_bytes(&cfg, &none).gradients, 0);
}

#[test]
fn checkpoint_bytes_are_the_f32_model_plus_the_optimizer_state() {
    let cfg = ModelConfig::from_file("tests/fixtures/tiny_b/config.json".as_ref()).unwrap();
    let r = recipe("recipes/tiny-pretrain.toml", &["train.seq_len=512"]);
    // Independently: every inventory tensor as F32 (I64 `tid2eid`); per trained parameter an
    // i64 step plus one (Muon) or two (AdamW) f32 moments — everything but `gate.bias` and
    // `tid2eid` is trained here (indexer KL and MTP on, 512 tokens fill every compressor).
    let (mut model, mut optimizer) = (0u64, 0u64);
    for spec in inventory(&cfg) {
        let n: u64 = spec.shape.iter().map(|&d| d as u64).product();
        if spec.dtype == ReleaseDtype::I64 {
            model += 8 * n;
            continue;
        }
        model += 4 * n;
        let moments = match route(&spec.name, spec.shape.len()).unwrap().optimizer() {
            OptimizerKind::Muon => 1,
            OptimizerKind::AdamW => 2,
            OptimizerKind::Excluded => continue,
        };
        optimizer += 8 + 4 * n * moments;
    }
    let size = checkpoint_size(&cfg, &r);
    assert_eq!(size.model, model);
    assert_eq!(size.optimizer, optimizer);
    let total = checkpoint_bytes(&cfg, &r);
    assert_eq!(total, size.total());
    // headers, index, config, license, trainer state: small
    assert!(total > model + optimizer && total < model + optimizer + (1 << 20));
    // a real tiny-pretrain checkpoint (3 steps) measured 4 361 947 bytes (`du -sb`)
    let (cfg, r) = tiny(&[]);
    let est = checkpoint_bytes(&cfg, &r) as f64;
    assert!((est / 4_361_947.0 - 1.0).abs() < 0.01, "{est}");
    // tiny-pretrain: 60 steps, every 20, keep 2 → 2 kept + 1 being written
    assert_eq!(checkpoints_on_disk(&r), 3);
    assert_eq!(
        run_checkpoint_bytes(&cfg, &r),
        3 * checkpoint_bytes(&cfg, &r)
    );
    let (_, r) = tiny(&["checkpoint.keep_last=0", "train.steps=50"]);
    assert_eq!(checkpoints_on_disk(&r), 3, "steps 20, 40 and the last, 50");
    let (_, r) = tiny(&["checkpoint.every=0"]);
    assert_eq!(checkpoints_on_disk(&r), 1);
}

#[test]
fn v4_flash_numbers_are_sane() {
    let cfg = ModelConfig::preset("v4-flash").unwrap();
    let r = recipe("recipes/v4-flash-full-ft.toml", &[]);
    let e = estimate_training(&cfg, &r);
    println!("v4-flash full FT: {e}");
    // 284B parameters (plus the 6.6B MTP block) in f32
    let params = e.weights as f64 / 4.0;
    assert!((284e9..292e9).contains(&params), "{params}");
    // nearly everything is trained; Muon (1 moment) dominates, AdamW (2) on embed/head/norms
    assert!(e.gradients as f64 > 0.999 * e.weights as f64);
    let ratio = e.optimizer as f64 / e.gradients as f64;
    assert!((1.0..1.05).contains(&ratio), "{ratio}");
    // 16k tokens: terabytes of activations (dense [T, H, T/4] compressed scores in 21 CSA
    // layers), and FP4 QAT keeps a copy of the routed experts
    let a = activations(&cfg, &r);
    assert!(a.blocks > 1_000_000_000_000);
    assert!((a.expert_qat as f64 / e.weights as f64 - 0.97).abs() < 0.03);
    assert!(e.total() > e.weights + e.gradients + e.optimizer);
    // a checkpoint is the f32 model plus the optimizer state: 2.3 TB
    let ck = checkpoint_bytes(&cfg, &r) as f64;
    assert!((ck / (e.weights + e.optimizer) as f64 - 1.0).abs() < 0.01);
}

/// The LoRA accounting of V4-Flash (README "LoRA"): base at its stored size, adapters and
/// their AdamW state, for the shipped recipe and the f32-base and full-fine-tuning variants.
#[test]
fn v4_flash_lora_accounting() {
    let cfg = ModelConfig::preset("v4-flash").unwrap();
    let gb = |b: u64| b as f64 / 1e9;
    let lora = recipe("recipes/v4-flash-lora.toml", &[]);
    let p = param_bytes(&cfg, &lora);
    let base: u64 = inventory(&cfg)
        .iter()
        .map(|s| v4train::plan::params::base_bytes(s, lora.finetune.base))
        .sum();
    let adapters = p.gradients;
    println!(
        "v4-flash LoRA: base {:.1} GB stored, adapters {:.2} GB, their gradients {:.2} GB, \
         AdamW state {:.2} GB; per GPU of 8: {:.1} GB",
        gb(base),
        gb(adapters),
        gb(p.gradients),
        gb(p.optimizer),
        gb(p.weights + p.gradients + p.optimizer) / 8.0
    );
    // The release is ~160 GB: FP4 experts (half a byte + a scale byte per 32) and FP8 the rest
    // of the projections; embedding, head and norms stay f32 here.
    assert!((140.0..175.0).contains(&gb(base)), "{}", gb(base));
    assert_eq!(p.weights, base + adapters);
    assert_eq!(p.optimizer, 2 * adapters, "AdamW: two f32 moments");
    // rank 8 on 256 × 3 experts × 43 layers: 8 · (4096 + 2048) · 4 B per matrix ≈ 6.5 GB
    let experts = 43 * 256 * 3 * 8 * (4096 + 2048) * 4;
    assert!(
        adapters > experts && adapters < experts + 3_000_000_000,
        "{adapters}"
    );
    let f32_base = recipe("recipes/v4-flash-lora.toml", &["finetune.base=f32"]);
    let p32 = param_bytes(&cfg, &f32_base);
    println!(
        "v4-flash LoRA over an f32 base: weights {:.0} GB",
        gb(p32.weights)
    );
    assert!(p32.weights > 6 * base);
    // a LoRA checkpoint is the adapters and their state, not the model
    let ck = checkpoint_bytes(&cfg, &lora);
    assert!(ck < 4 * adapters && ck > 3 * adapters, "{ck}");
}

#[test]
fn absurd_sequences_are_estimated_without_overflow() {
    let (cfg, r) = tiny(&["train.seq_len=100000000"]);
    let e = estimate_training(&cfg, &r);
    println!("tiny-pretrain seq_len=1e8: {e}");
    assert!(e.total() > 1_000_000_000_000_000, "{e}");
    assert!(format!("{e}").contains(" GB"));
}

#[test]
fn display_is_one_line_that_adds_up() {
    let (cfg, r) = tiny(&[]);
    let e = estimate_training(&cfg, &r);
    let line = e.to_string();
    assert!(!line.contains('\n'));
    assert!(line.starts_with("weights ") && line.contains(" + activations "));
    assert!(
        line.ends_with(&format!("= {:.1} MB", e.total() as f64 / 1e6)),
        "{line}"
    );
    assert_eq!(
        e.total(),
        e.weights + e.gradients + e.optimizer + e.activations + e.runtime
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_machine_answers() {
    let mem = available_host_memory().expect("MemAvailable on Linux");
    assert!(mem > 1 << 20);
    let disk = available_disk(std::path::Path::new("runs/does/not/exist/yet")).unwrap();
    assert!(disk > 0);
}

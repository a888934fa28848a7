//! The training recipe: shipped recipes, `--set` overrides, located errors and defaults.

use std::path::PathBuf;

use v4train::recipe::{
    ActivationCheckpointing, Attention, CheckpointConfig, DataSource, Dtype, Freeze, Location,
    LogConfig, LossConfig, ModelSource, NanPolicy, Recipe, RecipeError, Resume, TrainConfig,
};

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(name)
}

fn sets(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Loads `text` as `recipe.toml`.
fn load(text: &str, overrides: &[&str]) -> Result<Recipe, RecipeError> {
    Recipe::from_str_named(text, "recipe.toml", &sets(overrides))
}

/// The error of `text` as displayed.
fn error(text: &str, overrides: &[&str]) -> String {
    match load(text, overrides) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = r#"[model]
preset = "v4-flash"

[train]
steps = 100
"#;

#[test]
fn tiny_pretrain_parses_and_validates() {
    let r = Recipe::load(shipped("tiny-pretrain.toml"), &[]).unwrap();
    let cfg = r
        .model
        .config
        .clone()
        .expect("a preset resolves at load time");
    assert_eq!(r.model.source, ModelSource::Preset("v4-flash".into()));
    assert_eq!(cfg.hidden_size, 64);
    assert_eq!(cfg.vocab_size, 256);
    assert_eq!(cfg.compress_ratios, vec![0, 4, 128, 0]);
    assert_eq!(cfg.num_hash_layers, 1);
    assert_eq!(cfg.n_routed_experts, 4);
    assert_eq!(cfg.num_experts_per_tok, 2);
    assert_eq!(r.model.resolve().unwrap(), cfg);
    assert!(matches!(r.data.source, DataSource::Synthetic(ref s) if s.seed == 1234));
    assert_eq!(r.train.steps, 60);
    assert_eq!(
        r.schedule.total_steps, 60,
        "schedule length follows train.steps"
    );
    assert_eq!(r.log.every, 1);
    assert_eq!(r.checkpoint.dir, PathBuf::from("runs/tiny-pretrain"));
}

/// The long-context recipe is tiny-pretrain's model at 16K tokens with V4's window, sparse CSA
/// over a top-64 of 4096 entries and block recomputation.
#[test]
fn tiny_long_parses_and_validates() {
    let r = Recipe::load(shipped("tiny-long.toml"), &[]).unwrap();
    let long = r.model.resolve().unwrap();
    let mut base = Recipe::load(shipped("tiny-pretrain.toml"), &[])
        .unwrap()
        .model
        .resolve()
        .unwrap();
    (base.sliding_window, base.index_topk) = (128, 64);
    assert_eq!(long, base);
    assert_eq!((r.train.seq_len, r.train.micro_batch), (16384, 1));
    assert_eq!(r.train.attention, Attention::Sparse);
    assert_eq!(
        r.train.activation_checkpointing,
        ActivationCheckpointing::Block
    );
    assert_eq!(r.train.indexer_chunk, 0);
}

#[test]
fn full_ft_parses_and_validates() {
    let r = Recipe::load(shipped("v4-flash-full-ft.toml"), &[]).unwrap();
    assert_eq!(
        r.model.source,
        ModelSource::Dir("checkpoints/DeepSeek-V4-Flash".into())
    );
    assert!(r.model.config.is_none());
    let DataSource::Text(data) = &r.data.source else {
        panic!("expected chat sources, got {:?}", r.data);
    };
    assert_eq!(data.seq_len, r.train.seq_len, "inherited from [train]");
    assert_eq!(data.batch_size, r.train.micro_batch);
    assert_eq!(data.sources[0].field, "messages");
    assert_eq!(r.train.dtype, Dtype::Bf16);
    assert!(r.train.expert_fp4_qat && r.train.fake_quant);
    assert_eq!(r.schedule.peak_lr, 2.7e-5);
    assert_eq!(r.schedule.total_steps, r.train.steps);
}

#[test]
fn set_overrides_apply() {
    let r = Recipe::load(
        shipped("tiny-pretrain.toml"),
        &sets(&["train.steps=5", "model.hidden_size=128", "train.dtype=bf16"]),
    )
    .unwrap();
    assert_eq!(r.train.steps, 5);
    assert_eq!(r.schedule.total_steps, 5);
    assert_eq!(r.model.config.unwrap().hidden_size, 128);
    assert_eq!(
        r.train.dtype,
        Dtype::Bf16,
        "bare words fall back to strings"
    );

    let r = load(
        BASE,
        &[
            "model.num_hidden_layers=2",
            "model.num_hash_layers=1",
            "model.compress_ratios=[4, 128, 0]",
        ],
    )
    .unwrap();
    assert_eq!(r.model.config.unwrap().compress_ratios, vec![4, 128, 0]);
    let r = load(BASE, &["optim.adamw.beta1=0.8", "log.jsonl=m.jsonl"]).unwrap();
    assert_eq!(r.optim.adamw.beta1, 0.8);
    assert_eq!(r.log.jsonl, Some(PathBuf::from("m.jsonl")));
    let r = load(BASE, &["checkpoint.resume=runs/x/step-10"]).unwrap();
    assert_eq!(r.checkpoint.resume, Resume::Path("runs/x/step-10".into()));
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = format!("{BASE}micro_btch = 2\n");
    let e = error(&text, &[]);
    assert!(
        e.starts_with("recipe.toml:6: [train] micro_btch is not a known key; expected one of"),
        "{e}"
    );
    let e = error("[model]\npreset = \"v4-flash\"\nhiden_size = 64\n", &[]);
    assert!(
        e.starts_with("recipe.toml:3: [model] hiden_size is not a known key"),
        "{e}"
    );
    let e = error(&format!("{BASE}\n[optim.adamw]\nbeta3 = 0.5\n"), &[]);
    assert!(
        e.starts_with("recipe.toml:8: [optim.adamw] beta3 is not a known key"),
        "{e}"
    );
    let e = error(&format!("{BASE}\n[trian]\nsteps = 1\n"), &[]);
    assert!(
        e.starts_with("recipe.toml:7: [trian] is not a known section"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let text = "[model]\npreset = \"v4-flash\"\n\n[train]\nmicro_batch = 1\nsteps = \"ten\"\n";
    let e = load(text, &[]).unwrap_err();
    assert_eq!(
        e.location(),
        Some(&Location::File {
            file: "recipe.toml".into(),
            line: 6
        })
    );
    assert_eq!(
        e.to_string(),
        "recipe.toml:6: [train] steps has the wrong type (invalid type: string \"ten\", expected u64)"
    );
    let e = error(
        "[model]\npreset = \"v4-flash\"\nhidden_size = \"big\"\n",
        &[],
    );
    assert!(
        e.starts_with("recipe.toml:3: [model] hidden_size has the wrong type"),
        "{e}"
    );
}

#[test]
fn invalid_value_names_file_line_and_key() {
    let text = "[model]\npreset = \"v4-flash\"\n\n[train]\nsteps = 10\n\nmicro_batch = 0\n";
    assert_eq!(
        error(text, &[]),
        "recipe.toml:7: [train] micro_batch must be ≥ 1, got 0"
    );
    let text = "[model]\npreset = \"v4-flash\"\n# comment\nhidden_size = 0\n";
    assert_eq!(
        error(text, &[]),
        "recipe.toml:4: [model] hidden_size must be ≥ 1, got 0"
    );
    let e = error(&format!("{BASE}dtype = \"f16\"\n"), &[]);
    assert!(
        e.starts_with("recipe.toml:6: [train] dtype is invalid (unknown variant `f16`"),
        "{e}"
    );
    let e = error(
        &format!("{BASE}\n[schedule]\nkind = \"cosine\"\nwarmup_steps = 500\n"),
        &[],
    );
    assert!(
        e.starts_with("recipe.toml:9: [schedule] warmup_steps is invalid"),
        "{e}"
    );
    let e = error(&format!("{BASE}freeze = \"all\"\n"), &[]);
    assert!(e.contains("[train] freeze"), "{e}");
    let e = error(&format!("{BASE}\n[loss]\nbalance_alpha = nan\n"), &[]);
    assert!(
        e.contains("[loss] balance_alpha must be a finite number ≥ 0, got NaN"),
        "{e}"
    );
    let e = error(&format!("{BASE}\n[loss]\nmtp_weight = -1.0\n"), &[]);
    assert_eq!(
        e,
        "recipe.toml:8: [loss] mtp_weight must be a finite number ≥ 0, got -1"
    );
    let e = error(
        &format!("{BASE}\n[data]\nkind = \"tokens\"\npath = \"t.bin\"\n"),
        &[],
    );
    assert!(
        e.starts_with("recipe.toml:9: [data] path must end in .safetensors or .npy"),
        "{e}"
    );
}

#[test]
fn syntax_error_names_the_line() {
    let e = load("[model]\npreset = \"v4-flash\"\nhidden_size = = 3\n", &[]).unwrap_err();
    assert!(matches!(e, RecipeError::Syntax { line: 3, .. }), "{e}");
}

#[test]
fn bad_overrides_name_the_override() {
    let e = error(BASE, &["train.stepz=5"]);
    assert!(
        e.starts_with("--set train.stepz=5: [train] stepz is not a known key"),
        "{e}"
    );
    let e = error(BASE, &["model.hiden_size=5"]);
    assert!(
        e.starts_with("--set model.hiden_size=5: [model] hiden_size is not a known key"),
        "{e}"
    );
    let e = error(BASE, &["nosuch.key=1"]);
    assert!(
        e.starts_with("--set nosuch.key=1: [nosuch] is not a known section"),
        "{e}"
    );
    assert_eq!(
        error(BASE, &["train.micro_batch=0"]),
        "--set train.micro_batch=0: [train] micro_batch must be ≥ 1, got 0"
    );
    // A file section with an unrelated override still blames the file.
    let e = error(
        "[model]\npreset = \"v4-flash\"\nhidden_size = 0\n",
        &["train.steps=3"],
    );
    assert!(e.starts_with("recipe.toml:3: [model] hidden_size"), "{e}");
    assert_eq!(
        error(BASE, &["train.steps"]),
        "--set train.steps: expected section.key=value"
    );
}

#[test]
fn defaults_are_as_documented() {
    let r = load("[model]\npreset = \"v4-pro\"\n", &[]).unwrap();
    assert_eq!(r.model.config.as_ref().unwrap().hidden_size, 7168);
    assert_eq!(
        r.train,
        TrainConfig {
            steps: 1000,
            micro_batch: 1,
            seq_len: 4096,
            grad_accum: 1,
            seed: 0,
            dtype: Dtype::F32,
            nan_policy: NanPolicy::Skip,
            attention: Attention::Sparse,
            fake_quant: false,
            expert_fp4_qat: false,
            freeze: Freeze::None,
            max_consecutive_skips: 10,
            skip_memory_check: false,
            activation_checkpointing: ActivationCheckpointing::None,
            indexer_chunk: 0,
        }
    );
    assert_eq!(
        r.loss,
        LossConfig {
            mtp_weight: 0.3,
            mtp_weight_late: 0.1,
            ignore_index: -100,
            indexer_weight: 1.0,
            balance_alpha: 1e-4,
            balance_bias_rate: 1e-3,
        }
    );
    assert_eq!(
        r.checkpoint,
        CheckpointConfig {
            dir: "runs/default".into(),
            every: 1000,
            keep_last: 3,
            resume: Resume::Auto,
            skip_space_check: false,
        }
    );
    assert_eq!(
        r.log,
        LogConfig {
            every: 10,
            tensorboard: Some("tb".into()),
            jsonl: Some("metrics.jsonl".into()),
        }
    );
    // Log sinks live in the run directory unless absolute; `false` turns one off.
    let run = std::path::Path::new("runs/x");
    assert_eq!(r.log.jsonl_path(run), Some("runs/x/metrics.jsonl".into()));
    let r = load(
        "[model]\npreset = \"v4-pro\"\n[log]\njsonl = \"/abs/m.jsonl\"\ntensorboard = false\n",
        &[],
    )
    .unwrap();
    assert_eq!(r.log.jsonl_path(run), Some("/abs/m.jsonl".into()));
    assert_eq!(r.log.tensorboard_path(run), None);
    assert!(error("[model]\npreset = \"v4-pro\"\n[log]\njsonl = 3\n", &[]).contains("[log] jsonl"));
    assert!(
        matches!(r.data.source, DataSource::Synthetic(ref s) if s.seed == 0 && s.vocab.is_none())
    );
    assert!(r.data.sample_masking);
    assert_eq!(r.optim, v4_optim::OptimConfig::default());
    let s = &r.schedule;
    assert_eq!(s.kind, v4_optim::ScheduleKind::Wsd);
    assert_eq!((s.peak_lr, s.min_lr_ratio), (2.7e-4, 0.1));
    assert_eq!(
        (s.total_steps, s.warmup_steps, s.decay_steps),
        (1000, 100, 100)
    );
    let e = error("[train]\nsteps = 1\n", &[]);
    assert!(
        e.starts_with("recipe.toml:1: [model] needs `preset` or `dir`"),
        "{e}"
    );
}

#[test]
fn synthetic_vocab_must_fit_the_model() {
    let text = "[model]\npreset = \"v4-flash\"\nvocab_size = 256\n\n[data]\nvocab = 300\n";
    assert_eq!(
        error(text, &[]),
        "recipe.toml:6: [data] vocab must be in 1..=256 (the model's vocab_size), got 300"
    );
}

#[test]
fn nested_keys_are_located() {
    let text = "[model]\npreset = \"v4-flash\"\n\n[data]\nmode = \"sft\"\n\n[[data.sources]]\npath = \"a.jsonl\"\n\n[[data.sources]]\npath = \"b.jsonl\"\nweight = -1.0\n";
    assert_eq!(
        error(text, &[]),
        "recipe.toml:12: [data.sources[1]] weight must be a positive number"
    );
    let text = "[model]\npreset = \"v4-flash\"\nrope_scaling = { factor = 0.5 }\n";
    assert_eq!(
        error(text, &[]),
        "recipe.toml:3: [model.rope_scaling] factor = 0.5 must be ≥ 1"
    );
    let e = error(
        "[model]\npreset = \"v4-flash\"\nrope_scaling.fctor = 2\n",
        &[],
    );
    assert!(e.starts_with("recipe.toml:3: [model.rope_scaling] fctor is not a known key; expected one of beta_fast"), "{e}");
    assert_eq!(
        error("[model]\npreset = \"v5\"\n", &[]),
        "recipe.toml:2: [model] preset must be \"v4-flash\" or \"v4-pro\", got \"v5\""
    );
    let text = "[model]\npreset = \"v4-flash\"\nnum_hidden_layers = 2\ncompress_ratios = [\n  0,\n  4,\n  8,\n]\n";
    let e = error(text, &["model.num_hash_layers=1"]);
    assert!(
        e.starts_with("recipe.toml:7: [model] compress_ratios[2] = 8; V4 supports only"),
        "{e}"
    );
    let e = error("[model]\ndir = \"ckpt\"\nhidden_size = 3\n", &[]);
    assert!(
        e.starts_with("recipe.toml:3: [model] hidden_size cannot be overridden"),
        "{e}"
    );
}

#[test]
fn lora_sections_are_checked() {
    let lora = "[model]\ndir = \"base\"\n[finetune]\nmode = \"lora\"\n[lora]\nrank = 4\n";
    let r = Recipe::from_str_named(lora, "recipe.toml", &[]).unwrap();
    assert_eq!(r.lora.as_ref().map(|l| l.rank), Some(4));
    let e = error(
        "[model]\npreset = \"v4-flash\"\n[finetune]\nmode = \"lora\"\n",
        &[],
    );
    assert!(
        e.contains("[finetune] mode") && e.contains("[model] dir"),
        "{e}"
    );
    let e = error("[model]\ndir = \"base\"\n[lora]\nrank = 4\n", &[]);
    assert!(e.contains("[lora]") && e.contains("mode = \"lora\""), "{e}");
    let e = error(lora, &["lora.rank=0"]);
    assert!(e.contains("[lora]") && e.contains("rank"), "{e}");
    let e = error(
        lora,
        &[
            "lora.dropout=0.1",
            "train.activation_checkpointing=\"block\"",
        ],
    );
    assert!(e.contains("[lora] dropout must be 0"), "{e}");
    let e = error(lora, &["lora.targets=[]"]);
    assert!(e.contains("targets"), "{e}");
}

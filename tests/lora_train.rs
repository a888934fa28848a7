//! LoRA training end to end (`[finetune] mode = "lora"`) on bases made here (`V4Model::init`
//! written in the FP8/FP4 release layout): the adapters lower the held-out loss of the tiny chat
//! data; the base stays bit-identical on disk and in memory; routed-expert adapters get gradients
//! exactly for the experts that received tokens; fresh adapters start at the base bit for bit
//! (stored and f32 base); resume is bit-exact (with adapter dropout too); resuming on another
//! base fails naming the content hash; the progress line shows `trainable X/Y`.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use v4_checkpoints::{write_checkpoint, ModelDir, OutputDtype, WriteOptions};
use v4_model::lora::{is_adapter, LoraBuilder};
use v4_model::named::{NamedParam, Value};
use v4_model::{inventory, MapSource, ModelConfig, V4Model, WeightSource};
use v4_optim::V4Optimizer;
use v4train::adapter_files::adapter_tensors;
use v4train::recipe::Recipe;
use v4train::train::checkpoint::model_tensors;
use v4train::train::eval::{evaluate, EvalOptions, EvalReport};
use v4train::train::loss::cross_entropy;
use v4train::train::model_setup;
use v4train::train::objectives::forward_options;
use v4train::train::step::{train_step, StepConfig};
use v4train::train::{run, BatchSource, RunOptions};

type AD = Autodiff<Flex>;

/// Held by tests that draw from the backend's (process-wide) generator: adapter dropout.
static BACKEND_RNG: Mutex<()> = Mutex::new(());

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The model of a repository recipe.
fn recipe_model(file: &str) -> ModelConfig {
    Recipe::load(repo(file), &[])
        .unwrap()
        .model
        .resolve()
        .unwrap()
}

/// A fresh scratch directory (removed first).
fn scratch(name: &str) -> PathBuf {
    let d = common::tmp(&format!("lora-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `V4Model::init(cfg, seed)` into `dir` in the release layout (FP8 weights, FP4
/// routed experts), as `v4train export --dtype fp8` would.
fn make_base(cfg: &ModelConfig, seed: u64, dir: &Path) {
    let model = V4Model::<AD>::init(cfg, seed, &Default::default()).unwrap();
    let opts = WriteOptions {
        dtype: OutputDtype::Fp8,
        force: true,
        ..WriteOptions::default()
    };
    write_checkpoint(dir, cfg, &inventory(cfg), &opts, model_tensors(&model)).unwrap();
}

/// `[data]` of the mechanics tests: the tiny pretrain model's synthetic chain.
const SYNTHETIC: &str = "[data]\nkind = \"synthetic\"\nseed = 77";

/// A LoRA recipe (rank 4) on the base `base` with run directory `run`, `data` (a `[data]`
/// section, 64 tokens × 2 rows per step) and `sets` overrides.
fn lora_recipe(base: &Path, run: &Path, steps: u64, data: &str, sets: &[String]) -> Recipe {
    let text = format!(
        r#"
[model]
dir = "{base}"
[finetune]
mode = "lora"
[lora]
rank = 4
alpha = 8
{data}
[train]
steps = {steps}
micro_batch = 2
seq_len = 64
seed = 0
fake_quant = false
[optim]
max_grad_norm = 1.0
[optim.weight_decay]
adapter = 0.0
[schedule]
kind = "constant"
peak_lr = 1e-2
warmup_steps = 0
[checkpoint]
dir = "{run}"
every = 2
keep_last = 0
[log]
every = 1
"#,
        base = base.display(),
        run = run.display()
    );
    Recipe::from_str_named(&text, "lora-test.toml", sets).unwrap()
}

/// Every file of `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The non-adapter tensors of `model` in release names, as bits (stored weights dequantized).
fn base_bits<B: burn::tensor::backend::Backend>(model: &V4Model<B>) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    model.visit_named(&mut |name, p| {
        if !is_adapter(&name) {
            for (n, _, v) in p.release_tensors(&name, &Value) {
                out.push((n, v.iter().map(|x| x.to_bits()).collect()));
            }
        }
    });
    out.sort();
    out
}

/// The adapter tensors of `model`, as bits.
fn adapter_bits<B: burn::tensor::backend::Backend>(model: &V4Model<B>) -> Vec<Vec<u32>> {
    adapter_tensors(model)
        .into_iter()
        .map(|(_, _, v)| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// The base `dir` loaded plainly (weights dequantized to f32, no adapters).
fn plain(dir: &Path) -> V4Model<AD> {
    let src = ModelDir::open(dir).unwrap();
    V4Model::load(src.config(), &src as &dyn WeightSource, &Default::default()).unwrap()
}

fn eval(recipe: &Recipe, checkpoint: Option<&Path>) -> EvalReport {
    let opts = EvalOptions {
        checkpoint: checkpoint.map(Path::to_path_buf),
        batches: None,
    };
    evaluate::<AD>(recipe, &opts, &Default::default()).unwrap()
}

/// The tiny chat data of `file` (relative to the repository), as tiny-sft reads it.
fn chat_data(file: &str) -> String {
    format!(
        r#"[data]
mode = "sft"
sft_packing = true
shuffle_block = 64
bad_rows = "skip"
tokenizer = "{tok}"
[[data.sources]]
path = "{path}"
field = "messages"
chat = {{ thinking_mode = "thinking", drop_thinking = true }}"#,
        tok = repo("data/tokenizer/deepseek-v4").display(),
        path = repo(file).display()
    )
}

#[test]
fn lora_lowers_the_held_out_chat_loss() {
    // tiny-sft's model (V4's full vocabulary, so every tokenizer id fits) at 256 tokens.
    let dir = scratch("chat");
    let (base, runs) = (dir.join("base"), dir.join("run"));
    make_base(&recipe_model("recipes/tiny-sft.toml"), 0, &base);
    let steps = 12;
    let sets = [
        "train.micro_batch=1".to_string(),
        "train.seq_len=256".into(),
        "lora.rank=8".into(),
        "lora.alpha=16".into(),
        format!("checkpoint.every={steps}"),
    ];
    let train_data = chat_data("recipes/data/tiny-chat-train.jsonl");
    let recipe = lora_recipe(&base, &runs, steps, &train_data, &sets);
    let held_data = chat_data("recipes/data/tiny-chat-heldout.jsonl");
    let held = lora_recipe(&base, &runs, steps, &held_data, &sets);

    let before = eval(&held, None);
    run::<AD>(&recipe, &RunOptions::default(), &Default::default()).unwrap();
    let after = eval(&held, Some(&runs.join(format!("step-{steps:06}"))));
    eprintln!(
        "held-out loss {:.4} → {:.4} over {} tokens ({} batches)",
        before.loss, after.loss, after.tokens, after.batches
    );
    assert_eq!(
        (before.tokens, before.batches),
        (after.tokens, after.batches)
    );
    assert!(
        after.loss < before.loss - 0.5,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A few train steps of `recipe`'s LoRA model inside this process (fresh adapters).
fn steps_in_process(recipe: &Recipe, steps: u64) -> (V4Model<AD>, V4Model<AD>) {
    let dev = Default::default();
    let cfg = recipe.model.resolve().unwrap();
    let start = model_setup::build::<AD>(recipe, &cfg, None, &dev)
        .unwrap()
        .model;
    let mut model = start.clone();
    let mut data = BatchSource::open(recipe, &cfg, None).unwrap();
    let mut opt = V4Optimizer::new(&recipe.optim).unwrap();
    let step_cfg = StepConfig {
        recipe,
        opts: forward_options(recipe),
    };
    for step in 0..steps {
        let batches = vec![data.next(step, 0).unwrap()];
        let (next, r) = train_step(
            model,
            &mut opt,
            &batches,
            &step_cfg,
            (step, 1e-2, 0.3),
            &dev,
        )
        .unwrap();
        assert!(r.applied && r.loss.is_finite());
        model = next;
    }
    (start, model)
}

#[test]
fn the_base_stays_bit_identical_on_disk_and_in_memory() {
    let dir = scratch("frozen");
    let base = dir.join("base");
    make_base(&recipe_model(common::RECIPE), 1, &base);
    let on_disk = files(&base);
    let reference = base_bits(&plain(&base));
    for mode in ["stored", "f32"] {
        let runs = dir.join(format!("run-{mode}"));
        let sets = [format!("finetune.base=\"{mode}\"")];
        let recipe = lora_recipe(&base, &runs, 4, SYNTHETIC, &sets);

        // In one process: the base tensors before and after train steps.
        let (start, trained) = steps_in_process(&recipe, 3);
        assert!(
            base_bits(&start) == reference,
            "{mode}: the loaded base differs"
        );
        assert!(
            base_bits(&trained) == reference,
            "{mode}: a train step changed the base"
        );
        assert!(
            adapter_bits(&start) != adapter_bits(&trained),
            "{mode}: adapters never moved"
        );

        // Through the trainer: the files, then base + the last checkpoint's adapters.
        run::<AD>(&recipe, &RunOptions::default(), &Default::default()).unwrap();
        assert!(files(&base) == on_disk, "{mode}: the base files changed");
        let cfg = recipe.model.resolve().unwrap();
        let ckpt = runs.join("step-000004");
        let resumed =
            model_setup::build::<AD>(&recipe, &cfg, Some(&ckpt), &Default::default()).unwrap();
        assert!(
            base_bits(&resumed.model) == reference,
            "{mode}: base + adapters differ"
        );
        assert!(adapter_bits(&resumed.model) != adapter_bits(&start));
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn fresh_adapters_start_at_the_base_bit_for_bit() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("start");
    let base = dir.join("base");
    make_base(&recipe_model(common::RECIPE), 2, &base);
    let ids: Vec<i64> = (0..2 * 48).map(|i| (i * 37 + 11) % 256).collect();
    // Main and MTP logits, as bits, on the training backend (adapter dropout active) and
    // without autodiff (evaluation). The two differ in rounding (~1e-6), so each is compared
    // with its own kind.
    let logits = |model: &V4Model<AD>, recipe: &Recipe| -> [Vec<u32>; 2] {
        let opts = forward_options(recipe);
        let bits = |l: Vec<f32>, m: Vec<f32>| l.iter().chain(&m).map(|x| x.to_bits()).collect();
        let data = TensorData::new(ids.clone(), [2, 48]);
        let out = model.forward(
            Tensor::from_data(data.clone(), &Default::default()),
            opts,
            false,
            true,
        );
        let train = bits(
            v4_model::util::to_vec(out.logits.inner()),
            v4_model::util::to_vec(out.mtp_logits[0].clone().inner()),
        );
        let out = model.valid().forward(
            Tensor::from_data(data, &Default::default()),
            opts,
            false,
            true,
        );
        let eval = bits(
            v4_model::util::to_vec(out.logits),
            v4_model::util::to_vec(out.mtp_logits[0].clone()),
        );
        [train, eval]
    };
    let want_recipe = lora_recipe(&base, &dir.join("run"), 1, SYNTHETIC, &[]);
    let [want, want_eval] = logits(&plain(&base), &want_recipe);
    for mode in ["stored", "f32"] {
        let sets = [
            format!("finetune.base=\"{mode}\""),
            "lora.dropout=0.1".into(),
        ];
        let recipe = lora_recipe(&base, &dir.join("run"), 1, SYNTHETIC, &sets);
        let cfg = recipe.model.resolve().unwrap();
        let m = model_setup::build::<AD>(&recipe, &cfg, None, &Default::default()).unwrap();
        let [train, eval] = logits(&m.model, &recipe);
        assert!(
            train == want,
            "{mode}: step-0 training logits differ from the base"
        );
        assert!(
            eval == want_eval,
            "{mode}: step-0 evaluation logits differ from the base"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The base `base` with adapters whose `A` and `B` are random (uniform ±1/√in and ±0.05), as a
/// resumed run would load them (stored base).
fn random_adapters(recipe: &Recipe, base: &Path) -> V4Model<AD> {
    let (dev, src) = (Default::default(), ModelDir::open(base).unwrap());
    let spec = recipe.lora.as_ref().unwrap().spec(recipe.train.seed);
    let fresh = LoraBuilder {
        spec: &spec,
        saved: None,
    };
    let fresh = V4Model::<AD>::load_adapted(src.config(), &src, Some(&fresh), true, &dev).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut values = MapSource::default();
    for (name, shape, v) in adapter_tensors(&fresh) {
        let amp = if name.ends_with("lora_A.weight") {
            1.0 / (*shape.last().unwrap() as f32).sqrt()
        } else {
            0.05
        };
        let v = v.iter().map(|_| rng.random_range(-amp..amp)).collect();
        values.floats.insert(name, (shape, v));
    }
    let saved = LoraBuilder {
        spec: &spec,
        saved: Some(&values),
    };
    V4Model::<AD>::load_adapted(src.config(), &src, Some(&saved), true, &dev).unwrap()
}

#[test]
fn routed_expert_adapters_get_gradients_exactly_where_tokens_went() {
    let dir = scratch("experts");
    let base = dir.join("base");
    make_base(&recipe_model(common::RECIPE), 3, &base);
    let recipe = lora_recipe(&base, &dir.join("run"), 1, SYNTHETIC, &[]);
    let model = random_adapters(&recipe, &base);
    let (mut idle, mut busy) = (0, 0);
    // Three tokens route to at most 6 of each layer's 4 experts × 2 slots: several id triples
    // leave experts idle.
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<i64> = (0..4).map(|_| rng.random_range(0..256)).collect();
        let dev = Default::default();
        let input =
            Tensor::<AD, 2, Int>::from_data(TensorData::new(ids[..3].to_vec(), [1, 3]), &dev);
        let labels =
            Tensor::<AD, 2, Int>::from_data(TensorData::new(ids[1..].to_vec(), [1, 3]), &dev);
        let out = model.forward(input, forward_options(&recipe), false, false);
        let (loss, _) = cross_entropy(out.logits, labels, -100);
        let grads = loss.backward();
        let mut checked = 0;
        model.visit_named(&mut |name, p| {
            let NamedParam::Stacked(t) = p else { return };
            let Some((layer, _)) = name
                .strip_prefix("layers.")
                .and_then(|r| r.split_once(".ffn.experts."))
            else {
                return;
            };
            let load = &out.aux[layer.parse::<usize>().unwrap()].expert_load;
            let g = t
                .val()
                .grad(&grads)
                .expect("a gradient for every expert adapter");
            let [e, _, _] = g.dims();
            assert_eq!(e, load.len(), "{name}");
            for (x, &n) in load.iter().enumerate() {
                let slice = g.clone().narrow(0, x, 1);
                let nonzero = v4_model::util::to_vec(slice).iter().any(|v| *v != 0.0);
                assert_eq!(
                    nonzero,
                    n > 0,
                    "{name} expert {x}: load {n}, gradient nonzero {nonzero}"
                );
                if n > 0 {
                    busy += 1
                } else {
                    idle += 1
                }
            }
            checked += 1;
        });
        // 3 layers × (w1, w2, w3) × (A, B)
        assert_eq!(checked, 18);
    }
    eprintln!("expert adapter slices checked: {busy} with tokens, {idle} idle");
    assert!(idle > 0 && busy > 0);
    std::fs::remove_dir_all(dir).ok();
}

/// The tensors of a safetensors file: (name, shape, bytes), by name (the metadata's key order
/// is not fixed).
fn tensors(file: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// Runs `recipe`'s model for `steps` steps in `run` (schedule over 6 steps either way).
fn train(base: &Path, run_dir: &Path, steps: u64, sets: &[String]) {
    let mut sets = sets.to_vec();
    sets.push("schedule.total_steps=6".into());
    let recipe = lora_recipe(base, run_dir, steps, SYNTHETIC, &sets);
    run::<AD>(&recipe, &RunOptions::default(), &Default::default()).unwrap();
}

#[test]
fn resume_is_bit_exact_with_and_without_dropout() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("resume");
    let base = dir.join("base");
    make_base(&recipe_model(common::RECIPE), 4, &base);
    let mut curves = Vec::new();
    for dropout in ["0.0", "0.1"] {
        let sets = [format!("lora.dropout={dropout}")];
        let (a, b) = (
            dir.join(format!("a-{dropout}")),
            dir.join(format!("b-{dropout}")),
        );
        train(&base, &a, 6, &sets);
        train(&base, &b, 3, &sets);
        train(&base, &b, 6, &sets);
        let (la, lb) = (common::losses(&a), common::losses(&b));
        assert_eq!(la.len(), 6);
        assert!(
            la.iter()
                .zip(&lb)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
                && la.len() == lb.len(),
            "dropout {dropout}: straight {la:?}\nresumed {lb:?}"
        );
        for f in ["adapters.safetensors", "optimizer.safetensors"] {
            let read = |d: &Path| tensors(&d.join("step-000006").join(f));
            assert!(
                read(&a) == read(&b),
                "dropout {dropout}: {f} differs after resume"
            );
        }
        curves.push(la);
    }
    // Dropout acts from step 2 (B is zero at step 1).
    assert_eq!(curves[0][0], curves[1][0]);
    assert!(curves[0][1..] != curves[1][1..], "dropout changed nothing");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn resuming_on_another_base_fails_naming_the_content_hash() {
    let dir = scratch("other-base");
    let (base, other) = (dir.join("base"), dir.join("other"));
    make_base(&recipe_model(common::RECIPE), 5, &base);
    let runs = dir.join("run");
    train(&base, &runs, 2, &[]);
    // The same base with one byte of its weights changed.
    std::fs::create_dir_all(&other).unwrap();
    for (name, mut bytes) in files(&base) {
        if name.ends_with(".safetensors") {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
        std::fs::write(other.join(name), bytes).unwrap();
    }
    let recipe = lora_recipe(&other, &runs, 4, SYNTHETIC, &[]);
    let e = run::<AD>(&recipe, &RunOptions::default(), &Default::default()).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("content hash") && e.contains("step-000002"),
        "{e}"
    );
    let opts = EvalOptions {
        checkpoint: Some(runs.join("step-000002")),
        batches: Some(1),
    };
    let e = evaluate::<AD>(&recipe, &opts, &Default::default()).unwrap_err();
    assert!(format!("{e:#}").contains("content hash"), "{e:#}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn cli_progress_shows_trainable_and_eval_reports() {
    let dir = scratch("cli");
    let base = dir.join("base");
    make_base(&recipe_model(common::RECIPE), 6, &base);
    let recipe = dir.join("lora.toml");
    let text = lora_recipe(&base, &dir.join("run"), 2, SYNTHETIC, &[])
        .origin
        .text;
    std::fs::write(&recipe, text).unwrap();
    let o = common::bin().arg(&recipe).output().unwrap();
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    // `step 2/2 … trainable 65.3K/1.23M …`
    let line = err
        .lines()
        .find(|l| l.starts_with("step 2/2"))
        .expect("a step line");
    let counts = line
        .split(" trainable ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|c| c.split_once('/'))
        .unwrap_or_else(|| panic!("no `trainable X/Y` in {line:?}"));
    assert!(!counts.0.is_empty() && counts.0 != counts.1, "{line}");

    let eval = |extra: &[&str]| {
        let o = common::bin()
            .arg("eval")
            .arg(&recipe)
            .args(["--batches", "3"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let line = eval(&[]);
    assert!(
        line.starts_with("eval: loss ") && line.trim_end().ends_with("over 384 tokens (3 batches)"),
        "{line}"
    );
    let ckpt = dir.join("run/step-000002");
    let json: serde_json::Value =
        serde_json::from_str(&eval(&["--json", "--checkpoint", ckpt.to_str().unwrap()])).unwrap();
    assert_eq!(
        (json["tokens"].as_u64(), json["batches"].as_u64()),
        (Some(384), Some(3))
    );
    assert!(json["loss"].as_f64().is_some_and(f64::is_finite), "{json}");
    let o = common::bin()
        .args(["eval", recipe.to_str().unwrap(), "--checkpoint"])
        .arg(dir.join("nowhere"))
        .output()
        .unwrap();
    assert!(!o.status.success() && common::stderr(&o).contains("--checkpoint"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_shipped_lora_recipe_parses_with_its_held_out_override() {
    // The override of recipes/tiny-lora.toml's held-out comment.
    let held = "data.sources=[{ path = \"recipes/data/tiny-chat-heldout.jsonl\", field = \
                \"messages\", chat = { thinking_mode = \"thinking\", drop_thinking = true } }]";
    for sets in [vec![], vec![held.to_string()]] {
        let r = Recipe::load(repo("recipes/tiny-lora.toml"), &sets).unwrap();
        assert!(r.lora.is_some());
        let v4train::recipe::DataSource::Text(d) = &r.data.source else {
            panic!("tiny-lora reads chat data")
        };
        let want = if sets.is_empty() { "train" } else { "heldout" };
        assert_eq!(d.sources.len(), 1);
        assert!(d.sources[0]
            .path
            .ends_with(&format!("tiny-chat-{want}.jsonl")));
    }
}

//! The trainer's data: token files (safetensors / npy give identical losses; bad files are
//! errors naming the file), fine-tuning from a `[model] dir` (the first loss is the loaded
//! model's), text / chat sources (a resumed run sees exactly the batches of an uninterrupted one,
//! at the batch-source level and through the binary) and `recipes/tiny-sft.toml` end to end.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::process::Command;
use v4_checkpoints::ModelDir;
use v4_model::{ForwardOptions, V4Model, WeightSource};
use v4train::recipe::Recipe;
use v4train::train::checkpoint::DATA_CURSOR;
use v4train::train::loss::cross_entropy;
use v4train::train::BatchSource;

type AD = Autodiff<Flex>;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("v4train-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `ids` as a little-endian `.npy` file of `descr` (`<i8`, `<u2`, …) and `shape`.
fn write_npy(path: &Path, descr: &str, shape: &str, bytes: &[u8]) {
    let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pad = 64 - (10 + h.len() + 1) % 64;
    let header = format!("{h}{}\n", " ".repeat(pad));
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    f.extend((header.len() as u16).to_le_bytes());
    f.extend(header.as_bytes());
    f.extend(bytes);
    std::fs::write(path, f).unwrap();
}

fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn le<T: Copy, const N: usize>(xs: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    xs.iter().flat_map(|&x| f(x)).collect()
}

/// A learnable token stream over `0..256`.
fn tokens(n: usize) -> Vec<i64> {
    let mut t = 7i64;
    (0..n)
        .map(|_| {
            let c = t;
            t = (5 * t + 3) % 256;
            c
        })
        .collect()
}

/// tiny-pretrain (vocab 256) reading `[data] kind = "tokens"` from `path`, logging into `dir`.
fn token_recipe(path: &Path, dir: &Path, extra: &[&str]) -> Recipe {
    let file = root().join("recipes/tiny-pretrain.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut sets: Vec<String> = [
        "data.kind=tokens".to_string(),
        format!("data.path={}", path.display()),
        "train.steps=2".into(),
        "train.seq_len=32".into(),
        "schedule.warmup_steps=1".into(),
        "checkpoint.every=0".into(),
        "checkpoint.resume=never".into(),
        format!("checkpoint.dir={}", dir.display()),
        format!("log.jsonl={}/metrics.jsonl", dir.display()),
        format!("log.tensorboard={}/tb", dir.display()),
    ]
    .to_vec();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Recipe::from_str_named(&text, &file.display().to_string(), &sets).unwrap()
}

fn run_tokens(path: &Path, extra: &[&str]) -> anyhow::Result<Vec<f64>> {
    let dir = tmp(&format!(
        "tok-{}",
        path.file_name().unwrap().to_string_lossy()
    ));
    let recipe = token_recipe(path, &dir, extra);
    let out = v4train::train::run::<AD>(&recipe, &Default::default(), &Default::default());
    std::fs::remove_dir_all(dir).ok();
    out.map(|s| s.losses)
}

#[test]
fn token_file_formats_give_identical_losses() {
    let dir = tmp("formats");
    let ids = tokens(2 * 129); // 8 windows of 33 tokens with stride 32
    let i32s: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
    let u16s: Vec<u16> = ids.iter().map(|&x| x as u16).collect();
    let u32s: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let st = dir.join("ids.safetensors");
    write_safetensors(
        &st,
        &[(
            "ids",
            Dtype::I32,
            vec![ids.len()],
            le(&i32s, i32::to_le_bytes),
        )],
    );
    let st2 = dir.join("two.safetensors");
    write_safetensors(
        &st2,
        &[
            (
                "other",
                Dtype::I64,
                vec![2],
                le(&[1i64, 2], i64::to_le_bytes),
            ),
            (
                "tokens",
                Dtype::U32,
                vec![2, 129],
                le(&u32s, u32::to_le_bytes),
            ),
        ],
    );
    let n64 = dir.join("ids64.npy");
    write_npy(
        &n64,
        "<i8",
        &format!("({},)", ids.len()),
        &le(&ids, i64::to_le_bytes),
    );
    let n16 = dir.join("ids16.npy");
    write_npy(&n16, "<u2", "(2, 129)", &le(&u16s, u16::to_le_bytes));

    let want = run_tokens(&st, &[]).unwrap();
    assert_eq!(want.len(), 2);
    assert!(want.iter().all(|l| l.is_finite()));
    assert_eq!(run_tokens(&n64, &[]).unwrap(), want, "npy int64");
    assert_eq!(run_tokens(&n16, &[]).unwrap(), want, "npy uint16 [2, 129]");
    assert_eq!(
        run_tokens(&st2, &["data.tensor=tokens"]).unwrap(),
        want,
        "safetensors U32 [2, 129] by name"
    );
    // another window order gives other batches
    assert_ne!(run_tokens(&st, &["data.seed=99"]).unwrap(), want);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_token_files_are_errors_naming_the_file() {
    let dir = tmp("bad-tokens");
    let ids = tokens(40);
    let f32s: Vec<f32> = ids.iter().map(|&x| x as f32).collect();
    let mut oov: Vec<i64> = ids.clone();
    oov[5] = 300;
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        {
            let p = dir.join("float.safetensors");
            write_safetensors(
                &p,
                &[("ids", Dtype::F32, vec![40], le(&f32s, f32::to_le_bytes))],
            );
            (p, vec![], "dtype F32")
        },
        {
            let p = dir.join("float.npy");
            write_npy(&p, "<f4", "(40,)", &le(&f32s, f32::to_le_bytes));
            (p, vec![], "\"<f4\"")
        },
        {
            let p = dir.join("short.npy");
            write_npy(&p, "<i8", "(20,)", &le(&ids[..20], i64::to_le_bytes));
            (p, vec![], "holds 20 tokens, too few")
        },
        {
            let p = dir.join("truncated.npy");
            write_npy(&p, "<i8", "(40,)", &le(&ids[..30], i64::to_le_bytes));
            (p, vec![], "truncated")
        },
        {
            let p = dir.join("oov.npy");
            write_npy(&p, "<i8", "(40,)", &le(&oov, i64::to_le_bytes));
            (p, vec![], "token at offset 5 is 300")
        },
        {
            let p = dir.join("named.safetensors");
            write_safetensors(
                &p,
                &[("ids", Dtype::I64, vec![40], le(&ids, i64::to_le_bytes))],
            );
            (p, vec!["data.tensor=tokens"], "no tensor \"tokens\"")
        },
        {
            let p = dir.join("two.safetensors");
            write_safetensors(
                &p,
                &[
                    ("a", Dtype::I64, vec![40], le(&ids, i64::to_le_bytes)),
                    ("b", Dtype::I64, vec![40], le(&ids, i64::to_le_bytes)),
                ],
            );
            (p, vec![], "[data] tensor")
        },
        {
            let p = dir.join("garbage.safetensors");
            std::fs::write(&p, b"not a safetensors file at all").unwrap();
            (p, vec![], "not a valid safetensors file")
        },
        (dir.join("missing.npy"), vec![], "[data] path"),
    ];
    for (path, extra, want) in cases {
        let err = format!("{:#}", run_tokens(&path, &extra).unwrap_err());
        assert!(
            err.contains(&path.display().to_string()) && err.contains(want),
            "{}: {err}",
            path.display()
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn fine_tuning_starts_from_the_model_dir_weights() {
    let dir = tmp("finetune");
    let s = 64;
    let ids = tokens(s + 1); // exactly one window, so the batch is known
    let data = dir.join("one.npy");
    write_npy(
        &data,
        "<i8",
        &format!("({},)", s + 1),
        &le(&ids, i64::to_le_bytes),
    );
    let text = format!(
        "[model]\ndir = \"tests/fixtures/tiny_a\"\n\
         [data]\nkind = \"tokens\"\npath = \"{}\"\n\
         [train]\nsteps = 2\nmicro_batch = 1\nseq_len = {s}\n\
         [schedule]\nkind = \"constant\"\nwarmup_steps = 0\npeak_lr = 1e-3\n\
         [checkpoint]\ndir = \"{}\"\nevery = 0\nresume = \"never\"\n",
        data.display(),
        dir.display()
    );
    let recipe = Recipe::from_str_named(&text, "finetune.toml", &[]).unwrap();
    let dev = Default::default();
    let summary = v4train::train::run::<AD>(&recipe, &Default::default(), &dev).unwrap();
    assert_eq!(summary.losses.len(), 2);

    // The loss of tiny_a itself on that window, computed independently.
    let cfg = recipe.model.resolve().unwrap();
    let src = ModelDir::open(root().join("tests/fixtures/tiny_a")).unwrap();
    let model = V4Model::<AD>::load(&cfg, &src as &dyn WeightSource, &dev).unwrap();
    let opts = ForwardOptions {
        fake_quant: false,
        ..Default::default()
    };
    let loss_of = |m: &V4Model<AD>| {
        let x: Tensor<AD, 2, Int> =
            Tensor::from_data(TensorData::new(ids[..s].to_vec(), [1, s]), &dev);
        let y: Tensor<AD, 2, Int> =
            Tensor::from_data(TensorData::new(ids[1..].to_vec(), [1, s]), &dev);
        let out = m.forward(x, opts, false, false);
        v4_model::util::to_vec(cross_entropy(out.logits, y, -100).0.inner())[0] as f64
    };
    let loaded = loss_of(&model);
    let fresh = loss_of(&V4Model::<AD>::init(&cfg, 0, &dev).unwrap());
    println!("step 1 {} loaded {loaded} fresh {fresh}", summary.losses[0]);
    assert!(
        (summary.losses[0] - loaded).abs() <= 1e-5 * loaded.abs(),
        "step-1 loss {} vs tiny_a's {loaded}",
        summary.losses[0]
    );
    assert!(
        (fresh - loaded).abs() > 1e-3,
        "fresh init {fresh} ≈ tiny_a {loaded}"
    );
    assert!(dir.join("step-000002/trainer_state.json").exists());
    std::fs::remove_dir_all(dir).ok();
}

/// `recipes/tiny-sft.toml` with `sets`, checkpoints and logs in `dir`.
fn sft_recipe(dir: &Path, sets: &[&str]) -> Recipe {
    let mut all: Vec<String> = vec![
        format!("checkpoint.dir={}", dir.display()),
        "checkpoint.resume=never".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    Recipe::load(root().join("recipes/tiny-sft.toml"), &all).unwrap()
}

#[test]
fn text_source_resumed_from_its_cursor_yields_the_same_batches() {
    let dir = tmp("cursor");
    // File order (no shuffling): the too-long conversations come within the first 12 batches.
    let recipe = sft_recipe(&dir, &["train.seq_len=128", "data.shuffle_block=0"]);
    let cfg = recipe.model.resolve().unwrap();
    let (rows, s) = (recipe.train.micro_batch, recipe.train.seq_len);
    let mut a = BatchSource::open(&recipe, &cfg, None).unwrap();
    let mut cursor = None;
    let mut batches = Vec::new();
    for step in 0..12 {
        if step == 5 {
            cursor = a.checkpoint_state().unwrap();
        }
        batches.push(a.next(step, 0).unwrap());
    }
    // some long conversations do not fit 128 tokens: skipped, counted
    let (bad, shown) = a.bad_rows().expect("bad rows at seq_len 128");
    assert!(bad > 0 && shown.contains("too_long"), "{shown}");
    let ckpt = dir.join("step-000005");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(
        ckpt.join(DATA_CURSOR),
        cursor.expect("text sources have a cursor"),
    )
    .unwrap();
    let mut b = BatchSource::open(&recipe, &cfg, Some(&ckpt)).unwrap();
    for (step, want) in batches.iter().enumerate().skip(5) {
        assert_eq!(&b.next(step as u64, 0).unwrap(), want, "step {step}");
    }
    // labels: masked positions are ignore_index, the rest are the next input token
    let ignore = recipe.loss.ignore_index;
    for mb in &batches {
        assert_eq!((mb.rows, mb.seq_len), (rows, s));
        for r in 0..rows {
            let row = |v: &Vec<i64>| v[r * s..(r + 1) * s].to_vec();
            let (x, y) = (row(&mb.input_ids), row(&mb.labels));
            for i in 0..s - 1 {
                assert!(y[i] == ignore || y[i] == x[i + 1]);
            }
        }
        assert!(mb.trained(ignore) > 0);
    }
    // a checkpoint without a cursor cannot resume text data
    let bare = dir.join("step-000001");
    std::fs::create_dir_all(&bare).unwrap();
    let err = format!(
        "{:#}",
        BatchSource::open(&recipe, &cfg, Some(&bare)).err().unwrap()
    );
    assert!(err.contains(DATA_CURSOR), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn text_data_errors_are_clear() {
    let dir = tmp("text-errors");
    // a model too small for the tokenizer is rejected at startup
    let recipe = sft_recipe(&dir, &["model.vocab_size=256"]);
    let cfg = recipe.model.resolve().unwrap();
    let err = format!(
        "{:#}",
        BatchSource::open(&recipe, &cfg, None).err().unwrap()
    );
    assert!(
        err.contains("[model] vocab_size = 256") && err.contains("129280"),
        "{err}"
    );
    // finite data runs out with the step named
    let recipe = sft_recipe(&dir, &["data.repeat=false"]);
    let cfg = recipe.model.resolve().unwrap();
    let mut src = BatchSource::open(&recipe, &cfg, None).unwrap();
    let err = (0..10_000u64)
        .find_map(|step| src.next(step, 0).err())
        .unwrap();
    let err = format!("{err:#}");
    assert!(
        err.contains("ran out at step") && err.contains("repeat"),
        "{err}"
    );
    // a missing tokenizer names the key
    let recipe = sft_recipe(&dir, &["data.tokenizer=/nonexistent/tok"]);
    let err = format!(
        "{:#}",
        BatchSource::open(&recipe, &cfg, None).err().unwrap()
    );
    assert!(
        err.contains("[data] tokenizer") && err.contains("/nonexistent/tok"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_v4train"));
    c.current_dir(root());
    c
}

/// `metrics.jsonl` as (step, loss, mtp_loss, grad_norm, batch_hash); NaN when absent.
fn metrics(dir: &Path) -> Vec<(u64, f64, f64, f64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            (
                v["step"].as_u64().unwrap(),
                f("loss"),
                f("mtp_loss"),
                f("grad_norm"),
                f("batch_hash"),
            )
        })
        .collect()
}

fn sft_args(dir: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
    let d = dir.display();
    let mut a: Vec<String> = [
        "recipes/tiny-sft.toml".to_string(),
        format!("--set=train.steps={steps}"),
        format!("--set=checkpoint.dir={d}"),
        format!("--set=log.jsonl={d}/metrics.jsonl"),
        format!("--set=log.tensorboard={d}/tb"),
    ]
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn tiny_sft_runs_end_to_end() {
    let dir = tmp("sft");
    let o = bin().args(sft_args(&dir, 3, &[])).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let m = metrics(&dir);
    assert_eq!(m.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(m.iter().all(|x| x.1.is_finite()), "{m:?}");
    assert!(dir.join("step-000003").join(DATA_CURSOR).is_file());
    assert!(err.contains(", steps 0..3, loss"), "{err}");
    // Conversations and documents are packed (and masked from each other): several per row.
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let spr = v["samples_per_row"].as_f64().unwrap();
        assert!(spr > 1.0, "samples per row {spr}");
    }
    assert!(err.contains("samples/row"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn chat_resume_sees_the_same_batches_as_an_uninterrupted_run() {
    // short windows (some conversations do not fit: skipped and counted) and an MTP layer
    let small = [
        "--set=train.seq_len=128",
        "--set=checkpoint.keep_last=0",
        "--set=model.num_nextn_predict_layers=1",
        "--set=model.compress_ratios=[0, 4, 128, 0]",
    ];
    let a = tmp("sft-resume-a");
    let mut args = sft_args(&a, 4, &small);
    args.push("--set=checkpoint.every=2".into());
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // a second run continues from the uninterrupted run's step-2 checkpoint
    let b = tmp("sft-resume-b");
    let mut args = sft_args(&b, 4, &small);
    args.push(format!(
        "--set=checkpoint.resume={}/step-000002",
        a.display()
    ));
    let o = bin().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("resuming from"), "{err}");

    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma.len(), 4);
    assert_eq!(mb.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4]);
    for (x, y) in ma[2..].iter().zip(&mb) {
        // bit-identical losses and the same batches (hash of ids and labels)
        assert_eq!(x.1.to_bits(), y.1.to_bits(), "loss {x:?} vs {y:?}");
        assert_eq!(x.2.to_bits(), y.2.to_bits(), "mtp loss {x:?} vs {y:?}");
        assert_eq!(x.3.to_bits(), y.3.to_bits(), "grad norm {x:?} vs {y:?}");
        assert_eq!(x.4, y.4, "batch hash {x:?} vs {y:?}");
    }
    assert!(ma.iter().all(|x| x.2.is_finite()), "MTP is on: {ma:?}");
    let hashes: Vec<f64> = ma.iter().map(|x| x.4).collect();
    assert!(hashes.windows(2).all(|w| w[0] != w[1]), "{hashes:?}");
    let cursor =
        |d: &Path| std::fs::read_to_string(d.join("step-000004").join(DATA_CURSOR)).unwrap();
    assert_eq!(cursor(&a), cursor(&b));
    std::fs::remove_dir_all(a).ok();
    std::fs::remove_dir_all(b).ok();
}

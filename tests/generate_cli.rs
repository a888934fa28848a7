//! `v4train generate` on a tiny model trained for a few steps: greedy generation is
//! deterministic and equals the argmax of repeated full forwards (with the same log-probs);
//! seeded sampling is reproducible and independent of batching; chat prompts go through the
//! official V4 chat encoding and the real tokenizer.

mod common;
use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use common::{bin, stderr, tmp};
use std::path::Path;
use v4_checkpoints::ModelDir;
use v4_model::{ForwardOptions, V4Model, WeightSource};

/// Trains tiny-pretrain for `steps` steps into `dir` (plus `extra` overrides); the checkpoint.
fn trained(dir: &Path, steps: u64, extra: &[&str]) -> std::path::PathBuf {
    let o = bin()
        .args([
            common::RECIPE,
            &format!("--set=train.steps={steps}"),
            "--set=train.seq_len=48",
            "--set=schedule.warmup_steps=1",
            "--set=checkpoint.every=0",
            &format!("--set=checkpoint.dir={}", dir.display()),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join(format!("step-{steps:06}"))
}

fn generate(model: &Path, prompts: &Path, out: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let o = bin()
        .args(["generate", "--model"])
        .arg(model)
        .arg("--prompts")
        .arg(prompts)
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Same tokens and finish reasons, log-probs within 1e-5 (the CPU backend's float results can
/// differ in the last bits between runs and batchings: buffer alignment and matrix shapes pick
/// other summation orders).
fn same_completions(a: &[serde_json::Value], b: &[serde_json::Value]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(ids_of(x, "token_ids"), ids_of(y, "token_ids"));
        assert_eq!(x["finish_reason"], y["finish_reason"]);
        let lp = |v: &serde_json::Value| -> Vec<f64> {
            v["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        for (p, q) in lp(x).iter().zip(lp(y)) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
    }
}

fn ids_of(v: &serde_json::Value, key: &str) -> Vec<i64> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn greedy_equals_repeated_full_forwards_and_sampling_is_reproducible() {
    let dir = tmp("generate");
    let ckpt = trained(&dir, 12, &[]);
    let prompts: Vec<Vec<i64>> = vec![vec![5, 28, 143], (0..40).collect(), vec![200; 17]];
    let file = dir.join("prompts.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| serde_json::json!({ "prompt_ids": p }).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = dir.join("out.jsonl");
    let n = 12;
    let max = format!("--max-new-tokens={n}");
    let greedy = generate(&ckpt, &file, &out, &[&max]);
    same_completions(&greedy, &generate(&ckpt, &file, &out, &[&max]));
    same_completions(
        &greedy,
        &generate(&ckpt, &file, &out, &[&max, "--batch-size=1"]),
    );

    // The same model in-process: argmax of the full forward, token after token.
    let src = ModelDir::open(&ckpt).unwrap();
    let cfg = src.config().clone();
    let model =
        V4Model::<Flex>::load(&cfg, &src as &dyn WeightSource, &Default::default()).unwrap();
    let opts = ForwardOptions::default();
    for (p, g) in prompts.iter().zip(&greedy) {
        let mut seq = p.clone();
        let (mut want, mut want_lp) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let s = seq.len();
            let ids: Tensor<Flex, 2, Int> =
                Tensor::from_data(TensorData::new(seq.clone(), [1, s]), &Default::default());
            let logits = model
                .forward(ids, opts, false, false)
                .logits
                .slice_dim(1, s - 1..s);
            let row = v4_model::util::to_vec(logits);
            let (arg, _) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            want_lp.push(v4train::generate::sampler::log_softmax_at(&row, arg, 1.0));
            want.push(arg as i64);
            seq.push(arg as i64);
        }
        assert_eq!(ids_of(g, "token_ids"), want, "prompt {p:?}");
        let lp: Vec<f64> = g["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (a, b) in lp.iter().zip(&want_lp) {
            assert!((a - *b as f64).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(g["finish_reason"], "length");
    }

    let sample = [
        "--temperature=0.9",
        "--top-k=20",
        "--top-p=0.95",
        "--seed=7",
    ];
    let mut args = vec![max.as_str()];
    args.extend(sample);
    let a = generate(&ckpt, &file, &out, &args);
    same_completions(&a, &generate(&ckpt, &file, &out, &args));
    let mut one = args.clone();
    one.push("--batch-size=1");
    same_completions(&a, &generate(&ckpt, &file, &out, &one));
    let mut other = args.clone();
    other[4] = "--seed=8";
    let b = generate(&ckpt, &file, &out, &other);
    let tokens = |v: &[serde_json::Value]| -> Vec<Vec<i64>> {
        v.iter().map(|c| ids_of(c, "token_ids")).collect()
    };
    assert_ne!(tokens(&a), tokens(&b), "another seed, other samples");
    for c in &a {
        let lp = c["logprobs"].as_array().unwrap();
        assert!(lp.iter().all(|x| x.as_f64().unwrap() <= 0.0));
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn chat_prompts_use_the_v4_encoding_and_stop_strings_cut_the_text() {
    let dir = tmp("generate-chat");
    // The tiny model with V4's vocabulary, so every tokenizer id fits.
    let ckpt = trained(
        &dir,
        2,
        &[
            "--set=model.vocab_size=129280",
            "--set=model.num_nextn_predict_layers=0",
            "--set=model.compress_ratios=[0, 4, 128]",
        ],
    );
    let file = dir.join("chat.jsonl");
    std::fs::write(
        &file,
        [
            r#"{"messages": [{"role": "user", "content": "Hello there"}]}"#,
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}], "thinking_mode": "thinking"}"#,
            r#"{"prompt": "Once upon a time"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = dir.join("out.jsonl");
    let rows = generate(&ckpt, &file, &out, &["--max-new-tokens=4"]);
    assert_eq!(rows.len(), 3);
    let prompt = |i: usize| rows[i]["prompt"].as_str().unwrap().to_string();
    assert!(
        prompt(0).starts_with("<｜begin▁of▁sentence｜>")
            && prompt(0).ends_with("<｜Assistant｜></think>"),
        "{}",
        prompt(0)
    );
    assert!(
        prompt(1).ends_with("<｜Assistant｜><think>"),
        "{}",
        prompt(1)
    );
    assert_eq!(prompt(2), "Once upon a time");
    for r in &rows {
        assert_eq!(ids_of(r, "token_ids").len(), 4);
        assert!(r["completion"].is_string());
    }
    // A stop string made of the first generated text cuts the completion before it.
    let first = rows[2]["completion"].as_str().unwrap().to_string();
    if let Some(stop) = first.chars().next().filter(|c| !c.is_whitespace()) {
        let rows = generate(
            &ckpt,
            &file,
            &out,
            &["--max-new-tokens=4", &format!("--stop={stop}")],
        );
        assert_eq!(rows[2]["finish_reason"], "stop");
        assert!(!rows[2]["completion"].as_str().unwrap().contains(stop));
    }
    // Bad inputs are errors naming the place.
    std::fs::write(&file, "{\"nothing\": 1}\n").unwrap();
    let o = bin()
        .args(["generate", "--model"])
        .arg(&ckpt)
        .arg("--prompts")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("chat.jsonl:1: expected `messages`, `prompt` or `prompt_ids`"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(dir).ok();
}

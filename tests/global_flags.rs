//! `--device` and `--threads` are accepted before or after the command, including after the
//! recipe path of `v4train RECIPE.toml ...`; bad values are clap errors (exit 2), never panics.

use std::path::Path;
use std::process::{Command, Output};

const RECIPE: &str = "recipes/tiny-pretrain.toml";

fn v4train(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_v4train"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run v4train")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A one-step run of the tiny recipe writing into `dir`.
fn quick(dir: &Path) -> Vec<String> {
    let d = dir.display();
    strings(&[
        "--set=train.steps=1",
        "--set=train.seq_len=32",
        "--set=schedule.warmup_steps=0",
        "--set=log.every=1",
    ])
    .into_iter()
    .chain([
        format!("--set=checkpoint.dir={d}/ckpt"),
        format!("--set=log.jsonl={d}/metrics.jsonl"),
        format!("--set=log.tensorboard={d}/tb"),
    ])
    .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn threads_before_and_after_the_recipe_path_train() {
    let forms: [(&[&str], &[&str]); 4] = [
        (&["--threads", "1", RECIPE], &[]),
        (&[RECIPE], &["--threads", "1"]),
        (&["train", RECIPE], &["--threads=1", "--device", "cpu"]),
        (&["--device", "cpu", "train", "--threads", "1", RECIPE], &[]),
    ];
    for (i, (before, after)) in forms.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut args = strings(before);
        args.extend(quick(dir.path()));
        args.extend(strings(after));
        let o = v4train(&args);
        assert!(o.status.success(), "form {i} {args:?}: {}", stderr(&o));
        let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).expect("metrics");
        let steps: Vec<u64> = log
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                    .as_u64()
                    .expect("step")
            })
            .collect();
        assert_eq!(steps, vec![1], "form {i}: one step logged");
        assert!(
            dir.path().join("ckpt/step-000001").is_dir(),
            "form {i}: checkpoint"
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_anywhere_reaches_the_backend_choice() {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_b");
    let (m, i) = (
        tiny.display().to_string(),
        tiny.join("io.safetensors").display().to_string(),
    );
    let forward = [
        "forward",
        "--model",
        &m,
        "--input",
        &i,
        "--output",
        "/nonexistent/o",
    ];
    let mut forms: Vec<Vec<&str>> = vec![
        vec![RECIPE, "--device", "cuda"],
        vec!["--device", "cuda", RECIPE],
        vec![
            RECIPE,
            "--set",
            "train.steps=1",
            "--device=cuda",
            "--threads",
            "2",
        ],
        vec!["train", RECIPE, "--device", "cuda"],
        vec!["--device", "cpu", RECIPE, "--device", "cuda"],
    ];
    forms.push([&forward[..], &["--device", "cuda"]].concat());
    for args in forms {
        let o = v4train(&strings(&args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("--device cuda: this binary was built without CUDA"),
            "{args:?}: {err}"
        );
    }
    // the option written last wins
    let dir = tempfile::tempdir().expect("tmp");
    let mut args = strings(&["--device", "cuda", RECIPE]);
    args.extend(quick(dir.path()));
    args.extend(strings(&["--device", "cpu"]));
    let o = v4train(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_thread_counts_are_usage_errors_in_every_position() {
    for bad in [
        "0",
        "-1",
        "two",
        "",
        "1.5",
        "4097",
        "99999999999999999999999",
    ] {
        let forms: [Vec<&str>; 5] = [
            vec!["--threads", bad, RECIPE],
            vec![RECIPE, "--threads", bad],
            vec!["train", RECIPE, "--threads", bad],
            vec!["optim-plan", RECIPE, "--threads", bad],
            vec![
                "--threads",
                bad,
                "chat-encode",
                "--tokenizer",
                "x",
                "--input",
                "y",
            ],
        ];
        for args in forms {
            let o = v4train(&strings(&args));
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("invalid value") && err.contains("--threads <N>"),
                "{args:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    let o = v4train(&strings(&["--threads", "0", RECIPE]));
    assert!(
        stderr(&o).contains("must be between 1 and 4096, got 0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn threads_is_accepted_by_the_other_commands() {
    let o = v4train(&strings(&[
        "optim-plan",
        RECIPE,
        "--summary-only",
        "--threads",
        "2",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("summary:"));
}

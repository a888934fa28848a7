//! A run directory owns its outputs, and a run is checked before it computes (issue #14), each
//! case driven through the binary as a user would: a fresh run into another run's directory,
//! two runs into one directory and a stale lock, logs following `checkpoint.dir`, a checkpoint
//! dir that is a file or cannot be created, `--resume` with nothing to resume, provenance in
//! `trainer_state.json`, a corrupt newest checkpoint, the NaN skip limit, `--dry-run`, and a
//! full disk (a small tmpfs where the test may mount one).

mod common;
use common::{args, bin, run, stderr, tmp, KillOnDrop};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn state(ckpt: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
        .unwrap()
}

fn run_id(ckpt: &Path) -> String {
    state(ckpt)["run_id"].as_str().unwrap().to_string()
}

#[test]
fn a_fresh_run_into_another_runs_directory_is_refused() {
    let dir = tmp("fresh-into-old");
    let a = args(&dir, 6);
    let o = run(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let old = run_id(&dir.join("step-000006"));

    // resume = "never" into it: refused, nothing touched.
    let o = run(
        &a,
        &["--set=checkpoint.resume=never", "--set=train.steps=4"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for want in [
        "holds checkpoints of an earlier run",
        &format!("run {old}: steps 3, 6"),
        "--resume",
        "--overwrite",
    ] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
    assert!(!err.contains("step 1/"), "{err}");
    assert_eq!(run_id(&dir.join("step-000006")), old);

    // --overwrite: the old run's checkpoints go, the new run owns the directory.
    let o = run(
        &a,
        &[
            "--set=checkpoint.resume=never",
            "--set=train.steps=4",
            "--set=checkpoint.keep_last=1",
            "--overwrite",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.join("step-000006").exists() && !dir.join("step-000003").exists());
    let new = run_id(&dir.join("step-000004"));
    assert_ne!(new, old);

    // --resume continues the new run, and its pruning keeps its own newest only.
    let o = run(&a, &["--resume", "--set=checkpoint.keep_last=1"]);
    let err = stderr(&o);
    assert!(o.status.success() && err.contains("resuming from"), "{err}");
    assert_eq!(run_id(&dir.join("step-000006")), new);
    assert!(!dir.join("step-000004").exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn two_runs_into_one_directory_and_a_stale_lock() {
    let dir = tmp("two-runs");
    let a = args(&dir, 10_000);
    let mut first = KillOnDrop::new(
        bin()
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lock = dir.join("run.lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid")) {
        assert!(start.elapsed() < Duration::from_secs(60), "no lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = run(&args(&dir, 3), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use by another v4train run")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    first.kill(); // SIGKILL: the lock file stays behind, naming a dead process
    assert!(lock.exists());
    let o = run(
        &args(&dir, 2),
        &["--set=checkpoint.resume=never", "--overwrite"],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("taking over the stale run lock"), "{err}");
    assert!(!lock.exists(), "a finished run removes its lock");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn logs_follow_the_run_directory() {
    let dir = tmp("logs-follow");
    // Only checkpoint.dir is overridden: metrics and TensorBoard move with it.
    let o = run(
        &[
            common::RECIPE.into(),
            "--set=train.steps=2".into(),
            "--set=train.seq_len=32".into(),
            "--set=schedule.warmup_steps=1".into(),
            format!("--set=checkpoint.dir={}", dir.display()),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let tb = std::fs::read_dir(dir.join("tb")).unwrap().count();
    assert_eq!(tb, 1, "one event file");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_checkpoint_dir_that_cannot_hold_checkpoints_fails_before_any_step() {
    let dir = tmp("ckpt-is-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    // /proc refuses new directories, even to root.
    let cases = [
        (file.clone(), "is a file, not a directory"),
        (
            Path::new("/proc/v4train-test/run").to_path_buf(),
            "cannot be created",
        ),
    ];
    for (ckpt, want) in cases {
        let t0 = Instant::now();
        let o = run(&args(&ckpt, 3), &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("[checkpoint] dir") && err.contains(want),
            "{err}"
        );
        assert!(
            !err.contains("new run") && !err.contains("step 1/"),
            "{err}"
        );
        eprintln!("{}: failed after {:?}", ckpt.display(), t0.elapsed());
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn resume_with_nothing_to_resume_is_an_error() {
    let dir = tmp("resume-nothing");
    let o = run(&args(&dir, 3), &["--resume"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no checkpoint to resume from"), "{err}");
    assert!(!dir.join("metrics.jsonl").exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn checkpoints_record_how_they_were_made() {
    let dir = tmp("provenance");
    let a = args(&dir, 3);
    let o = run(&a, &["--set=loss.mtp_weight=0.25"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = state(&dir.join("step-000003"));
    let p = &s["provenance"];
    let overrides: Vec<&str> = p["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(overrides.contains(&"loss.mtp_weight=0.25"), "{overrides:?}");
    assert!(overrides.contains(&"train.steps=3"), "{overrides:?}");
    assert_eq!(p["recipe_file"], common::RECIPE);
    let effective: toml::Table = p["effective_recipe"].as_str().unwrap().parse().unwrap();
    assert_eq!(effective["train"]["steps"].as_integer(), Some(3));
    assert_eq!(effective["loss"]["mtp_weight"].as_float(), Some(0.25));
    assert_eq!(s["recipe"], p["effective_recipe"]);
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    assert!(!p["git_revision"].as_str().unwrap().is_empty());
    // One SHA-256 per file of the checkpoint besides the state itself.
    let files = s["files"].as_object().unwrap();
    let on_disk = std::fs::read_dir(dir.join("step-000003")).unwrap().count();
    assert_eq!(files.len(), on_disk - 1);
    assert!(files.values().all(|h| h.as_str().unwrap().len() == 64));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_corrupt_newest_checkpoint_is_named_and_auto_falls_back() {
    let dir = tmp("corrupt-newest");
    let a = args(&dir, 6);
    let o = run(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = dir.join("step-000006/optimizer.safetensors");
    let mut bytes = std::fs::read(&bad).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&bad, bytes).unwrap();

    let o = run(&a, &["--resume", "--set=train.steps=8"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("SHA-256 mismatch"),
        "{err}"
    );
    assert!(err.contains("checkpoint.resume=auto"), "{err}");

    let o = run(&a, &["--set=checkpoint.resume=auto", "--set=train.steps=8"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("falling back to"), "{err}");
    assert!(err.contains("step-000003 (step 3)"), "{err}");
    // Steps 4..8 were trained again from step 3: step 6 is rewritten whole and verifies.
    let o = run(&a, &["--resume", "--set=train.steps=8", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("step-000008 (step 8)"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn skipping_non_finite_steps_stops_at_the_limit() {
    let dir = tmp("skip-limit");
    let o = run(
        &args(&dir, 50),
        &[
            "--set=schedule.peak_lr=1e30",
            "--set=train.nan_policy=skip",
            "--set=train.max_consecutive_skips=3",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("3 consecutive steps skipped"), "{err}");
    assert!(err.contains("max_consecutive_skips = 3"), "{err}");
    let steps = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(steps < 50, "stopped after {steps} steps");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn dry_run_checks_and_stops_before_training() {
    let dir = tmp("dry-run");
    let o = run(&args(&dir, 3), &["--dry-run"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("dry run") && !err.contains("step 1/"), "{err}");
    assert!(!dir.join("step-000003").exists() && !dir.join("run.lock").exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_full_disk_leaves_no_partial_checkpoint() {
    let dir = tmp("disk-full");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&dir)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({})", stderr(&o).trim());
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount ({e})");
            return;
        }
    }
    let o = run(&args(&dir, 3), &["--set=checkpoint.skip_space_check=true"]);
    let err = stderr(&o);
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    std::process::Command::new("umount").arg(&dir).status().ok();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("the partial checkpoint was removed"), "{err}");
    assert!(
        leftovers
            .iter()
            .all(|n| !n.starts_with(".step-") && !n.starts_with("step-")),
        "{leftovers:?}"
    );
}

#[test]
fn a_step_that_cannot_fit_in_memory_is_refused_with_the_estimate() {
    let dir = tmp("huge-seq");
    let t0 = Instant::now();
    let o = run(&args(&dir, 3), &["--set=train.seq_len=100000000"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for want in [
        "needs an estimated",
        "activations",
        "seq_len (= 100000000)",
        "--set train.skip_memory_check=true",
    ] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
    assert!(!err.contains("step 1/"), "{err}");
    eprintln!("refused after {:?}", t0.elapsed());
    std::fs::remove_dir_all(dir).ok();
}

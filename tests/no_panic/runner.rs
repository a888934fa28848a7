//! Runs a suite of generated cases on several threads — each case in its own directory, either
//! through the `v4train` binary or in-process under `catch_unwind` — and reports every case that
//! panicked, crashed or hung, keeping its files and command line so it can be replayed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use super::gen::Gen;

/// How long one binary run may take before it counts as hung.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Cases of a suite: `default` times `V4TRAIN_FUZZ_SCALE` (a positive number, default 1).
pub fn case_count(default: usize) -> usize {
    let scale = std::env::var("V4TRAIN_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    ((default as f64 * scale).ceil() as usize).max(1)
}

/// The seed of every suite (`V4TRAIN_FUZZ_SEED`, default 0: the same cases every run).
pub fn seed() -> u64 {
    std::env::var("V4TRAIN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The binary under test: this build's `v4train`, or `V4TRAIN_FUZZ_BIN` (to replay the cases
/// against another build).
fn binary() -> PathBuf {
    std::env::var_os("V4TRAIN_FUZZ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_v4train")))
}

/// What a case did wrong.
struct Failure {
    case: String,
    what: String,
    saved: PathBuf,
}

/// Where failing cases are kept: `target/tmp/no_panic_failures/`.
fn failures_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("no_panic_failures")
}

/// Directory of failing case `index` of `suite`.
fn failure_dir(suite: &str, index: usize) -> PathBuf {
    failures_root().join(format!("{}-{index}", suite.replace('/', "-")))
}

/// Runs `count` cases of `suite`: `make` writes case `i`'s files into its directory and returns
/// the `v4train` arguments. A case passes when the binary exits 0, 1 or 2 within the timeout
/// and its stderr holds no panic message; the summary counts each exit code.
pub fn binary_suite<F>(suite: &str, count: usize, make: F)
where
    F: Fn(&mut Gen, &Path) -> Vec<String> + Sync,
{
    run_suite(suite, count, |index, dir| {
        let mut g = Gen::new(suite, seed(), index);
        let args = make(&mut g, dir);
        let command = format!("v4train {}", shell_words(&args));
        let outcome = run_binary(dir, &args);
        outcome
            .map(|code| format!("exit {code}"))
            .map_err(|what| format!("{command}\n{what}"))
    })
}

/// Runs `count` cases of `suite` in this process: `check` must return without panicking (its
/// result, whether the input was accepted, is counted in the summary).
pub fn in_process_suite<F>(suite: &str, count: usize, check: F)
where
    F: Fn(&mut Gen, &Path) -> bool + Sync,
{
    install_panic_recorder();
    run_suite(suite, count, |index, dir| {
        let mut g = Gen::new(suite, seed(), index);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mut g, dir)));
        result
            .map(|ok| if ok { "accepted" } else { "rejected" }.to_string())
            .map_err(|_| {
                let message = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_default();
                format!("panicked in process: {message}")
            })
    })
}

/// Runs the cases on several threads; `case` returns the outcome to count, or the failure.
fn run_suite<F>(suite: &str, count: usize, case: F)
where
    F: Fn(usize, &Path) -> Result<String, String> + Sync,
{
    let start = Instant::now();
    let root = tempfile::tempdir().expect("temp dir");
    // Failures kept by an earlier run of this suite would look like this run's.
    let prefix = format!("{}-", suite.replace('/', "-"));
    for entry in std::fs::read_dir(failures_root())
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<Failure>::new());
    let outcomes = Mutex::new(BTreeMap::<String, usize>::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let dir = root.path().join(index.to_string());
                std::fs::create_dir_all(&dir).expect("case dir");
                let result = case(index, &dir);
                if let Ok(outcome) = &result {
                    *outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(outcome.clone())
                        .or_default() += 1;
                }
                if let Err(what) = result {
                    let saved = failure_dir(suite, index);
                    let _ = std::fs::remove_dir_all(&saved);
                    let _ = copy_dir(&dir, &saved);
                    let _ = std::fs::write(saved.join("failure.txt"), &what);
                    let case = format!("{suite} #{index} (V4TRAIN_FUZZ_SEED={})", seed());
                    eprintln!("FAILED {case}: {what}\n  files kept in {}", saved.display());
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Failure { case, what, saved });
                }
                let _ = std::fs::remove_dir_all(&dir);
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    let outcomes: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    eprintln!(
        "no_panic: {suite}: {count} cases in {:.1}s on {workers} threads: {}, {} failed",
        start.elapsed().as_secs_f64(),
        outcomes.join(", "),
        failures.len()
    );
    if let Some(f) = failures.first() {
        panic!(
            "{} of {count} `{suite}` cases failed; first: {}\n{}\n(files in {})",
            failures.len(),
            f.case,
            f.what,
            f.saved.display()
        );
    }
}

/// Runs the binary in `dir`: its exit code, or `Err` describing a panic, a crash or a hang.
fn run_binary(dir: &Path, args: &[String]) -> Result<i32, String> {
    let (out, err) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let file = |p: &Path| std::fs::File::create(p).map(Stdio::from);
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(file(&out).map_err(|e| e.to_string())?)
        .stderr(file(&err).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start v4train: {e}"))?;
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung: still running after {TIMEOUT:?}"));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned();
    let tail: String = stderr
        .chars()
        .rev()
        .take(1500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match status.code() {
        _ if stderr.contains("panicked at") => Err(format!("panicked ({status}):\n{tail}")),
        Some(code @ 0..=2) => Ok(code),
        Some(code) => Err(format!("exit code {code}:\n{tail}")),
        None => Err(format!("killed by a signal ({status}):\n{tail}")),
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records each panic's message and location for [`in_process_suite`], then runs the default
/// hook (so the test harness still shows it).
fn install_panic_recorder() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            default(info);
        }));
    });
}

/// Arguments quoted for a shell.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

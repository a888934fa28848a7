//! The training loop (`v4train recipe.toml`) in three parts: [`setup`] (the run directory and
//! its lock, the resume decision with verified checkpoints, the checks before compute, data,
//! model and optimizer), the step loop (gradient accumulation, next-token + MTP loss, clipping,
//! the NaN policy with its limit, one LR schedule driving Muon + AdamW, metrics, periodic
//! checkpoints) and the end of the run. A `[model] dir` run that is not resuming fine-tunes the
//! checkpoint's weights.

use super::batches::{fingerprint_metric, BatchSource, FNV_START};
use super::checkpoint::{self, RunIdentity};
use super::model_setup;
use super::objectives::step_options;
use super::optimizer_step::check_state_names;
use super::preflight;
use super::provenance::Provenance;
use super::run_dir::RunDir;
use super::step::{train_step, StepConfig};
use super::step_log::StepLog;
use crate::adapter_files::AdapterConfig;
use crate::metrics::{MetricsJsonl, TensorBoardWriter};
use crate::recipe::{AdapterOptimizer, Dtype, NanPolicy, Recipe};
use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::DType;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use v4_model::V4Model;
use v4_optim::{LrSchedule, OptimizerKind, V4Optimizer};

/// How to start a run, besides the recipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Delete checkpoints of other runs in the run directory instead of refusing to start.
    pub overwrite: bool,
    /// Run every check before compute (run directory, resume, disk, memory, data), print what
    /// the run would do, and stop before loading weights.
    pub dry_run: bool,
    /// The run trains on a GPU: the memory check is against device memory.
    pub gpu: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Step the run started from (0, or the resumed checkpoint's).
    pub start_step: u64,
    /// Main loss of every step run by this process.
    pub losses: Vec<f64>,
    /// The run's id.
    pub run_id: String,
}

/// Everything a run needs once set up.
struct Session<B: AutodiffBackend> {
    run_dir: RunDir,
    who: RunIdentity,
    start_step: u64,
    model: V4Model<B>,
    /// The adapter configuration of a LoRA run (its checkpoints hold adapters only).
    adapters: Option<AdapterConfig>,
    /// (trainable, total) parameter elements.
    params: (u64, u64),
    optimizer: V4Optimizer<B::InnerBackend>,
    data: BatchSource,
    schedule: LrSchedule,
    logs: Logs,
    has_mtp: bool,
}

/// The run's metric sinks.
struct Logs {
    jsonl: Option<MetricsJsonl>,
    tb: Option<TensorBoardWriter>,
}

/// Runs `recipe` on `device`.
pub fn run<B: AutodiffBackend>(
    recipe: &Recipe,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT / SIGTERM: finish the current step, save, exit cleanly. A second handler cannot
        // be installed in one process (tests call `run` once per process), so failure is ignored.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let Some(s) = setup::<B>(recipe, opts, device)? else {
        return Ok(RunSummary {
            start_step: 0,
            losses: Vec::new(),
            run_id: String::new(),
        });
    };
    let (start_step, run_id) = (s.start_step, s.who.run_id.clone());
    let losses = train_loop(s, recipe, &stop, device)?;
    Ok(RunSummary {
        start_step,
        losses,
        run_id,
    })
}

/// Fails for a `[train] dtype` the backend cannot compute in on `device`.
pub fn check_dtype<B: Backend>(recipe: &Recipe, device: &B::Device) -> Result<()> {
    if recipe.train.dtype == Dtype::Bf16 && !B::supports_dtype(device, DType::BF16) {
        bail!(
            "[train] dtype = \"bf16\": this backend/device ({device:?}) has no bf16 arithmetic; \
             use \"f32\""
        );
    }
    Ok(())
}

/// Takes the run directory, decides where the run starts, checks it can finish (outputs
/// writable, disk, memory), then opens data, model and optimizer. `None` after a dry run.
fn setup<B: AutodiffBackend>(
    recipe: &Recipe,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<Option<Session<B>>> {
    let cfg = recipe.model.config()?;
    check_dtype::<B>(recipe, device)?;
    let run_dir = RunDir::open(&recipe.checkpoint.dir)?;
    let start = run_dir.start(&recipe.checkpoint.resume, opts.overwrite)?;
    let (jsonl_path, tb_path) = (
        recipe.log.jsonl_path(run_dir.path()),
        recipe.log.tensorboard_path(run_dir.path()),
    );
    preflight::outputs_writable(jsonl_path.as_deref(), tb_path.as_deref())?;
    preflight::disk_space(&cfg, recipe, run_dir.path())?;
    let (estimate, available) = preflight::memory(&cfg, recipe, opts.gpu)?;
    eprintln!(
        "memory: estimated peak {estimate}{}",
        available
            .map(|a| format!(" ({:.2} GB available)", a as f64 / 1e9))
            .unwrap_or_default()
    );
    let resume_from = start.resume_from.as_ref().map(|(p, _)| p.as_path());
    let start_step = start.resume_from.as_ref().map_or(0, |(_, s)| s.step);
    match &start.resume_from {
        Some((p, s)) => eprintln!(
            "run {} in {}: resuming from {} (step {})",
            start.run_id,
            run_dir.path().display(),
            p.display(),
            s.step
        ),
        None => eprintln!(
            "run {} in {}: new run",
            start.run_id,
            run_dir.path().display()
        ),
    }
    // Data first: a tokenizer that does not fit the model fails before any weight is loaded.
    let data = BatchSource::open(recipe, &cfg, resume_from)?;
    if opts.dry_run {
        eprintln!("dry run: every check passed; stopping before loading weights");
        return Ok(None);
    }
    let mut optimizer = V4Optimizer::<B::InnerBackend>::new(&recipe.optim)?;
    if !opts.gpu {
        optimizer.set_ns_threads(rayon::current_num_threads());
    }
    if let Some(lr) = &recipe.lora {
        if lr.optimizer == AdapterOptimizer::Muon {
            optimizer.set_adapter_optimizer(OptimizerKind::Muon);
        }
    }
    let run_model = model_setup::build::<B>(recipe, &cfg, resume_from, device)?;
    if let Some(path) = resume_from {
        let f = checkpoint::optimizer_file(path);
        optimizer
            .load_state(&f, device)
            .with_context(|| format!("loading the optimizer state {}", f.display()))?;
        check_state_names(&run_model.model, &optimizer, &f)?;
    }
    let params = (run_model.trainable, run_model.total);
    eprintln!(
        "parameters: {} trainable of {} ({:.2}%)",
        count(params.0),
        count(params.1),
        100.0 * params.0 as f64 / params.1.max(1) as f64
    );
    let resumed = resume_from.map(|_| start_step);
    let jsonl = jsonl_path
        .map(|p| MetricsJsonl::open(p, resumed))
        .transpose()?;
    let tb = tb_path.map(|d| open_tensorboard(&d, resumed)).transpose()?;
    Ok(Some(Session {
        run_dir,
        who: RunIdentity {
            run_id: start.run_id,
            provenance: Provenance::of(recipe),
        },
        start_step,
        model: run_model.model,
        adapters: run_model.adapters,
        params,
        optimizer,
        data,
        schedule: LrSchedule::new(recipe.schedule.clone())?,
        logs: Logs { jsonl, tb },
        has_mtp: cfg.num_nextn_predict_layers > 0,
    }))
}

/// The TensorBoard writer: a fresh run owns the directory and removes older event files (of
/// a run it replaced), a resumed one continues it.
fn open_tensorboard(dir: &PathBuf, resumed: Option<u64>) -> Result<TensorBoardWriter> {
    Ok(match resumed {
        Some(s) => TensorBoardWriter::resume(dir, s)?,
        None => {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with("events.out.tfevents")
                    {
                        std::fs::remove_file(e.path())
                            .with_context(|| format!("removing {}", e.path().display()))?;
                    }
                }
            }
            TensorBoardWriter::create(dir)?
        }
    })
}

/// Runs the steps from `s.start_step` to `[train] steps`, returning each step's main loss.
fn train_loop<B: AutodiffBackend>(
    mut s: Session<B>,
    recipe: &Recipe,
    stop: &AtomicBool,
    device: &B::Device,
) -> Result<Vec<f64>> {
    let t = &recipe.train;
    let step_cfg = StepConfig {
        recipe,
        opts: step_options(recipe, &s.model),
    };
    let seq = t.seq_len;
    if s.start_step >= t.steps {
        eprintln!(
            "the run already reached step {} of [train] steps = {}; nothing to do (raise \
             train.steps to continue it)",
            s.start_step, t.steps
        );
    }
    let mut model = s.model;
    let mut losses = Vec::new();
    let mut skipped = 0u64;
    let run_start = Instant::now();
    let bar = ProgressBar::new(t.steps).with_position(s.start_step);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for step in s.start_step..t.steps {
        let t0 = Instant::now();
        let lr = s.schedule.lr(step);
        let mtp_w = if s.has_mtp {
            recipe.loss.mtp_weight_at(step, s.schedule.late_start())
        } else {
            0.0
        };
        let mut fingerprint = FNV_START;
        let mut batches = Vec::with_capacity(t.grad_accum);
        for micro in 0..t.grad_accum {
            let batch = s.data.next(step, micro)?;
            fingerprint = batch.fingerprint(fingerprint);
            batches.push(batch);
        }
        let (next, r) = train_step(
            model,
            &mut s.optimizer,
            &batches,
            &step_cfg,
            (step, lr, mtp_w),
            device,
        )?;
        model = next;
        losses.push(r.loss);
        let done = step + 1;
        skipped = if r.applied { 0 } else { skipped + 1 };
        let tokens_per_s = (t.global_batch() * seq) as f64 / t0.elapsed().as_secs_f64();
        bar.set_position(done);
        bar.set_message(format!(
            "loss {:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s",
            r.loss
        ));
        if done % recipe.log.every.max(1) == 0 || done == t.steps {
            let eta = run_start.elapsed().as_secs_f64() / (done - s.start_step) as f64
                * (t.steps - done) as f64;
            let log = StepLog::new(&r, &model, lr, tokens_per_s, mtp_w);
            let mut line = format!("step {done}/{} {}", t.steps, log.line());
            if s.params.0 < s.params.1 {
                line += &format!(" trainable {}/{}", count(s.params.0), count(s.params.1));
            }
            line += &format!(" eta {eta:.0}s");
            s.logs.write(&log, &s.data, done, fingerprint, &bar, line)?;
        }
        if t.nan_policy == NanPolicy::Skip && skipped >= t.max_consecutive_skips {
            bar.abandon();
            bail!(
                "step {done}: {skipped} consecutive steps skipped for a non-finite loss or \
                 gradient (last: loss {}, gradient norm {}); stopping ([train] \
                 max_consecutive_skips = {}). Lower [schedule] peak_lr or check the data; the \
                 newest checkpoint in {} is unaffected",
                r.loss,
                r.grad_norm,
                t.max_consecutive_skips,
                s.run_dir.path().display()
            );
        }
        let every = recipe.checkpoint.every;
        let interrupted = stop.load(Ordering::SeqCst);
        if (every > 0 && done % every == 0) || done == t.steps || interrupted {
            let p = checkpoint::save(
                s.run_dir.path(),
                done,
                &model,
                s.adapters.as_ref(),
                &s.optimizer,
                &s.who,
                s.data.checkpoint_state()?.as_deref(),
                recipe.checkpoint.keep_last,
            )?;
            bar.suspend(|| eprintln!("saved {}", p.display()));
        }
        if interrupted {
            bar.abandon();
            eprintln!("interrupted: stopped after step {done}; resume with --resume");
            break;
        }
    }
    bar.finish_and_clear();
    Ok(losses)
}

/// A parameter count, short (`1.23M`).
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl Logs {
    /// The step's stderr `line` (plus skipped bad rows), `metrics.jsonl` record and TensorBoard
    /// scalars.
    fn write(
        &mut self,
        log: &StepLog<'_>,
        data: &BatchSource,
        done: u64,
        fingerprint: u64,
        bar: &ProgressBar,
        line: String,
    ) -> Result<()> {
        let bad_rows = data.bad_rows();
        let suffix = bad_rows
            .as_ref()
            .map(|(_, s)| format!(" [data: {s}]"))
            .unwrap_or_default();
        bar.suspend(|| eprintln!("{line}{suffix}"));
        // `batch_hash`: 53 bits of a hash of the step's ids and labels (resume checks).
        let mut extra = vec![("batch_hash".to_string(), fingerprint_metric(fingerprint))];
        extra.extend(bad_rows.map(|(n, _)| ("bad_rows".to_string(), n as f64)));
        if let Some(j) = self.jsonl.as_mut() {
            j.log(&log.metrics(done, extra))?;
        }
        if let Some(w) = self.tb.as_mut() {
            let sc = log.scalars();
            let sc: Vec<(&str, f32)> = sc.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            w.scalars(done, &sc)?;
            w.flush()?;
        }
        Ok(())
    }
}

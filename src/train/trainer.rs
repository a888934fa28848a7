//! The training loop (`v4train recipe.toml`): gradient accumulation, next-token + MTP loss,
//! global-norm clipping, NaN policy, the single LR schedule driving Muon + AdamW, metrics
//! (stderr progress, `metrics.jsonl`, TensorBoard), periodic checkpoints and exact resume.
//! Data comes from [`BatchSource`]; a `[model] dir` run that is not resuming fine-tunes the
//! checkpoint's weights.

use super::batches::{fingerprint_metric, BatchSource, FNV_START};
use super::checkpoint;
use super::objectives::{forward_options, freeze_params};
use super::step::{train_step, StepConfig};
use super::step_log::StepLog;
use crate::metrics::{MetricsJsonl, TensorBoardWriter};
use crate::recipe::{Dtype, ModelSource, Recipe, Resume};
use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use v4_checkpoints::ModelDir;
use v4_model::{ModelConfig, V4Model, WeightSource};
use v4_optim::{LrSchedule, V4Optimizer};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Step the run started from (0, or the resumed checkpoint's).
    pub start_step: u64,
    /// Main loss of every step run by this process.
    pub losses: Vec<f64>,
}

/// The weights of the checkpoint directory `dir` (a release-layout model or a `step-N/`).
fn load_model<B: AutodiffBackend>(
    cfg: &ModelConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<V4Model<B>> {
    let source = ModelDir::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    V4Model::<B>::load(cfg, &source as &dyn WeightSource, device)
        .with_context(|| format!("loading {}", dir.display()))
}

/// Runs `recipe` (read from `recipe_text`) on `device`.
pub fn run<B: AutodiffBackend>(
    recipe: &Recipe,
    recipe_text: &str,
    device: &B::Device,
) -> Result<RunSummary> {
    let cfg = recipe
        .model
        .resolve()
        .with_context(|| match &recipe.model.source {
            ModelSource::Dir(d) => format!("[model] dir = {:?}", d.display().to_string()),
            ModelSource::Preset(p) => format!("[model] preset = {p:?}"),
        })?;
    if recipe.train.dtype == Dtype::Bf16 {
        bail!("[train] dtype = \"bf16\": mixed-precision training is not implemented yet; use \"f32\"");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT / SIGTERM: finish the current step, save, exit cleanly. A second handler cannot
        // be installed in one process (tests call `run` once per process), so failure is ignored.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let ckpt_dir = &recipe.checkpoint.dir;
    let resume_from = match &recipe.checkpoint.resume {
        Resume::Never => None,
        Resume::Auto => checkpoint::list(ckpt_dir)?.pop().map(|(_, p)| p),
        Resume::Path(p) => Some(p.clone()),
    };
    // Data first: a tokenizer that does not fit the model fails before any weight is loaded.
    let mut data = BatchSource::open(recipe, &cfg, resume_from.as_deref())?;
    let mut optimizer = V4Optimizer::<B::InnerBackend>::new(&recipe.optim)?;
    let (model, start_step) = match (&resume_from, &recipe.model.source) {
        (Some(path), _) => {
            let state = checkpoint::read_state(path)?;
            let model = load_model::<B>(&cfg, path, device)?;
            optimizer.load_state(&checkpoint::optimizer_file(path), device)?;
            eprintln!("resuming from {} (step {})", path.display(), state.step);
            (model, state.step)
        }
        (None, ModelSource::Dir(dir)) => {
            let model = load_model::<B>(&cfg, dir, device)?;
            eprintln!("fine-tuning the weights of {}", dir.display());
            (model, 0)
        }
        (None, ModelSource::Preset(_)) => (V4Model::<B>::init(&cfg, recipe.train.seed, device)?, 0),
    };
    let (mut model, trainable) = freeze_params(model, recipe.train.freeze);
    if trainable == 0 {
        bail!(
            "[train] freeze = {:?} leaves no trainable parameter in this model",
            recipe.train.freeze
        );
    }
    let schedule = LrSchedule::new(recipe.schedule.clone())?;
    let resumed = resume_from.as_ref().map(|_| start_step);
    let mut jsonl = match &recipe.log.jsonl {
        Some(p) => Some(MetricsJsonl::open(p, resumed)?),
        None => None,
    };
    let mut tb = match (&recipe.log.tensorboard, resumed) {
        (Some(d), Some(s)) => Some(TensorBoardWriter::resume(d, s)?),
        (Some(d), None) => Some(TensorBoardWriter::create(d)?),
        (None, _) => None,
    };
    let step_cfg = StepConfig {
        recipe,
        opts: forward_options(recipe),
    };
    let t = &recipe.train;
    let (rows, s) = (t.micro_batch, t.seq_len);
    let has_mtp = cfg.num_nextn_predict_layers > 0;
    let mut losses = Vec::new();
    let run_start = Instant::now();
    let bar = ProgressBar::new(t.steps).with_position(start_step);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for step in start_step..t.steps {
        let t0 = Instant::now();
        let lr = schedule.lr(step);
        let mtp_w = if has_mtp {
            recipe.loss.mtp_weight_at(step, schedule.decay_start())
        } else {
            0.0
        };
        let mut fingerprint = FNV_START;
        let mut batches = Vec::with_capacity(t.grad_accum);
        for micro in 0..t.grad_accum {
            let batch = data.next(step, micro, rows, s, t.grad_accum)?;
            fingerprint = batch.fingerprint(fingerprint);
            batches.push(batch);
        }
        let (next, r) = train_step(
            model,
            &mut optimizer,
            &batches,
            &step_cfg,
            (step, lr, mtp_w),
            device,
        )?;
        model = next;
        losses.push(r.loss);
        let done = step + 1;
        let tokens_per_s = (t.global_batch() * s) as f64 / t0.elapsed().as_secs_f64();
        bar.set_position(done);
        bar.set_message(format!(
            "loss {:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s",
            r.loss
        ));
        if done % recipe.log.every.max(1) == 0 || done == t.steps {
            let elapsed = run_start.elapsed().as_secs_f64();
            let eta = elapsed / (done - start_step) as f64 * (t.steps - done) as f64;
            let bad_rows = data.bad_rows();
            let log = StepLog::new(&r, &model, lr, tokens_per_s, mtp_w);
            bar.suspend(|| {
                eprintln!(
                    "step {done}/{} {} eta {eta:.0}s{}",
                    t.steps,
                    log.line(),
                    bad_rows
                        .as_ref()
                        .map(|(_, s)| format!(" [data: {s}]"))
                        .unwrap_or_default(),
                )
            });
            // `batch_hash`: 53 bits of a hash of the step's ids and labels (resume checks).
            let mut extra = vec![("batch_hash".to_string(), fingerprint_metric(fingerprint))];
            extra.extend(bad_rows.map(|(n, _)| ("bad_rows".to_string(), n as f64)));
            if let Some(j) = jsonl.as_mut() {
                j.log(&log.metrics(done, extra))?;
            }
            if let Some(w) = tb.as_mut() {
                let sc = log.scalars();
                let sc: Vec<(&str, f32)> = sc.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                w.scalars(done, &sc)?;
                w.flush()?;
            }
        }
        let every = recipe.checkpoint.every;
        let interrupted = stop.load(Ordering::SeqCst);
        if (every > 0 && done % every == 0) || done == t.steps || interrupted {
            let p = checkpoint::save(
                ckpt_dir,
                done,
                &model,
                &optimizer,
                recipe_text,
                data.checkpoint_state()?.as_deref(),
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
    Ok(RunSummary { start_step, losses })
}

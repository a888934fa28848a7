//! The training loop (`v4train recipe.toml`): gradient accumulation, next-token + MTP loss,
//! global-norm clipping, NaN policy, the single LR schedule driving Muon + AdamW, metrics
//! (stderr progress, `metrics.jsonl`, TensorBoard), periodic checkpoints and exact resume.
//! Data comes from [`BatchSource`]; a `[model] dir` run that is not resuming fine-tunes the
//! checkpoint's weights.

use super::batches::{fingerprint_metric, BatchSource, FNV_START};
use super::checkpoint;
use super::loss::cross_entropy;
use super::optimizer_step::apply_optimizer;
use crate::metrics::{MetricsJsonl, StepMetrics, TensorBoardWriter};
use crate::recipe::{Attention, Dtype, ModelSource, NanPolicy, Recipe, Resume};
use anyhow::{anyhow, bail, Context, Result};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use v4_checkpoints::ModelDir;
use v4_model::{AttentionMode, ForwardOptions, ModelConfig, V4Model, WeightSource};
use v4_optim::{GradNorm, LrSchedule, V4Optimizer};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Step the run started from (0, or the resumed checkpoint's).
    pub start_step: u64,
    /// Main loss of every step run by this process.
    pub losses: Vec<f64>,
}

fn forward_options(recipe: &Recipe) -> ForwardOptions {
    ForwardOptions {
        fake_quant: recipe.train.fake_quant,
        attention: match recipe.train.attention {
            Attention::Sparse => AttentionMode::Sparse,
            Attention::Dense => AttentionMode::Dense,
        },
        ..Default::default()
    }
}

/// (id, rank) of every float parameter.
fn float_params<B: AutodiffBackend>(model: &V4Model<B>) -> Vec<(burn::module::ParamId, usize)> {
    let mut ids = Vec::new();
    model.visit_named(&mut |_, p| ids.extend(p.float_id()));
    ids
}

/// Global gradient norm over every parameter with a gradient; scales the gradients in place
/// when `max_norm` is set and exceeded.
fn clip<B: AutodiffBackend>(
    model: &V4Model<B>,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> Result<f64> {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let ids = float_params(model);
    let mut norm = GradNorm::<I<B>>::new();
    for (id, rank) in &ids {
        match rank {
            1 => grads.get::<I<B>, 1>(*id).iter().for_each(|g| norm.add(g)),
            2 => grads.get::<I<B>, 2>(*id).iter().for_each(|g| norm.add(g)),
            _ => grads.get::<I<B>, 3>(*id).iter().for_each(|g| norm.add(g)),
        }
    }
    let stats = norm.finish(max_norm.unwrap_or(f64::INFINITY))?;
    if stats.scale < 1.0 {
        for (id, rank) in ids {
            match rank {
                1 => scale::<I<B>, 1>(grads, id, stats.scale),
                2 => scale::<I<B>, 2>(grads, id, stats.scale),
                _ => scale::<I<B>, 3>(grads, id, stats.scale),
            }
        }
    }
    Ok(stats.norm)
}

fn scale<B: burn::tensor::backend::Backend, const D: usize>(
    grads: &mut GradientsParams,
    id: burn::module::ParamId,
    s: f64,
) {
    if let Some(g) = grads.remove::<B, D>(id) {
        grads.register(id, g.mul_scalar(s));
    }
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
    let cfg = recipe.model.resolve()?;
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
    let (mut model, start_step) = match (&resume_from, &recipe.model.source) {
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
    let opts = forward_options(recipe);
    let t = &recipe.train;
    let (rows, s) = (t.micro_batch, t.seq_len);
    let mtp_w = if cfg.num_nextn_predict_layers > 0 {
        recipe.loss.mtp_weight
    } else {
        0.0
    };
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
        let mut grads = GradientsParams::new();
        let (mut main_sum, mut mtp_sum) = (0.0, 0.0);
        let mut fingerprint = FNV_START;
        for micro in 0..t.grad_accum {
            let batch = data.next(step, micro, rows, s, t.grad_accum)?;
            fingerprint = batch.fingerprint(fingerprint);
            let (ids, labels) = batch.tensors::<B>(device);
            let out = model.forward(ids, opts, false, mtp_w > 0.0);
            // Main loss: every input position predicts its label.
            let (main, _) = cross_entropy(out.logits, labels.clone(), recipe.loss.ignore_index);
            let mut loss = main.clone();
            // MTP: `mtp_logits[0]` is [b, s - 1, V]; position t predicts the token after label
            // t, i.e. labels[:, 1..s].
            if let Some(lg) = out.mtp_logits.first().filter(|_| s > 1) {
                let n = lg.dims()[1];
                let (m, _) = cross_entropy(
                    lg.clone(),
                    labels.slice_dim(1, s - n..s),
                    recipe.loss.ignore_index,
                );
                mtp_sum += v4_model::util::to_vec(m.clone().inner())[0] as f64;
                loss = loss + m.mul_scalar(mtp_w);
            }
            main_sum += v4_model::util::to_vec(main.inner())[0] as f64;
            let g = GradientsParams::from_grads(
                loss.div_scalar(t.grad_accum as f64).backward(),
                &model,
            );
            grads = merge::<B>(&model, grads, g);
        }
        let n = t.grad_accum as f64;
        let (main_loss, mtp_loss) = (main_sum / n, mtp_sum / n);
        let grad_norm = clip(&model, &mut grads, recipe.optim.max_grad_norm)?;
        if !(main_loss.is_finite() && grad_norm.is_finite()) {
            match t.nan_policy {
                NanPolicy::Stop => {
                    bail!("step {step}: non-finite loss {main_loss} or gradient norm {grad_norm}")
                }
                NanPolicy::Skip => {
                    eprintln!("step {step}: non-finite loss or gradient; update skipped")
                }
            }
        } else {
            model = apply_optimizer(model, grads, &mut optimizer, lr).map_err(|e| anyhow!(e))?;
        }
        losses.push(main_loss);
        let done = step + 1;
        let tokens_per_s = (t.global_batch() * s) as f64 / t0.elapsed().as_secs_f64();
        bar.set_position(done);
        bar.set_message(format!(
            "loss {main_loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
        ));
        if done % recipe.log.every.max(1) == 0 || done == t.steps {
            let elapsed = run_start.elapsed().as_secs_f64();
            let eta = elapsed / (done - start_step) as f64 * (t.steps - done) as f64;
            let bad_rows = data.bad_rows();
            bar.suspend(|| eprintln!(
                "step {done}/{} loss {main_loss:.4}{} lr {lr:.3e} grad-norm {grad_norm:.3} {tokens_per_s:.0} tok/s eta {eta:.0}s{}",
                t.steps,
                if mtp_w > 0.0 { format!(" mtp {mtp_loss:.4}") } else { String::new() },
                bad_rows.as_ref().map(|(_, s)| format!(" [data: {s}]")).unwrap_or_default(),
            ));
            // `batch_hash`: 53 bits of a hash of the step's ids and labels (resume checks).
            let mut extra = vec![("batch_hash".to_string(), fingerprint_metric(fingerprint))];
            extra.extend(bad_rows.map(|(n, _)| ("bad_rows".to_string(), n as f64)));
            let m = StepMetrics {
                step: done,
                loss: main_loss,
                lr,
                grad_norm,
                tokens_per_s,
                mtp_loss: (mtp_w > 0.0).then_some(mtp_loss),
                extra,
            };
            if let Some(j) = jsonl.as_mut() {
                j.log(&m)?;
            }
            if let Some(w) = tb.as_mut() {
                let mut sc = vec![
                    ("loss", main_loss as f32),
                    ("lr", lr as f32),
                    ("grad_norm", grad_norm as f32),
                    ("tokens_per_s", tokens_per_s as f32),
                ];
                if mtp_w > 0.0 {
                    sc.push(("mtp_loss", mtp_loss as f32));
                }
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

/// Sums two gradient sets (gradient accumulation).
fn merge<B: AutodiffBackend>(
    model: &V4Model<B>,
    mut acc: GradientsParams,
    mut g: GradientsParams,
) -> GradientsParams {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    if acc.is_empty() {
        return g;
    }
    for (id, rank) in float_params(model) {
        match rank {
            1 => add::<I<B>, 1>(&mut acc, &mut g, id),
            2 => add::<I<B>, 2>(&mut acc, &mut g, id),
            _ => add::<I<B>, 3>(&mut acc, &mut g, id),
        }
    }
    acc
}

fn add<B: burn::tensor::backend::Backend, const D: usize>(
    acc: &mut GradientsParams,
    g: &mut GradientsParams,
    id: burn::module::ParamId,
) {
    match (acc.remove::<B, D>(id), g.remove::<B, D>(id)) {
        (Some(a), Some(b)) => acc.register(id, a + b),
        (Some(a), None) | (None, Some(a)) => acc.register(id, a),
        (None, None) => {}
    }
}

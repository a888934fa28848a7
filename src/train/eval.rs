//! Held-out evaluation (`v4train eval`): the recipe's model built exactly as a run builds it
//! ([`model_setup::build`]: the preset or `[model] dir`, a full checkpoint's weights, or a LoRA
//! checkpoint's adapters on its verified base), run without an autodiff graph over the recipe's
//! data from its start, with the training forward options. It reports the token-weighted mean
//! next-token cross-entropy over the trained (non-ignored) labels.

use super::batches::BatchSource;
use super::loss::cross_entropy;
use super::model_setup;
use super::objectives::forward_options;
use super::text_data::load_tokenizer;
use super::token_file::TokenWindows;
use super::trainer::check_dtype;
use crate::recipe::{DataSource, Recipe};
use anyhow::{anyhow, bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use v4_data::Shard;
use v4_model::{ForwardOptions, ModelConfig, V4Model};

/// Most micro-batches an evaluation reads by default (synthetic data has no end; a long file
/// would take as long as training on it).
pub const DEFAULT_MAX_BATCHES: u64 = 64;

/// What to evaluate, besides the recipe.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// A checkpoint of the recipe's run (`step-N/`): a LoRA run's adapters, or full weights.
    pub checkpoint: Option<PathBuf>,
    /// Micro-batches to read (default: one pass over the data, at most
    /// [`DEFAULT_MAX_BATCHES`]).
    pub batches: Option<u64>,
}

/// The result of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Token-weighted mean next-token cross-entropy (nats).
    pub loss: f64,
    /// Trained labels counted.
    pub tokens: u64,
    /// Micro-batches read.
    pub batches: u64,
    /// The checkpoint evaluated (none: the recipe's base or preset).
    pub checkpoint: Option<PathBuf>,
}

/// Evaluates `recipe` (with `opts`) on `device`; `B` is the training backend, whose inner
/// backend runs the forward passes.
pub fn evaluate<B: AutodiffBackend>(
    recipe: &Recipe,
    opts: &EvalOptions,
    device: &B::Device,
) -> Result<EvalReport> {
    let cfg = recipe.model.config()?;
    check_dtype::<B>(recipe, device)?;
    if let Some(c) = &opts.checkpoint {
        if !c.is_dir() {
            bail!("--checkpoint {}: no such checkpoint directory", c.display());
        }
    }
    if opts.batches == Some(0) {
        bail!("--batches must be ≥ 1");
    }
    // By default one pass: text / chat sources are read once (an explicit count follows the
    // recipe's `[data] repeat`).
    let (recipe, batches) = match opts.batches {
        Some(n) => (recipe.clone(), n),
        None => {
            let r = one_pass(recipe);
            let n = pass_length(&r, &cfg, DEFAULT_MAX_BATCHES)?;
            (r, n)
        }
    };
    let recipe = &recipe;
    let mut data = BatchSource::open(recipe, &cfg, None)?;
    let model = model_setup::build::<B>(recipe, &cfg, opts.checkpoint.as_deref(), device)?
        .model
        .valid();
    let (loss, tokens) = mean_loss(&model, &mut data, batches, recipe, device)?;
    Ok(EvalReport {
        loss,
        tokens,
        batches,
        checkpoint: opts.checkpoint.clone(),
    })
}

/// The token-weighted mean next-token cross-entropy of `model` over the next `batches`
/// micro-batches of `data`, and the trained labels counted.
fn mean_loss<B: Backend>(
    model: &V4Model<B>,
    data: &mut BatchSource,
    batches: u64,
    recipe: &Recipe,
    device: &B::Device,
) -> Result<(f64, u64)> {
    let opts = ForwardOptions {
        // The side losses do not change the logits.
        indexer_loss: false,
        balance_loss: false,
        ..forward_options(recipe)
    };
    let ignore = recipe.loss.ignore_index;
    let accum = recipe.train.grad_accum.max(1) as u64;
    let (mut sum, mut tokens) = (0.0f64, 0u64);
    for i in 0..batches {
        // The batches a run would train on, in its order (micro-batches of step 0, step 1, …).
        let batch = data
            .next(i / accum, (i % accum) as usize)
            .with_context(|| format!("evaluation batch {} of {batches}", i + 1))?;
        let (ids, labels) = batch.tensors::<B>(device);
        let layout = batch.layout::<B>(ignore, device)?;
        let out = model.forward_samples(ids, &layout, opts, false, false);
        let (loss, kept) = cross_entropy(out.logits, labels, ignore);
        sum += f64::from(v4_model::util::to_vec(loss)[0]) * kept as f64;
        tokens += kept as u64;
    }
    if tokens == 0 {
        bail!("[data]: the {batches} evaluation batch(es) hold no trained label");
    }
    Ok((sum / tokens as f64, tokens))
}

/// `recipe` with text / chat sources read once (no repeat), so a pass ends with the data.
fn one_pass(recipe: &Recipe) -> Recipe {
    let mut r = recipe.clone();
    if let DataSource::Text(d) = &mut r.data.source {
        d.repeat = false;
    }
    r
}

/// Micro-batches in one pass over `recipe`'s data (read once), at most `cap`: text / chat data
/// is counted by reading it, a token file by its windows; synthetic data has no end.
fn pass_length(recipe: &Recipe, cfg: &ModelConfig, cap: u64) -> Result<u64> {
    let rows = recipe.train.micro_batch.max(1) as u64;
    match &recipe.data.source {
        DataSource::Synthetic(_) => Ok(cap),
        DataSource::Tokens(f) => {
            let seed = f.seed.unwrap_or(recipe.train.seed);
            let w = TokenWindows::open(f, recipe.train.seq_len, seed, cfg.vocab_size)?;
            Ok((w.windows() / rows).clamp(1, cap))
        }
        DataSource::Text(d) => {
            let tok = load_tokenizer(d, &recipe.model, cfg.vocab_size)?;
            let mut loader = v4_data::open_loader(d, Arc::new(tok), None, Shard::default())
                .map_err(|e| anyhow!("[data]: {e}"))?;
            let mut n = 0;
            while n < cap {
                match loader.next_batch().map_err(|e| anyhow!("[data]: {e}"))? {
                    Some(_) => n += 1,
                    None => break,
                }
            }
            if n == 0 {
                bail!("[data]: the sources hold no usable row to evaluate on");
            }
            Ok(n)
        }
    }
}

/// The report as one line: `eval: loss X over T tokens (N batches)`.
pub fn summary_line(r: &EvalReport) -> String {
    format!(
        "eval: loss {:.4} over {} tokens ({} batches)",
        r.loss, r.tokens, r.batches
    )
}

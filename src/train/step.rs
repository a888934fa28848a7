//! One optimizer step (training spec §2–§5): forward/backward over the step's micro-batches with
//! the V4 objective — token-weighted next-token CE, the MTP CE, the indexer KL and the
//! sequence-wise balance loss (frozen parameters get no gradient: see
//! [`super::objectives::freeze_params`]), with every activation kept or, under
//! `[train] activation_checkpointing = "block"`, each block recomputed in backward
//! ([`super::recompute`]) — then global-norm clipping, the NaN policy, the Muon/AdamW update and
//! the auxiliary-loss-free bias update from the step's expert load.

use super::batches::MicroBatch;
use super::grads::{clip, merge};
use super::loss::cross_entropy;
use super::objectives::{aux_loss, aux_values, StepLoads};
use super::optimizer_step::apply_optimizer;
use super::recompute::backward_by_block;
use super::token_file::splitmix;
use crate::recipe::{ActivationCheckpointing, FinetuneMode, Freeze, LossConfig, NanPolicy, Recipe};
use anyhow::{anyhow, bail, Result};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use std::time::Instant;
use v4_model::{ForwardOptions, LayerAux, V4Model};
use v4_optim::V4Optimizer;

/// Per-step switches that do not change within a run.
pub struct StepConfig<'a> {
    /// The recipe.
    pub recipe: &'a Recipe,
    /// Forward options (attention mode, fake quant, which side losses).
    pub opts: ForwardOptions,
}

/// What one step measured.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    /// Token-weighted mean next-token CE.
    pub loss: f64,
    /// Token-weighted mean MTP CE (when MTP ran).
    pub mtp_loss: Option<f64>,
    /// Mean over micro-batches of Σ over CSA layers of the indexer KL.
    pub indexer_kl: Option<f64>,
    /// Mean over micro-batches of Σ over score-routed layers of Σᵢ fᵢ·Pᵢ (without α).
    pub balance: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The step's expert load per block.
    pub loads: StepLoads,
    /// Samples per row over the step's micro-batches (padding is not a sample).
    pub samples_per_row: f64,
    /// False when the NaN policy skipped the update.
    pub applied: bool,
    /// Seconds of the optimizer update and the bias update (the device drained after them);
    /// 0 when skipped.
    pub optimizer_secs: f64,
}

/// Runs one step at learning rate `lr` and MTP weight `mtp_weight` (0: MTP off).
pub fn train_step<B: AutodiffBackend>(
    mut model: V4Model<B>,
    optimizer: &mut V4Optimizer<B::InnerBackend>,
    batches: &[MicroBatch],
    cfg: &StepConfig<'_>,
    (step, lr, mtp_weight): (u64, f64, f64),
    device: &B::Device,
) -> Result<(V4Model<B>, StepResult)> {
    // Random ops (LoRA dropout) draw from the backend's generator, seeded per step: a resumed
    // run draws what an uninterrupted one would.
    B::seed(device, splitmix(cfg.recipe.train.seed ^ splitmix(step)));
    let loss_cfg = &cfg.recipe.loss;
    let ignore = loss_cfg.ignore_index;
    // CE is averaged over every trained token of the step, not per micro-batch: with SFT masks
    // micro-batches carry different numbers of trained tokens.
    let main_total: usize = batches.iter().map(|b| b.trained(ignore)).sum();
    let mtp_labels: Vec<Vec<i64>> = batches.iter().map(|b| b.mtp_labels(0, ignore)).collect();
    let mtp_total: usize = mtp_labels
        .iter()
        .map(|l| l.iter().filter(|&&x| x != ignore).count())
        .sum();
    let n = batches.len() as f64;
    let mut grads = GradientsParams::new();
    let mut r = StepResult::default();
    let (mut main_sum, mut mtp_sum, mut kl_sum, mut bal_sum) = (0.0, 0.0, None, None);
    let checkpointing = cfg.recipe.train.activation_checkpointing == ActivationCheckpointing::Block
        && cfg.recipe.train.freeze == Freeze::None;
    for (batch, mtp_labels) in batches.iter().zip(mtp_labels) {
        let (ids, labels) = batch.tensors::<B>(device);
        let layout = batch.layout::<B>(ignore, device)?;
        let objective = Objective {
            labels,
            mtp_labels,
            ignore,
            mtp_weight,
            main_total,
            mtp_total,
            micro_batches: n,
            loss: loss_cfg,
            device,
        };
        let (g, aux, (main, mtp)) = if checkpointing {
            let mut figures = (0.0, 0.0);
            let (g, aux) = backward_by_block(
                &model,
                ids,
                &layout,
                cfg.opts,
                mtp_weight > 0.0,
                |logits, mtp_logits, mtp_aux| {
                    let (loss, main, mtp) = objective.heads(logits, mtp_logits);
                    figures = (main, mtp);
                    add_opt_tensor(loss, objective.aux(mtp_aux))
                },
                |a| objective.aux(std::slice::from_ref(a)),
            );
            (g, aux, figures)
        } else {
            let out = model.forward_samples(ids, &layout, cfg.opts, false, mtp_weight > 0.0);
            let (loss, main, mtp) = objective.heads(out.logits, &out.mtp_logits);
            let loss = add_opt_tensor(loss, objective.aux(&out.aux));
            let g = GradientsParams::from_grads(loss.backward(), &model);
            (g, out.aux, (main, mtp))
        };
        main_sum += main;
        mtp_sum += mtp;
        let (kl, bal) = aux_values(&aux);
        r.loads.add(&aux);
        kl_sum = add_opt(kl_sum, kl.map(|v| v / n));
        bal_sum = add_opt(bal_sum, bal.map(|v| v / n));
        grads = merge::<B>(&model, grads, g);
    }
    r.loss = main_sum;
    let rows: usize = batches.iter().map(|b| b.rows).sum();
    r.samples_per_row =
        batches.iter().map(|b| b.samples).sum::<usize>() as f64 / rows.max(1) as f64;
    r.mtp_loss = (mtp_weight > 0.0).then_some(mtp_sum);
    (r.indexer_kl, r.balance) = (kl_sum, bal_sum);
    r.grad_norm = clip(&model, &mut grads, cfg.recipe.optim.max_grad_norm)?;
    if !(r.loss.is_finite() && r.grad_norm.is_finite()) {
        match cfg.recipe.train.nan_policy {
            NanPolicy::Stop => bail!(
                "step {}: non-finite loss {} or gradient norm {}",
                step + 1,
                r.loss,
                r.grad_norm
            ),
            NanPolicy::Skip => {
                eprintln!(
                    "step {}: non-finite loss or gradient; update skipped",
                    step + 1
                );
                return Ok((model, r));
            }
        }
    }
    let t0 = Instant::now();
    model = apply_optimizer(model, grads, optimizer, lr).map_err(|e| anyhow!(e))?;
    let rate = loss_cfg.balance_bias_rate;
    // The selection bias is part of the base: frozen in the indexer warm-up and under LoRA.
    let base_trains = cfg.recipe.finetune.mode == FinetuneMode::Full;
    if rate > 0.0 && cfg.recipe.train.freeze == Freeze::None && base_trains {
        model = model.update_balance_bias(&r.loads.loads, rate)?;
    }
    B::sync(device).map_err(|e| anyhow!("device sync: {e:?}"))?;
    r.optimizer_secs = t0.elapsed().as_secs_f64();
    r.applied = true;
    Ok((model, r))
}

/// One micro-batch's objective, in the pieces that activation checkpointing applies apart: the
/// heads (next-token and MTP cross-entropy, each a share of the step's trained tokens) and the
/// blocks' auxiliary losses (indexer KL, balance loss, weighted, divided by the micro-batches).
struct Objective<'a, B: AutodiffBackend> {
    labels: Tensor<B, 2, Int>,
    mtp_labels: Vec<i64>,
    ignore: i64,
    mtp_weight: f64,
    main_total: usize,
    mtp_total: usize,
    micro_batches: f64,
    loss: &'a LossConfig,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> Objective<'_, B> {
    /// The heads' loss and its two parts' values (main CE and MTP CE, as shares of the step).
    fn heads(&self, logits: Tensor<B, 3>, mtp_logits: &[Tensor<B, 3>]) -> (Tensor<B, 1>, f64, f64) {
        let (main, kept) = cross_entropy(logits, self.labels.clone(), self.ignore);
        let share = kept as f64 / self.main_total.max(1) as f64;
        let main_value = scalar(&main) * share;
        let mut loss = main.mul_scalar(share);
        let mut mtp_value = 0.0;
        // MTP: `mtp_logits[0]` is [b, s − 1, V]; position t predicts the label of input t + 1
        // (never across a masked sample boundary).
        if let Some(lg) = mtp_logits.first().filter(|_| self.mtp_weight > 0.0) {
            let [b, w, _] = lg.dims();
            let targets = Tensor::from_data(
                TensorData::new(self.mtp_labels.clone(), [b, w]),
                self.device,
            );
            let (m, kept) = cross_entropy(lg.clone(), targets, self.ignore);
            let share = kept as f64 / self.mtp_total.max(1) as f64;
            mtp_value = scalar(&m) * share;
            loss = loss + m.mul_scalar(self.mtp_weight * share);
        }
        (loss, main_value, mtp_value)
    }

    /// The weighted auxiliary losses of `aux`, per micro-batch.
    fn aux(&self, aux: &[LayerAux<B>]) -> Option<Tensor<B, 1>> {
        let a = aux_loss(aux, self.loss.indexer_weight, self.loss.balance_alpha);
        a.loss.map(|a| a.div_scalar(self.micro_batches))
    }
}

fn add_opt_tensor<B: AutodiffBackend>(a: Tensor<B, 1>, b: Option<Tensor<B, 1>>) -> Tensor<B, 1> {
    match b {
        Some(b) => a + b,
        None => a,
    }
}

fn scalar<B: AutodiffBackend>(t: &burn::tensor::Tensor<B, 1>) -> f64 {
    v4_model::util::to_vec(t.clone().inner())[0] as f64
}

fn add_opt(acc: Option<f64>, v: Option<f64>) -> Option<f64> {
    match (acc, v) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

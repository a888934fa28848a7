//! One optimizer step (training spec §2–§5): forward/backward over the step's micro-batches with
//! the V4 objective — token-weighted next-token CE, the MTP CE, the indexer KL and the
//! sequence-wise balance loss (frozen parameters get no gradient: see
//! [`super::objectives::freeze_params`]) — then global-norm clipping, the NaN policy, the
//! Muon/AdamW update and the auxiliary-loss-free bias update from the step's expert load.

use super::batches::MicroBatch;
use super::grads::{clip, merge};
use super::loss::cross_entropy;
use super::objectives::{aux_loss, StepLoads};
use super::optimizer_step::apply_optimizer;
use crate::recipe::{Freeze, NanPolicy, Recipe};
use anyhow::{anyhow, bail, Result};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use std::time::Instant;
use v4_model::{ForwardOptions, V4Model};
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
    for (batch, mtp_labels) in batches.iter().zip(mtp_labels) {
        let (ids, labels) = batch.tensors::<B>(device);
        let layout = batch.layout::<B>(ignore, device)?;
        let out = model.forward_samples(ids, &layout, cfg.opts, false, mtp_weight > 0.0);
        let (main, kept) = cross_entropy(out.logits, labels, ignore);
        let share = kept as f64 / main_total.max(1) as f64;
        main_sum += scalar(&main) * share;
        let mut loss = main.mul_scalar(share);
        // MTP: `mtp_logits[0]` is [b, s − 1, V]; position t predicts the label of input t + 1
        // (never across a masked sample boundary).
        if let Some(lg) = out.mtp_logits.first().filter(|_| mtp_weight > 0.0) {
            let [b, w, _] = lg.dims();
            let targets = Tensor::from_data(TensorData::new(mtp_labels, [b, w]), device);
            let (m, kept) = cross_entropy(lg.clone(), targets, ignore);
            let share = kept as f64 / mtp_total.max(1) as f64;
            mtp_sum += scalar(&m) * share;
            loss = loss + m.mul_scalar(mtp_weight * share);
        }
        let aux = aux_loss(&out.aux, loss_cfg.indexer_weight, loss_cfg.balance_alpha);
        r.loads.add(&out.aux);
        kl_sum = add_opt(kl_sum, aux.indexer_kl.map(|v| v / n));
        bal_sum = add_opt(bal_sum, aux.balance.map(|v| v / n));
        if let Some(a) = aux.loss {
            loss = loss + a.div_scalar(n);
        }
        let g = GradientsParams::from_grads(loss.backward(), &model);
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
    if rate > 0.0 && cfg.recipe.train.freeze == Freeze::None {
        model = model.update_balance_bias(&r.loads.loads, rate)?;
    }
    B::sync(device).map_err(|e| anyhow!("device sync: {e:?}"))?;
    r.optimizer_secs = t0.elapsed().as_secs_f64();
    r.applied = true;
    Ok((model, r))
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

//! Where a training step's forward + backward time goes, by phase of the V4 block (spec §2.3):
//! attention (projections, compressors, window + compressed attention), the lightning indexer
//! (spec §2.7), the MoE (router, routed and shared experts, spec §2.8) and mHC (both use-sites'
//! mixes and write-backs, Sinkhorn). Autodiff runs a step's backward as one graph, so each part
//! is timed alone, forward and backward, on the block's real input streams (from a forward of
//! the batch; the MTP blocks reuse the last main block's, cut to their positions); what the step
//! spends outside them (embedding, heads, loss, norms, gradient bookkeeping) is the remainder.

use super::step_phases::Phases;
use crate::recipe::Recipe;
use crate::train::MicroBatch;
use anyhow::{anyhow, Result};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use std::time::Instant;
use v4_model::block::Block;
use v4_model::indexer::Indexer;
use v4_model::{AttentionMode, ForwardOptions, SampleLayout, V4Model};

/// What one block's parts need.
struct Inputs<'a, B: AutodiffBackend> {
    streams: Tensor<B, 4>,
    ids: Tensor<B, 2, Int>,
    layout: &'a SampleLayout<B>,
    opts: ForwardOptions,
    device: &'a B::Device,
}

fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow!("device sync: {e:?}"))
}

/// Seconds `f` takes, the device drained before and after.
pub(crate) fn timed<B: Backend>(device: &B::Device, f: impl FnOnce()) -> Result<f64> {
    sync::<B>(device)?;
    let t = Instant::now();
    f();
    sync::<B>(device)?;
    Ok(t.elapsed().as_secs_f64())
}

/// The phases of one micro-batch `batch` through `model` (seconds; attention, indexer, MoE and
/// mHC only).
pub fn time_phases<B: AutodiffBackend>(
    model: &V4Model<B>,
    batch: &MicroBatch,
    recipe: &Recipe,
    opts: ForwardOptions,
    device: &B::Device,
) -> Result<Phases> {
    let ignore = recipe.loss.ignore_index;
    let (ids, _) = batch.tensors::<B>(device);
    let layout = batch.layout::<B>(ignore, device)?;
    // Each main block's input streams, from a forward without autodiff.
    let inner = model.valid();
    let (inner_ids, _) = batch.tensors::<B::InnerBackend>(device);
    let inner_layout = batch.layout::<B::InnerBackend>(ignore, device)?;
    let mut x = inner.embed_streams(inner_ids.clone());
    let mut inputs = Vec::new();
    for layer in &inner.layers {
        inputs.push(x.clone());
        x = layer
            .forward_samples(x, inner_ids.clone(), &inner_layout, opts)
            .0;
    }
    let mut t = Phases::default();
    for (blk, streams) in model.layers.iter().zip(inputs.iter()) {
        let inp = Inputs {
            streams: Tensor::from_inner(streams.clone()),
            ids: ids.clone(),
            layout: &layout,
            opts,
            device,
        };
        t += time_block(blk, &inp)?;
    }
    let [b, s] = ids.dims();
    for (k, m) in model.mtp.iter().enumerate() {
        let n = s.saturating_sub(k + 1);
        let Some(last) = inputs.last().filter(|_| n > 0) else {
            break;
        };
        let sub = layout.mtp(k);
        let inp = Inputs {
            streams: Tensor::from_inner(last.clone().slice_dim(1, 0..n)),
            ids: ids.clone().slice([0..b, k + 1..s]),
            layout: &sub,
            opts,
            device,
        };
        t += time_block(&m.block, &inp)?;
    }
    Ok(t)
}

/// One block's parts, each forward + backward on its own graph.
fn time_block<B: AutodiffBackend>(blk: &Block<B>, i: &Inputs<'_, B>) -> Result<Phases> {
    let dev = i.device;
    let leaf = |t: Tensor<B, 3>| t.detach().require_grad();
    let streams = i.streams.clone().detach().require_grad();
    let mhc = timed::<B>(dev, || {
        let (y, mix) = blk.hc_attn.pre(&streams);
        let x = blk.hc_attn.post(y, streams.clone(), mix);
        let (y, mix) = blk.hc_ffn.pre(&x);
        let _ = blk.hc_ffn.post(y, x, mix).sum().backward();
    })?;
    let attn_in = leaf(blk.attn_norm.forward(blk.hc_attn.pre(&streams).0));
    let attention = timed::<B>(dev, || {
        let (a, kl) = blk.attn.forward_samples(attn_in.clone(), i.layout, i.opts);
        let loss = match kl {
            Some(kl) => a.sum() + kl,
            None => a.sum(),
        };
        let _ = loss.backward();
    })?;
    let indexer = time_indexer(blk, attn_in, i)?;
    let moe_in = leaf(blk.ffn_norm.forward(blk.hc_ffn.pre(&streams).0));
    let moe = timed::<B>(dev, || {
        let (f, aux) = blk
            .ffn
            .forward_samples(moe_in, i.ids.clone(), i.layout, i.opts);
        let loss = match aux.balance_loss {
            Some(bal) => f.sum() + bal,
            None => f.sum(),
        };
        let _ = loss.backward();
    })?;
    Ok(Phases {
        attention: (attention - indexer).max(0.0),
        indexer,
        moe,
        mhc,
        ..Phases::default()
    })
}

/// The block's lightning indexer as its attention runs it: scores (differentiated only for its
/// KL loss) and the top-k selection; 0 without an indexer or when it does not run.
fn time_indexer<B: AutodiffBackend>(
    blk: &Block<B>,
    x: Tensor<B, 3>,
    i: &Inputs<'_, B>,
) -> Result<f64> {
    let attn = &blk.attn;
    let runs = i.opts.attention == AttentionMode::Sparse || i.opts.indexer_loss;
    let (Some(ix), Some(entries)) = (attn.indexer.as_ref(), i.layout.entries(attn.ratio)) else {
        return Ok(0.0);
    };
    if !runs {
        return Ok(0.0);
    }
    let table = i.layout.rope_tokens(&attn.freqs);
    let qr = attn.q_norm.forward(attn.wq_a.forward(x.clone())).detach();
    let x = x.detach();
    timed::<B>(i.device, || {
        let ix = if i.opts.indexer_loss {
            ix.clone()
        } else {
            ix.clone().no_grad()
        };
        let Some(inputs) = ix.inputs(&x, &qr, &table, i.layout, &attn.freqs, i.opts.fake_quant)
        else {
            return;
        };
        let chosen = ix.select_top_k(&inputs.detach(), &entries, i.opts.indexer_chunk);
        if i.opts.indexer_loss {
            let _ = Indexer::scores_at(&inputs, &chosen).sum().backward();
        }
        drop(chosen);
    })
}

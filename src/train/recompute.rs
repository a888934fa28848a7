//! Activation checkpointing per block (`[train] activation_checkpointing = "block"`): a
//! training step that keeps only each main block's input streams from the forward pass and
//! recomputes one block at a time during backward, so the memory of a step is that of one
//! block's activations plus `layers + 1` stream tensors `[b, s, hc, d]` — what lets long
//! sequences fit.
//!
//! The gradients are those of the plain step: block ℓ is recomputed from its saved input with
//! the very ops and values of the forward pass, and backpropagating `Σ y_ℓ ⊙ g` (g = the
//! gradient of the block's output, constant) sends exactly `g` into the block, which autodiff
//! then carries through the block as it would in one graph. Parameters shared between pieces
//! (the embedding, used by the input and the MTP block) get the sum of their parts.
//!
//! Burn 0.21's own checkpointing (`Autodiff<B, BalancedCheckpointing>`) recomputes only ops
//! marked memory-bound (element-wise) and keeps every matmul's operands, so it cannot drop a
//! block's attention and MoE activations; it is also a backend-wide type choice. Recomputing per
//! block with separate backward passes needs only the public autodiff API.

use super::grads::merge;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use v4_model::{ForwardOptions, LayerAux, SampleLayout, V4Model};

/// Gradients of one micro-batch's objective with per-block recomputation, and the side outputs
/// of every block (main blocks, then MTP blocks, as [`v4_model::ModelOutput::aux`]).
///
/// `heads` turns the logits, the MTP logits and the MTP blocks' side outputs into the loss of
/// the heads; `block_loss` gives a main block's own auxiliary loss (added to what flows back
/// through it). The sum of all of these is the objective differentiated.
pub fn backward_by_block<B: AutodiffBackend>(
    model: &V4Model<B>,
    ids: Tensor<B, 2, Int>,
    layout: &SampleLayout<B>,
    opts: ForwardOptions,
    mtp: bool,
    heads: impl FnOnce(Tensor<B, 3>, &[Tensor<B, 3>], &[LayerAux<B>]) -> Tensor<B, 1>,
    block_loss: impl Fn(&LayerAux<B>) -> Option<Tensor<B, 1>>,
) -> (GradientsParams, Vec<LayerAux<B>>) {
    let device = ids.device();
    // The forward pass without a graph, keeping each main block's input (side losses off: they
    // change no output).
    let mut inputs = Vec::with_capacity(model.layers.len());
    let top = {
        let plain = model.valid();
        let plain_layout = SampleLayout::<B::InnerBackend>::new(
            layout.bounds().clone(),
            Some(layout.counted().to_vec()),
            &device,
        );
        let plain_ids = ids.clone().inner();
        let streams_only = ForwardOptions {
            indexer_loss: false,
            balance_loss: false,
            ..opts
        };
        let mut x = plain.embed_streams(plain_ids.clone());
        for block in &plain.layers {
            let (y, _) =
                block.forward_samples(x.clone(), plain_ids.clone(), &plain_layout, streams_only);
            inputs.push(x);
            x = y;
        }
        x
    };

    // The heads, from the final streams as a leaf.
    let top = Tensor::<B, 4>::from_inner(top).require_grad();
    let (logits, mtp_logits, mtp_aux) = model.heads(top.clone(), ids.clone(), layout, opts, mtp);
    let loss = heads(logits, &mtp_logits, &mtp_aux);
    drop(mtp_logits);
    let mut grads = loss.backward();
    let mut upstream = top.grad_remove(&mut grads);
    let mut acc = GradientsParams::from_grads(grads, model);

    // Each main block, from the top: recompute it from its input, send the gradient of its
    // output (and its own auxiliary loss) back through it.
    let mut aux = Vec::with_capacity(model.layers.len() + mtp_aux.len());
    for (block, input) in model.layers.iter().zip(inputs).rev() {
        let x = Tensor::<B, 4>::from_inner(input).require_grad();
        let (y, a) = block.forward_samples(x.clone(), ids.clone(), layout, opts);
        let loss = flowing_back(y, upstream.take());
        let loss = match block_loss(&a) {
            Some(extra) => loss + extra,
            None => loss,
        };
        let mut grads = loss.backward();
        upstream = x.grad_remove(&mut grads);
        acc = merge(model, acc, GradientsParams::from_grads(grads, block));
        aux.push(a);
    }
    aux.reverse();
    aux.extend(mtp_aux);

    // The embedding.
    let loss = flowing_back(model.embed_streams(ids), upstream);
    acc = merge(
        model,
        acc,
        GradientsParams::from_grads(loss.backward(), model),
    );
    (acc, aux)
}

/// `Σ y ⊙ g`: backpropagating it sends exactly `g` into `y` (zeros when no gradient reached
/// `y`).
fn flowing_back<B: AutodiffBackend>(
    y: Tensor<B, 4>,
    g: Option<Tensor<B::InnerBackend, 4>>,
) -> Tensor<B, 1> {
    let g = g.unwrap_or_else(|| Tensor::zeros(y.dims(), &y.device()));
    (y * Tensor::from_inner(g)).sum()
}

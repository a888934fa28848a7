//! The V4 router (spec §2.8): `s = sqrt(softplus(x · W_gate))` in fp32; hash layers take their
//! experts from the fixed `tid2eid[token]` table, the others the top-k of `s + bias` (the bias
//! moves only the choice); weights are `s` at the chosen experts, renormalised, times
//! `routed_scaling_factor`.

use crate::config::ScoringFunc;
use crate::linear::Linear;
use burn::module::{Module, Param};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{backend::Backend, Int, Tensor};

/// How a layer picks experts.
#[derive(Module, Debug)]
pub enum Routing<B: Backend> {
    /// Fixed experts per token id: `tid2eid` `[vocab, k]`.
    Hash(Param<Tensor<B, 2, Int>>),
    /// Top-k of score + selection bias `[E]` (not a gradient parameter).
    Score(Param<Tensor<B, 1>>),
}

/// `ffn.gate`.
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// `gate.weight` `[d, E]`.
    pub weight: Linear<B>,
    /// Hash table or selection bias.
    pub routing: Routing<B>,
    /// Experts per token.
    pub top_k: usize,
    /// Weight multiplier.
    pub route_scale: f64,
    /// Scoring function.
    #[module(skip)]
    pub scoring: ScoringFunc,
}

/// Numerically stable `softplus(x) = max(x, 0) + log1p(exp(−|x|))` (equals torch's thresholded
/// softplus to < 3e-9 and has a finite gradient everywhere).
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    relu(x.clone()) + x.abs().neg().exp().log1p()
}

impl<B: Backend> Router<B> {
    /// Scores `[N, E]` of tokens `x` `[N, d]`.
    pub fn scores(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let logits = self.weight.forward_f32(x);
        match self.scoring {
            ScoringFunc::Sqrtsoftplus => softplus(logits).sqrt(),
            ScoringFunc::Sigmoid => sigmoid(logits),
            ScoringFunc::Softmax => softmax(logits, 1),
        }
    }

    /// Routing weights `[N, k]` (differentiable) and expert ids `[N, k]` for tokens `x` `[N, d]`
    /// with ids `tokens` `[N]`.
    pub fn route(
        &self,
        x: Tensor<B, 2>,
        tokens: Tensor<B, 1, Int>,
    ) -> (Tensor<B, 2>, Tensor<B, 2, Int>) {
        let (w, idx, _) = self.route_with_scores(x, tokens);
        (w, idx)
    }

    /// [`Router::route`] plus the scores `[N, E]` it ranked (differentiable through the gate
    /// weight and `x`), for the sequence-wise balance loss.
    pub fn route_with_scores(
        &self,
        x: Tensor<B, 2>,
        tokens: Tensor<B, 1, Int>,
    ) -> (Tensor<B, 2>, Tensor<B, 2, Int>, Tensor<B, 2>) {
        let scores = self.scores(x);
        let idx = match &self.routing {
            Routing::Hash(table) => table.val().select(0, tokens),
            Routing::Score(bias) => {
                let biased = scores.clone().detach() + bias.val().unsqueeze_dim(0);
                biased.topk_with_indices(self.top_k, 1).1
            }
        };
        let mut w = scores.clone().gather(1, idx.clone());
        if self.scoring != ScoringFunc::Softmax {
            w = w.clone() / w.sum_dim(1);
        }
        (w.mul_scalar(self.route_scale), idx, scores)
    }
}

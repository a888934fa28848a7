//! The routed experts of a MoE layer (spec §2.8), stacked: expert `e`'s gate projection is
//! `w1[e]`, and so on, each `[in, out]` like [`Linear`](crate::linear::Linear). The release names
//! every expert's matrices separately (`experts.{e}.w1.weight`, `[out, in]`); the stacks are
//! assembled on load and split on save by the one name walk ([`crate::named`]).
//!
//! The forward computes every routed (token, slot) pair with one batched matmul per projection
//! and dispatch round ([`crate::dispatch`]: pairs sorted by expert, capacity-padded segments),
//! and combines the weighted outputs into their tokens with one scatter-add. Same SwiGLU, clamps
//! and routing-weight placement as [`Expert`], and optional FP4 QAT of the weights
//! ([`crate::expert_qat`]).

use crate::dispatch::plan_rounds;
use crate::expert::{swiglu, Expert};
use crate::expert_qat::fake_fp4_stack;
use crate::linear::Linear;
use crate::precision;
use crate::util::int_tensor_from;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, IndexingUpdateOp, Tensor};

/// Routed experts, stacked.
#[derive(Module, Debug)]
pub struct RoutedExperts<B: Backend> {
    /// Gate projections `[E, d, I]`.
    pub w1: Param<Tensor<B, 3>>,
    /// Down projections `[E, I, d]`.
    pub w2: Param<Tensor<B, 3>>,
    /// Up projections `[E, d, I]`.
    pub w3: Param<Tensor<B, 3>>,
}

/// The three stacks of a forward (FP4 round trips with QAT), gathered to a round's experts.
struct Weights<B: Backend> {
    w1: Tensor<B, 3>,
    w2: Tensor<B, 3>,
    w3: Tensor<B, 3>,
}

impl<B: Backend> Weights<B> {
    fn select(&self, experts: &[usize]) -> Self {
        let ids: Vec<i64> = experts.iter().map(|&e| e as i64).collect();
        let ids = int_tensor_from::<B, 1>(ids, [experts.len()], &self.w1.device());
        Self {
            w1: self.w1.clone().select(0, ids.clone()),
            w2: self.w2.clone().select(0, ids.clone()),
            w3: self.w3.clone().select(0, ids),
        }
    }
}

impl<B: Backend> RoutedExperts<B> {
    /// Number of experts.
    pub fn len(&self) -> usize {
        self.w1.dims()[0]
    }

    /// No experts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Expert `e` as a separate [`Expert`] with its own parameters (a detached copy of its
    /// matrices, e.g. for a per-expert reference).
    pub fn expert(&self, e: usize) -> Expert<B> {
        let one = |w: &Param<Tensor<B, 3>>| {
            let [_, i, o] = w.dims();
            Linear {
                weight: Param::from_tensor(w.val().slice_dim(0, e..e + 1).reshape([i, o]).detach()),
            }
        };
        Expert {
            w1: one(&self.w1),
            w2: one(&self.w2),
            w3: one(&self.w3),
        }
    }

    /// The routed-expert output `[N, d]` of tokens `x` `[N, d]` routed to experts `idx` (host,
    /// flat `[N·k]`) with weights `w` `[N, k]`: `Σ_slots w · expert(x)`. `limit`: the SwiGLU
    /// clamp (0: none); `fp4`: FP4 QAT of the weights (straight-through).
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
        idx: &[i64],
        limit: f64,
        fp4: bool,
    ) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let k = w.dims()[1];
        let (device, dtype) = (x.device(), x.dtype());
        let rounds = plan_rounds(idx, self.len());
        if rounds.is_empty() {
            return Tensor::zeros([n, d], (&device, dtype));
        }
        let stack = |p: &Param<Tensor<B, 3>>| {
            let v = p.val();
            precision::operand(if fp4 { fake_fp4_stack(v) } else { v })
        };
        let all = Weights {
            w1: stack(&self.w1),
            w2: stack(&self.w2),
            w3: stack(&self.w3),
        };
        // Padding rows read a zero token row `n` with weight 0 and land in a dropped row `n`.
        // Tokens and weights are cast to the compute dtype once for all rounds and projections.
        let xz = precision::operand(Tensor::cat(
            vec![x, Tensor::zeros([1, d], (&device, dtype))],
            0,
        ));
        let wz = precision::operand(Tensor::cat(
            vec![w.reshape([n * k]), Tensor::zeros([1], (&device, dtype))],
            0,
        ));
        let (mut outs, mut dest) = (Vec::new(), Vec::new());
        for r in &rounds {
            let ws;
            let wts = match &r.experts {
                Some(ex) => {
                    ws = all.select(ex);
                    &ws
                }
                None => &all,
            };
            let m = r.rows.len();
            let token: Vec<i64> = r
                .rows
                .iter()
                .map(|p| p.map_or(n, |p| p / k) as i64)
                .collect();
            let pair: Vec<i64> = r.rows.iter().map(|p| p.unwrap_or(n * k) as i64).collect();
            let token = int_tensor_from::<B, 1>(token, [m], &device);
            let pair = int_tensor_from::<B, 1>(pair, [m], &device);
            let e = m / r.cap;
            let xs = xz.clone().select(0, token.clone()).reshape([e, r.cap, d]);
            let ws = wz.clone().select(0, pair).reshape([e, r.cap, 1]);
            let h = swiglu(
                precision::matmul_keep(xs.clone(), wts.w1.clone()),
                precision::matmul_keep(xs, wts.w3.clone()),
                limit,
            ) * ws;
            let out = precision::matmul_keep(h, wts.w2.clone());
            outs.push(precision::restore(out, dtype).reshape([m, d]));
            dest.push(token);
        }
        let y = Tensor::zeros([n + 1, d], (&device, dtype)).select_assign(
            0,
            Tensor::cat(dest, 0),
            Tensor::cat(outs, 0),
            IndexingUpdateOp::Add,
        );
        y.slice_dim(0, 0..n)
    }
}

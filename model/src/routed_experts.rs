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

use crate::base_weight::StackWeight;
use crate::dispatch::plan_rounds;
use crate::expert::{swiglu, Expert};
use crate::expert_qat::fake_fp4_stack;
use crate::frozen_matmul::frozen_matmul;
use crate::linear::Linear;
use crate::lora::LoraStack;
use crate::precision;
use crate::stored_weight::{StoredWeight, View};
use crate::util::{index_tensor, int_tensor_from};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor};

/// Routed experts, stacked.
#[derive(Module, Debug)]
pub struct RoutedExperts<B: Backend> {
    /// Gate projections `[E, d, I]`.
    pub w1: StackWeight<B>,
    /// Down projections `[E, I, d]`.
    pub w2: StackWeight<B>,
    /// Up projections `[E, d, I]`.
    pub w3: StackWeight<B>,
    /// LoRA adapters of the gate projections, one per expert.
    pub lora_w1: Option<LoraStack<B>>,
    /// LoRA adapters of the down projections.
    pub lora_w2: Option<LoraStack<B>>,
    /// LoRA adapters of the up projections.
    pub lora_w3: Option<LoraStack<B>>,
}

/// The experts of a dispatch round: host positions and their index tensor (built once per round
/// for every stack and adapter it selects from).
struct Members<'a, B: Backend> {
    list: &'a [usize],
    ids: Tensor<B, 1, Int>,
}

/// One stack in a forward: dense values (FP4 round trips with QAT, compute dtype), or the
/// frozen stored form.
enum Stack<'a, B: Backend> {
    Dense(Tensor<B, 3>),
    Stored(&'a StoredWeight<B>),
}

impl<'a, B: Backend> Stack<'a, B> {
    /// The stack `w` for a forward (`fp4`: FP4 QAT of dense weights).
    fn of(w: &'a StackWeight<B>, fp4: bool) -> Self {
        match w {
            StackWeight::Dense(p) => {
                let v = p.val();
                Stack::Dense(precision::operand(if fp4 { fake_fp4_stack(v) } else { v }))
            }
            // A frozen base is already in its stored form: nothing to fake-quantize.
            StackWeight::Stored(s) => Stack::Stored(s),
        }
    }

    /// `x` `[e, cap, in]` times the stack's matrices of `members` (`None`: all, in order).
    fn product(&self, x: Tensor<B, 3>, members: Option<&Members<B>>) -> Tensor<B, 3> {
        match self {
            Stack::Dense(w) => {
                let w = match members {
                    Some(m) => w.clone().select(0, m.ids.clone()),
                    None => w.clone(),
                };
                precision::matmul_keep(x, w)
            }
            Stack::Stored(s) => {
                let view = View {
                    members: members.map(|m| m.list.to_vec()),
                };
                frozen_matmul(x, s, &view)
            }
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
        let one = |w: &StackWeight<B>| {
            let [_, i, o] = w.dims();
            Linear::new(Param::from_tensor(
                w.val().slice_dim(0, e..e + 1).reshape([i, o]).detach(),
            ))
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
        let (w1, w2, w3) = (
            Stack::of(&self.w1, fp4),
            Stack::of(&self.w2, fp4),
            Stack::of(&self.w3, fp4),
        );
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
            // Each projection plus its experts' adapters (a round's experts in its order).
            let members = r.experts.as_deref().map(|list| Members {
                list,
                ids: index_tensor::<B>(list, &device),
            });
            let members = members.as_ref();
            let proj = |x: Tensor<B, 3>, w: &Stack<B>, l: &Option<LoraStack<B>>| {
                let y = w.product(x.clone(), members);
                match l {
                    Some(l) => y + l.delta(x, members.map(|m| &m.ids)),
                    None => y,
                }
            };
            let h = swiglu(
                proj(xs.clone(), &w1, &self.lora_w1),
                proj(xs, &w3, &self.lora_w3),
                limit,
            ) * ws;
            let out = proj(h, &w2, &self.lora_w2);
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

//! Mixture of experts (spec §2.8): SwiGLU experts with the `swiglu_limit` clamps (up branch to
//! ±limit, gate branch above only), the routing weight applied before `w2`, plus one shared
//! expert. Routed tokens are dispatched sparsely: (token, slot) pairs are grouped by expert on
//! the host and each expert runs only on its own rows, so cost scales with top-k, not with the
//! number of experts. Training options: the sequence-wise balance loss (see
//! [`crate::balance_loss`]; with packed samples, per sample and over counted tokens only)
//! and FP4 QAT of the routed experts' weights (see [`crate::expert_qat`]).

use crate::balance_loss::{group_balance_loss, sequence_balance_loss};
use crate::config::ScoringFunc;
use crate::expert_qat::fake_fp4_weight;
use crate::layer_aux::MoeAux;
use crate::linear::Linear;
use crate::options::ForwardOptions;
use crate::router::{Router, Routing};
use crate::sample_layout::SampleLayout;
use crate::util::{int_tensor_from, to_vec_int};
use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor};

/// One SwiGLU expert.
#[derive(Module, Debug)]
pub struct Expert<B: Backend> {
    /// Gate projection `w1` `[d, I]`.
    pub w1: Linear<B>,
    /// Down projection `w2` `[I, d]`.
    pub w2: Linear<B>,
    /// Up projection `w3` `[d, I]`.
    pub w3: Linear<B>,
}

impl<B: Backend> Expert<B> {
    /// `w2(weight · silu(min(w1 x, L)) · clamp(w3 x, −L, L))`; `limit` 0 disables the clamps.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        weight: Option<Tensor<B, 2>>,
        limit: f64,
    ) -> Tensor<B, 2> {
        self.forward_with(x, weight, limit, false)
    }

    /// [`Expert::forward`]; `fp4`: the three weights go through FP4 fake quantization
    /// ([`fake_fp4_weight`], straight-through gradient) first.
    pub fn forward_with(
        &self,
        x: Tensor<B, 2>,
        weight: Option<Tensor<B, 2>>,
        limit: f64,
        fp4: bool,
    ) -> Tensor<B, 2> {
        let lin = |l: &Linear<B>, x: Tensor<B, 2>| {
            if fp4 {
                x.matmul(fake_fp4_weight(l.weight.val()))
            } else {
                l.forward(x)
            }
        };
        let mut gate = lin(&self.w1, x.clone());
        let mut up = lin(&self.w3, x);
        if limit > 0.0 {
            up = up.clamp(-limit, limit);
            gate = gate.clamp_max(limit);
        }
        let mut h = silu(gate) * up;
        if let Some(w) = weight {
            h = h * w;
        }
        lin(&self.w2, h)
    }
}

/// `layers.N.ffn`.
#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// `gate`.
    pub gate: Router<B>,
    /// Routed experts.
    pub experts: Vec<Expert<B>>,
    /// The shared expert.
    pub shared_experts: Option<Expert<B>>,
    /// SwiGLU clamp.
    pub swiglu_limit: f64,
}

/// Tokens grouped by expert: for each expert, the flat (token·k + slot) positions routed to it.
pub fn group_by_expert(idx: &[i64], n_experts: usize) -> Vec<Vec<usize>> {
    let mut groups = vec![Vec::new(); n_experts];
    for (p, e) in idx.iter().enumerate() {
        if let Some(g) = usize::try_from(*e).ok().and_then(|e| groups.get_mut(e)) {
            g.push(p);
        }
    }
    groups
}

impl<B: Backend> Moe<B> {
    /// `x` `[b, s, d]`, token ids `[b, s]` → `[b, s, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_aux(x, ids, ForwardOptions::default()).0
    }

    /// [`Moe::forward`] plus the expert load, the sequence-wise balance loss when
    /// `opts.balance_loss` (score-routed layers only: hash routing is fixed, so there is nothing
    /// for the loss to balance), and FP4 QAT of the routed experts when `opts.expert_fp4`, for
    /// unpacked rows with every token counted.
    pub fn forward_aux(
        &self,
        x: Tensor<B, 3>,
        ids: Tensor<B, 2, Int>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 3>, MoeAux<B>) {
        let [b, s, _] = x.dims();
        let layout = SampleLayout::whole(b, s, &x.device());
        self.forward_samples(x, ids, &layout, opts)
    }

    /// [`Moe::forward_aux`] for the samples of `layout`: the load and the balance loss count
    /// only its counted tokens, and the balance loss's sequences are its samples.
    pub fn forward_samples(
        &self,
        x: Tensor<B, 3>,
        ids: Tensor<B, 2, Int>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 3>, MoeAux<B>) {
        let [b, s, d] = x.dims();
        let n = b * s;
        let device = x.device();
        let xf = x.reshape([n, d]);
        let (w, idx, scores) = self.gate.route_with_scores(xf.clone(), ids.reshape([n]));
        let k = w.dims()[1];
        let idx = to_vec_int(idx);
        let groups = group_by_expert(&idx, self.experts.len());
        let biased = matches!(self.gate.routing, Routing::Score(_));
        let plain = !layout.is_packed() && layout.all_counted();
        let balance_loss = (opts.balance_loss && biased).then(|| {
            let normalise = self.gate.scoring != ScoringFunc::Softmax;
            if plain {
                sequence_balance_loss(scores, &idx, b, k, normalise)
            } else {
                let (of, count) = layout.balance_groups();
                group_balance_loss(scores, &idx, &of, count, k, normalise)
            }
        });
        let counted = layout.counted();
        let expert_load = groups
            .iter()
            .map(|g| g.iter().filter(|&&p| counted[p / k]).count() as u64)
            .collect();
        let aux = MoeAux {
            expert_load,
            biased,
            balance_loss,
        };

        let order: Vec<i64> = groups.iter().flatten().map(|p| *p as i64).collect();
        let mut y = Tensor::<B, 2>::zeros([n, d], &device);
        if !order.is_empty() {
            let m = order.len();
            let tokens: Vec<i64> = order.iter().map(|p| p / k as i64).collect();
            let tokens = int_tensor_from::<B, 1>(tokens, [m], &device);
            let xs = xf.clone().select(0, tokens.clone());
            let ws = w
                .reshape([n * k])
                .select(0, int_tensor_from::<B, 1>(order, [m], &device));
            let mut outs = Vec::new();
            let mut start = 0;
            for (e, g) in groups.iter().enumerate() {
                if g.is_empty() {
                    continue;
                }
                let end = start + g.len();
                let xe = xs.clone().slice_dim(0, start..end);
                let we = ws.clone().slice_dim(0, start..end).unsqueeze_dim(1);
                let expert = &self.experts[e];
                outs.push(expert.forward_with(xe, Some(we), self.swiglu_limit, opts.expert_fp4));
                start = end;
            }
            y = y.select_assign(0, tokens, Tensor::cat(outs, 0), IndexingUpdateOp::Add);
        }
        // The shared expert is FP8 in the release, not FP4: no expert QAT here.
        if let Some(shared) = &self.shared_experts {
            y = y + shared.forward(xf, None, self.swiglu_limit);
        }
        (y.reshape([b, s, d]), aux)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grouping_keeps_token_order_within_each_expert() {
        // 3 tokens × top-2
        let idx = [2, 0, 0, 1, 2, 1];
        let g = super::group_by_expert(&idx, 4);
        assert_eq!(g, vec![vec![1, 2], vec![3, 5], vec![0, 4], vec![]]);
    }
}

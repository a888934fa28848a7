//! Mixture of experts (spec §2.8): the router, the routed SwiGLU experts (stacked, computed with
//! grouped matmuls over the (token, slot) pairs sorted by expert: see
//! [`crate::routed_experts`]), so cost scales with top-k, not with the number of experts, plus
//! one shared expert. Training options: the sequence-wise balance loss (see
//! [`crate::balance_loss`]; with packed samples, per sample and over counted tokens only)
//! and FP4 QAT of the routed experts' weights (see [`crate::expert_qat`]).

use crate::balance_loss::{group_balance_loss, sequence_balance_loss};
use crate::config::ScoringFunc;
pub use crate::expert::Expert;
use crate::layer_aux::MoeAux;
use crate::options::ForwardOptions;
use crate::precision;
use crate::routed_experts::RoutedExperts;
use crate::router::{Router, Routing};
use crate::sample_layout::SampleLayout;
use crate::util::to_vec_int;
use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};

/// `layers.N.ffn`.
#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// `gate`.
    pub gate: Router<B>,
    /// Routed experts, stacked.
    pub experts: RoutedExperts<B>,
    /// The shared expert.
    pub shared_experts: Option<Expert<B>>,
    /// SwiGLU clamp.
    pub swiglu_limit: f64,
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
        let _precision = precision::enter(opts.precision);
        let [b, s, d] = x.dims();
        let n = b * s;
        let xf = x.reshape([n, d]);
        let (w, idx, scores) = self.gate.route_with_scores(xf.clone(), ids.reshape([n]));
        let k = w.dims()[1];
        let idx = to_vec_int(idx);
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
        let mut expert_load = vec![0u64; self.experts.len()];
        for (p, e) in idx.iter().enumerate() {
            if let Some(l) = usize::try_from(*e)
                .ok()
                .and_then(|e| expert_load.get_mut(e))
            {
                *l += u64::from(counted[p / k]);
            }
        }
        let aux = MoeAux {
            expert_load,
            biased,
            balance_loss,
        };

        let mut y = self
            .experts
            .forward(xf.clone(), w, &idx, self.swiglu_limit, opts.expert_fp4);
        // The shared expert is FP8 in the release, not FP4: no expert QAT here.
        if let Some(shared) = &self.shared_experts {
            y = y + shared.forward(xf, None, self.swiglu_limit);
        }
        (y.reshape([b, s, d]), aux)
    }
}

//! One SwiGLU expert (spec §2.8): `w2(weight · silu(min(w1 x, L)) · clamp(w3 x, −L, L))` with
//! V4's `swiglu_limit` clamps (up branch to ±L, gate branch above only). The shared expert is one
//! of these; the routed experts run the same activation on stacked weights
//! ([`crate::routed_experts`]).

use crate::base_weight::Weight;
use crate::expert_qat::fake_fp4_weight;
use crate::frozen_matmul::frozen_matmul;
use crate::linear::Linear;
use crate::precision;
use crate::stored_weight::View;
use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Tensor};

/// V4's clamped SwiGLU `silu(min(gate, L)) · clamp(up, −L, L)`; `limit` 0 disables the clamps.
pub fn swiglu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
    limit: f64,
) -> Tensor<B, D> {
    let (gate, up) = if limit > 0.0 {
        (gate.clamp_max(limit), up.clamp(-limit, limit))
    } else {
        (gate, up)
    };
    silu(gate) * up
}

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
        // In bf16 the SwiGLU runs in bf16 between the projections (as the routed experts').
        let dtype = x.dtype();
        let x = precision::operand(x);
        let lin = |l: &Linear<B>, x: Tensor<B, 2>| {
            let y = match &l.weight {
                Weight::Dense(p) => {
                    let w = p.val();
                    precision::matmul_keep(x.clone(), if fp4 { fake_fp4_weight(w) } else { w })
                }
                // Frozen base: already in its stored form, nothing to fake-quantize.
                Weight::Stored(s) => frozen_matmul(x.clone(), s, &View::default()),
            };
            match &l.lora {
                Some(a) => y + a.delta(x, precision::matmul),
                None => y,
            }
        };
        let mut h = swiglu(lin(&self.w1, x.clone()), lin(&self.w3, x), limit);
        if let Some(w) = weight {
            h = h * precision::operand(w);
        }
        precision::restore(lin(&self.w2, h), dtype)
    }
}

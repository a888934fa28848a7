//! LoRA (Hu et al., 2021): a frozen projection `W` learns a low-rank update,
//! `y = W x + s · B(A x)` with `A` `[r, in]`, `B` `[out, r]` and `s = α / r` (rsLoRA, Kalajdzievski
//! 2023: `s = α / √r`). `A` starts Kaiming-uniform (bound `1/√in`, as PEFT), `B` at zero, so the
//! adapted model starts exactly at its base.
//!
//! [`LoraSpec`] ([`crate::lora_spec`]) says which projections get adapters and with what rank;
//! [`Lora`] adapts one projection, [`LoraStack`] a stack of them applied batch-wise: the
//! routed experts' `[E, in, out]` stacks (each expert its own `A`, `B`, used only by the tokens
//! routed to it) and `wo_a`'s groups. Adapters are stored Burn-style (`A` `[in, r]`, `B`
//! `[r, out]`; stacks `[G, in, r]`, `[G, r, out]`) and saved in checkpoint orientation by the
//! named walk ([`crate::named`]) under `{projection}.lora_A.weight` / `.lora_B.weight`.

use crate::error::ModelError;
pub use crate::lora_spec::{
    adapter_names, is_adapter, pattern_matches, LoraSpec, DEFAULT_TARGETS, TARGET_GROUPS,
};
use crate::precision;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Int, Tensor, TensorData};

/// Inverted dropout on the adapter input, only while autodiff records (training).
fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
    x * keep.div_scalar(1.0 - p)
}

/// The adapter of one projection.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `A` `[in, r]` (the checkpoint's `lora_A` `[r, in]`, transposed).
    pub a: Param<Tensor<B, 2>>,
    /// `B` `[r, out]` (the checkpoint's `lora_B` `[out, r]`, transposed).
    pub b: Param<Tensor<B, 2>>,
    /// `s`.
    pub scale: f64,
    /// Input dropout probability.
    pub dropout: f64,
}

impl<B: Backend> Lora<B> {
    /// From Burn-orientation values `a` `[in, r]` and `b` `[r, out]`.
    pub fn new(
        a: Vec<f32>,
        b: Vec<f32>,
        dims: [usize; 3],
        scale: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let [inp, r, out] = dims;
        let t =
            |v, s: [usize; 2]| Param::from_tensor(Tensor::from_data(TensorData::new(v, s), device));
        Self {
            a: t(a, [inp, r]),
            b: t(b, [r, out]),
            scale,
            dropout,
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// `s · B(A x)` over the rows of `x` `[rows, in]`, multiplied by `mm` (the projection's own
    /// matmul: at the compute precision, or f32).
    pub fn delta(
        &self,
        x: Tensor<B, 2>,
        mm: fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let h = mm(dropout(x, self.dropout), self.a.val());
        mm(h, self.b.val()).mul_scalar(self.scale)
    }
}

/// Adapters of a stack of projections (`[G, in, out]`), one per member, applied batch-wise.
#[derive(Module, Debug)]
pub struct LoraStack<B: Backend> {
    /// `A` `[G, in, r]` (the checkpoint's `lora_A` `[G, r, in]`).
    pub a: Param<Tensor<B, 3>>,
    /// `B` `[G, r, out]` (the checkpoint's `lora_B` `[G, out, r]`).
    pub b: Param<Tensor<B, 3>>,
    /// `s`.
    pub scale: f64,
    /// Input dropout probability.
    pub dropout: f64,
}

impl<B: Backend> LoraStack<B> {
    /// From Burn-orientation values `a` `[G, in, r]` and `b` `[G, r, out]`.
    pub fn new(
        a: Vec<f32>,
        b: Vec<f32>,
        dims: [usize; 4],
        scale: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let [g, inp, r, out] = dims;
        let t =
            |v, s: [usize; 3]| Param::from_tensor(Tensor::from_data(TensorData::new(v, s), device));
        Self {
            a: t(a, [g, inp, r]),
            b: t(b, [g, r, out]),
            scale,
            dropout,
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.a.dims()[2]
    }

    /// `s · B_g(A_g x)` for `x` `[G', rows, in]`, where member `members[i]` adapts batch `i`
    /// (`members`: an index tensor, see [`crate::util::index_tensor`]; `None`: all in order).
    pub fn delta(&self, x: Tensor<B, 3>, members: Option<&Tensor<B, 1, Int>>) -> Tensor<B, 3> {
        let (mut a, mut b) = (self.a.val(), self.b.val());
        if let Some(ids) = members {
            a = a.select(0, ids.clone());
            b = b.select(0, ids.clone());
        }
        let h = precision::matmul(dropout(x, self.dropout), a);
        precision::matmul(h, b).mul_scalar(self.scale)
    }
}

/// Builds adapters while a model loads: new ones (`A` Kaiming-uniform, `B` zero) or, when
/// resuming, the values saved in a checkpoint.
pub struct LoraBuilder<'a> {
    /// Which projections, which ranks.
    pub spec: &'a LoraSpec,
    /// Saved adapters (checkpoint orientation, names `{projection}.lora_A.weight`), if resuming.
    pub saved: Option<&'a dyn crate::WeightSource>,
}

/// An adapter's `A` and `B` values (Burn orientation) and its rank.
type Factors = (Vec<f32>, Vec<f32>, usize);

impl LoraBuilder<'_> {
    /// The `[g, in, r]` / `[g, r, out]` values of the adapter of `name`, or `None` when not
    /// targeted.
    fn values(
        &self,
        name: &str,
        g: usize,
        inp: usize,
        out: usize,
    ) -> Result<Option<Factors>, ModelError> {
        let Some(r) = self.spec.rank_for(name) else {
            return Ok(None);
        };
        let [an, bn] = adapter_names(name);
        let Some(src) = self.saved else {
            return Ok(Some((
                self.spec.init_a(&an, g, inp, r),
                vec![0.0; g * r * out],
                r,
            )));
        };
        // Saved as [g, r, in] and [g, out, r] (g = 1: plain matrices).
        let shape = |a: usize, b: usize| if g == 1 { vec![a, b] } else { vec![g, a, b] };
        let a = src.tensor_f32(&an, &shape(r, inp))?;
        let b = src.tensor_f32(&bn, &shape(out, r))?;
        let t = |v: Vec<f32>, rows: usize, cols: usize| {
            v.chunks_exact((rows * cols).max(1))
                .flat_map(|m| crate::linear::transposed(m, rows, cols))
                .collect::<Vec<f32>>()
        };
        Ok(Some((t(a, r, inp), t(b, out, r), r)))
    }

    /// The adapter of the projection `name` (`[in] → [out]`), if targeted.
    pub fn linear<B: Backend>(
        &self,
        name: &str,
        inp: usize,
        out: usize,
        device: &B::Device,
    ) -> Result<Option<Lora<B>>, ModelError> {
        Ok(self.values(name, 1, inp, out)?.map(|(a, b, r)| {
            Lora::new(
                a,
                b,
                [inp, r, out],
                self.spec.scale(r),
                self.spec.dropout,
                device,
            )
        }))
    }

    /// The adapters of the stack `name` of `g` projections `[in] → [out]`, if targeted.
    pub fn stack<B: Backend>(
        &self,
        name: &str,
        g: usize,
        inp: usize,
        out: usize,
        device: &B::Device,
    ) -> Result<Option<LoraStack<B>>, ModelError> {
        Ok(self.values(name, g, inp, out)?.map(|(a, b, r)| {
            LoraStack::new(
                a,
                b,
                [g, inp, r, out],
                self.spec.scale(r),
                self.spec.dropout,
                device,
            )
        }))
    }
}

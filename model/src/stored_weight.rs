//! A frozen base weight kept as the release stores it (spec §3.1): FP8 e4m3 codes with one E8M0
//! scale per 128×128 block, or FP4 e2m1 codes (two per byte along the input dim) with one E8M0
//! scale per 32 inputs. It is dequantized where it is used — in the forward pass and again in
//! the backward pass — so a LoRA run holds the base at its stored size (the dequantized copy of
//! one weight lives only while its matmul runs).
//!
//! Under an autodiff backend a plain `x · W` would keep the dequantized `W` for backward. The
//! product therefore runs as its own autodiff op ([`frozen_matmul`]) whose backward dequantizes
//! again and returns only `∂x` (the base gets no gradient). Burn 0.21 offers custom backward ops
//! only per concrete backend, so the op is provided for `Autodiff<Flex>` (and `Autodiff<Cuda>`
//! with the `cuda` feature), found by type at run time; any other backend falls back to
//! dequantize-then-matmul, which is the same product.

use burn::module::{Module, Param, ParamId};
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};

/// FP8 block edge (rows and columns).
pub const FP8_BLOCK: usize = 128;
/// FP4 group width (inputs per scale).
pub const FP4_GROUP: usize = 32;

/// The value of an e4m3 (FP8, no infinities, 0x7F/0xFF NaN) code.
pub fn e4m3(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (i32::from((code >> 3) & 0x0F), f32::from(code & 0x07));
    match (e, code & 0x7F) {
        (_, 0x7F) => f32::NAN,
        (0, _) => sign * m / 8.0 * 2f32.powi(-6),
        _ => sign * (1.0 + m / 8.0) * 2f32.powi(e - 7),
    }
}

/// The value of an e2m1 (FP4) code (low 4 bits).
pub fn e2m1(code: u8) -> f32 {
    const V: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    let v = V[usize::from(code & 0x07)];
    if code & 0x08 != 0 {
        -v
    } else {
        v
    }
}

/// The value of an E8M0 scale byte: 2^(byte − 127) (255: NaN).
pub fn e8m0(byte: u8) -> f32 {
    if byte == 255 {
        f32::NAN
    } else {
        2f32.powi(i32::from(byte) - 127)
    }
}

/// A quantized weight as read from a checkpoint, for [`StoredWeight::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// FP4 (else FP8).
    pub fp4: bool,
    /// Codes, row-major `[rows, cols]` bytes (FP4: `[rows, cols/2]`).
    pub codes: Vec<u8>,
    /// E8M0 scale bytes, row-major over the scale grid.
    pub scales: Vec<u8>,
}

/// One or more quantized matrices `[rows, cols]` (checkpoint orientation `[out, in]`), each with
/// its own scale grid: a projection (`members` 1) or a stack of routed experts.
#[derive(Module, Debug)]
pub struct StoredWeight<B: Backend> {
    /// Codes of every member, flat (u8).
    pub codes: Param<Tensor<B, 1, Int>>,
    /// E8M0 scales of every member, flat (u8).
    pub scales: Param<Tensor<B, 1, Int>>,
    /// Matrices.
    pub members: usize,
    /// Rows (outputs) per matrix.
    pub rows: usize,
    /// Columns (inputs) per matrix.
    pub cols: usize,
    /// FP4 codes (else FP8).
    pub fp4: bool,
    /// Row groups each matrix is used as (`wo_a`: `o_groups`; else 1).
    pub groups: usize,
}

/// Which members of a [`StoredWeight`] a product uses: `[G, rows/groups, cols]` of the chosen
/// members, each split into its row groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// Members in order (`None`: all).
    pub members: Option<Vec<usize>>,
}

impl<B: Backend> StoredWeight<B> {
    /// The stacked matrices `parts` (all FP8 or all FP4, each `[rows, cols]`), used as `groups`
    /// row groups each.
    pub fn new(
        parts: Vec<StoredTensor>,
        [rows, cols]: [usize; 2],
        groups: usize,
        device: &B::Device,
    ) -> Self {
        let fp4 = parts.first().is_some_and(|p| p.fp4);
        let members = parts.len();
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for p in parts {
            codes.extend(p.codes);
            scales.extend(p.scales);
        }
        let int = |v: Vec<u8>| {
            let n = v.len();
            let t = Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), (device, DType::U8));
            Param::initialized(ParamId::new(), t)
        };
        Self {
            codes: int(codes),
            scales: int(scales),
            members,
            rows,
            cols,
            fp4,
            groups: groups.max(1),
        }
    }

    /// Scale-grid shape of one matrix.
    pub fn scale_grid(&self) -> [usize; 2] {
        if self.fp4 {
            [self.rows, self.cols.div_ceil(FP4_GROUP)]
        } else {
            [self.rows.div_ceil(FP8_BLOCK), self.cols.div_ceil(FP8_BLOCK)]
        }
    }

    /// Bytes held (codes and scales).
    pub fn stored_bytes(&self) -> usize {
        let [sr, sc] = self.scale_grid();
        let per = if self.fp4 {
            self.rows * self.cols / 2
        } else {
            self.rows * self.cols
        };
        self.members * (per + sr * sc)
    }

    /// The values `[G, rows/groups, cols]` of `view`, in `dtype` (e4m3 and e2m1 values times
    /// powers of two are exact in f32 and bf16).
    pub fn dequantize(&self, view: &View, dtype: DType) -> Tensor<B, 3> {
        dequantize(self.parts(), view, dtype)
    }

    fn parts(&self) -> Parts<B> {
        Parts {
            codes: self.codes.val(),
            scales: self.scales.val(),
            members: self.members,
            rows: self.rows,
            cols: self.cols,
            fp4: self.fp4,
            groups: self.groups,
        }
    }
}

/// The tensors and geometry of a stored weight, on any backend.
#[derive(Debug, Clone)]
struct Parts<B: Backend> {
    codes: Tensor<B, 1, Int>,
    scales: Tensor<B, 1, Int>,
    members: usize,
    rows: usize,
    cols: usize,
    fp4: bool,
    groups: usize,
}

/// A lookup table `[n, w]` in `dtype`.
fn table<B: Backend>(values: Vec<f32>, w: usize, dtype: DType, device: &B::Device) -> Tensor<B, 2> {
    let n = values.len() / w;
    Tensor::from_data(TensorData::new(values, [n, w]), (device, dtype))
}

fn dequantize<B: Backend>(p: Parts<B>, view: &View, dtype: DType) -> Tensor<B, 3> {
    let device = p.codes.device();
    let [r, c] = [p.rows, p.cols];
    let [sr, sc] = if p.fp4 {
        [r, c.div_ceil(FP4_GROUP)]
    } else {
        [r.div_ceil(FP8_BLOCK), c.div_ceil(FP8_BLOCK)]
    };
    let (mut codes, mut scales) = (p.codes, p.scales);
    let mut g = p.members;
    if let Some(m) = &view.members {
        let ids: Vec<i64> = m.iter().map(|&e| e as i64).collect();
        let ids = crate::util::int_tensor_from::<B, 1>(ids, [m.len()], &device);
        let per = codes.dims()[0] / g.max(1);
        let picked = codes.reshape([g, per]).select(0, ids.clone());
        let spicked = scales.reshape([g, sr * sc]).select(0, ids);
        g = m.len();
        codes = picked.reshape([g * per]);
        scales = spicked.reshape([g * sr * sc]);
    }
    let values = if p.fp4 {
        // One row per byte: (low nibble, high nibble).
        let lut: Vec<f32> = (0..=255u8).flat_map(|b| [e2m1(b), e2m1(b >> 4)]).collect();
        table::<B>(lut, 2, dtype, &device).select(0, codes)
    } else {
        table::<B>((0..=255u8).map(e4m3).collect(), 1, dtype, &device).select(0, codes)
    };
    let s = table::<B>((0..=255u8).map(e8m0).collect(), 1, dtype, &device).select(0, scales);
    let w = if p.fp4 && c % FP4_GROUP == 0 {
        // Whole groups: one scale per row of 32.
        (values.reshape([g * r * sc, FP4_GROUP]) * s.reshape([g * r * sc, 1])).reshape([g, r, c])
    } else {
        let [br, bc] = if p.fp4 {
            [1, FP4_GROUP]
        } else {
            [FP8_BLOCK; 2]
        };
        let full = s
            .reshape([g, sr, 1, sc, 1])
            .expand([g, sr, br, sc, bc])
            .reshape([g, sr * br, sc * bc])
            .slice([0..g, 0..r, 0..c]);
        values.reshape([g, r, c]) * full
    };
    let k = p.groups.max(1);
    w.reshape([g * k, r / k, c])
}

/// `x · Wᵀ` for the stored `W` seen through `view` (`[G, out, in]`): `x` `[rows, in]` with
/// `G` = 1, or `[G, rows, in]`; the result is in `x`'s dtype. Under autodiff the backward
/// dequantizes `W` again and gives `x` its gradient; `W` gets none.
pub fn frozen_matmul<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: &StoredWeight<B>,
    view: &View,
) -> Tensor<B, D> {
    #[cfg(feature = "cuda")]
    let x = match autodiff_op::with::<B, burn::backend::Cuda, D>(x, w, view) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = match autodiff_op::with::<B, burn::backend::Flex, D>(x, w, view) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let wt = w.dequantize(view, x.dtype()).swap_dims(1, 2);
    match D {
        2 => {
            let [_, i, o] = wt.dims();
            let y = x.reshape([0, 0]).matmul(wt.reshape([i, o]));
            let d = y.dims();
            y.reshape(resize::<D>(&d))
        }
        _ => {
            let d = x.dims();
            let y = x.reshape([d[0], d[1], d[D - 1]]).matmul(wt);
            let d = y.dims();
            y.reshape(resize::<D>(&d))
        }
    }
}

/// `dims` as a `D`-dimensional shape (same rank).
fn resize<const D: usize>(dims: &[usize]) -> [usize; D] {
    let mut out = [0; D];
    out.copy_from_slice(&dims[..D]);
    out
}

/// The custom autodiff op of [`frozen_matmul`] for `Autodiff<I>`.
mod autodiff_op {
    use super::{dequantize, Parts, StoredWeight, View};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::Autodiff;
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::{FloatTensor, IntTensor};
    use burn::tensor::{Int, Tensor, TensorPrimitive};
    use std::any::{Any, TypeId};

    /// `t` as a `U` when it is one.
    fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
        if TypeId::of::<T>() != TypeId::of::<U>() {
            return Err(t);
        }
        let boxed: Box<dyn Any> = Box::new(t);
        match boxed.downcast::<U>() {
            Ok(u) => Ok(*u),
            Err(_) => unreachable!("the type ids are equal"),
        }
    }

    /// What the backward needs: the stored weight and the view (no dequantized copy).
    #[derive(Debug, Clone)]
    struct State<I: Backend> {
        parts: Parts<I>,
        view: View,
        dtype: burn::tensor::DType,
        rank: usize,
    }

    impl<I: Backend> State<I> {
        /// `Wᵀ` as the primitive the product multiplies by (`[in, out]` or `[G, in, out]`).
        fn weight_t(&self) -> FloatTensor<I> {
            let wt = dequantize(self.parts.clone(), &self.view, self.dtype).swap_dims(1, 2);
            if self.rank == 2 {
                let [_, i, o] = wt.dims();
                wt.reshape([i, o]).into_primitive().tensor()
            } else {
                wt.into_primitive().tensor()
            }
        }
    }

    #[derive(Debug)]
    struct FrozenMatmul;

    impl<I: Backend> Backward<I, 1> for FrozenMatmul {
        type State = State<I>;

        fn backward(self, ops: Ops<State<I>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let w = ops.state.weight_t();
            unary::<I, _>(ops.parents, ops.node, grads, |g| {
                I::float_matmul(g, I::float_transpose(w))
            });
        }
    }

    /// Runs the op when `B` is `Autodiff<I>`; otherwise gives `x` back.
    pub fn with<B: Backend, I: Backend, const D: usize>(
        x: Tensor<B, D>,
        w: &StoredWeight<B>,
        view: &View,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        if TypeId::of::<B>() != TypeId::of::<Autodiff<I>>() {
            return Err(x);
        }
        let int = |t: Tensor<B, 1, Int>| -> Option<Tensor<I, 1, Int>> {
            cast::<IntTensor<B>, IntTensor<I>>(t.into_primitive())
                .ok()
                .map(Tensor::from_primitive)
        };
        let (Some(codes), Some(scales)) = (int(w.codes.val()), int(w.scales.val())) else {
            return Err(x);
        };
        let dtype = x.dtype();
        let state = State::<I> {
            parts: Parts {
                codes,
                scales,
                members: w.members,
                rows: w.rows,
                cols: w.cols,
                fp4: w.fp4,
                groups: w.groups,
            },
            view: view.clone(),
            dtype,
            rank: D,
        };
        type Ad<I> = FloatTensor<Autodiff<I, NoCheckpointing>>;
        let prim = x.into_primitive().tensor();
        let xa: Ad<I> = match cast::<FloatTensor<B>, Ad<I>>(prim) {
            Ok(a) => a,
            Err(p) => return Err(Tensor::from_primitive(TensorPrimitive::Float(p))),
        };
        let wt = state.weight_t();
        let y = I::float_matmul(xa.primitive.clone(), wt);
        let out = match FrozenMatmul
            .prepare::<NoCheckpointing>([xa.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        match cast::<Ad<I>, FloatTensor<B>>(out) {
            Ok(p) => Ok(Tensor::from_primitive(TensorPrimitive::Float(p))),
            Err(_) => unreachable!("B is Autodiff<I>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_tables() {
        assert_eq!(e4m3(0x7E), 448.0);
        assert_eq!(e4m3(0x01), 2f32.powi(-9));
        assert_eq!(e4m3(0x38), 1.0);
        assert_eq!(e4m3(0xB8), -1.0);
        assert!(e4m3(0x7F).is_nan() && e4m3(0xFF).is_nan());
        assert_eq!(e2m1(0x7), 6.0);
        assert_eq!(e2m1(0xA), -1.0);
        assert_eq!(e8m0(127), 1.0);
        assert_eq!(e8m0(120), 2f32.powi(-7));
    }

    /// `Autodiff<Flex>` takes the custom op, whose gradient is the dense product's.
    #[test]
    fn autodiff_op_is_taken_and_differentiates_like_dense() {
        use burn::backend::{Autodiff, Flex};
        type AD = Autodiff<Flex>;
        let dev = Default::default();
        // A 3×40 FP4 matrix (two groups per row, the second partial) and its dense value.
        let codes: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(37)).collect();
        let scales: Vec<u8> = (0..6u8).map(|i| 124 + i).collect();
        let part = StoredTensor {
            fp4: true,
            codes,
            scales,
        };
        let w = StoredWeight::<AD>::new(vec![part], [3, 40], 1, &dev);
        let x = Tensor::<AD, 2>::from_data(
            TensorData::new(
                (0..80).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
                [2, 40],
            ),
            &dev,
        )
        .require_grad();
        let y = autodiff_op::with::<AD, Flex, 2>(x.clone(), &w, &View::default())
            .unwrap_or_else(|_| panic!("the custom op was not taken"));
        let g = y.clone().powi_scalar(2).sum().backward();
        let gx = crate::util::to_vec(x.grad(&g).unwrap());
        let dense = w
            .dequantize(&View::default(), DType::F32)
            .reshape([3, 40])
            .detach();
        let x2 = x.clone().detach().require_grad();
        let y2 = x2.clone().matmul(dense.transpose());
        let g2 = y2.clone().powi_scalar(2).sum().backward();
        // Same values up to the GEMM's summation order (operand layouts differ).
        let close = |a: Vec<f32>, b: Vec<f32>| {
            let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-6 * m)
        };
        assert!(close(
            crate::util::to_vec(y.inner()),
            crate::util::to_vec(y2.inner())
        ));
        assert!(close(gx, crate::util::to_vec(x2.grad(&g2).unwrap())));
    }
}

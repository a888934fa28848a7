//! The product with a frozen stored weight ([`crate::stored_weight`]): `x · Wᵀ` with `W`
//! dequantized where it is used. Under an autodiff backend a plain `x · W` would keep the
//! dequantized `W` for backward, so the product runs as its own autodiff op whose backward
//! dequantizes again and returns only `∂x` (the base gets no gradient). Burn 0.21 offers custom
//! backward ops only per concrete backend, so the op is provided for `Autodiff<Flex>` (and
//! `Autodiff<Cuda>` with the `cuda` feature), found by type at run time; any other backend
//! falls back to dequantize-then-matmul, the same product.

use crate::stored_weight::{dequantize, Parts, StoredWeight, View};
use burn::tensor::{backend::Backend, DType, Tensor};

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
    let dtype = x.dtype();
    x.matmul(weight_t::<B, D>(w.parts(), view, dtype))
}

/// `Wᵀ` of `view` as the product's right operand, in `dtype`: `[in, out]` for `D` = 2 (one
/// member), `[G, in, out]` for `D` = 3.
fn weight_t<B: Backend, const D: usize>(p: Parts<B>, view: &View, dtype: DType) -> Tensor<B, D> {
    assert!(
        D == 2 || D == 3,
        "a frozen product is 2-D or 3-D, not {D}-D"
    );
    let wt = dequantize(p, view, dtype).swap_dims(1, 2);
    let dims = wt.dims();
    let mut shape = [0; D];
    shape.copy_from_slice(&dims[3 - D..]);
    wt.reshape(shape)
}

/// The custom autodiff op of [`frozen_matmul`] for `Autodiff<I>`.
mod autodiff_op {
    use super::weight_t;
    use crate::stored_weight::{Parts, StoredWeight, View};
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
            let (p, v, d) = (self.parts.clone(), &self.view, self.dtype);
            if self.rank == 2 {
                weight_t::<I, 2>(p, v, d).into_primitive().tensor()
            } else {
                weight_t::<I, 3>(p, v, d).into_primitive().tensor()
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
    use crate::stored_weight::StoredTensor;
    use burn::tensor::{DType, TensorData};

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

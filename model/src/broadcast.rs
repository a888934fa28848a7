//! Broadcast products laid out as 2-D operations (an implementation concern, no paper concept):
//! burn-flex runs a 2-D broadcast row by row but walks a 3-D or 4-D one element by element
//! through a strided index, the largest cost of the model's element-wise work on the CPU
//! (issue #17). The same products, so the same values; the layout only changes how the backend
//! iterates.

use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Tensor};

/// `x ⊙ r` on a 2-D view of `x`'s rows: `r` of `x`'s shape with the last dimension 1 (one factor
/// per row: `[.., d] ⊙ [.., 1]`) or with every leading dimension 1 (one row for all:
/// `[.., d] ⊙ [1, .., d]`) is used as it is; any other broadcastable `r` is first repeated to
/// `x`'s shape ([`repeat_to`]).
pub fn mul_rows<B: Backend, const D: usize>(x: Tensor<B, D>, r: Tensor<B, D>) -> Tensor<B, D> {
    rows_op(x, r, |a, b| a * b)
}

/// `x / r` for the shapes of [`mul_rows`].
pub fn div_rows<B: Backend, const D: usize>(x: Tensor<B, D>, r: Tensor<B, D>) -> Tensor<B, D> {
    rows_op(x, r, |a, b| a / b)
}

fn rows_op<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    r: Tensor<B, D>,
    op: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, D> {
    let (xd, rd) = (x.dims(), r.dims());
    let d = xd[D - 1];
    let rows: usize = xd[..D - 1].iter().product();
    let r_rows: usize = rd[..D - 1].iter().product();
    let per_row = rd[D - 1] == 1 && rd[..D - 1] == xd[..D - 1];
    let shared = r_rows == 1 && rd[D - 1] == d;
    let r = if per_row || shared {
        r.reshape([r_rows, rd[D - 1]])
    } else {
        repeat_to(r, xd).reshape([rows, d])
    };
    op(x.reshape([rows, d]), r).reshape(xd)
}

/// Softmax over the last dimension, on a 2-D view (its max, shift, sum and division then run row
/// by row, forward and backward).
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    softmax(x.reshape([dims[..D - 1].iter().product::<usize>(), d]), 1).reshape(dims)
}

/// Softmax over the middle dimension of `x` `[n, r, c]` (for every `(n, c)`), with only
/// contiguous operations: the shift is the per-column maximum repeated over `r`, and the
/// normaliser is taken and spread back by products with ones ([`sum_mid`]). A softmax over a
/// middle dimension otherwise broadcasts over it, forward and backward.
pub fn softmax_mid<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [n, r, c] = x.dims();
    let max = x.clone().detach().max_dim(1).repeat_dim(1, r);
    let e = (x - max).exp();
    let ones = Tensor::<B, 3>::ones([1, r, 1], (&e.device(), e.dtype()));
    let total = ones.matmul(sum_mid(e.clone()).reshape([n, 1, c]));
    e / total
}

/// `Σ_j x[:, j, :]` of `x` `[n, r, c]` → `[n, c]`, as one batched `[1, r] × [r, c]` product
/// with ones: its backward is a product too, where a sum over the middle dimension has a
/// backward that broadcasts over it.
pub fn sum_mid<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    let [n, r, c] = x.dims();
    let ones = Tensor::<B, 3>::ones([1, 1, r], (&x.device(), x.dtype()));
    ones.matmul(x).reshape([n, c])
}

/// `r` repeated along its size-1 dimensions to `shape`: a contiguous tensor, where `expand` is
/// a strided view.
pub fn repeat_to<B: Backend, const D: usize>(
    mut r: Tensor<B, D>,
    shape: [usize; D],
) -> Tensor<B, D> {
    for (i, &n) in shape.iter().enumerate() {
        if r.dims()[i] == 1 && n > 1 {
            r = r.repeat_dim(i, n);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type B = Autodiff<Flex>;

    #[test]
    fn middle_softmax_and_sum_match_the_plain_forms() {
        let dev = Default::default();
        let x =
            Tensor::<B, 3>::random([5, 8, 7], Distribution::Normal(0.0, 3.0), &dev).require_grad();
        let w = Tensor::<B, 3>::random([5, 8, 7], Distribution::Default, &dev);
        let close = |a: Tensor<Flex, 3>, b: Tensor<Flex, 3>, tol: f32| {
            let diff = (a - b).abs().max().into_scalar();
            assert!(diff <= tol, "max difference {diff}");
        };
        let want = softmax(x.clone(), 1);
        close(softmax_mid(x.clone()).inner(), want.clone().inner(), 1e-6);
        let sums = sum_mid(x.clone() * w.clone());
        let plain = (x.clone() * w.clone()).sum_dim(1).reshape([5, 7]);
        let diff = (sums.clone() - plain.clone()).abs().max().into_scalar();
        assert!(diff <= 1e-5, "sum difference {diff}");
        // Gradients through both, against the plain forms'.
        let g_mid = (sum_mid(softmax_mid(x.clone()) * w.clone()) * sums.clone().detach())
            .sum()
            .backward();
        let g_plain = ((want * w).sum_dim(1).reshape([5, 7]) * plain.detach())
            .sum()
            .backward();
        close(x.grad(&g_mid).unwrap(), x.grad(&g_plain).unwrap(), 1e-5);
    }

    #[test]
    fn same_values_and_gradients_as_the_plain_broadcast() {
        let dev = Default::default();
        let x = Tensor::<B, 4>::random([2, 3, 4, 5], Distribution::Default, &dev).require_grad();
        let probs = softmax_last(x.clone()).into_data();
        assert_eq!(probs, softmax(x.clone(), 3).into_data());
        for r_shape in [[2, 3, 4, 1], [1, 1, 1, 5], [2, 3, 1, 5], [1, 3, 1, 1]] {
            let r = Tensor::<B, 4>::random(r_shape, Distribution::Default, &dev).require_grad();
            let want = x.clone() * r.clone();
            let want_values = want.to_data();
            let gw = want.sum().backward();
            let got = mul_rows(x.clone(), r.clone());
            assert_eq!(got.to_data(), want_values, "{r_shape:?}");
            let quotient = div_rows(x.clone(), r.clone()).into_data();
            assert_eq!(quotient, (x.clone() / r.clone()).into_data(), "{r_shape:?}");
            let gg = got.sum().backward();
            // Summed over the broadcast rows in another order: f32 rounding only.
            let close = |a: Tensor<Flex, 4>, b: Tensor<Flex, 4>| {
                let scale = a.clone().abs().max().into_scalar();
                let diff = (a - b).abs().max().into_scalar();
                diff <= 1e-6 * scale
            };
            assert!(close(x.grad(&gw).unwrap(), x.grad(&gg).unwrap()));
            assert!(close(r.grad(&gw).unwrap(), r.grad(&gg).unwrap()));
        }
    }
}

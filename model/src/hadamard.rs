//! Walsh–Hadamard rotation (spec §2.7): `y = (x · H) · n^-½` with the Sylvester (natural-order)
//! matrix, applied to indexer queries and keys before their FP4 rounding.

use burn::tensor::{backend::Backend, Tensor};

/// The Sylvester Hadamard matrix of order `n` (a power of two), row-major, entries ±1.
pub fn sylvester(n: usize) -> Vec<f32> {
    let mut h = vec![1.0f32];
    let mut m = 1;
    while m < n {
        let mut next = vec![0.0f32; 4 * m * m];
        for i in 0..m {
            for j in 0..m {
                let v = h[i * m + j];
                next[i * 2 * m + j] = v;
                next[i * 2 * m + j + m] = v;
                next[(i + m) * 2 * m + j] = v;
                next[(i + m) * 2 * m + j + m] = -v;
            }
        }
        h = next;
        m *= 2;
    }
    h
}

/// [`sylvester`] of order `n` as a tensor on `device` (a forward pass builds it once:
/// [`crate::SampleLayout::hadamard`]).
pub fn hadamard_matrix<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 2> {
    crate::util::tensor_from(sylvester(n), [n, n], device)
}

/// Rotates the last dimension of `x` by the orthonormal Hadamard matrix, given unscaled as `h`
/// ([`hadamard_matrix`] of the last dimension's size).
pub fn hadamard_rotate<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    h: Tensor<B, 2>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let n = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    x.reshape([rows, n])
        .matmul(h)
        .mul_scalar((n as f64).powf(-0.5))
        .reshape(dims)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sylvester_is_orthogonal() {
        let n = 8;
        let h = super::sylvester(n);
        for i in 0..n {
            for j in 0..n {
                let dot: f32 = (0..n).map(|k| h[i * n + k] * h[j * n + k]).sum();
                assert_eq!(dot, if i == j { n as f32 } else { 0.0 });
            }
        }
        assert_eq!(&h[n..2 * n], &[1., -1., 1., -1., 1., -1., 1., -1.]);
    }
}

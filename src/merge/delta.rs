//! The update of one release matrix, `ΔW = s · B @ A` per patch, in f32: the product on Burn's
//! Flex backend (its GEMM dispatches to AVX-512 / AVX2 kernels at run time), then scaled like
//! the adapted forward scales it (`s · (B A)`).

use super::adapter_file::AdapterFile;
use super::error::MergeError;
use super::plan::Patch;
use burn::backend::flex::FlexDevice;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// `ΔW` `[rows, cols]`, row-major, of the patches of one matrix (rows no patch covers stay 0).
pub fn delta(
    file: &AdapterFile,
    patches: &[Patch],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, MergeError> {
    let product = |p: &Patch| -> Result<Vec<f32>, MergeError> {
        let a = file.values(&p.a.0, p.a.1, p.rank * cols)?;
        let b = file.values(&p.b.0, p.b.1, p.rows * p.rank)?;
        Ok(matmul(b, a, [p.rows, p.rank, cols]))
    };
    if let [p] = patches {
        if p.row0 == 0 && p.rows == rows {
            // The common case (one adapter over the whole matrix): scale the product in place.
            let mut d = product(p)?;
            let s = p.scale as f32;
            d.par_iter_mut().for_each(|x| *x *= s);
            return Ok(d);
        }
    }
    let mut d = vec![0f32; rows * cols];
    for p in patches {
        let at = p.row0 * cols;
        let rows_of = d
            .get_mut(at..at + p.rows * cols)
            .ok_or_else(|| MergeError::Adapter {
                file: file.path().to_path_buf(),
                message: format!(
                    "`{}` changes rows {}..{} of a matrix of {rows} rows",
                    p.b.0,
                    p.row0,
                    p.row0 + p.rows
                ),
            })?;
        let s = p.scale as f32;
        rows_of
            .par_iter_mut()
            .zip(product(p)?.par_iter())
            .for_each(|(x, v)| *x += s * v);
    }
    Ok(d)
}

/// `x @ y` for row-major `x` `[m, k]` and `y` `[k, n]`.
fn matmul(x: Vec<f32>, y: Vec<f32>, [m, k, n]: [usize; 3]) -> Vec<f32> {
    let dev = FlexDevice;
    let x = Tensor::<Flex, 2>::from_data(TensorData::new(x, [m, k]), &dev);
    let y = Tensor::<Flex, 2>::from_data(TensorData::new(y, [k, n]), &dev);
    v4_model::util::to_vec(x.matmul(y))
}

#[cfg(test)]
mod tests {
    use super::matmul;

    #[test]
    fn matmul_is_row_major() {
        // [[1, 2], [3, 4]] @ [[1, 0, 2], [0, 1, 3]]
        let p = matmul(
            vec![1., 2., 3., 4.],
            vec![1., 0., 2., 0., 1., 3.],
            [2, 2, 3],
        );
        assert_eq!(p, vec![1., 2., 8., 3., 4., 18.]);
    }
}

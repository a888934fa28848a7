//! Shared test helpers: the Muon fixture, host<->tensor conversion, a Jacobi eigen-solver for
//! singular values, and a deterministic Gaussian generator.
#![allow(dead_code)]

use std::collections::HashMap;

use burn::tensor::{DType, Tensor, TensorData};
use safetensors::SafeTensors;

pub type B = burn::backend::Flex;

/// `(shape, values)` of every fixture tensor.
pub type Fixture = HashMap<String, (Vec<usize>, Vec<f64>)>;

pub fn device() -> burn::tensor::Device<B> {
    Default::default()
}

/// Loads `tests/fixtures/muon/muon_trajectories.safetensors` from the repository.
pub fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/muon/muon_trajectories.safetensors"
    );
    let bytes = std::fs::read(path).expect("fixture present");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.iter()
        .map(|(name, v)| {
            let vals = v
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            (name.to_string(), (v.shape().to_vec(), vals))
        })
        .collect()
}

/// A tensor of rank `D` from host values in `dtype`.
pub fn tensor<const D: usize>(shape: &[usize], vals: &[f64], dtype: DType) -> Tensor<B, D> {
    let data = TensorData::new(vals.to_vec(), shape.to_vec());
    Tensor::<B, D>::from_data(data, (&device(), DType::F64)).cast(dtype)
}

/// Host values of a tensor as f64.
pub fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.cast(DType::F64)
        .into_data()
        .to_vec::<f64>()
        .expect("f64 data")
}

/// `max|a − b| / max|b|`.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    num / den
}

/// Eigenvalues of a symmetric `k × k` matrix (cyclic Jacobi), ascending.
pub fn sym_eigenvalues(mut a: Vec<f64>, k: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j].powi(2))
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..k).map(|i| a[i * k + i]).collect();
    ev.sort_by(|x, y| x.total_cmp(y));
    ev
}

/// Singular values (ascending) of a row-major `n × m` matrix via eigenvalues of the smaller Gram.
pub fn singular_values(x: &[f64], n: usize, m: usize) -> Vec<f64> {
    let k = n.min(m);
    let mut g = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            g[i * k + j] = if n <= m {
                (0..m).map(|c| x[i * m + c] * x[j * m + c]).sum()
            } else {
                (0..n).map(|r| x[r * m + i] * x[r * m + j]).sum()
            };
        }
    }
    sym_eigenvalues(g, k)
        .into_iter()
        .map(|e| e.max(0.0).sqrt())
        .collect()
}

/// Deterministic standard normals (xorshift + Box–Muller).
pub fn gaussian(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut unif = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u1, u2) = (unif(), unif());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
        .collect()
}

//! Batched Muon over stacked experts (training spec §2.3: "each expert is its own matrix",
//! §3.4.1: same-shape matrices batched for Newton–Schulz): three steps on an `[E, n, m]` stack
//! equal three steps on each of its `E` matrices alone — bit for bit in f64, within 1e-6
//! relative in f32 — for wide and tall experts; splitting the stack over host threads changes
//! no bit.

mod common;

use burn::tensor::{DType, Tensor};
use common::{gaussian, host, rel_err, tensor, B};
use v4_optim::{OptimConfig, V4Optimizer};

/// Largest relative difference between the stacked and the per-matrix trajectories.
fn stacked_vs_alone(e: usize, n: usize, m: usize, dtype: DType) -> f64 {
    let cfg = OptimConfig::default();
    let mut stacked = V4Optimizer::<B>::new(&cfg).expect("config");
    let mut alone = V4Optimizer::<B>::new(&cfg).expect("config");
    let numel = n * m;
    let w0 = gaussian(e * numel, 1);
    let mut ws: Tensor<B, 3> = tensor(&[e, n, m], &w0, dtype);
    let mut wa: Vec<Tensor<B, 2>> = (0..e)
        .map(|i| tensor(&[n, m], &w0[i * numel..(i + 1) * numel], dtype))
        .collect();
    for step in 0..3u64 {
        let g = gaussian(e * numel, 100 + step);
        let gs = tensor(&[e, n, m], &g, dtype);
        ws = stacked
            .step("layers.0.ffn.experts.w1", ws, gs, 0.02)
            .expect("stacked step");
        for (i, w) in wa.iter_mut().enumerate() {
            let gi = tensor(&[n, m], &g[i * numel..(i + 1) * numel], dtype);
            let name = format!("layers.0.ffn.experts.{i}.w1.weight");
            *w = alone.step(&name, w.clone(), gi, 0.02).expect("step");
        }
    }
    let got = host(ws);
    let want: Vec<f64> = wa.into_iter().flat_map(host).collect();
    if dtype == DType::F64 {
        let same = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "[{e}, {n}, {m}] f64: not bit-identical");
    }
    rel_err(&got, &want)
}

#[test]
fn stacked_experts_are_bit_identical_to_each_alone_in_f64() {
    for (e, n, m) in [(16, 24, 40), (16, 40, 24), (3, 64, 64)] {
        assert_eq!(stacked_vs_alone(e, n, m, DType::F64), 0.0);
    }
}

#[test]
fn stacked_experts_match_each_alone_in_f32() {
    for (e, n, m) in [(16, 24, 40), (16, 40, 24), (3, 64, 64)] {
        let err = stacked_vs_alone(e, n, m, DType::F32);
        println!("[{e}, {n}, {m}] f32: max relative difference {err:e}");
        assert!(err <= 1e-6, "[{e}, {n}, {m}] f32: {err:e}");
    }
}

/// Three steps on `[e, n, m]` with Newton–Schulz split over `threads` host threads.
fn threaded(e: usize, n: usize, m: usize, dtype: DType, threads: usize) -> Vec<f64> {
    let mut opt = V4Optimizer::<B>::new(&OptimConfig::default()).expect("config");
    opt.set_ns_threads(threads);
    let mut w: Tensor<B, 3> = tensor(&[e, n, m], &gaussian(e * n * m, 2), dtype);
    for step in 0..3u64 {
        let g = tensor(&[e, n, m], &gaussian(e * n * m, 200 + step), dtype);
        w = opt
            .step("layers.0.ffn.experts.w1", w, g, 0.02)
            .expect("step");
    }
    host(w)
}

#[test]
fn threaded_newton_schulz_is_bit_identical_to_one_batched_call() {
    for dtype in [DType::F32, DType::F64] {
        for (e, n, m) in [(16, 24, 40), (37, 40, 24), (256, 8, 8)] {
            let one = threaded(e, n, m, dtype, 1);
            for threads in [2, 3] {
                let split = threaded(e, n, m, dtype, threads);
                let same = one
                    .iter()
                    .zip(&split)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "[{e}, {n}, {m}] {dtype:?} on {threads} threads differs"
                );
            }
        }
    }
}

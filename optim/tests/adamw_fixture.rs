//! AdamW vs the fixture's `adamw.*` trajectory (torch AdamW, β 0.9/0.95, ε 1e-20, wd 0.1, lr 0.01).

mod common;

use burn::tensor::DType;
use common::{fixture, host, rel_err, tensor};
use v4_optim::{OptimConfig, V4Optimizer};

fn run(dtype: DType) -> f64 {
    let fx = fixture();
    let mut opt = V4Optimizer::<common::B>::new(&OptimConfig::default()).expect("config");
    let (dims, w0) = &fx["adamw.w0"];
    let mut w = tensor::<1>(dims, w0, dtype);
    let mut worst: f64 = 0.0;
    for i in 0..3 {
        let g = tensor::<1>(dims, &fx[&format!("adamw.grad.{i}")].1, dtype);
        w = opt
            .step("layers.0.attn_norm.weight", w, g, 0.01)
            .expect("step");
        worst = worst.max(rel_err(
            &host(w.clone()),
            &fx[&format!("adamw.w{}", i + 1)].1,
        ));
    }
    println!("adamw {dtype:?}: max rel err {worst:.3e}");
    worst
}

#[test]
fn adamw_matches_fixture_f64() {
    assert!(run(DType::F64) < 1e-12);
}

#[test]
fn adamw_matches_fixture_f32() {
    assert!(run(DType::F32) < 1e-6);
}

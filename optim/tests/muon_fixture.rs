//! Muon trajectories vs `tests/fixtures/muon/muon_trajectories.safetensors` (3 steps, lr 0.02,
//! wd 0.1, μ 0.95) for the V4, Keller-Jordan and Moonlight variants, in f64 and f32.

mod common;

use burn::tensor::DType;
use common::{fixture, host, rel_err, tensor, Fixture};
use v4_optim::{MuonConfig, MuonVariant, OptimConfig, V4Optimizer};

const SHAPES: [&str; 4] = ["wide", "tall", "square", "experts"];

fn config(variant: MuonVariant) -> OptimConfig {
    OptimConfig {
        muon: MuonConfig {
            variant,
            momentum: Some(0.95),
            weight_decay: Some(0.1),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Largest relative error over the 3 steps of one shape.
fn run<const D: usize>(fx: &Fixture, cfg: &OptimConfig, shape: &str, v: &str, dtype: DType) -> f64 {
    let name = if D == 3 {
        "layers.0.ffn.experts.w1"
    } else {
        "layers.0.attn.wq_a.weight"
    };
    let mut opt = V4Optimizer::<common::B>::new(cfg).expect("config");
    let (dims, w0) = &fx[&format!("{shape}.w0")];
    let mut w = tensor::<D>(dims, w0, dtype);
    let mut worst: f64 = 0.0;
    for i in 0..3 {
        let g = tensor::<D>(dims, &fx[&format!("{shape}.grad.{i}")].1, dtype);
        w = opt.step(name, w, g, 0.02).expect("step");
        let want = &fx[&format!("{shape}.{v}.w{}", i + 1)].1;
        worst = worst.max(rel_err(&host(w.clone()), want));
    }
    worst
}

fn check(variant: MuonVariant, v: &str, dtype: DType, tol: f64) {
    let fx = fixture();
    let cfg = config(variant);
    for shape in SHAPES {
        let err = if shape == "experts" {
            run::<3>(&fx, &cfg, shape, v, dtype)
        } else {
            run::<2>(&fx, &cfg, shape, v, dtype)
        };
        println!("{v} {shape} {dtype:?}: max rel err {err:.3e}");
        assert!(err < tol, "{v} {shape} {dtype:?}: {err:e} >= {tol:e}");
    }
}

#[test]
fn v4_matches_fixture_f64() {
    check(MuonVariant::V4, "v4", DType::F64, 1e-13);
}

#[test]
fn v4_matches_fixture_f32() {
    check(MuonVariant::V4, "v4", DType::F32, 1e-5);
}

#[test]
fn keller_jordan_matches_fixture() {
    check(MuonVariant::KellerJordan, "kj", DType::F64, 1e-13);
    check(MuonVariant::KellerJordan, "kj", DType::F32, 1e-5);
}

#[test]
fn moonlight_matches_fixture() {
    check(MuonVariant::Moonlight, "moonlight", DType::F64, 1e-13);
    check(MuonVariant::Moonlight, "moonlight", DType::F32, 1e-5);
}

//! Newton–Schulz time per matrix shape of a recipe's Muon step (the orthogonalisation of Muon,
//! spec §2.3): each distinct `[E, n, m]` call of a step ([`ns_batches`]) timed alone on random
//! values, with the optimizer's schedule, iteration dtype and host threads, so the optimizer
//! phase can be read against the device's GEMM throughput.

use super::phases::timed;
use crate::plan::step_ns_batches;
use crate::recipe::Recipe;
use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use v4_model::ModelConfig;
use v4_optim::{newton_schulz_par, MuonSettings};

/// One matrix shape's Newton–Schulz calls in a step.
#[derive(Debug, Clone, Serialize)]
pub struct NsShapeTime {
    /// `[E, n, m]`: matrices per call and their shape.
    pub shape: [usize; 3],
    /// Calls of this shape per step.
    pub calls: usize,
    /// One parameter with this shape.
    pub example: String,
    /// Seconds per call (best of the timed calls).
    pub secs_per_call: f64,
    /// Matmul FLOP/s of the call.
    pub flops_per_sec: f64,
}

/// Times every Newton–Schulz shape of `recipe`'s step (`iters` calls each after one warm-up);
/// empty when the schedule has no iterations.
pub fn time_ns_shapes<B: Backend>(
    cfg: &ModelConfig,
    recipe: &Recipe,
    muon: &MuonSettings,
    iters: usize,
    device: &B::Device,
) -> Result<Vec<NsShapeTime>> {
    if muon.schedule.total_steps() == 0 {
        return Ok(Vec::new());
    }
    let mut shapes: BTreeMap<[usize; 3], (usize, String)> = BTreeMap::new();
    for b in step_ns_batches(cfg, recipe) {
        let e = shapes
            .entry([b.count, b.rows, b.cols])
            .or_insert((0, b.name));
        e.0 += 1;
    }
    let dtype = muon.ns_dtype(DType::F32);
    let mut out = Vec::new();
    for (shape, (calls, example)) in shapes {
        let u = Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let run = || {
            let _ = newton_schulz_par(u.clone(), &muon.schedule, dtype, muon.ns_threads);
        };
        timed::<B>(device, run)?;
        let mut best = f64::INFINITY;
        for _ in 0..iters.max(1) {
            best = best.min(timed::<B>(device, run)?);
        }
        let flops = muon.schedule.flops(shape[0], shape[1], shape[2]);
        out.push(NsShapeTime {
            shape,
            calls,
            example,
            secs_per_call: best,
            flops_per_sec: flops / best.max(1e-12),
        });
    }
    Ok(out)
}

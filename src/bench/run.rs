//! The benchmark of a recipe's training step: the trainer's own step ([`train_step`]) on the
//! recipe's model (freshly initialised, or `[model] dir`'s weights) and data, timed after
//! warm-up steps, with model FLOPs ([`flops_per_token`]), MFU against the device's peak, peak
//! memory and the per-phase split ([`time_phases`]). Nothing is written to the run directory.

use super::devices::lookup;
use super::flops::flops_per_token;
use super::ns_shapes::{time_ns_shapes, NsShapeTime};
use super::phases::time_phases;
use super::step_phases::Phases;
use crate::recipe::{Dtype, Recipe};
use crate::train::objectives::step_options;
use crate::train::step::{train_step, StepConfig};
use crate::train::trainer::check_dtype;
use crate::train::BatchSource;
use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use std::time::Instant;
use v4_model::inventory;
use v4_model::lora::is_adapter;
use v4_model::named::NamedParam;
use v4_optim::{LrSchedule, V4Optimizer};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Untimed steps first.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// The device's name (`"cpu"`, or the GPU's), for the peak table.
    pub device_name: String,
    /// Peak TFLOP/s to compute MFU against, instead of the table's.
    pub peak_tflops: Option<f64>,
}

/// What `v4train bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The recipe file.
    pub recipe: String,
    /// The device.
    pub device: String,
    /// `"f32"` or `"bf16"`.
    pub dtype: String,
    /// Parameters of the model.
    pub parameters: u64,
    /// Tokens per optimizer step.
    pub tokens_per_step: usize,
    /// Warm-up and timed steps.
    pub warmup_steps: usize,
    /// Timed steps.
    pub timed_steps: usize,
    /// Median step time, seconds.
    pub step_secs: f64,
    /// Fastest and slowest timed step, seconds.
    pub step_secs_range: (f64, f64),
    /// Trained tokens per second (median step).
    pub tokens_per_sec: f64,
    /// Model FLOPs per token, by phase.
    pub flops_per_token: Phases,
    /// Achieved model FLOP/s.
    pub achieved_flops: f64,
    /// The peak it is compared against (TFLOP/s) and where it comes from.
    pub peak_tflops: Option<(f64, String)>,
    /// Model FLOP utilisation (0..1).
    pub mfu: Option<f64>,
    /// Peak memory, bytes, and what it measures.
    pub peak_memory: Option<(u64, String)>,
    /// Host memory the loaded model holds (resident set after loading minus before), bytes;
    /// CPU backend only.
    pub model_memory: Option<u64>,
    /// Bytes the model's frozen / trained base weights hold (stored FP8/FP4 weights at their
    /// stored size, the rest f32), computed from the loaded model.
    pub base_bytes: u64,
    /// Bytes of LoRA adapters (f32), computed from the loaded model.
    pub adapter_bytes: u64,
    /// Host resident set before the model was loaded (binary, data loader), bytes; CPU only.
    pub memory_before_load: Option<u64>,
    /// Seconds per step by phase (isolated parts; `other` the remainder).
    pub phases: Phases,
    /// Newton–Schulz calls of a step by matrix shape, each timed alone.
    pub ns_shapes: Vec<NsShapeTime>,
    /// Last timed step's loss (a sanity check).
    pub loss: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark of `recipe` on `device`; `peak_memory` reads the process's or device's
/// peak memory after the steps.
pub fn bench<B: AutodiffBackend>(
    recipe: &Recipe,
    recipe_name: &str,
    opts: &BenchOptions,
    device: &B::Device,
    peak_memory: impl Fn() -> Option<(u64, String)>,
) -> Result<BenchReport> {
    check_dtype::<B>(recipe, device)?;
    let cfg = recipe.model.config()?;
    let mut data = BatchSource::open(recipe, &cfg, None)?;
    let before = super::peak_memory::host_rss();
    let mut model = crate::train::model_setup::build::<B>(recipe, &cfg, None, device)?.model;
    let (mut base_bytes, mut adapter_bytes) = (0u64, 0u64);
    model.visit_named(&mut |name, p| match p {
        NamedParam::Stored(s) => base_bytes += s.stored_bytes() as u64,
        p if is_adapter(&name) => adapter_bytes += 4 * p.numel().unwrap_or(0) as u64,
        p => base_bytes += 4 * p.numel().unwrap_or(0) as u64,
    });
    let model_memory = match (
        opts.device_name.as_str(),
        before,
        super::peak_memory::host_rss(),
    ) {
        ("cpu", Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let mut optimizer = V4Optimizer::<B::InnerBackend>::new(&recipe.optim)?;
    if opts.device_name == "cpu" {
        optimizer.set_ns_threads(rayon::current_num_threads());
    }
    let schedule = LrSchedule::new(recipe.schedule.clone())?;
    let step_cfg = StepConfig {
        recipe,
        opts: step_options(recipe, &model),
    };
    let t = &recipe.train;
    let tokens = t.global_batch() * t.seq_len;
    let mtp_w = if cfg.num_nextn_predict_layers > 0 {
        recipe.loss.mtp_weight
    } else {
        0.0
    };
    let (mut secs, mut opt_secs, mut loss) = (Vec::new(), Vec::new(), 0.0);
    let mut last = Vec::new();
    for step in 0..(opts.warmup + opts.steps.max(1)) as u64 {
        let batches = (0..t.grad_accum)
            .map(|m| data.next(step, m))
            .collect::<Result<Vec<_>>>()?;
        let t0 = Instant::now();
        let lr = schedule.lr(step);
        let (next, r) = train_step(
            model,
            &mut optimizer,
            &batches,
            &step_cfg,
            (step, lr, mtp_w),
            device,
        )?;
        model = next;
        if step as usize >= opts.warmup {
            secs.push(t0.elapsed().as_secs_f64());
            opt_secs.push(r.optimizer_secs);
            loss = r.loss;
        }
        last = batches;
    }
    let memory = peak_memory();
    let step_secs = median(secs.clone());
    let mut parts = Vec::new();
    for batch in &last {
        // Twice: the first run warms the parts' shapes up.
        time_phases(&model, batch, recipe, step_cfg.opts, device)?;
        parts.push(time_phases(&model, batch, recipe, step_cfg.opts, device)?);
    }
    let mut phases = Phases {
        optimizer: median(opt_secs),
        ..Phases::default()
    };
    for p in parts {
        phases += p;
    }
    phases.other = (step_secs - phases.total()).max(0.0);
    let muon = &optimizer.settings().muon;
    let ns_shapes = time_ns_shapes::<B::InnerBackend>(&cfg, recipe, muon, 2, device)?;

    let flops = flops_per_token(&cfg, recipe);
    let tokens_per_sec = tokens as f64 / step_secs.max(1e-12);
    let achieved = flops.total() * tokens_per_sec;
    let dtype = match t.dtype {
        Dtype::F32 => "f32",
        Dtype::Bf16 => "bf16",
    };
    let peak = match opts.peak_tflops {
        Some(p) => Some((p, "--peak-tflops".to_string())),
        None => lookup(&opts.device_name).map(|d| {
            let p = match t.dtype {
                Dtype::F32 => d.f32_tflops,
                Dtype::Bf16 => d.bf16_tflops,
            };
            (p, format!("{} {dtype} dense", d.name))
        }),
    };
    let parameters = inventory(&cfg)
        .iter()
        .map(|s| s.shape.iter().product::<usize>() as u64)
        .sum();
    Ok(BenchReport {
        recipe: recipe_name.to_string(),
        device: opts.device_name.clone(),
        dtype: dtype.to_string(),
        parameters,
        tokens_per_step: tokens,
        warmup_steps: opts.warmup,
        timed_steps: secs.len(),
        step_secs,
        step_secs_range: (
            secs.iter().copied().fold(f64::INFINITY, f64::min),
            secs.iter().copied().fold(0.0, f64::max),
        ),
        tokens_per_sec,
        flops_per_token: flops,
        achieved_flops: achieved,
        mfu: peak.as_ref().map(|(p, _)| achieved / (p * 1e12)),
        peak_tflops: peak,
        peak_memory: memory,
        model_memory,
        base_bytes,
        adapter_bytes,
        memory_before_load: before.filter(|_| opts.device_name == "cpu"),
        phases,
        ns_shapes,
        loss,
    })
}

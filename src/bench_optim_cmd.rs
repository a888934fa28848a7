//! `bench-optim`: times DeepSeek-V4's HybridNewtonSchulz (spec §2.3) on V4-Flash matrix shapes —
//! single projections and the batched stack of routed-expert matrices — and reports ms per call
//! and achieved TFLOP/s (matmul FLOPs only).

use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::{Backend, DTypeUsage};
use burn::tensor::{DType, Distribution, Tensor};
use v4_optim::{newton_schulz_in, NsSchedule};

/// Precision of the benchmarked iteration.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchDtype {
    /// bf16 where the backend accelerates it, else f32.
    Auto,
    /// float32.
    F32,
    /// bfloat16.
    Bf16,
}

/// Arguments of `bench-optim`.
#[derive(clap::Args, Debug)]
pub struct BenchOptimArgs {
    /// Routed-expert matrices in the stacked case (V4-Flash has 256 of 2048×4096; use 1–4 on CPU).
    #[arg(long, default_value_t = 256)]
    pub experts: usize,
    /// Timed calls per shape.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Untimed warm-up calls per shape.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Precision of the Newton–Schulz matmuls.
    #[arg(long, value_enum, default_value_t = BenchDtype::Auto)]
    pub dtype: BenchDtype,
    /// Skip the stacked-expert case.
    #[arg(long)]
    pub no_experts: bool,
}

/// Runs the benchmark on `device`.
pub fn run<B: Backend>(args: &BenchOptimArgs, device: &B::Device) -> anyhow::Result<()> {
    let dtype = match args.dtype {
        BenchDtype::F32 => DType::F32,
        BenchDtype::Bf16 => DType::BF16,
        BenchDtype::Auto
            if B::dtype_usage(device, DType::BF16).contains(DTypeUsage::Accelerated) =>
        {
            DType::BF16
        }
        BenchDtype::Auto => DType::F32,
    };
    let schedule = NsSchedule::v4_hybrid();
    let mut cases = vec![
        ("wq_a 1024x4096", 1, 1024, 4096),
        ("4096x1024", 1, 4096, 1024),
        ("hc_attn_fn 24x16384", 1, 24, 16384),
    ];
    if !args.no_experts && args.experts > 0 {
        cases.push(("experts w1 [E,2048,4096]", args.experts, 2048, 4096));
    }
    println!(
        "HybridNewtonSchulz ({} iterations), dtype {dtype:?}, {} timed call(s)",
        schedule.total_steps(),
        args.iters
    );
    println!(
        "{:<28} {:>5} {:>12} {:>10}",
        "shape", "E", "ms/call", "TFLOP/s"
    );
    for (label, e, n, m) in cases {
        let u =
            Tensor::<B, 3>::random([e, n, m], Distribution::Normal(0.0, 1.0), device).cast(dtype);
        for _ in 0..args.warmup {
            let _ = newton_schulz_in(u.clone(), &schedule, dtype);
            B::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let start = Instant::now();
        for _ in 0..args.iters.max(1) {
            let _ = newton_schulz_in(u.clone(), &schedule, dtype);
            B::sync(device)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .context("device sync")?;
        }
        let secs = start.elapsed().as_secs_f64() / args.iters.max(1) as f64;
        let tflops = schedule.flops(e, n, m) / secs / 1e12;
        println!("{label:<28} {e:>5} {:>12.2} {tflops:>10.3}", secs * 1e3);
    }
    Ok(())
}

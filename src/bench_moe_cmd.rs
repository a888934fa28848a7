//! `v4train bench moe`: times one MoE layer (spec §2.8: router, routed experts, shared expert)
//! forward + backward, and the Muon step (training spec §2.3, each routed expert its own matrix)
//! over that layer's routed-expert weights, for a given number of experts at a fixed top-k.

use std::time::Instant;

use anyhow::{anyhow, Result};
use burn::backend::Autodiff;
use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use v4_model::{ForwardOptions, ModelConfig, V4Model};
use v4_optim::{OptimConfig, V4Optimizer};
use v4train::train::apply_optimizer;

/// Arguments of `bench moe`.
#[derive(clap::Args, Debug)]
pub struct BenchMoeArgs {
    /// Routed experts of the layer.
    #[arg(long, default_value_t = 64)]
    pub experts: usize,
    /// Experts per token.
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// Hidden size d.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Expert width I (`moe_intermediate_size`).
    #[arg(long, default_value_t = 64)]
    pub inter: usize,
    /// Tokens per forward.
    #[arg(long, default_value_t = 512)]
    pub tokens: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
}

type AD<B> = Autodiff<B>;

/// One score-routed MoE layer of the given shape (with V4's shared expert and clamps).
fn layer_config(a: &BenchMoeArgs) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::toy();
    cfg.num_hidden_layers = 1;
    cfg.num_nextn_predict_layers = 0;
    cfg.num_hash_layers = 0;
    cfg.compress_ratios = vec![0];
    cfg.hidden_size = a.dim;
    cfg.n_routed_experts = a.experts;
    cfg.num_experts_per_tok = a.top_k;
    cfg.moe_intermediate_size = a.inter;
    cfg.validate("bench moe")?;
    Ok(cfg)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark on `device`; `cpu`: Newton–Schulz uses the host threads.
pub fn run<B: Backend>(a: &BenchMoeArgs, cpu: bool, device: &B::Device) -> Result<()> {
    let cfg = layer_config(a)?;
    let mut model = V4Model::<AD<B>>::init(&cfg, 0, device)?;
    let x =
        Tensor::<AD<B>, 3>::random([1, a.tokens, a.dim], Distribution::Normal(0.0, 1.0), device)
            .require_grad();
    let ids = Tensor::<AD<B>, 2, Int>::zeros([1, a.tokens], device);
    let opts = ForwardOptions::default();
    let probe = Tensor::<AD<B>, 3>::random([1, a.tokens, a.dim], Distribution::Default, device);
    let fwd_bwd = |model: &V4Model<AD<B>>| {
        let (y, _) = model.layers[0]
            .ffn
            .forward_aux(x.clone(), ids.clone(), opts);
        (y * probe.clone()).sum().backward()
    };
    let sync = || B::sync(device).map_err(|e| anyhow!("{e:?}"));
    let mut layer = Vec::new();
    for i in 0..a.warmup + a.iters.max(1) {
        let t = Instant::now();
        let g = fwd_bwd(&model);
        sync()?;
        if i >= a.warmup {
            layer.push(t.elapsed().as_secs_f64());
        }
        drop(g);
    }

    // Muon over the routed experts only: the gradients of every `.ffn.experts.` parameter.
    let mut expert_ids: Vec<(ParamId, usize)> = Vec::new();
    model.visit_named(&mut |name, p| {
        if name.contains(".ffn.experts.") {
            expert_ids.extend(p.float_id());
        }
    });
    let mut optimizer = V4Optimizer::<B>::new(&OptimConfig::default())?;
    if cpu {
        optimizer.set_ns_threads(rayon::current_num_threads());
    }
    let mut muon = Vec::new();
    for i in 0..a.warmup + a.iters.max(1) {
        let all = GradientsParams::from_grads(fwd_bwd(&model), &model);
        let mut grads = GradientsParams::new();
        for &(id, rank) in &expert_ids {
            match rank {
                2 => all
                    .get::<B, 2>(id)
                    .into_iter()
                    .for_each(|g| grads.register(id, g)),
                _ => all
                    .get::<B, 3>(id)
                    .into_iter()
                    .for_each(|g| grads.register(id, g)),
            }
        }
        sync()?;
        let t = Instant::now();
        model = apply_optimizer(model, grads, &mut optimizer, 1e-3)?;
        sync()?;
        if i >= a.warmup {
            muon.push(t.elapsed().as_secs_f64());
        }
    }
    println!(
        "moe layer: {} experts (top-{}), d {}, I {}, {} tokens, {} expert tensors",
        a.experts,
        a.top_k,
        a.dim,
        a.inter,
        a.tokens,
        expert_ids.len()
    );
    println!(
        "  forward+backward {:>9.2} ms   muon step (routed experts) {:>9.2} ms   (median of {})",
        median(layer) * 1e3,
        median(muon) * 1e3,
        a.iters.max(1)
    );
    Ok(())
}

//! `v4train bench decode`: incremental decoding with the V4 cache against re-running the full
//! forward per new token, at several context lengths, and the cache's size per token and layer
//! against a dense multi-head KV cache and an uncompressed single-head one.

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;
use v4_checkpoints::ModelDir;
use v4_model::{ForwardOptions, ModelConfig, V4Model, WeightSource};

/// Arguments of `bench decode`.
#[derive(clap::Args, Debug)]
pub struct BenchDecodeArgs {
    /// Model directory (default: random weights in the config of the `tiny_b` fixture).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Context lengths (prompt tokens before decoding).
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
    pub contexts: Vec<usize>,
    /// Tokens decoded per context.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Rows decoded together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

fn load<B: Backend>(args: &BenchDecodeArgs, device: &B::Device) -> Result<V4Model<B>> {
    match &args.model {
        Some(dir) => {
            let src = ModelDir::open(dir).with_context(|| format!("--model {}", dir.display()))?;
            let cfg = src.config().clone();
            Ok(V4Model::load(&cfg, &src as &dyn WeightSource, device)?)
        }
        None => {
            // Embedded so that the installed binary needs no source tree.
            let cfg = ModelConfig::from_json_str(
                include_str!("../tests/fixtures/tiny_b/config.json"),
                "tiny_b config.json",
            )?;
            Ok(V4Model::init(&cfg, 0, device)?)
        }
    }
}

/// Runs the benchmark on `device`.
pub fn run<B: Backend>(args: &BenchDecodeArgs, device: &B::Device) -> Result<()> {
    if args.tokens == 0 || args.batch == 0 || args.contexts.contains(&0) {
        bail!("--tokens, --batch and every --contexts value must be ≥ 1");
    }
    let model = load::<B>(args, device)?;
    let cfg = &model.config;
    let opts = ForwardOptions::default();
    let mut rng = StdRng::seed_from_u64(0);
    println!(
        "| context | prefill s | decode tokens/s | full forward per token s | speed-up | cache B/token/layer | dense MHA KV | uncompressed 1-head KV |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &ctx in &args.contexts {
        let prompts: Vec<Vec<i64>> = (0..args.batch)
            .map(|_| {
                (0..ctx)
                    .map(|_| rng.random_range(0..cfg.vocab_size as i64))
                    .collect()
            })
            .collect();
        let t0 = Instant::now();
        let (_, mut cache) = model.prefill(&prompts, opts)?;
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..args.tokens {
            let next: Vec<i64> = (0..args.batch)
                .map(|_| rng.random_range(0..cfg.vocab_size as i64))
                .collect();
            let logits = model.decode_step(&mut cache, &next, opts)?;
            // Wait for the result as a generator would (it samples on the host).
            let _ = v4_model::util::to_vec(logits);
        }
        let per_token = t1.elapsed().as_secs_f64() / args.tokens as f64;
        let bytes = cache.bytes_per_token_per_layer();
        // What a new token costs without a cache: the full forward over context + 1 tokens.
        let flat: Vec<i64> = prompts
            .iter()
            .flat_map(|p| p.iter().copied().chain([0]))
            .collect();
        let ids: Tensor<B, 2, Int> =
            Tensor::from_data(TensorData::new(flat, [args.batch, ctx + 1]), device);
        let t2 = Instant::now();
        let out = model.forward(ids, opts, false, false);
        let _ = v4_model::util::to_vec(out.logits.slice_dim(1, ctx..ctx + 1));
        let full = t2.elapsed().as_secs_f64();
        let dense = 2 * cfg.num_attention_heads * cfg.head_dim * 4;
        println!(
            "| {ctx} | {prefill:.3} | {:.1} | {full:.3} | {:.1}× | {bytes:.0} | {dense} | {} |",
            args.batch as f64 / per_token,
            full / per_token,
            cfg.head_dim * 4
        );
    }
    Ok(())
}

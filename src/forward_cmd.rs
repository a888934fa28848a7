//! `v4train forward`: loads a V4 model directory and runs the full-sequence forward (training
//! shape) on token ids from a safetensors file — optionally packed samples, each computed as if
//! alone — writing logits, MTP logits and optionally every block's hyper-connection streams.

use anyhow::{bail, Context};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::time::Instant;
use v4_checkpoints::ModelDir;
use v4_model::{
    check_token_ids, inventory, ForwardOptions, SampleBounds, SampleLayout, V4Model, WeightSource,
};
use v4train::tensor_file::write_f32;

/// Arguments of `v4train forward`.
#[derive(clap::Args, Debug)]
pub struct ForwardArgs {
    /// Model directory (`config.json` + `model.safetensors` or sharded weights with an index).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Safetensors file holding `input_ids` [B, S] (int64 or int32).
    #[arg(long, value_name = "IDS.safetensors")]
    pub input: PathBuf,
    /// Output safetensors file (float32 `logits`, `mtp_logits`, `hidden.N`).
    #[arg(long, value_name = "OUT.safetensors")]
    pub output: PathBuf,
    /// Also write every block's hyper-connection streams `hidden.N` [B, S, hc, d].
    #[arg(long)]
    pub hidden: bool,
    /// Switch off the FP8/FP4 fake quantization of KV and indexer paths.
    #[arg(long)]
    pub no_fake_quant: bool,
    /// Safetensors file holding `segment_ids` [B, S] (int64 or int32): the packed sample each
    /// token belongs to, non-decreasing along a row. Each sample is computed as if alone
    /// (V4's sample-level attention masking). Without it a row is one sample.
    #[arg(long, value_name = "SEGMENTS.safetensors")]
    pub segments: Option<PathBuf>,
    /// Decode incrementally instead: prefill the first P tokens of every row, then feed the
    /// rest one at a time through the KV cache; writes only `decode_logits` [B, S−P+1, V] (the
    /// logits at positions P−1 … S−1).
    #[arg(long, value_name = "P", conflicts_with_all = ["segments", "hidden"])]
    pub decode_from: Option<usize>,
}

/// Reads `input_ids` from a safetensors file as a [B, S] int64 array.
pub fn read_input_ids(path: &Path) -> anyhow::Result<(Vec<i64>, [usize; 2])> {
    read_int_matrix(path, "input_ids")
}

/// Reads the int64 / int32 tensor `name` [B, S] of a safetensors file as int64.
pub fn read_int_matrix(path: &Path, name: &str) -> anyhow::Result<(Vec<i64>, [usize; 2])> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let view = st
        .tensor(name)
        .with_context(|| format!("{}: no tensor `{name}`", path.display()))?;
    let shape = view.shape();
    if shape.len() != 2 {
        bail!(
            "{}: `{name}` must have rank 2 [B, S], found shape {shape:?}",
            path.display()
        );
    }
    let data = view.data();
    let ids: Vec<i64> = match view.dtype() {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        other => bail!(
            "{}: `{name}` must be int64 or int32, found {other:?}",
            path.display()
        ),
    };
    Ok((ids, [shape[0], shape[1]]))
}

fn host<B: Backend, const D: usize>(
    name: String,
    t: Tensor<B, D>,
) -> (String, Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (name, shape, v4_model::util::to_vec(t))
}

/// Runs the command on backend `B`.
pub fn run<B: Backend>(args: &ForwardArgs, device: &B::Device) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = ModelDir::open(&args.model)?;
    let cfg = dir.config().clone();
    // Ids are checked on the host, as i64, before the model is loaded or any tensor is built.
    let (ids, shape) = read_input_ids(&args.input)?;
    check_token_ids(&ids, shape, cfg.vocab_size)
        .with_context(|| format!("{}", args.input.display()))?;
    let bounds = match &args.segments {
        None => SampleBounds::whole(shape[0], shape[1]),
        Some(p) => {
            let (seg, seg_shape) = read_int_matrix(p, "segment_ids")?;
            if seg_shape != shape {
                bail!(
                    "{}: `segment_ids` has shape {seg_shape:?}, `input_ids` of {} has {shape:?}",
                    p.display(),
                    args.input.display()
                );
            }
            SampleBounds::from_ids(&seg, shape[0], shape[1])
                .with_context(|| format!("{}", p.display()))?
        }
    };
    dir.check_against(&inventory(&cfg))?;
    let model = V4Model::<B>::load(&cfg, &dir as &dyn WeightSource, device)?;
    let load_s = t0.elapsed().as_secs_f64();

    let opts = ForwardOptions {
        fake_quant: !args.no_fake_quant,
        ..Default::default()
    };
    if let Some(p) = args.decode_from {
        return decode(&model, &ids, shape, p, opts, args, load_s);
    }
    let ids: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(ids, shape), device);
    let t1 = Instant::now();
    let samples = bounds.count();
    let layout = SampleLayout::new(bounds, None, device);
    let out = model.forward_samples(ids, &layout, opts, args.hidden, true);
    let mut tensors = vec![host("logits".into(), out.logits)];
    for (k, lg) in out.mtp_logits.into_iter().enumerate() {
        let name = if k == 0 {
            "mtp_logits".to_string()
        } else {
            format!("mtp_logits.{k}")
        };
        tensors.push(host(name, lg));
    }
    for (n, h) in out.hidden.into_iter().enumerate() {
        tensors.push(host(format!("hidden.{n}"), h));
    }
    let fwd_s = t1.elapsed().as_secs_f64();
    write_f32(&args.output, &tensors, None)?;
    eprintln!(
        "forward: {} × {} tokens ({samples} samples), load {:.2}s, forward {:.3}s ({:.0} tokens/s), fake quant {}, wrote {}",
        shape[0],
        shape[1],
        load_s,
        fwd_s,
        (shape[0] * shape[1]) as f64 / fwd_s,
        if opts.fake_quant { "on" } else { "off" },
        args.output.display()
    );
    Ok(())
}

/// `--decode-from P`: prefill `P` tokens per row, then one token per step.
fn decode<B: Backend>(
    model: &V4Model<B>,
    ids: &[i64],
    [b, s]: [usize; 2],
    p: usize,
    opts: ForwardOptions,
    args: &ForwardArgs,
    load_s: f64,
) -> anyhow::Result<()> {
    if p == 0 || p > s {
        bail!("--decode-from {p}: must be between 1 and the sequence length {s}");
    }
    let t0 = Instant::now();
    let rows: Vec<Vec<i64>> = ids.chunks(s).map(|r| r[..p].to_vec()).collect();
    let (first, mut cache) = model.prefill(&rows, opts)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let v = model.config.vocab_size;
    let mut steps = vec![v4_model::util::to_vec(first)];
    let t1 = Instant::now();
    for t in p..s {
        let next: Vec<i64> = ids.chunks(s).map(|r| r[t]).collect();
        steps.push(v4_model::util::to_vec(
            model.decode_step(&mut cache, &next, opts)?,
        ));
    }
    let decode_s = t1.elapsed().as_secs_f64();
    // [steps][b][v] → [b][steps][v]
    let n = steps.len();
    let mut out = Vec::with_capacity(b * n * v);
    for r in 0..b {
        for step in &steps {
            out.extend_from_slice(&step[r * v..(r + 1) * v]);
        }
    }
    write_f32(
        &args.output,
        &[("decode_logits".into(), vec![b, n, v], out)],
        None,
    )?;
    eprintln!(
        "forward: {b} × {s} tokens, load {load_s:.2}s, prefill {p} tokens {prefill_s:.3}s, \
         decode {} tokens {decode_s:.3}s ({:.1} tokens/s per row), wrote {}",
        s - p,
        (s - p) as f64 / decode_s.max(1e-9),
        args.output.display()
    );
    Ok(())
}

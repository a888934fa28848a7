//! `v4train bench context`: how one CSA layer and the whole model scale with the context length
//! (V4's long-context claim: sparse CSA + HCA keep a step linear in the sequence apart from the
//! lightning indexer's score pass). For each length, a training step (forward + backward; for the
//! model: the trainer's whole step) and optionally a forward pass alone run in a **child
//! process**, so each measurement's peak resident memory (`VmHWM`) is its own; a child that
//! outgrows `--max-rss-gb` is stopped and reported as not fitting. `--repeat` interleaves the
//! sweep (1K, 4K, …, 1K, 4K, …) and keeps the fastest time of each: the machine may be shared.

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use v4_model::{SampleLayout, V4Model};
use v4_optim::V4Optimizer;
use v4train::recipe::Recipe;
use v4train::train::objectives::forward_options;
use v4train::train::step::{train_step, StepConfig};
use v4train::train::MicroBatch;

/// What one measurement runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The first CSA (ratio-4) attention layer of the recipe's model, alone.
    Layer,
    /// The whole model: the trainer's step (forward, V4 objective, backward, optimizer).
    Model,
}

/// Forward + backward, or the forward pass alone (no autodiff).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward and backward (for the model, the whole optimizer step).
    Train,
    /// Forward only, on the plain backend.
    Forward,
}

/// Arguments of `bench context`.
#[derive(clap::Args, Debug)]
pub struct BenchContextArgs {
    /// The recipe whose `[model]`, `[train]` and `[loss]` are measured (its data, schedule and
    /// checkpoint sections are not used).
    #[arg(long, default_value = "recipes/tiny-pretrain.toml")]
    pub recipe: std::path::PathBuf,
    /// Override a recipe key: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sequence lengths (tokens per sequence, one sequence).
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,16384,65536")]
    pub lengths: Vec<usize>,
    /// What to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "layer,model")]
    pub parts: Vec<Part>,
    /// Forward + backward and/or forward only.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "train,forward"
    )]
    pub modes: Vec<Mode>,
    /// Timed iterations per child (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    pub iters: usize,
    /// Sweeps over all lengths, interleaved; each figure is the best over the sweeps.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Stop a child whose resident memory passes this many GB [default: 80% of the memory
    /// available at start].
    #[arg(long)]
    pub max_rss_gb: Option<f64>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run one measurement in this process and print it as JSON.
    #[arg(long, hide = true, num_args = 3, value_names = ["PART", "MODE", "LEN"])]
    pub child: Vec<String>,
}

/// One measured (part, mode, length).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    /// `layer` or `model`.
    pub part: String,
    /// `train` or `forward`.
    pub mode: String,
    /// Tokens in the sequence.
    pub seq_len: usize,
    /// Seconds of the fastest iteration (forward + backward, or forward).
    pub seconds: Option<f64>,
    /// Seconds of the forward part of that iteration (layer, train mode).
    pub forward_seconds: Option<f64>,
    /// Peak resident memory of the child, bytes (`VmHWM`).
    pub peak_rss: Option<u64>,
    /// Resident memory after building the model, before the first iteration, bytes.
    pub base_rss: Option<u64>,
    /// Why there is no figure (out of memory, failed child).
    pub error: Option<String>,
}

/// Runs the benchmark (or, with `--child`, one measurement).
pub fn run<B: Backend>(
    args: &BenchContextArgs,
    threads: Option<usize>,
    device: &B::Device,
) -> Result<()> {
    if let [part, mode, len] = args.child.as_slice() {
        let part = <Part as clap::ValueEnum>::from_str(part, true).map_err(anyhow::Error::msg)?;
        let mode = <Mode as clap::ValueEnum>::from_str(mode, true).map_err(anyhow::Error::msg)?;
        let len: usize = len.parse().context("--child length")?;
        let m = measure::<B>(args, part, mode, len, device)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    // Checks the recipe once here, so a bad key is one error, not one per child.
    Recipe::load(&args.recipe, &args.set)?;
    if args.lengths.is_empty() || args.lengths.contains(&0) {
        bail!("--lengths: give one or more positive sequence lengths");
    }
    let limit = match args.max_rss_gb {
        Some(gb) if gb.is_finite() && gb > 0.0 => (gb * 1e9) as u64,
        Some(gb) => bail!("--max-rss-gb {gb}: must be a positive number"),
        None => v4train::plan::available_host_memory()
            .map(|a| a / 5 * 4)
            .unwrap_or(8_000_000_000),
    };
    let mut best: Vec<Measurement> = Vec::new();
    for _ in 0..args.repeat.max(1) {
        for &part in &args.parts {
            for &mode in &args.modes {
                for &len in &args.lengths {
                    let m = spawn_child(args, threads, part, mode, len, limit)?;
                    if !args.json && args.repeat > 1 {
                        eprintln!("{}", row(&m));
                    }
                    merge(&mut best, m);
                }
            }
        }
    }
    if args.json {
        for m in &best {
            println!("{}", serde_json::to_string(m)?);
        }
    } else {
        println!(
            "{:<6} {:<8} {:>7} {:>10} {:>10} {:>12} {:>12}",
            "part", "mode", "tokens", "step s", "fwd s", "peak RSS MB", "base RSS MB"
        );
        for m in &best {
            println!("{}", row(&m.clone()));
        }
    }
    Ok(())
}

/// Keeps the fastest time and the smallest peak of repeated measurements.
fn merge(best: &mut Vec<Measurement>, m: Measurement) {
    let same =
        |b: &&mut Measurement| b.part == m.part && b.mode == m.mode && b.seq_len == m.seq_len;
    match best.iter_mut().find(|b| same(b)) {
        None => best.push(m),
        Some(b) => {
            if m.seconds.is_some_and(|s| b.seconds.is_none_or(|t| s < t)) {
                (b.seconds, b.forward_seconds) = (m.seconds, m.forward_seconds);
            }
            b.peak_rss = match (b.peak_rss, m.peak_rss) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            b.base_rss = b.base_rss.or(m.base_rss);
            if b.seconds.is_some() {
                b.error = None;
            }
        }
    }
}

fn row(m: &Measurement) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mb = |x: Option<u64>| x.map_or("-".to_string(), |v| format!("{:.0}", v as f64 / 1e6));
    let mut line = format!(
        "{:<6} {:<8} {:>7} {:>10} {:>10} {:>12} {:>12}",
        m.part,
        m.mode,
        m.seq_len,
        f(m.seconds),
        f(m.forward_seconds),
        mb(m.peak_rss),
        mb(m.base_rss)
    );
    if let Some(e) = &m.error {
        line.push_str(&format!("  ({e})"));
    }
    line
}

/// The command-line spelling of `v`.
fn value_name<V: clap::ValueEnum>(v: &V) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `VmHWM` / `VmRSS` of `/proc/<pid>/status`, bytes.
fn proc_status(pid: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs one measurement in a child process, stopping it past `limit` bytes resident.
fn spawn_child(
    args: &BenchContextArgs,
    threads: Option<usize>,
    part: Part,
    mode: Mode,
    len: usize,
    limit: u64,
) -> Result<Measurement> {
    let exe = std::env::current_exe().context("locating the v4train binary")?;
    let (part_name, mode_name) = (value_name(&part), value_name(&mode));
    let mut cmd = Command::new(exe);
    if let Some(n) = threads {
        cmd.arg("--threads").arg(n.to_string());
    }
    cmd.args(["bench", "context", "--recipe"])
        .arg(&args.recipe)
        .arg("--iters")
        .arg(args.iters.to_string());
    for s in &args.set {
        cmd.arg("--set").arg(s);
    }
    cmd.arg("--child")
        .args([part_name.as_str(), mode_name.as_str(), &len.to_string()])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("starting a benchmark child")?;
    let pid = child.id().to_string();
    let mut over = None;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Some(rss) = proc_status(&pid, "VmRSS:").filter(|&r| r > limit) {
            over = Some(rss);
            // The child is ours; stop it before it takes the machine's memory.
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    let failed = |error: String| Measurement {
        part: part_name.clone(),
        mode: mode_name.clone(),
        seq_len: len,
        error: Some(error),
        ..Measurement::default()
    };
    if let Some(rss) = over {
        return Ok(failed(format!(
            "stopped at {:.1} GB resident (limit {:.1} GB)",
            rss as f64 / 1e9,
            limit as f64 / 1e9
        )));
    }
    if !status.success() {
        return Ok(failed(format!("child failed: {status}")));
    }
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading the child's report {line:?}"))
}

/// One measurement in this process.
fn measure<B: Backend>(
    args: &BenchContextArgs,
    part: Part,
    mode: Mode,
    len: usize,
    device: &B::Device,
) -> Result<Measurement> {
    let mut sets = args.set.clone();
    sets.push(format!("train.seq_len={len}"));
    sets.push("train.micro_batch=1".into());
    let recipe = Recipe::load(&args.recipe, &sets)?;
    let cfg = recipe.model.resolve()?;
    let iters = args.iters.max(1);
    let mut m = Measurement {
        part: value_name(&part),
        mode: value_name(&mode),
        seq_len: len,
        ..Measurement::default()
    };
    let mut times = Vec::with_capacity(iters);
    match (part, mode) {
        (Part::Layer, _) => {
            let layer = (0..cfg.num_hidden_layers)
                .find(|&l| cfg.ratio(l) == 4)
                .with_context(|| {
                    format!("{}: the model has no CSA layer", args.recipe.display())
                })?;
            let x = Tensor::<B, 3>::random(
                [1, len, cfg.hidden_size],
                Distribution::Normal(0.0, 1.0),
                device,
            );
            let opts = forward_options(&recipe);
            if mode == Mode::Train {
                type AD<B> = Autodiff<B>;
                let attn = V4Model::<AD<B>>::init(&cfg, recipe.train.seed, device)?
                    .layers
                    .swap_remove(layer)
                    .attn;
                let x = Tensor::<AD<B>, 3>::from_inner(x);
                m.base_rss = proc_status("self", "VmRSS:");
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let layout = SampleLayout::whole(1, len, device);
                    let (o, kl) = attn.forward_samples(x.clone(), &layout, opts);
                    let mut loss = o.square().mean();
                    if let Some(kl) = kl {
                        loss = loss + kl.mul_scalar(recipe.loss.indexer_weight);
                    }
                    let _ = loss.clone().into_scalar();
                    let fwd = t0.elapsed().as_secs_f64();
                    let g = loss.backward();
                    drop(g);
                    B::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    times.push((t0.elapsed().as_secs_f64(), Some(fwd)));
                }
            } else {
                let attn = V4Model::<B>::init(&cfg, recipe.train.seed, device)?
                    .layers
                    .swap_remove(layer)
                    .attn;
                m.base_rss = proc_status("self", "VmRSS:");
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let layout = SampleLayout::whole(1, len, device);
                    let (o, _) = attn.forward_samples(x.clone(), &layout, opts);
                    let _ = o.sum().into_scalar();
                    times.push((t0.elapsed().as_secs_f64(), None));
                }
            }
        }
        (Part::Model, Mode::Train) => {
            let model = V4Model::<Autodiff<B>>::init(&cfg, recipe.train.seed, device)?;
            let mut opt = V4Optimizer::<B>::new(&recipe.optim)?;
            let tokens = random_tokens(len + 1, cfg.vocab_size);
            let batch = MicroBatch::from_windows(1, len, &tokens);
            let step_cfg = StepConfig {
                recipe: &recipe,
                opts: forward_options(&recipe),
            };
            let mut model = Some(model);
            m.base_rss = proc_status("self", "VmRSS:");
            for step in 0..iters {
                let t0 = Instant::now();
                let (next, _) = train_step(
                    model.take().context("model")?,
                    &mut opt,
                    std::slice::from_ref(&batch),
                    &step_cfg,
                    (step as u64, recipe.schedule.peak_lr, recipe.loss.mtp_weight),
                    device,
                )?;
                B::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                times.push((t0.elapsed().as_secs_f64(), None));
                model = Some(next);
            }
        }
        (Part::Model, Mode::Forward) => {
            let model = V4Model::<B>::init(&cfg, recipe.train.seed, device)?;
            let tokens = random_tokens(len, cfg.vocab_size);
            let mut opts = forward_options(&recipe);
            opts.indexer_loss = false;
            opts.balance_loss = false;
            m.base_rss = proc_status("self", "VmRSS:");
            for _ in 0..iters {
                let t0 = Instant::now();
                let ids: Tensor<B, 2, Int> =
                    Tensor::from_data(TensorData::new(tokens.clone(), [1, len]), device);
                let layout = SampleLayout::whole(1, len, device);
                let out = model.forward_samples(ids, &layout, opts, false, true);
                let _ = out.logits.sum().into_scalar();
                times.push((t0.elapsed().as_secs_f64(), None));
            }
        }
    }
    if let Some(&(s, f)) = times.iter().min_by(|a, b| a.0.total_cmp(&b.0)) {
        (m.seconds, m.forward_seconds) = (Some(s), f);
    }
    m.peak_rss = proc_status("self", "VmHWM:");
    Ok(m)
}

/// `n` token ids spread over the vocabulary (a fixed LCG: the benchmark is reproducible).
fn random_tokens(n: usize, vocab: usize) -> Vec<i64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab.max(1) as u64) as i64
        })
        .collect()
}

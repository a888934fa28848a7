//! `v4train generate`: completions from any model directory v4train reads (release FP8/FP4
//! included) with the V4 decode cache. Prompts are chat conversations (rendered with the
//! official V4 chat encoding, in chat or thinking mode), raw text, or token ids; the output is
//! one JSON line per prompt with the completion's text, token ids, per-token log-probabilities
//! under the sampling policy and the finish reason.

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use v4_checkpoints::ModelDir;
use v4_data::{encode_chat, ChatOptions, ChatRequest, ThinkingMode, V4Tokenizer};
use v4_model::{inventory, ForwardOptions, V4Model, WeightSource};
use v4train::generate::{generate, FinishReason, GenerateParams, SamplingParams};
use v4train::train::text_data::SHIPPED_TOKENIZER;

/// Chat rendering mode of `messages` prompts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `</think>` after the assistant opener: answer directly.
    Chat,
    /// `<think>` after the assistant opener: reason first.
    Thinking,
}

/// Arguments of `v4train generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model directory (`config.json` + weights, release layout; a training `step-N/` too).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Tokenizer directory or `tokenizer.json` (default: the model directory when it has one,
    /// else the shipped V4 tokenizer).
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// Prompts, one JSON object per line: `{"messages": [...]}` (optional `thinking_mode`,
    /// `drop_thinking`, `reasoning_effort`), `{"prompt": "raw text"}` or `{"prompt_ids": [..]}`.
    #[arg(long, value_name = "PROMPTS.jsonl", required_unless_present = "prompt")]
    pub prompts: Option<PathBuf>,
    /// A raw-text prompt (repeatable; instead of `--prompts`).
    #[arg(long, conflicts_with = "prompts")]
    pub prompt: Vec<String>,
    /// Output jsonl (default: stdout).
    #[arg(long, value_name = "OUT.jsonl")]
    pub output: Option<PathBuf>,
    /// Tokens generated per prompt at most.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens holding this much probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of sampling (a completion depends on the seed and its prompt's index only).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the completion's text contains this string (repeatable; cut before it).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Chat prompts' mode (a line's `thinking_mode` overrides it).
    #[arg(long, value_enum, default_value_t = Mode::Chat)]
    pub mode: Mode,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Switch off the FP8/FP4 fake quantization of KV and indexer paths.
    #[arg(long)]
    pub no_fake_quant: bool,
}

/// A prompt ready to run: its text (when it has one) and its ids.
struct Prompt {
    text: Option<String>,
    ids: Vec<u32>,
}

fn load_tokenizer(args: &GenerateArgs) -> Result<V4Tokenizer> {
    let shipped = [
        PathBuf::from(SHIPPED_TOKENIZER),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_TOKENIZER),
    ];
    let dir = match &args.tokenizer {
        Some(d) => d.clone(),
        None if args.model.join("tokenizer.json").is_file() => args.model.clone(),
        None => shipped
            .iter()
            .find(|d| d.join("tokenizer.json").is_file())
            .cloned()
            .with_context(|| {
                format!(
                    "no tokenizer in {} and the shipped one ({SHIPPED_TOKENIZER}) was not found; \
                     pass --tokenizer DIR",
                    args.model.display()
                )
            })?,
    };
    V4Tokenizer::from_dir(&dir).map_err(|e| anyhow::anyhow!("--tokenizer {}: {e}", dir.display()))
}

/// Reads the prompts of `--prompts` / `--prompt`, rendered and tokenized.
fn read_prompts(args: &GenerateArgs, tok: &V4Tokenizer) -> Result<Vec<Prompt>> {
    let bos = tok.bos_id();
    let raw = |text: &str| -> Result<Prompt> {
        let mut ids = tok.encode(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
        Ok(Prompt {
            text: Some(text.to_string()),
            ids,
        })
    };
    let Some(path) = &args.prompts else {
        return args.prompt.iter().map(|p| raw(p)).collect();
    };
    let file =
        std::fs::File::open(path).with_context(|| format!("--prompts {}", path.display()))?;
    let defaults = ChatOptions {
        thinking_mode: match args.mode {
            Mode::Chat => ThinkingMode::Chat,
            Mode::Thinking => ThinkingMode::Thinking,
        },
        ..ChatOptions::default()
    };
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let line = line.with_context(at)?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).with_context(at)?;
        let prompt = if v.get("messages").is_some() {
            let req: ChatRequest = serde_json::from_value(v).with_context(at)?;
            let enc = encode_chat(&req.messages, &req.options(&defaults))
                .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            let ids = tok
                .encode(&enc.text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            Prompt {
                text: Some(enc.text),
                ids,
            }
        } else if let Some(t) = v.get("prompt").and_then(Value::as_str) {
            raw(t).with_context(at)?
        } else if let Some(ids) = v.get("prompt_ids").and_then(Value::as_array) {
            let ids = ids
                .iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect::<Option<Vec<u32>>>()
                .with_context(|| format!("{}: `prompt_ids` must be token ids", at()))?;
            Prompt { text: None, ids }
        } else {
            bail!(
                "{}: expected `messages`, `prompt` or `prompt_ids` in {line}",
                at()
            );
        };
        if prompt.ids.is_empty() {
            bail!("{}: the prompt has no tokens", at());
        }
        out.push(prompt);
    }
    if out.is_empty() {
        bail!("--prompts {}: no prompts", path.display());
    }
    Ok(out)
}

/// Runs the command on backend `B`.
pub fn run<B: Backend>(args: &GenerateArgs, device: &B::Device) -> Result<()> {
    let tok = load_tokenizer(args)?;
    let prompts = read_prompts(args, &tok)?;
    let dir =
        ModelDir::open(&args.model).with_context(|| format!("--model {}", args.model.display()))?;
    let cfg = dir.config().clone();
    for (i, p) in prompts.iter().enumerate() {
        if let Some(bad) = p.ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            bail!(
                "prompt {i}: token id {bad} is outside the model's vocabulary 0..{} ({})",
                cfg.vocab_size,
                args.model.display()
            );
        }
    }
    dir.check_against(&inventory(&cfg))?;
    let t0 = Instant::now();
    let model = V4Model::<B>::load(&cfg, &dir as &dyn WeightSource, device)?;
    eprintln!(
        "generate: {} prompts, model {} loaded in {:.1}s",
        prompts.len(),
        args.model.display(),
        t0.elapsed().as_secs_f64()
    );
    let params = GenerateParams {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        eos_ids: vec![tok.eos_id()],
        stop_strings: args.stop.clone(),
        batch_size: args.batch_size,
        opts: ForwardOptions {
            fake_quant: !args.no_fake_quant,
            ..Default::default()
        },
    };
    params
        .sampling
        .validate()
        .map_err(|m| anyhow::anyhow!("--{}", m.replace('_', "-")))?;
    let bar = ProgressBar::new((prompts.len() * args.max_new_tokens) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tokens {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut made = 0usize;
    let mut tick = |n: usize| {
        made += n;
        bar.inc(n as u64);
        let rate = made as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{rate:.1} tokens/s"));
    };
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let completions = generate(&model, &ids, &params, Some(&tok), &mut tick)?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let total: usize = completions.iter().map(|c| c.tokens.len()).sum();
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--output {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    for (i, (p, c)) in prompts.iter().zip(&completions).enumerate() {
        let line = json!({
            "index": i,
            "prompt": p.text,
            "prompt_tokens": p.ids.len(),
            "completion": c.text,
            "token_ids": c.tokens,
            "logprobs": c.logprobs,
            "finish_reason": match c.finish {
                FinishReason::Eos => "eos",
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
            },
        });
        writeln!(out, "{line}").context("writing the output")?;
    }
    out.flush().context("writing the output")?;
    eprintln!(
        "generate: {total} tokens in {secs:.1}s ({:.1} tokens/s)",
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

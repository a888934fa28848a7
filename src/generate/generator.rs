//! Batched generation with the V4 decode cache, without autodiff: prompts are prefilled in one
//! pass per batch, then every unfinished row decodes one token per step under the sampling
//! policy until end-of-sequence, a stop string or the token limit; finished rows leave the
//! batch. This is the library entry point the on-policy distillation trainer calls.

use super::sampler::{Sampler, SamplingParams};
use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use v4_data::V4Tokenizer;
use v4_model::{ForwardOptions, V4Model};

/// Why a completion ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token was produced (it is the last token).
    Eos,
    /// A stop string appeared in the text (the text is cut before it).
    Stop,
    /// `max_new_tokens` were produced.
    Length,
}

/// What to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Tokens generated per prompt at most.
    pub max_new_tokens: usize,
    /// The sampling policy.
    pub sampling: SamplingParams,
    /// Tokens that end a completion (e.g. the tokenizer's end-of-sentence).
    pub eos_ids: Vec<u32>,
    /// Strings that end a completion (checked on the decoded text; needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Prompts decoded together.
    pub batch_size: usize,
    /// Forward switches (fake quantization as the release runs; attention mode).
    pub opts: ForwardOptions,
}

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Log-probability of each under the sampling policy.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish: FinishReason,
    /// The decoded text (with a tokenizer), cut before a stop string.
    pub text: Option<String>,
}

/// A row being decoded.
struct Active {
    index: usize,
    sampler: Sampler,
    out: Completion,
}

impl Active {
    /// Appends a sampled token; true when the row is done (its finish reason set).
    fn push(
        &mut self,
        token: u32,
        logprob: f32,
        params: &GenerateParams,
        tokenizer: Option<&V4Tokenizer>,
    ) -> Result<bool> {
        self.out.tokens.push(token);
        self.out.logprobs.push(logprob);
        let finish = if params.eos_ids.contains(&token) {
            Some(FinishReason::Eos)
        } else {
            None
        };
        if let Some(tok) = tokenizer {
            let text = tok
                .decode(&self.out.tokens)
                .map_err(|e| anyhow::anyhow!("decoding completion {}: {e}", self.index))?;
            let stop = params
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min();
            self.out.text = Some(match stop {
                Some(at) => text[..at].to_string(),
                None => text,
            });
            if stop.is_some() && finish.is_none() {
                self.out.finish = FinishReason::Stop;
                return Ok(true);
            }
        }
        if let Some(f) = finish {
            self.out.finish = f;
            return Ok(true);
        }
        Ok(self.out.tokens.len() >= params.max_new_tokens)
    }
}

/// Generates a completion for each prompt (token ids), in order. `on_tokens(n)` is called after
/// every decode step with the tokens it produced (for progress and throughput).
pub fn generate<B: Backend>(
    model: &V4Model<B>,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
    tokenizer: Option<&V4Tokenizer>,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<Completion>> {
    params
        .sampling
        .validate()
        .map_err(|m| anyhow::anyhow!("sampling: {m}"))?;
    let mut out: Vec<Option<Completion>> = vec![None; prompts.len()];
    let batch = params.batch_size.max(1);
    for (b, chunk) in prompts.chunks(batch).enumerate() {
        let first = b * batch;
        for (i, c) in generate_batch(model, chunk, first, params, tokenizer, on_tokens)? {
            out[i] = Some(c);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, c)| c.with_context(|| format!("prompt {i} produced no completion")))
        .collect()
}

fn generate_batch<B: Backend>(
    model: &V4Model<B>,
    prompts: &[Vec<u32>],
    first: usize,
    params: &GenerateParams,
    tokenizer: Option<&V4Tokenizer>,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<(usize, Completion)>> {
    let ids: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| p.iter().map(|&t| i64::from(t)).collect())
        .collect();
    let (mut logits, mut cache) = model
        .prefill(&ids, params.opts)
        .with_context(|| format!("prefilling prompts {first}..{}", first + prompts.len()))?;
    let mut active: Vec<Active> = (0..prompts.len())
        .map(|i| Active {
            index: first + i,
            sampler: Sampler::new(params.sampling, (first + i) as u64),
            out: Completion {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                finish: FinishReason::Length,
                text: None,
            },
        })
        .collect();
    let mut done = Vec::new();
    if params.max_new_tokens == 0 {
        return Ok(active.into_iter().map(|a| (a.index, a.out)).collect());
    }
    let vocab = model.config.vocab_size;
    loop {
        let rows = v4_model::util::to_vec(logits);
        let mut keep = Vec::with_capacity(active.len());
        let mut next = Vec::with_capacity(active.len());
        for (r, a) in active.iter_mut().enumerate() {
            let s = a.sampler.sample(&rows[r * vocab..(r + 1) * vocab]);
            if !a.push(s.token, s.logprob, params, tokenizer)? {
                keep.push(r);
                next.push(i64::from(s.token));
            }
        }
        on_tokens(active.len());
        if keep.len() < active.len() {
            let mut still = Vec::with_capacity(keep.len());
            for (r, a) in active.into_iter().enumerate() {
                if keep.contains(&r) {
                    still.push(a);
                } else {
                    done.push((a.index, a.out));
                }
            }
            active = still;
            cache.retain(&keep);
        }
        if active.is_empty() {
            return Ok(done);
        }
        logits = model
            .decode_step(&mut cache, &next, params.opts)
            .context("decode step")?;
    }
}

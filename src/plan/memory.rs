//! Peak resident memory of a training run, per part: f32 weights, f32 gradients, optimizer
//! state, what autodiff keeps for one micro-batch ([`mod@super::activations`]), and the runtime —
//! process, tokenizer and data pipeline, and the allocator's slack (the binary runs mimalloc
//! with purging off, so freed memory stays resident: peak RSS is the high-water mark of live
//! tensors plus what fragmentation keeps on top).
//!
//! Calibration: peak RSS of the release binary (`v4train RECIPE --set train.steps=3 --set
//! schedule.warmup_steps=1`, fresh output directories, `/usr/bin/time -v` maximum resident set
//! size, 2-core CPU) against [`estimate_training`]; `tests/plan_memory.rs` keeps every row
//! within 25%. RSS still creeps up a few percent over the next steps, which the slack term
//! leaves room for.
//!
//! | run (tiny-pretrain: seq 256, micro-batch 2; tiny-sft: 129k vocabulary, seq 512) | measured | estimate | ratio |
//! |---|---|---|---|
//! | tiny-pretrain | 163 MB | 135 MB | 0.83 |
//! | tiny-pretrain micro_batch=1 | 95 MB | 91 MB | 0.96 |
//! | tiny-pretrain micro_batch=4 | 242 MB | 224 MB | 0.93 |
//! | tiny-pretrain indexer_weight=0 | 152 MB | 128 MB | 0.85 |
//! | tiny-pretrain seq_len=1024 | 449 MB | 478 MB | 1.06 |
//! | tiny-pretrain seq_len=1024 indexer_weight=0 | 412 MB | 451 MB | 1.10 |
//! | tiny-pretrain seq_len=4096 | 1305 MB | 1490 MB | 1.14 |
//! | tiny-sft | 1986 MB | 1690 MB | 0.85 |
//! | tiny-sft seq_len=2048 | 6256 MB | 5190 MB | 0.83 |
//! | tiny-sft freeze=all-but-indexer attention=dense | 848 MB | 906 MB | 1.07 |
//! | tiny-pretrain seq_len=1024 grad_accum=2 | 450 MB | 478 MB | 1.06 |
//! | tiny-pretrain fake_quant=true expert_fp4_qat=true | 165 MB | 136 MB | 0.83 |
//! | tiny-pretrain seq_len=2048 micro_batch=1 | 550 MB | 579 MB | 1.05 |
//! | tiny-pretrain seq_len=1024 attention=dense | 590 MB | 488 MB | 0.83 |
//! | tiny-pretrain seq_len=4096 micro_batch=1 activation_checkpointing=block | 471 MB | 557 MB | 1.18 |
//! | tiny-pretrain seq_len=8192 micro_batch=1 | 1330 MB | 1500 MB | 1.13 |
//!
//! (Sparse CSA, chunked indexer, stacked experts; `tiny-long`, 16K tokens
//! with block recomputation: 2.46 GB estimated, 2.89 GB measured over 4 steps.)

use std::fmt;

use super::activations::{activations, Activations};
use super::params::{param_bytes, ParamBytes};
use crate::recipe::{DataSource, Dtype, Recipe};
use v4_model::ModelConfig;

/// The binary, its libraries, thread stacks and the allocator's own structures: 21 MB resident
/// after building tiny-pretrain's model (10 MB before), almost all of it code and runtime.
const PROCESS_BYTES: u64 = 20_000_000;

/// Text / chat data: the V4 tokenizer (129k-entry vocabulary and merges, regexes) and the
/// source readers. Opening tiny-sft's data takes the process from 10 to 122 MB resident (the
/// tokenizer keeps 26 MB live; the rest is its construction's freed memory, kept by mimalloc).
const TOKENIZER_BYTES: u64 = 110_000_000;

/// Allocator slack that does not grow with the step: per-thread heaps (the main thread and the
/// compute pool each keep their own high-water mark of small and medium pages).
const SLACK_BASE_BYTES: u64 = 15_000_000;

/// Allocator slack proportional to what a step allocates and frees: with purging off, blocks
/// freed by backward are reused only by later requests of the same size class on the same
/// thread, so resident memory ends above the live high-water mark. Fitted on the table above
/// (measured RSS minus the other parts, over the live activations), capped by
/// [`SLACK_MAX_BYTES`].
const SLACK_PER_ACTIVATION_BYTE: f64 = 0.3;

/// Most allocator slack a step keeps: large steps reuse their big buffers' size classes.
const SLACK_MAX_BYTES: u64 = 150_000_000;

/// Estimated peak resident memory of training, in bytes, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Every parameter as an f32 master copy.
    pub weights: u64,
    /// f32 gradients of the trained parameters (all alive after backward; with gradient
    /// accumulation the running sum is alive during the next micro-batches too).
    pub gradients: u64,
    /// Optimizer state: one f32 momentum per Muon parameter, two f32 moments per AdamW one
    /// (frozen and not-differentiated parameters have none).
    pub optimizer: u64,
    /// What autodiff keeps for one micro-batch at the backward peak, with the output head's
    /// `[T, V]` transients ([`Activations`]) and, in bf16, the bf16 weight copies.
    pub activations: u64,
    /// Process, tokenizer / data pipeline and allocator slack.
    pub runtime: u64,
    /// Host copies made while a checkpoint is written (every run writes at least its last):
    /// the f32 model for the shards, then the optimizer state exported and serialized (two
    /// copies). They replace gradients and activations, which are freed by then.
    pub checkpoint: u64,
}

impl MemoryEstimate {
    /// Peak of one training step alone.
    pub fn step(&self) -> u64 {
        self.weights
            .saturating_add(self.optimizer)
            .saturating_add(self.gradients)
            .saturating_add(self.activations)
            .saturating_add(self.runtime)
    }

    /// Peak while a checkpoint is written.
    pub fn checkpoint_save(&self) -> u64 {
        self.weights
            .saturating_add(self.optimizer)
            .saturating_add(self.checkpoint)
            .saturating_add(self.runtime)
    }

    /// Peak resident memory of the run on the CPU backend: the larger of a step and a
    /// checkpoint save.
    pub fn total(&self) -> u64 {
        self.step().max(self.checkpoint_save())
    }

    /// What a GPU must hold with `--device cuda`: weights, gradients, optimizer state and
    /// activations (the runtime and checkpoint copies stay on the host).
    pub fn device(&self) -> u64 {
        self.weights
            .saturating_add(self.optimizer)
            .saturating_add(self.gradients)
            .saturating_add(self.activations)
    }

    /// Host memory with `--device cuda`: the runtime, plus the checkpoint copies.
    pub fn host_with_cuda(&self) -> u64 {
        self.runtime.saturating_add(self.checkpoint)
    }
}

/// `1.21 GB` / `512.3 MB` (decimal units), in the unit chosen for a whole line.
fn amount(bytes: u64, gb: bool) -> String {
    if gb {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

impl fmt::Display for MemoryEstimate {
    /// One line, e.g. `weights 1.21 GB + gradients 1.21 GB + optimizer 2.30 GB + activations
    /// 3.40 GB + runtime 0.20 GB = 8.32 GB`; when writing a checkpoint needs more than a step,
    /// the checkpoint copies take the place of gradients and activations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        let gb = total >= 1_000_000_000;
        let a = |x| amount(x, gb);
        if self.step() >= self.checkpoint_save() {
            write!(
                f,
                "weights {} + gradients {} + optimizer {} + activations {} + runtime {} = {}",
                a(self.weights),
                a(self.gradients),
                a(self.optimizer),
                a(self.activations),
                a(self.runtime),
                a(total)
            )
        } else {
            write!(
                f,
                "weights {} + optimizer {} + checkpoint copies {} + runtime {} = {} \
                 (peak while saving; a step: gradients {} + activations {})",
                a(self.weights),
                a(self.optimizer),
                a(self.checkpoint),
                a(self.runtime),
                a(total),
                a(self.gradients),
                a(self.activations)
            )
        }
    }
}

/// Runtime: process, tokenizer for text / chat data, allocator slack.
fn runtime(recipe: &Recipe, act: &Activations) -> u64 {
    let data = match recipe.data.source {
        DataSource::Text(_) => TOKENIZER_BYTES,
        DataSource::Synthetic(_) | DataSource::Tokens(_) => 0,
    };
    let live = act.total().saturating_sub(act.indexer_chunk) as f64;
    let slack = (live * SLACK_PER_ACTIVATION_BYTE).min(SLACK_MAX_BYTES as f64) as u64;
    PROCESS_BYTES + data + SLACK_BASE_BYTES + slack
}

/// Host copies of a checkpoint save: the model as f32 vectors (i64 for `tid2eid`) for the
/// shard writer, freed before the optimizer state is exported to host tensors and serialized
/// into one safetensors image (two copies of it at once).
fn checkpoint_copies(p: &ParamBytes) -> u64 {
    p.weights.max(p.optimizer.saturating_mul(2))
}

/// Peak resident memory of training `cfg` with `recipe` (one step of `micro_batch × seq_len`
/// tokens, gradient accumulation, the optimizer update and checkpoint saves), on the CPU
/// backend. Pure arithmetic on the shapes: nothing is allocated.
pub fn estimate_training(cfg: &ModelConfig, recipe: &Recipe) -> MemoryEstimate {
    let p = param_bytes(cfg, recipe);
    let act = activations(cfg, recipe);
    // bf16 compute keeps a bf16 copy of every weight it multiplies for backward (the f32
    // path keeps the parameter itself); its halved matmul operands are not counted, so the
    // estimate stays on the safe side there.
    let bf16_copies = match recipe.train.dtype {
        Dtype::F32 => 0,
        Dtype::Bf16 => p.weights / 2,
    };
    MemoryEstimate {
        weights: p.weights,
        gradients: p.gradients,
        optimizer: p.optimizer,
        activations: act.total().saturating_add(bf16_copies),
        runtime: runtime(recipe, &act),
        checkpoint: checkpoint_copies(&p),
    }
}

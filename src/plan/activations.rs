//! What Burn's autodiff keeps from one training forward pass of `micro_batch × seq_len` tokens,
//! and what backward adds on top at its peak — counted tensor by tensor from the model code.
//!
//! Burn (0.21, no checkpointing) records every op whose inputs require a gradient and keeps,
//! until backward consumes it, whatever that op's backward needs (`burn-autodiff/src/ops`):
//! `matmul` and `mul` keep both operands (when the other one is tracked), `div` its numerator
//! and denominator, `exp`, `log`, `sqrt`, `sigmoid`, `relu` and `abs` their *input*, `powi(2)`
//! (a `mul(x, x)`) its input, `mask_fill` its boolean mask, `select` / `gather` their indices;
//! `add`, `sub`, `*_scalar`, `sum_dim`, `mean_dim`, `reshape`, `slice`, `cat` keep nothing. A
//! tensor kept by several ops is one buffer. `softmax` and `log_softmax` are not fused: they
//! keep the exp input and output (softmax) or the shifted logits (log-softmax). The counts
//! below follow the forward of `v4-model` op by op and are in f32 elements per token unless
//! said otherwise (`BOOL` = a one-byte mask element, `INDEX` = a 4-byte index).
//!
//! Peak: backward frees saved tensors as it walks down (deepest first: MTP head, MTP block,
//! main head, main blocks from the top), so the high-water mark is at its start — every saved
//! tensor plus the output head's transient — or, for long sequences, at the softmax backward of
//! the top CSA layer once everything above it is gone.
//!
//! Checked against a counting global allocator wrapped around the trainer's step (live heap
//! bytes, not RSS: the step's peak minus what was live before it; first step; MB):
//!
//! | tiny-pretrain unless said | measured | estimated |
//! |---|---|---|
//! | seq 256, micro-batch 2 | 70.4 | 70.3 |
//! | micro_batch=1 / 4 | 37.3 / 136.7 | 37.3 / 136.4 |
//! | seq_len=1024 | 344.9 | 343.7 |
//! | seq_len=4096 | 2567.3 | 2561.8 |
//! | vocab_size=32768 | 468.6 | 469.3 |
//! | tiny-sft (129k vocabulary, seq 512) | 1117.2 | 1117.2 |
//! | d 256, 8 heads × 128, 16 experts top-4, window 64; seq 500 | 403.2 | 391.8 |
//! | top layer CSA, no MTP, dense, seq 2048 (the softmax-backward peak) | 225.8 | 233.9 |
//! | freeze all-but-indexer, dense, seq 1024 (the indexer-backward peak) | 159.7 | 152.2 |
//!
//! (Measured on the dense CSA path before its indexer KL ran in chunks. The sparse path — the
//! top-k entries gathered per query, the indexer's KL over them, its chunked top-k pass — the
//! chunked dense KL and block recomputation are counted from their code and checked through
//! peak RSS: the table in [`mod@super::memory`].)

use crate::recipe::{ActivationCheckpointing, Attention, Freeze, Recipe};
use v4_model::indexer::CHUNK_BUDGET_BYTES;
use v4_model::ModelConfig;

const F32: f64 = 4.0;
/// A `mask_fill` mask element (Burn's CPU backend stores bools as bytes) in f32 elements.
const BOOL: f64 = 0.25;
/// A saved index element (i32 on Burn's backends) in f32 elements.
const INDEX: f64 = 1.0;

/// `[T, V]` logit tensors alive at the start of backward besides the ones each head keeps:
/// the gradient of the picked log-probabilities (a scatter into zeros), the gradient of the
/// log-sum-exp broadcast back over the vocabulary, and `exp` recomputed for its backward.
/// Measured: the backward peak sits exactly 3 `[T, V]` above the end of the forward on
/// tiny-sft (129k vocabulary, T = 512 and 2048) and on tiny-pretrain at vocabulary 32768,
/// with and without MTP.
const HEAD_BACKWARD_TRANSIENTS: f64 = 3.0;

/// `[T, H, K]` tensors the attention softmax backward holds at once: the gradient of the
/// probabilities (window and compressed parts, padded back to `K`), its product with the
/// output, the recomputed `exp` (Burn keeps the exp *input*). Measured 2.3 on a model whose
/// top layer is CSA without MTP (tiny-pretrain, ratios [0, 0, 4], seq_len 2048, dense): the
/// backward peak there is 12.6 MB above the forward's end, after the head and the layer's FFN
/// half (29 MB) were freed, with `[T, H, K]` = 17.9 MB.
const SOFTMAX_BACKWARD_TRANSIENTS: f64 = 2.5;

/// Autodiff's own bookkeeping per recorded op (node, boxed backward step, graph and
/// checkpointer map entries), per block: about 600 ops plus some 12 per routed expert that
/// receives tokens. Measured with a counting allocator as the part of the step's live peak that
/// does not grow with tokens: 4.2–4.5 MB for tiny-pretrain's 4 blocks × 4 experts at
/// micro-batch 1, 2 and 4, 1.4 MB more with 32 experts.
const GRAPH_BYTES_PER_BLOCK: f64 = 1.0e6;
/// See [`GRAPH_BYTES_PER_BLOCK`].
const GRAPH_BYTES_PER_EXPERT: f64 = 12.5e3;

/// `[T, index_heads, n]` tensors the lightning indexer's backward holds at once (the gradient
/// of the ReLU output and of its input). Its backward runs last (its ops hang off the
/// parameters, at the bottom of the graph), when only the indexers' own saved tensors and the
/// gradients are left. Measured: with everything but the indexer frozen the backward peak is
/// 1.9 such tensors above the forward's saved total (tiny-pretrain, seq_len 1024).
const INDEXER_BACKWARD_TRANSIENTS: f64 = 2.0;

/// `[T, V]` tensors a forward holds at once when the head is not differentiated (`freeze =
/// "all-but-indexer"`): the logits and the log-softmax working tensor (measured 2.0 on tiny-sft).
const FROZEN_HEAD_TRANSIENTS: f64 = 2.0;

/// What one micro-batch's forward keeps alive for backward, and backward's transients on top,
/// at the step's peak, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Activations {
    /// Tensors saved inside the main and MTP blocks (mHC, norms, attention, compressors,
    /// lightning indexer and its KL loss, MoE).
    pub blocks: u64,
    /// Expert FP4 QAT (`[train] expert_fp4_qat`): the fake-quantized copy of every routed
    /// expert weight used by the micro-batch, kept by its matmul for backward.
    pub expert_qat: u64,
    /// Inputs of `hc_head`, the final norms and the output head; MTP input projections;
    /// embedding ids.
    pub heads: u64,
    /// `[T, V]` logits and log-softmax tensors at the backward peak: each head's shifted logits
    /// (kept by `log_softmax`), the MTP logits the step keeps in its `ModelOutput` while
    /// backward runs, and the head's backward transients (three `[T, V]` tensors).
    pub logits: u64,
    /// What backward adds beyond that: the attention softmax backward of the top CSA layer
    /// minus everything freed before it runs (0 when the head's transient is larger).
    pub backward: u64,
    /// Autodiff's bookkeeping of the recorded ops (independent of the token count).
    pub graph: u64,
    /// The sparse indexer's top-k pass: the live scores of one chunk of queries. A forward
    /// transient, but the allocator (purging off) keeps its pages resident for the step's
    /// other allocations, so it adds to the peak RSS rather than overlapping it.
    pub indexer_chunk: u64,
}

impl Activations {
    /// Sum of the parts.
    pub fn total(&self) -> u64 {
        self.blocks
            .saturating_add(self.expert_qat)
            .saturating_add(self.heads)
            .saturating_add(self.logits)
            .saturating_add(self.backward)
            .saturating_add(self.graph)
            .saturating_add(self.indexer_chunk)
    }
}

/// Switches of the forward that change what is kept.
#[derive(Debug, Clone, Copy)]
struct Forward {
    b: f64,
    sparse: bool,
    indexer_loss: bool,
    balance: bool,
    expert_fp4: bool,
    mtp_blocks: usize,
    /// `freeze = "all-but-indexer"`: only the indexers are differentiated, so only their ops
    /// are recorded (their inputs are detached; everything else is untracked).
    frozen: bool,
    /// `activation_checkpointing = "block"`: main blocks keep only their input streams.
    recompute: bool,
    /// `[train] indexer_chunk` (0: by the budget).
    indexer_chunk: usize,
}

impl Forward {
    fn new(cfg: &ModelConfig, recipe: &Recipe) -> Self {
        let loss = &recipe.loss;
        Self {
            b: recipe.train.micro_batch as f64,
            sparse: recipe.train.attention == Attention::Sparse,
            indexer_loss: loss.indexer_weight > 0.0,
            balance: loss.balance_alpha > 0.0,
            expert_fp4: recipe.train.expert_fp4_qat,
            mtp_blocks: mtp_blocks_run(cfg, recipe),
            frozen: recipe.train.freeze == Freeze::AllButIndexer,
            recompute: recipe.train.activation_checkpointing == ActivationCheckpointing::Block
                && recipe.train.freeze != Freeze::AllButIndexer,
            indexer_chunk: recipe.train.indexer_chunk,
        }
    }
}

/// MTP blocks the step runs: all of them when some step has a positive MTP weight (the model
/// stops once fewer than two positions remain).
pub(crate) fn mtp_blocks_run(cfg: &ModelConfig, recipe: &Recipe) -> usize {
    let on = recipe.loss.mtp_weight > 0.0 || recipe.loss.mtp_weight_late > 0.0;
    if !on {
        return 0;
    }
    let s = recipe.train.seq_len;
    (0..cfg.num_nextn_predict_layers)
        .take_while(|k| s >= k + 2)
        .count()
}

/// One block's share (elements unless said otherwise).
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    /// Everything the block keeps for backward, its indexer included.
    saved: f64,
    /// The lightning indexer's part of `saved` (and of its KL loss).
    indexer: f64,
    /// The indexer's `[T, index_heads, n]` score tensor, for its backward transient.
    indexer_scores: f64,
    /// Expert-QAT weight copies, bytes.
    qat_bytes: f64,
    /// `T·H·K` of the attention softmax when it has compressed entries (else 0).
    softmax: f64,
    /// The FFN half (hc_ffn site, ffn_norm, MoE), freed before the attention's backward.
    ffn: f64,
    /// The block's input streams `[T, hc·d]` (all that block recomputation keeps).
    streams: f64,
    /// The live scores of one chunk of the sparse indexer's top-k pass (a forward transient).
    chunk: f64,
}

/// RMSNorm over `width`: its input, the normalised tensor (kept by the gain's `mul`), and three
/// per-row scalars (`sqrt` input, `recip` input, the `mul`'s factor).
fn rms_norm(width: f64) -> f64 {
    2.0 * width + 3.0
}

/// One mHC use-site (`hc_pre` + `hc_post`), per token.
///
/// - streams `[hc·d]`: kept by the RMS read (`x²`, the `hc_*_fn` matmul) and the weighted sum;
/// - the mix: matmul output and its RMS-scaled copy `[(2+hc)·hc]` (both kept by `mul`s), plus
///   three per-row scalars;
/// - `pre`, `post`: sigmoid inputs and outputs `[hc]` each;
/// - Sinkhorn: softmax keeps its exp input and output `[hc²]` and the row sum `[hc]`; each of
///   the `1 + 2·(iters − 1)` normalisations is a `div` keeping `[hc²]` and its sum `[hc]`; the
///   final `comb` is kept by the write-back matmul: `(2·iters + 2)·hc² + 2·iters·hc`;
/// - the block output `f` `[d]`, kept by `post ⊗ f`.
fn mhc_site(cfg: &ModelConfig) -> f64 {
    let (d, hc) = (cfg.hidden_size as f64, cfg.hc_mult as f64);
    let iters = cfg.hc_sinkhorn_iters.max(1) as f64;
    let mix = cfg.hc_mix_dim() as f64;
    hc * d + d + 2.0 * mix + 3.0 + 4.0 * hc + (2.0 * iters + 2.0) * hc * hc + 2.0 * iters * hc
}

/// A KV compressor over `s` tokens with ratio `r` and entry width `dc` (ratio 4 overlaps two
/// blocks: candidates `2·r` wide), for the whole micro-batch (elements, not per token):
/// the overlapped values and gate scores, the softmax's exp input and output, the pooled
/// probabilities (kept by `values × p`): four `[b·n·r, c]` tensors, `c = coff·dc`; then the
/// softmax denominator, the entry norm (input + normalised) and the entries themselves
/// (`[b, n, dc]`, kept by their consumer). `b > 1` with a ragged tail copies the sliced input
/// for each of the two projections.
fn compressor(f: &Forward, d: f64, s: usize, r: usize, dc: f64) -> f64 {
    let n = (s / r) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let coff = if r == 4 { 2.0 } else { 1.0 };
    let rows = f.b * n * r as f64;
    let copies = if f.b > 1.0 && !s.is_multiple_of(r) {
        2.0 * rows * d
    } else {
        0.0
    };
    copies + 4.0 * rows * coff * dc + f.b * n * (4.0 * dc + 3.0)
}

/// Block `layer` (main layers first, then MTP blocks) over `s` positions.
fn block(cfg: &ModelConfig, f: &Forward, layer: usize, s: usize) -> Block {
    let b = f.b;
    let t = b * s as f64;
    let (d, h, hd) = (
        cfg.hidden_size as f64,
        cfg.num_attention_heads as f64,
        cfg.head_dim as f64,
    );
    let (q, w) = (cfg.q_lora_rank as f64, cfg.sliding_window);
    let ratio = cfg.ratio(layer);

    // --- mHC (two sites) and the two block norms.
    let mut per_token = 2.0 * mhc_site(cfg) + 2.0 * rms_norm(d);
    let ffn_half = mhc_site(cfg) + rms_norm(d);

    // --- Attention (spec §2.5), per token.
    // Input `[d]` (kept by wq_a, wkv, the compressors); q_norm (2q + 3) and its output qr
    // (kept by wq_b and the indexer's wq_b); wq_b's output `[H·D]` (the per-head RMS rescale
    // keeps it, plus 3 scalars per head); kv_norm (2D + 3).
    per_token += d + rms_norm(q) + q + (h * hd + 3.0 * h) + rms_norm(hd);
    // The rotated output `o` `[H·D]` (kept by wo_a) and the grouped low-rank `[g·r]` copy kept
    // by wo_b.
    per_token += h * hd + (cfg.o_groups * cfg.o_lora_rank) as f64;
    let mut saved = per_token * t;

    // Sliding window in chunks of `w` queries against `2w` keys: `sp = ⌈s/w⌉·w` padded rows.
    let chunks = s.div_ceil(w);
    let sp = (chunks * w) as f64;
    let w = w as f64;
    // Rotated queries `[T, H·D]` (kept by the window and compressed score matmuls; a padded copy
    // replaces them for the window when s is not a multiple of w), the gathered keys
    // `[b·sp·2, D]`, the window mask `[b·sp, H, 2w]` (bool), the window probabilities copied
    // out of the softmax `[b·sp, H, 2w]` (kept by the value matmul).
    let padded = sp > s as f64;
    let compressed_n = compressed_entries(cfg, f, layer, s);
    // Sparse CSA attends only the indexer's top-k entries, gathered per query.
    let selected = ratio == 4 && f.sparse && compressed_n > 0;
    let attended = if selected {
        cfg.index_topk.min(compressed_n)
    } else {
        compressed_n
    };
    let q_rows =
        if padded { b * sp } else { 0.0 } + if !padded || compressed_n > 0 { t } else { 0.0 };
    saved += q_rows * h * hd + 2.0 * b * sp * hd + b * sp * h * 2.0 * w * (1.0 + BOOL);
    // Softmax over window ∪ compressed ∪ sink: `K = 2w + n + 1` columns (`n` = the attended
    // entries); exp input and output `[T, H, K]` and the row sums `[T, H]`.
    let n = attended as f64;
    let softmax = t * h * (2.0 * w + n + 1.0);
    saved += 2.0 * softmax + t * h;
    if selected {
        // Sparse: the gathered entries `[T, k, D]` (kept by the score and value matmuls), their
        // validity `[T, k]` (bool), the probabilities copied out `[T, H, k]`.
        saved += t * n * (hd + BOOL) + t * h * n;
    } else if compressed_n > 0 {
        // Dense: the visibility mask `[T, H, n]` (bool) and the probabilities copied out
        // `[T, H, n]` (kept by the value matmul); the entries are the compressor's.
        saved += t * h * n * (1.0 + BOOL);
    }
    // Main compressor (CSA ratio 4, HCA ratio 128), entries of width D.
    if ratio > 0 {
        saved += compressor(f, d, s, ratio, hd);
    }
    // Lightning indexer (CSA): runs for the sparse top-k, or for its KL loss. It keeps its
    // compressor (width index_head_dim), its rotated queries `[T, ih·ihd]` (kept by the score
    // matmul), the head weights `[T, ih]`, and the scores `[T, ih, n]` twice (ReLU input, and
    // ReLU output kept by the head-weighting mul). Quadratic in seq_len: `2·ih·n` per token.
    let (mut indexer, mut indexer_scores, mut chunk) = (0.0, 0.0, 0.0);
    if selected {
        // The top-k pass holds one chunk's score tensors.
        chunk = chunk_scores(f, cfg, s);
        // Sparse: the top-k is chosen chunk by chunk without autodiff (its live scores are a
        // forward transient within the chunk budget); only the KL records anything: the
        // indexer's compressor, queries `[T, ih·ihd]`, head weights `[T, ih]`, the gathered
        // keys `[T, k, ihd]`, the scores of the k chosen entries `[T, ih, k]` twice (ReLU
        // input and output), and the KL's `[T, k]` tensors. Linear in seq_len.
        if f.indexer_loss {
            let (ih, ihd) = (cfg.index_n_heads as f64, cfg.index_head_dim as f64);
            let scores = t * ih * n;
            indexer = compressor(f, d, s, 4, ihd)
                + t * (ih * ihd + ih)
                + t * n * ihd
                + 2.0 * scores
                + t * (n * (2.0 + BOOL) + 4.0);
            indexer_scores = scores;
            saved += indexer;
        }
    } else if ratio == 4 && indexer_runs(f, s) {
        // Dense stage: the indexer runs only for its KL loss (`indexer_loss_dense`), a chunk
        // of queries at a time with its gradients computed in the forward and injected. It
        // keeps its compressor, its inputs — queries `[T, ih·ihd]`, head weights `[T, ih]`,
        // keys `[n, ihd]` — and their injected gradients of the same shapes (kept by the
        // surrogate's products), and while the loss is computed the teacher and the candidate
        // mask `[T, n]`; a chunk's three live `[b, rows, ih, n]` score tensors (products,
        // ReLU, gradient mask) are a transient.
        let (ih, ihd) = (cfg.index_n_heads as f64, cfg.index_head_dim as f64);
        let n = (s / 4) as f64;
        indexer = compressor(f, d, s, 4, ihd)
            + 2.0 * t * (ih * ihd + ih)
            + 2.0 * b * n * ihd
            + t * n * (1.0 + BOOL);
        chunk = chunk_scores(f, cfg, s);
        saved += indexer;
    }

    // --- MoE (spec §2.8), per token.
    let (e, k, i) = (
        cfg.n_routed_experts as f64,
        cfg.num_experts_per_tok as f64,
        cfg.moe_intermediate_size as f64,
    );
    let score_routed = layer >= cfg.num_hash_layers;
    // Router: the logits' chain through the score function `[E]` each (sqrt-softplus keeps
    // the logits, `−|x|`, `exp`'s output and the softplus: 4; sigmoid 1; softmax 2); per slot
    // `[k]` the chosen ids (gather), the gathered weights (renormalising div), the dispatch
    // order and token ids (select), the dispatched weights (kept by `h × weight`); the
    // per-token sum. Score-routed layers also keep the sort indices of their top-k `[E]` and,
    // with the balance loss, the scores again for their normalisation.
    let score_fn = match cfg.scoring_func {
        v4_model::ScoringFunc::Sqrtsoftplus => 4.0,
        v4_model::ScoringFunc::Sigmoid => 1.0,
        v4_model::ScoringFunc::Softmax => 2.0,
    };
    let mut moe = d + score_fn * e + 3.0 * k * INDEX + 2.0 * k + 1.0;
    if score_routed {
        moe += e * INDEX;
        if f.balance {
            moe += e + 1.0;
        }
    }
    // Routed experts: the gathered inputs `[k·d]`; per (token, slot) the SwiGLU keeps
    // gate (clamped), its sigmoid, silu, up (clamped), the product and the routing-weighted
    // product `[I]` each (6·I) and the clamps' three masks (bool).
    let clamps = if cfg.swiglu_limit > 0.0 {
        3.0 * BOOL
    } else {
        0.0
    };
    moe += k * d + k * (6.0 + clamps) * i;
    // Shared expert: the same without the routing weight (5·I).
    if cfg.n_shared_experts > 0 {
        moe += 5.0 * i + clamps * i;
    }
    saved += moe * t;

    // Expert FP4 QAT keeps each used routed expert's three fake-quantized weights.
    let qat_bytes = if f.expert_fp4 {
        let used = e.min(t * k);
        used * 3.0 * d * i * F32
    } else {
        0.0
    };
    if f.frozen {
        // Only the indexer's ops are recorded, and only when its KL loss is on (its parameters
        // are the only ones requiring a gradient; the selection alone does not need it).
        let kept = if f.indexer_loss { indexer } else { 0.0 };
        return Block {
            saved: kept,
            indexer: kept,
            indexer_scores,
            chunk,
            ..Block::default()
        };
    }
    Block {
        saved,
        indexer,
        indexer_scores,
        qat_bytes,
        softmax: if compressed_n > 0 { softmax } else { 0.0 },
        ffn: (ffn_half + moe) * t,
        streams: t * cfg.hc_mult as f64 * d,
        chunk,
    }
}

/// Floats alive in one chunk of the indexer's chunked passes over the `s / 4` entries of a CSA
/// block (the top-k selection, the dense-stage KL): three `[b, rows, ih, n]` score tensors,
/// `rows` as `Indexer::chunk_rows` chooses it.
fn chunk_scores(f: &Forward, cfg: &ModelConfig, s: usize) -> f64 {
    let entries = s / 4;
    let rows = if f.indexer_chunk > 0 {
        f.indexer_chunk
    } else {
        CHUNK_BUDGET_BYTES / (12 * f.b as usize * cfg.index_n_heads * entries).max(1)
    };
    3.0 * f.b * (rows.clamp(1, s.max(1)) * cfg.index_n_heads * entries) as f64
}

/// Whether the lightning indexer of a CSA block over `s` positions runs: it needs a complete
/// compressed block, and it runs for the sparse selection or for its KL loss.
fn indexer_runs(f: &Forward, s: usize) -> bool {
    s >= 4 && (f.sparse || f.indexer_loss)
}

/// Compressed entries the attention of `layer` scores over `s` positions (0: window only).
fn compressed_entries(cfg: &ModelConfig, f: &Forward, layer: usize, s: usize) -> usize {
    let ratio = cfg.ratio(layer);
    if ratio == 0 {
        return 0;
    }
    let n = s / ratio;
    // Sparse CSA attends compressed entries only through the indexer's selection.
    if ratio == 4 && f.sparse && !indexer_runs(f, s) {
        return 0;
    }
    n
}

/// `hc_head` + final norm + head input, per token: the streams `[hc·d]`, the mix and its
/// scaled copy `[hc]`, three scalars, the sigmoid input and `pre` `[hc]`, the norm (2d + 3)
/// and its output `[d]` (kept by the head matmul).
fn head(cfg: &ModelConfig) -> f64 {
    let (d, hc) = (cfg.hidden_size as f64, cfg.hc_mult as f64);
    hc * d + 4.0 * hc + 3.0 + rms_norm(d) + d
}

/// MTP block inputs per token: `hnorm` over the streams (input view, normalised `[hc·d]` kept
/// by its gain, its output kept by `h_proj`; 3 scalars per stream), the next-token embedding
/// through `enorm` (2d + 3) and its output kept by `e_proj`, the embedding ids.
fn mtp_inputs(cfg: &ModelConfig) -> f64 {
    let (d, hc) = (cfg.hidden_size as f64, cfg.hc_mult as f64);
    2.0 * hc * d + 3.0 * hc + rms_norm(d) + d + INDEX
}

/// Activations of one micro-batch of `[train] micro_batch × seq_len` tokens at the step's
/// peak.
pub fn activations(cfg: &ModelConfig, recipe: &Recipe) -> Activations {
    let f = Forward::new(cfg, recipe);
    let s = recipe.train.seq_len;
    let v = cfg.vocab_size as f64;
    let t = f.b * s as f64;

    // Blocks, deepest last: main layers 0.., then MTP blocks (over s − 1 − k positions).
    let mut blocks: Vec<Block> = (0..cfg.num_hidden_layers)
        .map(|l| block(cfg, &f, l, s))
        .collect();
    let mut heads = t * (head(cfg) + INDEX); // main head + embedding ids
    let mut mtp_rows = Vec::new();
    for k in 0..f.mtp_blocks {
        let sk = s - 1 - k;
        let rows = f.b * sk as f64;
        blocks.push(block(cfg, &f, cfg.num_hidden_layers + k, sk));
        heads += rows * (mtp_inputs(cfg) + head(cfg));
        mtp_rows.push(rows);
    }
    // With block recomputation a main block keeps only its input streams until its backward
    // recomputes it.
    let main = cfg.num_hidden_layers;
    let recompute = f.recompute && !f.frozen;
    let saved: Vec<f64> = blocks
        .iter()
        .enumerate()
        .map(|(l, b)| {
            if recompute && l < main {
                b.streams
            } else {
                b.saved
            }
        })
        .collect();
    let saved_total: f64 = saved.iter().sum();
    let indexers: f64 = blocks.iter().map(|b| b.indexer).sum();
    let indexer_scores = blocks.iter().map(|b| b.indexer_scores).fold(0.0, f64::max);
    // The indexers' backward comes last, over their own saved tensors only.
    let indexer_end = indexers + INDEXER_BACKWARD_TRANSIENTS * indexer_scores;

    let (heads, logits, extra) = if f.frozen {
        // Nothing of the head is recorded: its logits are a forward transient.
        let logits = FROZEN_HEAD_TRANSIENTS * t * v;
        (0.0, logits, indexer_end - saved_total - logits)
    } else {
        // Logits at the start of backward: the main head's shifted logits; per MTP block its
        // logits (held by the step's `ModelOutput` until backward ends); the first MTP block's
        // shifted logits (the only one with a loss); the head's backward transients.
        let mtp_held: f64 = mtp_rows.iter().sum();
        let mtp_loss = mtp_rows.first().copied().unwrap_or(0.0);
        let head_transient = HEAD_BACKWARD_TRANSIENTS * t * v;
        let logits = v * (t + mtp_held + mtp_loss) + head_transient;
        let start = saved_total + heads + logits;

        // The attention softmax backward of main layer ℓ runs once every deeper tensor is
        // freed: the MTP blocks, the layers above ℓ, the heads' inputs and shifted logits (not
        // the MTP logits the step still holds), the head's transients, and the FFN half of
        // layer ℓ itself.
        let mut above = heads
            + v * (t + mtp_loss)
            + head_transient
            + saved[cfg.num_hidden_layers..].iter().sum::<f64>();
        let mut extra = indexer_end - start;
        if recompute {
            // Block ℓ's backward: every main block's streams, block ℓ recomputed whole, its
            // softmax and indexer backward transients (the heads are done by then).
            let streams: f64 = saved[..main].iter().sum();
            extra = f64::NEG_INFINITY;
            for blk in &blocks[..main] {
                let peak = streams
                    + blk.saved
                    + SOFTMAX_BACKWARD_TRANSIENTS * blk.softmax
                    + INDEXER_BACKWARD_TRANSIENTS * blk.indexer_scores;
                extra = extra.max(peak - start);
            }
        } else {
            for l in (0..main).rev() {
                let blk = &blocks[l];
                extra = extra.max(SOFTMAX_BACKWARD_TRANSIENTS * blk.softmax - above - blk.ffn);
                above += saved[l];
            }
        }
        // MTP blocks run their backward first: only the head's transients and their own FFN
        // half are gone by then (conservatively).
        for blk in &blocks[cfg.num_hidden_layers..] {
            extra = extra.max(SOFTMAX_BACKWARD_TRANSIENTS * blk.softmax - head_transient - blk.ffn);
        }
        (heads, logits, extra)
    };

    let experts_used = (cfg.n_routed_experts as f64).min(t * cfg.num_experts_per_tok as f64);
    let graph = if f.frozen {
        0.0
    } else {
        blocks.len() as f64 * (GRAPH_BYTES_PER_BLOCK + GRAPH_BYTES_PER_EXPERT * experts_used)
    };

    let bytes = |x: f64| (x * F32).clamp(0.0, u64::MAX as f64) as u64;
    Activations {
        blocks: bytes(saved_total),
        expert_qat: blocks
            .iter()
            .map(|b| b.qat_bytes)
            .sum::<f64>()
            .clamp(0.0, u64::MAX as f64) as u64,
        heads: bytes(heads),
        logits: bytes(logits),
        backward: bytes(extra.max(0.0)),
        indexer_chunk: bytes(blocks.iter().map(|b| b.chunk).fold(0.0, f64::max)),
        graph: graph as u64,
    }
}

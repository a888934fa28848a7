//! Model FLOPs per trained token of a recipe, counted the way `v4-model` computes a step (spec
//! §2): every projection, the top-k routed experts only (plus the router and shared expert),
//! attention over the keys each query really sees — its sliding window, the compressed entries
//! of HCA layers, the indexer's top-k on CSA layers (all visible entries with dense attention)
//! — the lightning indexer's keys, projections and scores, the mHC mixes, and the Newton–Schulz
//! iterations of the Muon step spread over the step's tokens. A multiply-add is 2 FLOPs; a
//! trained part costs 3× its forward (backward computes two products per forward one), a part
//! run without gradient (the indexer without its KL loss, everything frozen) 1×. Position
//! averages are over one full `seq_len` row (packed samples see fewer keys; not modelled).

use super::step_phases::Phases;
use crate::plan::step_ns_batches;
use crate::recipe::{Attention, Freeze, Recipe};
use v4_model::ModelConfig;

/// Mean over positions `0..s` of `f(position)`.
fn mean_over(s: usize, f: impl Fn(usize) -> usize) -> f64 {
    (0..s).map(&f).sum::<usize>() as f64 / s.max(1) as f64
}

/// Forward multiply-adds per token of one block over `s` positions: (attention, indexer, MoE,
/// mHC).
fn block_macs(cfg: &ModelConfig, recipe: &Recipe, layer: usize, s: usize) -> [f64; 4] {
    let f = |x: usize| x as f64;
    let (d, h, hd) = (
        f(cfg.hidden_size),
        f(cfg.num_attention_heads),
        f(cfg.head_dim),
    );
    let (q, r_o, g) = (f(cfg.q_lora_rank), f(cfg.o_lora_rank), f(cfg.o_groups));
    let ratio = cfg.ratio(layer);
    // Projections: wq_a, wq_b, wkv, wo_a (g groups of H·D/g → r), wo_b.
    let mut attn = d * q + q * h * hd + d * hd + h * hd * r_o + g * r_o * d;
    let c = if ratio == 4 { 2.0 } else { 1.0 };
    if ratio > 0 {
        attn += 2.0 * d * c * hd; // compressor wkv + wgate
    }
    let w = cfg.sliding_window;
    let window = mean_over(s, |t| (t + 1).min(w));
    let visible = |t: usize| (t + 1).checked_div(ratio).unwrap_or(0);
    let sparse = recipe.train.attention == Attention::Sparse;
    let compressed = if ratio == 4 && sparse {
        mean_over(s, |t| visible(t).min(cfg.index_topk))
    } else {
        mean_over(s, visible)
    };
    // Scores and values: 2·D per key and head, plus the sink.
    attn += 2.0 * h * hd * (window + compressed + 1.0);

    let indexer_runs = ratio == 4 && (sparse || recipe.loss.indexer_weight > 0.0);
    let indexer = if indexer_runs {
        let (ih, ihd) = (f(cfg.index_n_heads), f(cfg.index_head_dim));
        q * ih * ihd + d * ih + 2.0 * d * 2.0 * ihd + ih * (ihd + 1.0) * mean_over(s, visible)
    } else {
        0.0
    };

    let (e, k, i) = (
        f(cfg.n_routed_experts),
        f(cfg.num_experts_per_tok),
        f(cfg.moe_intermediate_size),
    );
    let moe = d * e + (k + f(cfg.n_shared_experts)) * 3.0 * d * i;

    // mHC, per use-site: the mix projection, the weighted sum, the write-back (post·f and the
    // residual mix comb · streams); Sinkhorn is O(hc²).
    let hc = f(cfg.hc_mult);
    let mhc = 2.0 * (hc * d * f(cfg.hc_mix_dim()) + hc * d + hc * d + hc * hc * d);
    [attn, indexer, moe, mhc]
}

/// Model FLOPs per trained token of one step of `recipe` on `cfg`.
pub fn flops_per_token(cfg: &ModelConfig, recipe: &Recipe) -> Phases {
    let s = recipe.train.seq_len;
    let frozen = recipe.train.freeze == Freeze::AllButIndexer;
    let trained = if frozen { 1.0 } else { 3.0 };
    let ix_mult = if recipe.loss.indexer_weight > 0.0 {
        3.0
    } else {
        1.0
    };
    let (d, v, hc) = (
        cfg.hidden_size as f64,
        cfg.vocab_size as f64,
        cfg.hc_mult as f64,
    );
    let mut out = Phases::default();
    let mut add_block = |layer: usize, positions: usize, share: f64| {
        let [a, ix, m, h] = block_macs(cfg, recipe, layer, positions);
        out.attention += 2.0 * trained * a * share;
        out.indexer += 2.0 * ix_mult * ix * share;
        out.moe += 2.0 * trained * m * share;
        out.mhc += 2.0 * trained * h * share;
    };
    for l in 0..cfg.num_hidden_layers {
        add_block(l, s, 1.0);
    }
    // The head: hc_head's mix and the vocabulary projection.
    let head = hc * d * hc + d * v;
    let mut other = head;
    let mtp = crate::plan::activations::mtp_blocks_run(cfg, recipe);
    for k in 0..mtp {
        // MTP block k sees s − 1 − k positions: e_proj, h_proj, its block and its head.
        let share = (s - 1 - k) as f64 / s as f64;
        add_block(cfg.num_hidden_layers + k, s - 1 - k, share);
        other += share * (2.0 * d * d + head);
    }
    out.other = 2.0 * trained * other;
    let schedule = recipe
        .optim
        .resolve()
        .map(|o| o.muon.schedule)
        .unwrap_or_else(|_| v4_optim::NsSchedule::v4_hybrid());
    let ns: f64 = step_ns_batches(cfg, recipe)
        .iter()
        .map(|b| schedule.flops(b.count, b.rows, b.cols))
        .sum();
    let tokens = (recipe.train.global_batch() * s).max(1) as f64;
    out.optimizer = ns / tokens;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(text: &str, sets: &[&str]) -> Recipe {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::from_str_named(text, "test.toml", &sets).unwrap()
    }

    #[test]
    fn moe_counts_top_k_experts_not_all() {
        let base = "[model]\npreset = \"v4-flash\"\nnum_hidden_layers = 2\n\
                    num_nextn_predict_layers = 0\nnum_hash_layers = 0\ncompress_ratios = [0, 0]\n\
                    [train]\nseq_len = 256\n";
        let r = recipe(base, &[]);
        let cfg = r.model.resolve().unwrap();
        let f = flops_per_token(&cfg, &r);
        // Router 4096·256, top-6 + 1 shared expert of 3·4096·2048, ×2 FLOPs, ×3 trained, 2 blocks.
        let want = 2.0 * 3.0 * 2.0 * (4096.0 * 256.0 + 7.0 * 3.0 * 4096.0 * 2048.0);
        assert!((f.moe - want).abs() < 1e-6 * want, "{} vs {want}", f.moe);
        // More experts at the same top-k: only the router grows.
        let r2 = recipe(base, &["model.n_routed_experts=512"]);
        let f2 = flops_per_token(&r2.model.resolve().unwrap(), &r2);
        assert!((f2.moe - want - 2.0 * 3.0 * 2.0 * 4096.0 * 256.0).abs() < 1e-6 * want);
        assert_eq!(f.indexer, 0.0);
        assert!(f.optimizer > 0.0 && f.attention > 0.0 && f.mhc > 0.0 && f.other > 0.0);
    }

    #[test]
    fn window_attention_sees_at_most_the_window() {
        // Window 128 over 256 positions: mean keys (Σ_{t<128}(t+1) + 128·128)/256 = 96.25.
        assert_eq!(mean_over(256, |t| (t + 1).min(128)), 96.25);
    }
}

//! Size limits of a [`ModelConfig`]: each dimension has a ceiling far above any V4 release, and
//! the whole model (tensor and parameter counts, computed without building the inventory) must
//! stay within one a machine can hold, so a `config.json` asking for an absurd model is a clear
//! error before anything is allocated.

use crate::config::ModelConfig;

/// Widths (`hidden_size`, `head_dim`, ranks, expert width): V4-Pro's largest is 7168.
pub const MAX_WIDTH: usize = 1 << 20;
/// Head and group counts (V4-Pro: 128 heads).
pub const MAX_HEADS: usize = 1 << 16;
/// Main and MTP blocks each (V4-Pro: 61).
pub const MAX_LAYERS: usize = 1 << 12;
/// Routed experts per MoE layer (V4-Pro: 384).
pub const MAX_EXPERTS: usize = 1 << 16;
/// Hyper-connection streams (V4: 4).
pub const MAX_HC: usize = 64;
/// Sinkhorn iterations per mix (V4: 20).
pub const MAX_SINKHORN_ITERS: usize = 10_000;
/// Sliding window and indexer top-k, in tokens (V4: 128 and 512 / 1024).
pub const MAX_TOKENS: usize = 1 << 24;
/// Vocabulary: token ids live in 32-bit integer tensors (V4: 129 280).
pub const MAX_VOCAB: usize = i32::MAX as usize;
/// Tensors in the checkpoint inventory (V4-Pro: about 72 000).
pub const MAX_TENSORS: u128 = 1 << 20;
/// Parameters (V4-Pro: 1.6 × 10¹²).
pub const MAX_PARAMS: u128 = 1 << 46;

/// The first limit `cfg` breaks, as a message naming the key.
pub fn check_limits(cfg: &ModelConfig) -> Result<(), String> {
    let limits = [
        ("hidden_size", cfg.hidden_size, MAX_WIDTH),
        ("head_dim", cfg.head_dim, MAX_WIDTH),
        ("qk_rope_head_dim", cfg.qk_rope_head_dim, MAX_WIDTH),
        ("q_lora_rank", cfg.q_lora_rank, MAX_WIDTH),
        ("o_lora_rank", cfg.o_lora_rank, MAX_WIDTH),
        ("index_head_dim", cfg.index_head_dim, MAX_WIDTH),
        (
            "moe_intermediate_size",
            cfg.moe_intermediate_size,
            MAX_WIDTH,
        ),
        ("num_attention_heads", cfg.num_attention_heads, MAX_HEADS),
        ("index_n_heads", cfg.index_n_heads, MAX_HEADS),
        ("o_groups", cfg.o_groups, MAX_HEADS),
        ("num_hidden_layers", cfg.num_hidden_layers, MAX_LAYERS),
        (
            "num_nextn_predict_layers",
            cfg.num_nextn_predict_layers,
            MAX_LAYERS,
        ),
        ("n_routed_experts", cfg.n_routed_experts, MAX_EXPERTS),
        ("hc_mult", cfg.hc_mult, MAX_HC),
        (
            "hc_sinkhorn_iters",
            cfg.hc_sinkhorn_iters,
            MAX_SINKHORN_ITERS,
        ),
        ("sliding_window", cfg.sliding_window, MAX_TOKENS),
        ("index_topk", cfg.index_topk, MAX_TOKENS),
        ("vocab_size", cfg.vocab_size, MAX_VOCAB),
    ];
    if let Some((key, v, max)) = limits.iter().find(|(_, v, max)| v > max) {
        return Err(format!("`{key}` = {v} exceeds the supported maximum {max}"));
    }
    let (tensors, params) = counts(cfg);
    if tensors > MAX_TENSORS {
        return Err(format!(
            "the model would have {tensors} tensors (`num_hidden_layers`, `n_routed_experts`), more than the {MAX_TENSORS} supported"
        ));
    }
    if params > MAX_PARAMS {
        return Err(format!(
            "the model would have {params} parameters, more than the {MAX_PARAMS} supported"
        ));
    }
    Ok(())
}

/// (tensors, parameters) of the checkpoint inventory of `cfg` (scales not counted), computed
/// in u128 from the dimensions so that no product can overflow once each is ≤ its limit.
pub fn counts(cfg: &ModelConfig) -> (u128, u128) {
    let n = |v: usize| v as u128;
    let (d, hc, v) = (n(cfg.hidden_size), n(cfg.hc_mult), n(cfg.vocab_size));
    let (h, hd, q) = (
        n(cfg.num_attention_heads),
        n(cfg.head_dim),
        n(cfg.q_lora_rank),
    );
    let og = n(cfg.o_groups) * n(cfg.o_lora_rank);
    let (e, i) = (n(cfg.n_routed_experts), n(cfg.moe_intermediate_size));
    let (ih, ihd) = (n(cfg.index_n_heads), n(cfg.index_head_dim));
    let mix = (2 + hc) * hc;
    let shared = n(cfg.n_shared_experts.min(1));
    let compressor = |ratio: u128, dim: u128| {
        let c = if ratio == 4 { 2 } else { 1 };
        (4, ratio * c * dim + 2 * c * dim * d + dim)
    };
    let block = |layer: usize| {
        let ratio = cfg.compress_ratios.get(layer).map_or(0, |r| n(*r));
        let mut t = 8 + 2 + 6 + 2 + 3 * e + 3 * shared;
        let mut p = h
            + q * d
            + q
            + h * hd * q
            + hd * d
            + hd
            + og * (h * hd / n(cfg.o_groups).max(1))
            + d * og;
        p += 2 * d + 2 * (mix * hc * d + mix + 3);
        p += e * d + (3 * e + 3 * shared) * i * d;
        p += if layer < cfg.num_hash_layers {
            v * n(cfg.num_experts_per_tok)
        } else {
            e
        };
        if ratio > 0 {
            let (ct, cp) = compressor(ratio, hd);
            t += ct;
            p += cp;
        }
        if ratio == 4 {
            let (ct, cp) = compressor(ratio, ihd);
            t += 2 + ct;
            p += ih * ihd * q + ih * d + cp;
        }
        (t, p)
    };
    let mut tensors = 6;
    let mut params = 2 * v * d + d + hc * hc * d + hc + 1;
    for layer in 0..cfg.total_blocks() {
        let (t, p) = block(layer);
        tensors += t;
        params += p;
    }
    let mtp = n(cfg.num_nextn_predict_layers);
    tensors += mtp * 8;
    params += mtp * (2 * d * d + 3 * d + hc * hc * d + hc + 1);
    (tensors, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::inventory;

    fn from_inventory(cfg: &ModelConfig) -> (u128, u128) {
        let inv = inventory(cfg);
        let params = inv
            .iter()
            .map(|s| s.shape.iter().map(|x| *x as u128).product::<u128>())
            .sum();
        (inv.len() as u128, params)
    }

    #[test]
    fn counts_match_the_inventory() {
        let mut no_shared = ModelConfig::toy();
        no_shared.n_shared_experts = 0;
        no_shared.compress_ratios = vec![128, 4, 0];
        for cfg in [
            ModelConfig::toy(),
            ModelConfig::v4_flash(),
            ModelConfig::v4_pro(),
            no_shared,
        ] {
            assert_eq!(counts(&cfg), from_inventory(&cfg));
        }
        // 69 187 release tensors minus their 34 167 scales (see `inventory`'s test).
        assert_eq!(counts(&ModelConfig::v4_flash()).0, 35_020);
    }

    #[test]
    fn absurd_sizes_are_rejected_by_name() {
        let mut c = ModelConfig::v4_flash();
        c.hidden_size = 1 << 40;
        assert_eq!(
            check_limits(&c).unwrap_err(),
            "`hidden_size` = 1099511627776 exceeds the supported maximum 1048576"
        );
        let mut c = ModelConfig::v4_flash();
        c.vocab_size = 1 << 31;
        assert!(check_limits(&c)
            .unwrap_err()
            .contains("`vocab_size` = 2147483648"));
        let mut c = ModelConfig::v4_flash();
        (c.hidden_size, c.vocab_size) = (MAX_WIDTH, MAX_VOCAB);
        assert!(check_limits(&c)
            .unwrap_err()
            .contains("parameters, more than"));
        let mut c = ModelConfig::v4_flash();
        (c.n_routed_experts, c.num_hidden_layers) = (MAX_EXPERTS, MAX_LAYERS);
        assert!(check_limits(&c).unwrap_err().contains("tensors"));
        assert_eq!(check_limits(&ModelConfig::v4_pro()), Ok(()));
    }
}

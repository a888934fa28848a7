//! The checkpoint tensor inventory (spec §4): every tensor a V4 model reads, under the release's
//! names, with its shape in checkpoint orientation (`[out, in]` for linear weights) and the dtype
//! the release stores it in. Loading, export and optimizer routing all read this one table.

use crate::config::ModelConfig;

/// How the official release stores a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseDtype {
    /// FP8 e4m3 with an E8M0 `.scale` per 128×128 block.
    Fp8Block,
    /// FP4 e2m1 packed two per byte with an E8M0 `.scale` per 32 inputs (routed experts).
    Fp4Expert,
    /// bfloat16.
    Bf16,
    /// float32.
    F32,
    /// int64 (`tid2eid`).
    I64,
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Release name, e.g. `layers.3.attn.wq_a.weight`.
    pub name: String,
    /// Shape as stored in the checkpoint (logical, i.e. unpacked for FP4).
    pub shape: Vec<usize>,
    /// Release storage dtype.
    pub dtype: ReleaseDtype,
}

struct Builder(Vec<TensorSpec>);

impl Builder {
    fn add(&mut self, name: String, shape: &[usize], dtype: ReleaseDtype) {
        self.0.push(TensorSpec {
            name,
            shape: shape.to_vec(),
            dtype,
        });
    }

    fn compressor(&mut self, pre: &str, ratio: usize, d: usize, dim: usize) {
        let c = if ratio == 4 { 2 } else { 1 };
        self.add(format!("{pre}ape"), &[ratio, c * d], ReleaseDtype::F32);
        self.add(
            format!("{pre}wkv.weight"),
            &[c * d, dim],
            ReleaseDtype::Bf16,
        );
        self.add(
            format!("{pre}wgate.weight"),
            &[c * d, dim],
            ReleaseDtype::Bf16,
        );
        self.add(format!("{pre}norm.weight"), &[d], ReleaseDtype::Bf16);
    }

    fn block(&mut self, cfg: &ModelConfig, pre: &str, layer_id: usize) {
        use ReleaseDtype::*;
        let (d, h, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim);
        let a = format!("{pre}attn.");
        self.add(format!("{a}attn_sink"), &[h], F32);
        self.add(format!("{a}wq_a.weight"), &[cfg.q_lora_rank, d], Fp8Block);
        self.add(format!("{a}q_norm.weight"), &[cfg.q_lora_rank], Bf16);
        self.add(
            format!("{a}wq_b.weight"),
            &[h * hd, cfg.q_lora_rank],
            Fp8Block,
        );
        self.add(format!("{a}wkv.weight"), &[hd, d], Fp8Block);
        self.add(format!("{a}kv_norm.weight"), &[hd], Bf16);
        let og = cfg.o_groups * cfg.o_lora_rank;
        self.add(
            format!("{a}wo_a.weight"),
            &[og, h * hd / cfg.o_groups],
            Fp8Block,
        );
        self.add(format!("{a}wo_b.weight"), &[d, og], Fp8Block);
        let ratio = cfg.ratio(layer_id);
        if ratio > 0 {
            self.compressor(&format!("{a}compressor."), ratio, hd, d);
        }
        if ratio == 4 {
            let (ih, ihd) = (cfg.index_n_heads, cfg.index_head_dim);
            self.add(
                format!("{a}indexer.wq_b.weight"),
                &[ih * ihd, cfg.q_lora_rank],
                Fp8Block,
            );
            self.add(format!("{a}indexer.weights_proj.weight"), &[ih, d], Bf16);
            self.compressor(&format!("{a}indexer.compressor."), ratio, ihd, d);
        }
        self.add(format!("{pre}attn_norm.weight"), &[d], Bf16);
        self.add(format!("{pre}ffn_norm.weight"), &[d], Bf16);
        let mix = cfg.hc_mix_dim();
        for site in ["attn", "ffn"] {
            self.add(format!("{pre}hc_{site}_fn"), &[mix, cfg.hc_mult * d], F32);
            self.add(format!("{pre}hc_{site}_base"), &[mix], F32);
            self.add(format!("{pre}hc_{site}_scale"), &[3], F32);
        }
        let f = format!("{pre}ffn.");
        let (e, i) = (cfg.n_routed_experts, cfg.moe_intermediate_size);
        self.add(format!("{f}gate.weight"), &[e, d], Bf16);
        if layer_id < cfg.num_hash_layers {
            self.add(
                format!("{f}gate.tid2eid"),
                &[cfg.vocab_size, cfg.num_experts_per_tok],
                I64,
            );
        } else {
            self.add(format!("{f}gate.bias"), &[e], F32);
        }
        for x in 0..e {
            let p = format!("{f}experts.{x}.");
            self.add(format!("{p}w1.weight"), &[i, d], Fp4Expert);
            self.add(format!("{p}w2.weight"), &[d, i], Fp4Expert);
            self.add(format!("{p}w3.weight"), &[i, d], Fp4Expert);
        }
        if cfg.n_shared_experts > 0 {
            let p = format!("{f}shared_experts.");
            self.add(format!("{p}w1.weight"), &[i, d], Fp8Block);
            self.add(format!("{p}w2.weight"), &[d, i], Fp8Block);
            self.add(format!("{p}w3.weight"), &[i, d], Fp8Block);
        }
    }
}

/// Every tensor of a V4 checkpoint for `cfg`, in a stable order (top level, blocks, MTP).
pub fn inventory(cfg: &ModelConfig) -> Vec<TensorSpec> {
    use ReleaseDtype::*;
    let (d, hc) = (cfg.hidden_size, cfg.hc_mult);
    let mut b = Builder(Vec::new());
    b.add("embed.weight".into(), &[cfg.vocab_size, d], Bf16);
    b.add("head.weight".into(), &[cfg.vocab_size, d], Bf16);
    b.add("norm.weight".into(), &[d], Bf16);
    b.add("hc_head_fn".into(), &[hc, hc * d], F32);
    b.add("hc_head_base".into(), &[hc], F32);
    b.add("hc_head_scale".into(), &[1], F32);
    for l in 0..cfg.num_hidden_layers {
        b.block(cfg, &format!("layers.{l}."), l);
    }
    for k in 0..cfg.num_nextn_predict_layers {
        let pre = format!("mtp.{k}.");
        b.block(cfg, &pre, cfg.num_hidden_layers + k);
        b.add(format!("{pre}e_proj.weight"), &[d, d], Fp8Block);
        b.add(format!("{pre}h_proj.weight"), &[d, d], Fp8Block);
        for n in ["enorm", "hnorm", "norm"] {
            b.add(format!("{pre}{n}.weight"), &[d], Bf16);
        }
        b.add(format!("{pre}hc_head_fn"), &[hc, hc * d], F32);
        b.add(format!("{pre}hc_head_base"), &[hc], F32);
        b.add(format!("{pre}hc_head_scale"), &[1], F32);
    }
    b.0
}

/// Names the release may carry that the model deliberately ignores: the MTP blocks' copies of
/// the shared embedding and head (`mtp.N.embed.weight`, `mtp.N.head.weight`).
pub fn is_ignored_alias(name: &str) -> bool {
    let mut parts = name.split('.');
    parts.next() == Some("mtp")
        && parts.next().is_some()
        && matches!(parts.next(), Some("embed") | Some("head"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_inventory_matches_the_release_index() {
        // Spec §4: 69 187 tensors including scales; count scales the way the release does.
        let inv = inventory(&ModelConfig::v4_flash());
        let scales = inv
            .iter()
            .filter(|t| matches!(t.dtype, ReleaseDtype::Fp8Block | ReleaseDtype::Fp4Expert))
            .count();
        assert_eq!(inv.len() + scales, 69187);
        let count = |k| inv.iter().filter(|t| t.dtype == k).count();
        assert_eq!(count(ReleaseDtype::Bf16), 433);
        assert_eq!(count(ReleaseDtype::F32), 417);
        assert_eq!(count(ReleaseDtype::Fp8Block), 375);
        assert_eq!(count(ReleaseDtype::Fp4Expert), 33792);
        assert_eq!(count(ReleaseDtype::I64), 3);
    }

    #[test]
    fn aliases() {
        assert!(is_ignored_alias("mtp.0.embed.weight"));
        assert!(is_ignored_alias("mtp.0.head.weight"));
        assert!(!is_ignored_alias("mtp.0.hnorm.weight"));
        assert!(!is_ignored_alias("embed.weight"));
    }
}

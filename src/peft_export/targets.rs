//! Where a v4train adapter lands in Hugging Face transformers' `DeepseekV4ForCausalLM`: the
//! release-name → HF-module table of transformers' `deepseek_v4` conversion mapping, for every
//! projection a v4train LoRA can adapt.

/// How PEFT attaches to the HF tensor an adapter adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An `nn.Linear` (`target_modules`).
    Linear,
    /// A 2-D parameter (`target_parameters`): mHC mixes, routers.
    Param,
    /// `self_attn.o_a_proj.weight` (`target_parameters`), adapted per output group in v4train.
    GroupedOut,
    /// The gate half (release `w1`) of the fused `mlp.experts.gate_up_proj`.
    ExpertsGate,
    /// The up half (release `w3`) of the fused `mlp.experts.gate_up_proj`.
    ExpertsUp,
    /// `mlp.experts.down_proj` (release `w2`).
    ExpertsDown,
}

/// The HF home of one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTarget {
    /// How PEFT attaches to it.
    pub kind: Kind,
    /// The module path (`Linear`) or the parameter path, `module.param` (the other kinds),
    /// as transformers names it (`model.layers.3.self_attn.q_a_proj`).
    pub path: String,
}

/// Transformers has no MTP module: these adapters cannot be hosted.
pub const MTP_REASON: &str = "MTP block: transformers' DeepseekV4ForCausalLM has no MTP module";

/// No known HF counterpart.
pub const UNKNOWN_REASON: &str = "no Hugging Face counterpart known to v4train";

/// The HF target of the adapter with stem `stem` (its tensor names without
/// `.lora_A.weight` / `.lora_B.weight`), or why it has none.
pub fn hf_target(stem: &str) -> Result<HfTarget, &'static str> {
    let t = |kind, path: String| Ok(HfTarget { kind, path });
    if stem.starts_with("mtp.") {
        return Err(MTP_REASON);
    }
    match stem {
        "head" => return t(Kind::Linear, "lm_head".into()),
        "hc_head_fn" => return t(Kind::Param, "model.hc_head.hc_fn".into()),
        _ => {}
    }
    let Some((layer, tail)) = stem
        .strip_prefix("layers.")
        .and_then(|r| r.split_once('.'))
        .filter(|(l, _)| l.parse::<usize>().is_ok())
    else {
        return Err(UNKNOWN_REASON);
    };
    let (kind, hf) = match tail {
        "attn.wq_a" => (Kind::Linear, "self_attn.q_a_proj"),
        "attn.wq_b" => (Kind::Linear, "self_attn.q_b_proj"),
        "attn.wkv" => (Kind::Linear, "self_attn.kv_proj"),
        "attn.wo_a" => (Kind::GroupedOut, "self_attn.o_a_proj.weight"),
        "attn.wo_b" => (Kind::Linear, "self_attn.o_b_proj"),
        "attn.compressor.wkv" => (Kind::Linear, "self_attn.compressor.kv_proj"),
        "attn.compressor.wgate" => (Kind::Linear, "self_attn.compressor.gate_proj"),
        "attn.indexer.wq_b" => (Kind::Linear, "self_attn.compressor.indexer.q_b_proj"),
        "attn.indexer.weights_proj" => (
            Kind::Linear,
            "self_attn.compressor.indexer.scorer.weights_proj",
        ),
        "attn.indexer.compressor.wkv" => (Kind::Linear, "self_attn.compressor.indexer.kv_proj"),
        "attn.indexer.compressor.wgate" => (Kind::Linear, "self_attn.compressor.indexer.gate_proj"),
        "hc_attn_fn" => (Kind::Param, "attn_hc.fn"),
        "hc_ffn_fn" => (Kind::Param, "ffn_hc.fn"),
        "ffn.gate" => (Kind::Param, "mlp.gate.weight"),
        "ffn.shared_experts.w1" => (Kind::Linear, "mlp.shared_experts.gate_proj"),
        "ffn.shared_experts.w2" => (Kind::Linear, "mlp.shared_experts.down_proj"),
        "ffn.shared_experts.w3" => (Kind::Linear, "mlp.shared_experts.up_proj"),
        "ffn.experts.w1" => (Kind::ExpertsGate, "mlp.experts.gate_up_proj"),
        "ffn.experts.w3" => (Kind::ExpertsUp, "mlp.experts.gate_up_proj"),
        "ffn.experts.w2" => (Kind::ExpertsDown, "mlp.experts.down_proj"),
        _ => return Err(UNKNOWN_REASON),
    };
    t(kind, format!("model.layers.{layer}.{hf}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_map_to_hf_paths() {
        let path = |s| hf_target(s).map(|t| (t.kind, t.path));
        assert_eq!(
            path("layers.2.attn.indexer.compressor.wkv"),
            Ok((
                Kind::Linear,
                "model.layers.2.self_attn.compressor.indexer.kv_proj".into()
            ))
        );
        assert_eq!(
            path("layers.0.attn.wo_a"),
            Ok((
                Kind::GroupedOut,
                "model.layers.0.self_attn.o_a_proj.weight".into()
            ))
        );
        assert_eq!(path("head"), Ok((Kind::Linear, "lm_head".into())));
        assert_eq!(path("mtp.0.attn.wq_a"), Err(MTP_REASON));
        assert_eq!(path("layers.x.attn.wq_a"), Err(UNKNOWN_REASON));
        assert_eq!(path("layers.1.attn.q_norm"), Err(UNKNOWN_REASON));
    }
}

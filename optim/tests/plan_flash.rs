//! The routing plan on the full V4-Flash inventory (spec §2.3): group counts and specific names.

use std::collections::BTreeMap;

use v4_model::{inventory, ModelConfig};
use v4_optim::{plan, totals, OptimConfig, OptimizerKind, ParamGroup, PlanEntry};

fn flash_plan() -> Vec<PlanEntry> {
    let settings = OptimConfig::default()
        .resolve()
        .expect("defaults are valid");
    let specs = inventory(&ModelConfig::v4_flash());
    plan(
        &settings,
        specs.iter().map(|s| (s.name.as_str(), s.shape.as_slice())),
    )
    .expect("every V4 tensor routes")
}

#[test]
fn flash_plan_group_counts() {
    let entries = flash_plan();
    let mut counts: BTreeMap<ParamGroup, usize> = BTreeMap::new();
    for e in &entries {
        *counts.entry(e.group).or_default() += 1;
    }
    // 44 blocks (43 + MTP): 21 CSA, 20 HCA, 3 window-only; 256 routed + 1 shared expert each.
    // Norms: 4 per block + 41 compressor + 21 indexer-compressor + final + MTP enorm/hnorm/norm.
    let want = BTreeMap::from([
        (ParamGroup::Embed, 1),
        (ParamGroup::Head, 1),
        (ParamGroup::Norm, 176 + 41 + 21 + 1 + 3),
        (ParamGroup::HcStatic, 44 * 4 + 2 + 2),
        (ParamGroup::AttnSink, 44),
        (ParamGroup::Ape, 41 + 21),
        // Per block 5 attn + 2 hc_fn + gate + 768 routed + 3 shared; +2 compressor (41 blocks);
        // +4 indexer (21 CSA); plus hc_head_fn and MTP e_proj/h_proj/hc_head_fn.
        (ParamGroup::Matrix, 44 * 779 + 41 * 2 + 21 * 4 + 1 + 3),
        (ParamGroup::Excluded, 3 + 41),
    ]);
    assert_eq!(counts, want);
    assert_eq!(entries.len(), 35_020);
    let t = totals(&entries);
    assert_eq!(t["muon"].tensors, 34_446);
    assert_eq!(t["adamw"].tensors, 530);
    println!("{t:?}");
}

#[test]
fn flash_plan_specific_names() {
    let entries = flash_plan();
    let by_name: BTreeMap<&str, &PlanEntry> =
        entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let expect = [
        ("embed.weight", OptimizerKind::AdamW),
        ("head.weight", OptimizerKind::AdamW),
        ("norm.weight", OptimizerKind::AdamW),
        ("hc_head_base", OptimizerKind::AdamW),
        ("hc_head_fn", OptimizerKind::Muon),
        ("layers.3.attn.wq_a.weight", OptimizerKind::Muon),
        ("layers.3.attn.attn_sink", OptimizerKind::AdamW),
        ("layers.2.attn.compressor.ape", OptimizerKind::AdamW),
        (
            "layers.2.attn.indexer.compressor.norm.weight",
            OptimizerKind::AdamW,
        ),
        (
            "layers.2.attn.indexer.weights_proj.weight",
            OptimizerKind::Muon,
        ),
        ("layers.3.hc_ffn_scale", OptimizerKind::AdamW),
        ("layers.3.hc_ffn_fn", OptimizerKind::Muon),
        ("layers.3.ffn.gate.weight", OptimizerKind::Muon),
        ("layers.3.ffn.gate.bias", OptimizerKind::Excluded),
        ("layers.0.ffn.gate.tid2eid", OptimizerKind::Excluded),
        ("layers.3.ffn.experts.7.w1.weight", OptimizerKind::Muon),
        ("layers.3.ffn.shared_experts.w2.weight", OptimizerKind::Muon),
        ("mtp.0.e_proj.weight", OptimizerKind::Muon),
        ("mtp.0.h_proj.weight", OptimizerKind::Muon),
        ("mtp.0.enorm.weight", OptimizerKind::AdamW),
        ("mtp.0.hnorm.weight", OptimizerKind::AdamW),
        ("mtp.0.norm.weight", OptimizerKind::AdamW),
    ];
    for (name, opt) in expect {
        let e = by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from inventory"));
        assert_eq!(e.optimizer, opt, "{name}");
    }
    assert_eq!(
        by_name["layers.3.ffn.experts.7.w1.weight"].shape,
        vec![2048, 4096]
    );
    assert_eq!(by_name["layers.3.ffn.gate.bias"].weight_decay, 0.0);
    assert_eq!(by_name["layers.3.attn.wq_a.weight"].weight_decay, 0.1);
}

//! Parameter routing by name (spec §2.3) and the `[optim]` recipe table.

mod common;

use burn::tensor::DType;
use common::{gaussian, tensor, B};
use v4_optim::{
    plan, route, MuonVariant, OptimConfig, OptimError, OptimizerKind, ParamGroup, V4Optimizer,
};

#[test]
fn names_route_to_the_v4_groups() {
    use ParamGroup::*;
    let cases: &[(&str, usize, ParamGroup)] = &[
        ("embed.weight", 2, Embed),
        ("head.weight", 2, Head),
        ("mtp.0.head.weight", 2, Head),
        ("norm.weight", 1, Norm),
        ("layers.3.attn_norm.weight", 1, Norm),
        ("layers.3.attn.q_norm.weight", 1, Norm),
        ("layers.3.attn.kv_norm.weight", 1, Norm),
        ("layers.3.attn.compressor.norm.weight", 1, Norm),
        ("layers.3.attn.indexer.compressor.norm.weight", 1, Norm),
        ("mtp.0.enorm.weight", 1, Norm),
        ("mtp.0.hnorm.weight", 1, Norm),
        ("layers.3.hc_attn_base", 1, HcStatic),
        ("layers.3.hc_ffn_scale", 1, HcStatic),
        ("hc_head_scale", 1, HcStatic),
        ("layers.3.attn.attn_sink", 1, AttnSink),
        ("layers.3.attn.compressor.ape", 2, Ape),
        ("layers.3.attn.wq_a.weight", 2, Matrix),
        ("layers.3.attn.indexer.weights_proj.weight", 2, Matrix),
        ("layers.3.attn.compressor.wgate.weight", 2, Matrix),
        ("layers.3.hc_attn_fn", 2, Matrix),
        ("hc_head_fn", 2, Matrix),
        ("layers.3.ffn.gate.weight", 2, Matrix),
        ("layers.3.ffn.experts.7.w1.weight", 2, Matrix),
        ("layers.3.ffn.experts.w1", 3, Matrix),
        ("layers.3.ffn.shared_experts.w2.weight", 2, Matrix),
        ("mtp.0.e_proj.weight", 2, Matrix),
        ("layers.3.ffn.gate.bias", 1, Excluded),
        ("layers.0.ffn.gate.tid2eid", 2, Excluded),
        ("some.unknown.bias", 1, Vector),
    ];
    for &(name, rank, want) in cases {
        assert_eq!(route(name, rank).expect(name), want, "{name}");
    }
    assert!(matches!(
        route("x.weight", 4),
        Err(OptimError::UnsupportedRank { .. })
    ));
}

#[test]
fn plan_reports_optimizer_and_group_decay() {
    let cfg: OptimConfig = toml::from_str("[weight_decay]\nnorm = 0.0\n").expect("parses");
    let settings = cfg.resolve().expect("valid");
    let params: Vec<(&str, Vec<usize>)> = vec![
        ("embed.weight", vec![10, 4]),
        ("layers.0.attn_norm.weight", vec![4]),
        ("layers.0.ffn.experts.w1", vec![8, 6, 4]),
        ("layers.0.ffn.gate.bias", vec![8]),
    ];
    let entries = plan(&settings, params.iter().map(|(n, s)| (*n, s.as_slice()))).expect("plan");
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.optimizer, e.weight_decay))
        .collect();
    assert_eq!(
        summary,
        vec![
            (OptimizerKind::AdamW, 0.1),
            (OptimizerKind::AdamW, 0.0),
            (OptimizerKind::Muon, 0.1),
            (OptimizerKind::Excluded, 0.0),
        ]
    );
    let totals = v4_optim::totals(&entries);
    assert_eq!(totals["muon"].params, 192);
    assert_eq!(totals["adamw"].tensors, 2);
}

#[test]
fn optim_table_from_toml() {
    let cfg: OptimConfig = toml::from_str(
        "max_grad_norm = 1.0\n[muon]\nvariant = \"moonlight\"\nnesterov = false\ngamma = 0.25\n\
         ns_schedule = [{ steps = 6, coeffs = [3.4445, -4.775, 2.0315] }]\n\
         [adamw]\neps = 1e-8\n",
    )
    .expect("parses");
    assert_eq!(cfg.muon.variant, MuonVariant::Moonlight);
    let s = cfg.resolve().expect("valid");
    assert!(!s.muon.nesterov);
    assert_eq!(s.muon.schedule.total_steps(), 6);
    assert_eq!(s.adamw.eps, 1e-8);
    assert_eq!(s.max_grad_norm, 1.0);
    assert!(toml::from_str::<OptimConfig>("[adamw]\nmax_grad_norm = 1.0\n").is_err());
    assert!(toml::from_str::<OptimConfig>("[muon]\nmomentun = 0.9\n").is_err());
    let kj: OptimConfig =
        toml::from_str("[muon]\nvariant = \"keller-jordan\"\ngamma = 0.2\n").expect("parses");
    assert!(
        kj.resolve().is_err(),
        "gamma does not apply to the KJ scale"
    );
}

#[test]
fn step_rejects_excluded_and_mismatched_inputs() {
    let mut opt = V4Optimizer::<B>::new(&OptimConfig::default()).expect("config");
    let v = || tensor::<1>(&[4], &gaussian(4, 1), DType::F32);
    assert!(matches!(
        opt.step("layers.3.ffn.gate.bias", v(), v(), 0.1),
        Err(OptimError::Excluded(_))
    ));
    let w = tensor::<2>(&[4, 3], &gaussian(12, 2), DType::F32);
    let g = tensor::<2>(&[3, 4], &gaussian(12, 3), DType::F32);
    assert!(matches!(
        opt.step("layers.0.attn.wq_a.weight", w.clone(), g, 0.1),
        Err(OptimError::ShapeMismatch { .. })
    ));
    let w = opt
        .step("layers.0.attn.wq_a.weight", w.clone(), w, 0.1)
        .expect("step");
    let wrong = tensor::<2>(&[2, 6], &gaussian(12, 4), DType::F32);
    assert!(opt
        .step("layers.0.attn.wq_a.weight", wrong.clone(), wrong, 0.1)
        .is_err());
    assert_eq!(w.dims(), [4, 3]);
}

#[test]
fn nesterov_off_orthogonalises_the_buffer() {
    // First step with nesterov off: U = M = G, so W1 = W0(1 − ηλ) − η·γ√max·NS(G).
    let cfg: OptimConfig = toml::from_str("[muon]\nnesterov = false\n").expect("parses");
    let mut opt = V4Optimizer::<B>::new(&cfg).expect("config");
    let w0 = tensor::<2>(&[6, 10], &gaussian(60, 5), DType::F64);
    let g = tensor::<2>(&[6, 10], &gaussian(60, 6), DType::F64);
    let w1 = opt
        .step("layers.0.attn.wq_a.weight", w0.clone(), g.clone(), 0.02)
        .expect("step");
    let o = v4_optim::orthogonalize(g, &v4_optim::NsSchedule::v4_hybrid()).expect("2-D");
    let want = w0.mul_scalar(1.0 - 0.02 * 0.1) - o.mul_scalar(0.02 * 0.18 * 10f64.sqrt());
    let err = common::rel_err(&common::host(w1), &common::host(want));
    assert!(err < 1e-14, "{err:e}");
}

#[test]
fn bf16_newton_schulz_tracks_f32() {
    let run = |toml_src: &str| {
        let cfg: OptimConfig = toml::from_str(toml_src).expect("parses");
        let mut opt = V4Optimizer::<B>::new(&cfg).expect("config");
        let w = tensor::<3>(&[2, 16, 40], &gaussian(1280, 8), DType::F32);
        let g = tensor::<3>(&[2, 16, 40], &gaussian(1280, 9), DType::F32);
        let w1 = opt
            .step("layers.1.ffn.experts.w2", w.clone(), g, 0.5)
            .expect("step");
        common::host(w1 - w)
    };
    let (f32_delta, bf16_delta) = (run(""), run("[muon]\nns_bf16 = true\n"));
    // Relative Frobenius error: bf16 keeps ~3 significant digits through 10 iterations.
    let diff: f64 = bf16_delta
        .iter()
        .zip(&f32_delta)
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    let norm: f64 = f32_delta.iter().map(|b| b * b).sum();
    let err = (diff / norm).sqrt();
    println!("bf16 vs f32 Newton–Schulz update: relative Frobenius error {err:.3e}");
    assert!(err < 3e-2, "{err:e}");
}

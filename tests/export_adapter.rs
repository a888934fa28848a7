//! `v4train export-adapter` on LoRA checkpoints of `tiny_a` (MTP block, CSA + HCA layers, hash
//! and score routing, routed + shared experts): PEFT key names, shapes and config, and — a
//! pure-Rust check of PEFT's math — the weight deltas PEFT rebuilds from the exported tensors
//! equal v4train's `s·B@A` for every exported adapter.
//!
//! Python proof (not in CI; a venv with torch, transformers ≥ 5.8 and peft — checked with 5.24
//! and 0.21.2 — at $VENV): the ignored test writes both checkpoints, their PEFT exports, token
//! ids and v4train's f32 logits (fake quantization off), then `bench/peft_check.py` loads the
//! same base + adapters in transformers:
//!
//! ```sh
//! D=/tmp/peft_proof
//! V4TRAIN_PEFT_PROOF=$D cargo test --test export_adapter -- --ignored --nocapture
//! PY=$VENV/bin/python; M=tests/fixtures/tiny_a
//! $PY bench/peft_check.py --model $M --no-adapter --ids $D/ids.json --out $D/hf_base.safetensors
//! for v in default all; do $PY bench/peft_check.py --model $M --adapter $D/$v/peft \
//!   --ids $D/ids.json --out $D/hf_$v.safetensors; done
//! $PY $D/compare.py $D
//! ```

mod common;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use v4_checkpoints::ModelDir;
use v4_model::lora::{LoraBuilder, LoraSpec};
use v4_model::{ForwardOptions, MapSource, V4Model};
use v4train::adapter_files::{self, AdapterConfig, BaseIdentity};
use v4train::peft_export::config::regex_escape;
use v4train::peft_export::targets::{hf_target, Kind};
use v4train::peft_export::{export, PEFT_CONFIG, PEFT_WEIGHTS, PROVENANCE};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_a")
}

/// The default targets (attention incl. `wo_a`, shared expert, routed experts), r 4, α 8.
fn default_spec() -> LoraSpec {
    LoraSpec {
        rank: 4,
        alpha: 8.0,
        ..LoraSpec::default()
    }
}

/// Every projection v4train can adapt, rsLoRA, and ranks that differ between `w1` and `w3`.
fn all_spec() -> LoraSpec {
    let t = [
        "attention",
        "compressor",
        "indexer",
        "shared_experts",
        "experts",
        "mtp",
        "head",
        "hc_attn_fn",
        "hc_ffn_fn",
        "hc_head_fn",
        "ffn.gate",
    ];
    LoraSpec {
        rank: 4,
        alpha: 6.0,
        rslora: true,
        dropout: 0.1,
        targets: t.iter().map(|s| s.to_string()).collect(),
        rank_pattern: vec![("experts.*.w3".into(), 2), ("attn.wq_b".into(), 6)],
        ..LoraSpec::default()
    }
}

/// Uniform values in `[-amp, amp]` (xorshift).
fn random(n: usize, seed: &mut u64, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// `tiny_a` with random nonzero adapters for `spec`, saved as a LoRA checkpoint into `dir`.
fn lora_checkpoint(spec: &LoraSpec, dir: &Path, seed: u64) -> V4Model<Flex> {
    let base = ModelDir::open(fixture()).unwrap();
    let cfg = base.config().clone();
    let dev = Default::default();
    let fresh = LoraBuilder { spec, saved: None };
    let fresh = V4Model::<Flex>::load_adapted(&cfg, &base, Some(&fresh), false, &dev).unwrap();
    let mut map = MapSource::default();
    let mut s = seed;
    for (name, shape, v) in adapter_files::adapter_tensors(&fresh) {
        let amp = if name.ends_with(".lora_A.weight") {
            0.2
        } else {
            0.05
        };
        map.floats
            .insert(name, (shape, random(v.len(), &mut s, amp)));
    }
    let saved = LoraBuilder {
        spec,
        saved: Some(&map),
    };
    let model = V4Model::<Flex>::load_adapted(&cfg, &base, Some(&saved), false, &dev).unwrap();
    let config = AdapterConfig {
        lora: spec.clone(),
        base: BaseIdentity {
            path: fixture().display().to_string(),
            content_hash: adapter_files::base_hash(&fixture()).unwrap(),
        },
    };
    std::fs::create_dir_all(dir).unwrap();
    adapter_files::save(dir, &model, &config).unwrap();
    model
}

/// A safetensors file's f32 tensors.
fn read_f32(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let x = v.data().chunks_exact(4);
            let x = x.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            (n, (v.shape().to_vec(), x.collect()))
        })
        .collect()
}

/// `s · B @ A` (`B` `[out, r]`, `A` `[r, in]`) in f64, summed over `k` in order.
fn scaled_ba(b: &[f32], a: &[f32], out: usize, r: usize, inp: usize, s: f64) -> Vec<f64> {
    let mut d = vec![0f64; out * inp];
    for o in 0..out {
        for i in 0..inp {
            let sum: f64 = (0..r)
                .map(|k| b[o * r + k] as f64 * a[k * inp + i] as f64)
                .sum();
            d[o * inp + i] = s * sum;
        }
    }
    d
}

type Deltas = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// v4train's deltas `s·B@A` of every adapter of checkpoint `ckpt` that has an HF home, placed
/// into the HF parameter it adapts (`wo_a` groups as row blocks; `w1` / `w3` the first / last
/// `I` rows of `gate_up_proj[e]`); and the stems without one.
fn v4train_deltas(ckpt: &Path) -> (Deltas, Vec<String>) {
    let spec = adapter_files::read_config(ckpt).unwrap().lora;
    let src = adapter_files::read_tensors(ckpt).unwrap();
    let (mut out, mut skipped) = (Deltas::new(), Vec::new());
    for (name, (sa, a)) in &src.floats {
        let Some(stem) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let (sb, b) = &src.floats[&format!("{stem}.lora_B.weight")];
        let Ok(t) = hf_target(stem) else {
            skipped.push(stem.to_string());
            continue;
        };
        let g = if sa.len() == 3 { sa[0] } else { 1 };
        let (r, inp, o) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 2]);
        let s = spec.scale(r);
        let member = |m: usize| {
            scaled_ba(
                &b[m * o * r..][..o * r],
                &a[m * r * inp..][..r * inp],
                o,
                r,
                inp,
                s,
            )
        };
        let (shape, rows0) = match t.kind {
            Kind::Linear | Kind::Param => (vec![o, inp], 0),
            Kind::GroupedOut => (vec![g * o, inp], 0),
            Kind::ExpertsGate => (vec![g, 2 * o, inp], 0),
            Kind::ExpertsUp => (vec![g, 2 * o, inp], o),
            Kind::ExpertsDown => (vec![g, o, inp], 0),
        };
        let entry = out.entry(t.path).or_insert_with(|| {
            let n = shape.iter().product();
            (shape.clone(), vec![0.0; n])
        });
        let per_member = entry.1.len() / if t.kind == Kind::GroupedOut { 1 } else { g };
        for m in 0..g {
            let d = member(m);
            let base = if t.kind == Kind::GroupedOut {
                m * o * inp
            } else {
                m * per_member + rows0 * inp
            };
            for (x, v) in entry.1[base..base + d.len()].iter_mut().zip(d) {
                assert_eq!(*x, 0.0, "{stem}: overlapping deltas");
                *x = v;
            }
        }
    }
    skipped.sort();
    (out, skipped)
}

/// The deltas PEFT builds from the export `dir` (keys and scales as PEFT derives them from
/// `adapter_config.json`; 3-D parameters per PEFT's packing: `A_e` rows `e·R…`, `B_e` columns
/// `k·E + e`). Checks every tensor of the file is used exactly once.
fn peft_deltas(dir: &Path) -> Deltas {
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.join(PEFT_CONFIG)).unwrap()).unwrap();
    let mut file = read_f32(&dir.join(PEFT_WEIGHTS));
    let list = |k: &str| -> Vec<String> {
        cfg[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (modules, params) = (list("target_modules"), list("target_parameters"));
    let pattern = |k: &str, target: &str| cfg[k].get(regex_escape(target)).and_then(Value::as_f64);
    let mut out = Deltas::new();
    for target in modules.iter().chain(&params) {
        let is_param = params.contains(target);
        let (module, _) = target.rsplit_once('.').unwrap_or(("", target));
        let module = if !is_param {
            target.clone()
        } else if target.ends_with(".gate_up_proj")
            && params.contains(&format!("{module}.down_proj"))
        {
            format!("{module}.base_layer")
        } else {
            module.to_string()
        };
        let key = |w| format!("base_model.model.{module}.lora_{w}.weight");
        let (sa, a) = file
            .remove(&key("A"))
            .unwrap_or_else(|| panic!("{target}: no {}", key("A")));
        let (sb, b) = file
            .remove(&key("B"))
            .unwrap_or_else(|| panic!("{target}: no {}", key("B")));
        let r = pattern("rank_pattern", target).unwrap_or(cfg["r"].as_f64().unwrap()) as usize;
        let alpha = pattern("alpha_pattern", target).unwrap_or(cfg["lora_alpha"].as_f64().unwrap());
        let s = alpha
            / if cfg["use_rslora"].as_bool().unwrap() {
                (r as f64).sqrt()
            } else {
                r as f64
            };
        let (out_f, inp) = (sb[0], sa[1]);
        if target.ends_with("_proj") && target.contains(".mlp.experts.") {
            let e = sa[0] / r;
            assert_eq!(sb[1], r * e, "{target}: lora_B {sb:?}");
            let mut d = Vec::new();
            for ei in 0..e {
                let be: Vec<f32> = (0..out_f * r)
                    .map(|j| b[(j / r) * r * e + (j % r) * e + ei])
                    .collect();
                d.extend(scaled_ba(
                    &be,
                    &a[ei * r * inp..][..r * inp],
                    out_f,
                    r,
                    inp,
                    s,
                ));
            }
            out.insert(target.clone(), (vec![e, out_f, inp], d));
        } else {
            assert_eq!((sa[0], sb[1]), (r, r), "{target}: rank");
            out.insert(
                target.clone(),
                (vec![out_f, inp], scaled_ba(&b, &a, out_f, r, inp, s)),
            );
        }
    }
    assert!(
        file.is_empty(),
        "tensors no target uses: {:?}",
        file.keys().collect::<Vec<_>>()
    );
    out
}

/// Exports `spec`'s checkpoint and checks PEFT's deltas against v4train's (`tol`: relative).
fn deltas_match(spec: &LoraSpec, tol: f64) -> (tempfile::TempDir, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, peft) = (tmp.path().join("ckpt"), tmp.path().join("peft"));
    lora_checkpoint(spec, &ckpt, 7);
    let summary = export(&ckpt, &peft, false).unwrap();
    let (ours, skipped) = v4train_deltas(&ckpt);
    let theirs = peft_deltas(&peft);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (t, (shape, d)) in &ours {
        let (shape2, d2) = &theirs[t];
        assert_eq!(shape, shape2, "{t}");
        let max = d.iter().fold(0f64, |m, x| m.max(x.abs()));
        assert!(max > 0.0, "{t}: zero delta");
        for (j, (x, y)) in d.iter().zip(d2).enumerate() {
            assert!(
                (x - y).abs() <= tol * max,
                "{t}[{j}]: v4train {x}, PEFT {y}"
            );
        }
    }
    let mut listed: Vec<String> = summary.skipped.iter().map(|s| s.0.clone()).collect();
    listed.sort();
    assert_eq!(listed, skipped);
    (tmp, skipped)
}

#[test]
fn default_targets_export_to_peft_names_shapes_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, peft) = (tmp.path().join("ckpt"), tmp.path().join("peft"));
    lora_checkpoint(&default_spec(), &ckpt, 1);
    let s = export(&ckpt, &peft, false).unwrap();
    // 5 layers × (q_a, q_b, kv, o_b, shared gate/up/down) and × (o_a, gate_up, down)
    assert_eq!(
        (s.linear_modules, s.param_modules, s.tensors),
        (35, 15, 100)
    );
    assert_eq!(s.exported, 5 * 11);
    assert_eq!(s.skipped.len(), 11, "{:?}", s.skipped);
    assert!(s
        .skipped
        .iter()
        .all(|(n, why)| n.starts_with("mtp.0.") && why.contains("MTP")));

    let w = read_f32(&peft.join(PEFT_WEIGHTS));
    let shape = |k: &str| w[&format!("base_model.model.model.layers.{k}")].0.clone();
    assert_eq!(shape("0.self_attn.q_a_proj.lora_A.weight"), [4, 64]);
    assert_eq!(shape("0.self_attn.q_a_proj.lora_B.weight"), [48, 4]);
    assert_eq!(shape("3.mlp.shared_experts.up_proj.lora_B.weight"), [32, 4]);
    // wo_a: G = 2 groups of [32, 192] → rank 8, block-diagonal B
    assert_eq!(shape("1.self_attn.o_a_proj.lora_A.weight"), [8, 192]);
    assert_eq!(shape("1.self_attn.o_a_proj.lora_B.weight"), [64, 8]);
    // experts: gate_up (R = 2r = 8, nested under down_proj's wrapper), down (R = 4); E = 4
    assert_eq!(shape("2.mlp.experts.base_layer.lora_A.weight"), [32, 64]);
    assert_eq!(shape("2.mlp.experts.base_layer.lora_B.weight"), [64, 32]);
    assert_eq!(shape("2.mlp.experts.lora_A.weight"), [16, 32]);
    assert_eq!(shape("2.mlp.experts.lora_B.weight"), [64, 16]);
    assert!(!w
        .keys()
        .any(|k| k.contains("compressor") || k.contains("mtp")));

    let cfg: Value =
        serde_json::from_slice(&std::fs::read(peft.join(PEFT_CONFIG)).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(
        (cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()),
        (Some(4), Some(8.0))
    );
    assert_eq!(
        (cfg["use_rslora"].as_bool(), cfg["lora_dropout"].as_f64()),
        (Some(false), Some(0.0))
    );
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["fan_in_fan_out"], false);
    assert_eq!(
        cfg["base_model_name_or_path"],
        fixture().display().to_string()
    );
    let tm = cfg["target_modules"].as_array().unwrap();
    assert_eq!(tm.len(), 35);
    assert!(tm.contains(&"model.layers.4.self_attn.kv_proj".into()));
    let tp = cfg["target_parameters"].as_array().unwrap();
    assert!(tp.contains(&"model.layers.0.mlp.experts.gate_up_proj".into()));
    assert!(tp.contains(&"model.layers.0.self_attn.o_a_proj.weight".into()));
    let oa = r"model\.layers\.0\.self_attn\.o_a_proj\.weight";
    assert_eq!(cfg["rank_pattern"][oa], 8);
    assert_eq!(cfg["alpha_pattern"][oa], 16.0);
    assert_eq!(cfg["rank_pattern"].as_object().unwrap().len(), 10);
    assert_eq!(
        std::fs::read(peft.join(PROVENANCE)).unwrap(),
        std::fs::read(ckpt.join(adapter_files::ADAPTER_CONFIG)).unwrap()
    );
    let readme = std::fs::read_to_string(peft.join("README.md")).unwrap();
    assert!(readme.contains("`mtp.0.attn.wo_a`"), "{readme}");
}

#[test]
fn default_targets_deltas_are_exactly_v4trains() {
    let (_tmp, skipped) = deltas_match(&default_spec(), 0.0);
    assert_eq!(skipped.len(), 11);
}

#[test]
fn every_target_rslora_and_mixed_ranks_keep_v4trains_deltas() {
    // w3's rank differs from w1's: its B carries the ratio of scales (f32 rounding)
    let (_tmp, skipped) = deltas_match(&all_spec(), 1e-6);
    assert!(
        skipped.iter().all(|s| s.starts_with("mtp.0.")),
        "{skipped:?}"
    );
    assert!(skipped.contains(&"mtp.0.e_proj".to_string()));
}

#[test]
fn cli_exports_and_refuses_a_non_empty_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, peft) = (tmp.path().join("ckpt"), tmp.path().join("peft"));
    lora_checkpoint(&default_spec(), &ckpt, 3);
    let run = |extra: &[&str]| {
        let mut c = common::bin();
        c.args(["export-adapter", "--checkpoint"])
            .arg(&ckpt)
            .arg("--out")
            .arg(&peft);
        c.args(extra).output().unwrap()
    };
    let o = run(&[]);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: 11 adapter(s) not exported"), "{err}");
    assert!(
        err.contains("55 v4train adapters as 50 PEFT modules"),
        "{err}"
    );
    let o = run(&[]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("is not empty (--force"),
        "{}",
        common::stderr(&o)
    );
    assert!(run(&["--force"]).status.success());
    // a full (non-LoRA) model directory names the missing adapter.json
    let mut c = common::bin();
    c.args(["export-adapter", "--checkpoint"]).arg(fixture());
    let o = c.arg("--out").arg(tmp.path().join("x")).output().unwrap();
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("adapter.json"),
        "{}",
        common::stderr(&o)
    );
}

/// v4train's f32 logits (fake quantization off) of `model` on `ids` `[2, 32]`.
fn logits(model: &V4Model<Flex>, ids: &[i64]) -> Vec<f32> {
    let ids: Tensor<Flex, 2, Int> =
        Tensor::from_data(TensorData::new(ids.to_vec(), [2, 32]), &Default::default());
    let opts = ForwardOptions {
        fake_quant: false,
        ..Default::default()
    };
    v4_model::util::to_vec(model.forward(ids, opts, false, false).logits)
}

/// Writes the Python proof's inputs into `$V4TRAIN_PEFT_PROOF` (see the top of this file).
/// 32 tokens: at most 8 compressed blocks, so the CSA indexer's top-8 selects them all and
/// sparse selection cannot diverge between the implementations.
#[test]
#[ignore = "writes the inputs of the transformers/peft comparison (Python, not in CI)"]
fn write_peft_proof_inputs() {
    let Ok(dir) = std::env::var("V4TRAIN_PEFT_PROOF") else {
        panic!("set V4TRAIN_PEFT_PROOF=DIR");
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<i64> = (0..64).map(|i| (i * 37 + 11) % 256).collect();
    let rows: Vec<Vec<i64>> = ids.chunks(32).map(<[i64]>::to_vec).collect();
    std::fs::write(dir.join("ids.json"), serde_json::to_vec(&rows).unwrap()).unwrap();
    let base = ModelDir::open(fixture()).unwrap();
    let base = V4Model::<Flex>::load(base.config(), &base, &Default::default()).unwrap();
    let mut out = vec![("base".to_string(), vec![2, 32, 256], logits(&base, &ids))];
    for (name, spec) in [("default", default_spec()), ("all", all_spec())] {
        let model = lora_checkpoint(&spec, &dir.join(name).join("ckpt"), 11);
        let s = export(
            &dir.join(name).join("ckpt"),
            &dir.join(name).join("peft"),
            false,
        )
        .unwrap();
        eprintln!("{name}: {s:?}");
        out.push((name.to_string(), vec![2, 32, 256], logits(&model, &ids)));
    }
    v4train::tensor_file::write_f32(&dir.join("v4train_logits.safetensors"), &out, None).unwrap();
    std::fs::write(dir.join("compare.py"), COMPARE_PY).unwrap();
}

/// Max |Δlogit| of transformers (+ PEFT) against v4train, per variant.
const COMPARE_PY: &str = r#"import sys
from safetensors.torch import load_file
d = sys.argv[1]
ours = load_file(f"{d}/v4train_logits.safetensors")
for v in ["base", "default", "all"]:
    hf = load_file(f"{d}/hf_{v}.safetensors")["logits"]
    eff = (ours[v] - ours["base"]).abs().max().item()
    print(f"{v:8s} max|hf - v4train| = {(hf - ours[v]).abs().max().item():.3e}   "
          f"(adapter effect on logits {eff:.3f}, |logits| max {ours[v].abs().max().item():.2f})")
"#;

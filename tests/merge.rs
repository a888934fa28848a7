//! `v4train merge`: random LoRA adapters on the tiny fixtures, merged into their base, reload to
//! the adapted model — exactly (f32), within bf16 rounding (bf16), within the release rule's
//! quantization step (fp8) — and bad inputs are refused with errors naming the tensor or hashes.

mod common;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use v4_checkpoints::{
    export, ModelDir, OutputDtype, QuantFormat, QuantizedTensor, Tensor as Stored, WriteOptions,
};
use v4_model::lora::{LoraBuilder, LoraSpec};
use v4_model::named::stack_of;
use v4_model::{inventory, ForwardOptions, ReleaseDtype, V4Model, WeightSource};
use v4train::adapter_files::{
    adapter_tensors, base_hash, read_config, read_tensors, save, AdapterConfig, BaseIdentity,
    ADAPTERS, ADAPTER_CONFIG,
};
use v4train::merge::{merge, MergeError, MergeOptions, MergeReport, REPORT_FILE};
use v4train::tensor_file::write_f32;

/// Range of the random `B` values: updates of ‖ΔW‖/‖W‖ ≈ 5% on the tiny fixtures.
const B_AMP: f32 = 0.01;

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

/// Rank 4 on the default targets (attention, shared and routed experts, MTP block included).
fn spec() -> LoraSpec {
    LoraSpec {
        rank: 4,
        ..LoraSpec::default()
    }
}

fn load(dir: &Path) -> V4Model<Flex> {
    let src = ModelDir::open(dir).unwrap();
    V4Model::load(src.config(), &src as &dyn WeightSource, &Default::default()).unwrap()
}

/// Main and MTP logits on 64 tokens, fake quantization off (everything continuous but top-k).
fn logits(model: &V4Model<Flex>) -> Vec<f32> {
    let ids: Vec<i64> = (0..64).map(|i| (i * 37 + 11) % 256).collect();
    let ids: Tensor<Flex, 2, Int> =
        Tensor::from_data(TensorData::new(ids, [1, 64]), &Default::default());
    let opts = ForwardOptions {
        fake_quant: false,
        ..ForwardOptions::default()
    };
    let out = model.forward(ids, opts, false, true);
    let mut v = v4_model::util::to_vec(out.logits);
    v.extend(v4_model::util::to_vec(out.mtp_logits[0].clone()));
    v
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn rms(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (s / a.len() as f64).sqrt() as f32
}

/// Whether the merge changes release tensor `name` (its projection, or its expert stack, is
/// targeted).
fn adapted(name: &str) -> bool {
    let stack = stack_of(name).map(|(s, _)| s);
    spec().rank_for(stack.as_deref().unwrap_or(name)).is_some()
}

/// Saves random adapters (A uniform ±1/√in, B uniform ±`b_amp`) for the base `base` into the
/// LoRA checkpoint directory `dir`, and returns the adapted model loaded back from `dir` (as a
/// resumed run builds it).
fn make_adapters(base: &Path, dir: &Path, b_amp: f32) -> V4Model<Flex> {
    let src = ModelDir::open(base).unwrap();
    let (cfg, dev, spec) = (src.config().clone(), Default::default(), spec());
    let fresh = LoraBuilder {
        spec: &spec,
        saved: None,
    };
    let fresh = V4Model::<Flex>::load_adapted(&cfg, &src, Some(&fresh), false, &dev).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut values = v4_model::MapSource::default();
    for (name, shape, v) in adapter_tensors(&fresh) {
        let amp = if name.ends_with("lora_A.weight") {
            1.0 / (*shape.last().unwrap() as f32).sqrt()
        } else {
            b_amp
        };
        let v = v.iter().map(|_| rng.random_range(-amp..amp)).collect();
        values.floats.insert(name, (shape, v));
    }
    let builder = LoraBuilder {
        spec: &spec,
        saved: Some(&values),
    };
    let model = V4Model::<Flex>::load_adapted(&cfg, &src, Some(&builder), false, &dev).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let config = AdapterConfig {
        lora: spec.clone(),
        base: BaseIdentity {
            path: base.display().to_string(),
            content_hash: base_hash(base).unwrap(),
        },
    };
    save(dir, &model, &config).unwrap();
    let saved = read_tensors(dir).unwrap();
    let builder = LoraBuilder {
        spec: &spec,
        saved: Some(&saved),
    };
    V4Model::<Flex>::load_adapted(&cfg, &src, Some(&builder), false, &dev).unwrap()
}

fn run_merge(
    base: &Path,
    adapter: &Path,
    out: &Path,
    dtype: OutputDtype,
    force_base: bool,
) -> Result<MergeReport, MergeError> {
    let opts = MergeOptions {
        write: WriteOptions {
            dtype,
            max_shard_size: 400_000,
            ..WriteOptions::default()
        },
        force_base,
    };
    merge(base, adapter, out, &opts, &mut |_| {})
}

fn print_report(r: &MergeReport) {
    eprint!("{}", r.table());
}

#[test]
fn f32_merge_reloads_to_the_adapted_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, adapter, out) = (
        fixture("tiny_b"),
        tmp.path().join("a"),
        tmp.path().join("m"),
    );
    let reference = make_adapters(&base, &adapter, B_AMP);
    let report = run_merge(&base, &adapter, &out, OutputDtype::F32, false).unwrap();
    print_report(&report);

    let (want, base_logits) = (logits(&reference), logits(&load(&base)));
    let got = logits(&load(&out));
    let (diff, moved) = (max_abs(&got, &want), max_abs(&base_logits, &want));
    // Measured: 2.9e-6 (the adapters move the logits by 0.79).
    eprintln!(
        "f32 merge: max |logits - adapted| = {diff:.3e}; adapters moved logits by {moved:.3e}"
    );
    assert!(diff <= 1e-4, "{diff}");
    assert!(moved > 1e-2, "the adapters must matter: {moved}");

    // Exactly the targeted matrices changed; everything else is the base, bit for bit.
    let (b, m) = (
        ModelDir::open(&base).unwrap(),
        ModelDir::open(&out).unwrap(),
    );
    let mut changed = 0;
    for spec in inventory(b.config()) {
        if spec.dtype == ReleaseDtype::I64 {
            assert_eq!(
                b.tensor_i64(&spec.name).unwrap(),
                m.tensor_i64(&spec.name).unwrap()
            );
            continue;
        }
        let same = b.tensor_f32(&spec.name).unwrap() == m.tensor_f32(&spec.name).unwrap();
        assert_eq!(same, !adapted(&spec.name), "{}", spec.name);
        changed += usize::from(!same);
    }
    assert_eq!(report.merged, changed);
    for kind in [
        "attn.wq_a",
        "attn.wo_a",
        "ffn.experts.w1",
        "ffn.shared_experts.w2",
    ] {
        for k in [kind.to_string(), format!("mtp.{kind}")] {
            let r = report.kinds.iter().find(|r| r.kind == k).expect(&k);
            assert!(r.rel_delta > 0.0 && r.survived.is_none(), "{r:?}");
        }
    }
    let saved: MergeReport =
        serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap();
    assert_eq!(saved.kinds.len(), report.kinds.len());
    for (a, b) in saved.kinds.iter().zip(&report.kinds) {
        assert_eq!((&a.kind, a.matrices), (&b.kind, b.matrices));
        assert!((a.rel_delta - b.rel_delta).abs() <= 1e-12 * b.rel_delta);
    }
}

#[test]
fn bf16_merge_is_the_f32_merge_rounded() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("tiny_b");
    let adapter = tmp.path().join("a");
    let reference = make_adapters(&base, &adapter, B_AMP);
    let (out16, out32) = (tmp.path().join("m16"), tmp.path().join("m32"));
    let report = run_merge(&base, &adapter, &out16, OutputDtype::Bf16, false).unwrap();
    run_merge(&base, &adapter, &out32, OutputDtype::F32, false).unwrap();
    print_report(&report);

    // Every stored value is the f32 merge rounded to bf16 (the release's F32 tensors exact).
    let (m16, m32) = (
        ModelDir::open(&out16).unwrap(),
        ModelDir::open(&out32).unwrap(),
    );
    for spec in inventory(m32.config()) {
        if spec.dtype == ReleaseDtype::I64 {
            continue;
        }
        let mut want = m32.tensor_f32(&spec.name).unwrap().1;
        if spec.dtype != ReleaseDtype::F32 {
            want.iter_mut()
                .for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
        }
        assert!(
            want == m16.tensor_f32(&spec.name).unwrap().1,
            "{}",
            spec.name
        );
    }

    // The logits: rounding the merged weights to bf16 perturbs the adapted model as rounding
    // the base weights to bf16 perturbs the base: the same weights up to a ~5% update, so the
    // same relative rounding errors, the same sensitivity (top-k choices that flip included,
    // which is what makes the max large). Bound both max and rms by twice the base's.
    let base16 = tmp.path().join("b16");
    let opts = WriteOptions {
        dtype: OutputDtype::Bf16,
        ..WriteOptions::default()
    };
    export(&ModelDir::open(&base).unwrap(), &base16, &opts, &mut |_| {}).unwrap();
    let (b16, b32) = (logits(&load(&base16)), logits(&load(&base)));
    let (base_max, base_rms) = (max_abs(&b16, &b32), rms(&b16, &b32));
    let want = logits(&reference);
    let got = logits(&load(&out16));
    let (diff, diff_rms) = (max_abs(&got, &want), rms(&got, &want));
    let top = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    // Measured: max 3.04e-1 (7.3% of max |logit|), rms 1.51e-2; base: max 2.72e-1, rms 2.08e-2.
    eprintln!(
        "bf16 merge: logits vs adapted: max {diff:.3e} ({:.3e} of max |logit|), rms \
         {diff_rms:.3e}; bf16 base vs f32 base: max {base_max:.3e}, rms {base_rms:.3e}",
        diff / top,
    );
    assert!(diff <= 2.0 * base_max, "{diff} vs base {base_max}");
    assert!(diff_rms <= 2.0 * base_rms, "{diff_rms} vs base {base_rms}");
    // A bf16 step is 2^-8 of a value and the update ~5% of it: rounding costs ~3% of ‖ΔW‖
    // (measured 0.029–0.034), so nearly all of the update survives (measured 0.998–1.002).
    for k in report.kinds.iter().filter(|k| k.stored == "bf16") {
        let s = k.survived.unwrap();
        assert!((s - 1.0).abs() < 0.05, "{k:?}");
    }
}

/// Half a step of `format`'s grid at `x`, in a block of scale `s`: the most round-to-nearest
/// can move `x` (FP8 e4m3: 3 mantissa bits, subnormal step 2^-9; FP4 e2m1: {0, .5, 1, 1.5, 2,
/// 3, 4, 6}). The block scale keeps `|x|/s` within the grid's range (448, 6).
fn half_step(format: QuantFormat, x: f32, s: f32) -> f32 {
    let a = (x / s).abs();
    let h = match format {
        QuantFormat::Fp8Block if a < 2f32.powi(-6) => 2f32.powi(-10),
        QuantFormat::Fp8Block => 2f32.powi(a.log2().floor() as i32 - 4),
        QuantFormat::Fp4Group if a < 2.0 => 0.25,
        QuantFormat::Fp4Group if a < 4.0 => 0.5,
        QuantFormat::Fp4Group => 1.0,
    };
    h * s
}

/// The scale of element (`r`, `c`) of `q`.
fn scale_at(q: &QuantizedTensor<'_>, r: usize, c: usize) -> f32 {
    let sc = q.scale_shape()[1];
    match q.format {
        QuantFormat::Fp8Block => q.scales[(r / 128) * sc + c / 128],
        QuantFormat::Fp4Group => q.scales[r * sc + c / 32],
    }
}

#[test]
fn fp8_merge_differs_from_the_f32_merge_by_quantization_only() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("tiny_q");
    let adapter = tmp.path().join("a");
    let reference = make_adapters(&base, &adapter, B_AMP);
    let (out8, out32) = (tmp.path().join("m8"), tmp.path().join("m32"));
    let report = run_merge(&base, &adapter, &out8, OutputDtype::Fp8, false).unwrap();
    run_merge(&base, &adapter, &out32, OutputDtype::F32, false).unwrap();
    print_report(&report);

    let (b, m8, m32) = (
        ModelDir::open(&base).unwrap(),
        ModelDir::open(&out8).unwrap(),
        ModelDir::open(&out32).unwrap(),
    );
    let mut quantized = 0;
    for spec in inventory(b.config()) {
        let name = &spec.name;
        let stored = m8.tensor(name).unwrap();
        if !adapted(name) {
            assert_eq!(
                stored,
                b.tensor(name).unwrap(),
                "{name} is copied code for code"
            );
            continue;
        }
        let merged = m32.tensor_f32(name).unwrap().1;
        let Stored::Quantized(q) = stored else {
            panic!("{name}: an adapted FP8/FP4 release weight must stay quantized");
        };
        // The stored codes are the release rule applied to the f32 merge...
        let requant = QuantizedTensor::quantize(&merged, q.shape, q.format).unwrap();
        assert!(requant == q.clone().into_owned(), "{name}");
        // ...so every value is within half a grid step of it at its block's scale.
        let cols = q.shape[1];
        let mut worst = 0f32;
        for (i, (x, m)) in q.dequantize().iter().zip(&merged).enumerate() {
            let bound = half_step(q.format, *m, scale_at(&q, i / cols, i % cols));
            assert!(
                (x - m).abs() <= bound,
                "{name}[{i}]: {x} vs {m} (bound {bound})"
            );
            worst = worst.max((x - m).abs() / bound);
        }
        assert!(worst > 0.0, "{name}: quantization changed nothing?");
        quantized += 1;
    }
    assert_eq!(quantized, report.merged);

    let want = logits(&reference);
    let got = logits(&load(&out8));
    let unmerged = logits(&load(&base));
    let (diff, moved) = (rms(&got, &want), rms(&unmerged, &want));
    // Measured: rms 6.95e-2 (max 5.83e-1) against 1.29e-1 for the unmerged base. Survived:
    // 0.92–0.97 for FP8 blocks, 0.25–0.35 for FP4 experts — the base is already on the FP4
    // grid, and an update below half a step (most of a 5% update) rounds back to it.
    eprintln!(
        "fp8 merge: logits vs adapted: max {:.3e}, rms {diff:.3e}; base vs adapted: rms {moved:.3e}",
        max_abs(&got, &want)
    );
    assert!(
        diff < moved,
        "the merged FP8 model must be closer to the adapted one than the base"
    );
    for k in &report.kinds {
        let s = k.survived.unwrap();
        eprintln!("  {:<28} {:<10} survived {s:.3}", k.kind, k.stored);
        assert!((0.0..=1.5).contains(&s), "{k:?}");
    }
}

/// A copy of the adapter directory `src` in `dst`, its tensors changed by `edit`.
fn edited(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join(ADAPTER_CONFIG), dst.join(ADAPTER_CONFIG)).unwrap();
    let map = read_tensors(src).unwrap();
    let mut t: Vec<_> = map
        .floats
        .into_iter()
        .map(|(n, (s, v))| (n, s, v))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut t);
    write_f32(&dst.join(ADAPTERS), &t, None).unwrap();
}

#[test]
fn bad_adapters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("tiny_b");
    let good = tmp.path().join("good");
    make_adapters(&base, &good, B_AMP);
    let out = |n: &str| tmp.path().join(format!("out-{n}"));

    // Another base's hash: refused, naming both hashes, unless --force-base.
    let wrong = tmp.path().join("wrong-base");
    edited(&good, &wrong, |_| {});
    let mut config = read_config(&wrong).unwrap();
    let real = config.base.content_hash.clone();
    config.base.content_hash = "0".repeat(64);
    std::fs::write(
        wrong.join(ADAPTER_CONFIG),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let e = run_merge(&base, &wrong, &out("hash"), OutputDtype::F32, false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, MergeError::BaseMismatch(_)), "{msg}");
    assert!(msg.contains(&real) && msg.contains(&"0".repeat(64)) && msg.contains("--force-base"));
    run_merge(&base, &wrong, &out("forced"), OutputDtype::F32, true).unwrap();

    // A shape that disagrees with the base.
    let bad = tmp.path().join("shape");
    let name = "layers.1.attn.wq_b.lora_B.weight";
    edited(&good, &bad, |t| {
        let e = t.iter_mut().find(|e| e.0 == name).unwrap();
        e.1[0] -= 1;
        e.2.truncate(e.1.iter().product());
    });
    let e = run_merge(&base, &bad, &out("shape"), OutputDtype::F32, false).unwrap_err();
    assert!(matches!(e, MergeError::Shape(_)), "{e}");
    assert!(e.to_string().contains(name), "{e}");

    // A projection the base lacks (tiny_b has 5 layers).
    let bad = tmp.path().join("unknown");
    let name = "layers.9.attn.wq_a.lora_A.weight";
    edited(&good, &bad, |t| {
        t.push((name.into(), vec![4, 64], vec![0.0; 256]))
    });
    let e = run_merge(&base, &bad, &out("unknown"), OutputDtype::F32, false).unwrap_err();
    assert!(matches!(e, MergeError::UnknownProjection { .. }), "{e}");
    assert!(e.to_string().contains(name), "{e}");

    // A targeted projection without its adapter.
    let bad = tmp.path().join("missing");
    let name = "layers.2.ffn.experts.w3.lora_A.weight";
    edited(&good, &bad, |t| t.retain(|e| e.0 != name));
    let e = run_merge(&base, &bad, &out("missing"), OutputDtype::F32, false).unwrap_err();
    assert!(
        matches!(e, MergeError::Missing { .. }) && e.to_string().contains(name),
        "{e}"
    );
    for n in ["hash", "shape", "unknown", "missing"] {
        assert!(!out(n).join("model.safetensors.index.json").exists(), "{n}");
    }
}

#[test]
fn cli_merges_and_refuses_another_base() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("tiny_b");
    let adapter = tmp.path().join("a");
    make_adapters(&base, &adapter, B_AMP);
    let out = tmp.path().join("m");
    let arg = |p: &Path| p.display().to_string();
    let args = |out: &Path| {
        [
            "merge".to_string(),
            "--model".into(),
            arg(&base),
            "--adapter".into(),
            arg(&adapter),
            "--out".into(),
            arg(out),
            "--dtype".into(),
            "bf16".into(),
        ]
    };
    let o = common::bin().args(args(&out)).output().unwrap();
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("ffn.experts.w1") && err.contains("survived"),
        "{err}"
    );
    let report: MergeReport =
        serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap();
    assert_eq!(report.dtype, "bf16");
    assert!(ModelDir::open(&out).is_ok());

    let mut config = read_config(&adapter).unwrap();
    config.base.content_hash = "f".repeat(64);
    std::fs::write(
        adapter.join(ADAPTER_CONFIG),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let o = common::bin()
        .args(args(&tmp.path().join("m2")))
        .output()
        .unwrap();
    let err = common::stderr(&o);
    assert!(!o.status.success() && err.contains("--force-base"), "{err}");
    let o = common::bin()
        .args(args(&tmp.path().join("m3")))
        .arg("--force-base")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
}

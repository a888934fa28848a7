//! Runs the `v4train forward` binary on the fixture models and checks its output against the
//! reference's logits; and checks that bad inputs fail with a clear message, not a panic.

use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn floats(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), Dtype::F32);
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn v4train(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_v4train"))
        .args(args)
        .output()
        .unwrap()
}

fn forward_paths(model: &Path, input: &Path, out: &Path) -> std::process::Output {
    let [m, i, o] = [model, input, out].map(|p| p.to_str().unwrap().to_string());
    v4train(&["forward", "--model", &m, "--input", &i, "--output", &o])
}

fn forward(model: &str, extra: &[&str]) -> PathBuf {
    let out = std::env::temp_dir().join(format!(
        "v4train-fwd-{model}-{}.safetensors",
        std::process::id()
    ));
    let m = fixture(model);
    let input = fixture(&format!("{model}/io.safetensors"));
    let mut args = vec![
        "forward",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend(["--output", out.to_str().unwrap()]);
    args.extend(extra);
    let o = v4train(&args);
    assert!(
        o.status.success(),
        "forward failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// (max abs, mean abs, fraction within 1e-3)
fn errors(got: &[f32], want: &[f32]) -> (f32, f64, f64) {
    assert_eq!(got.len(), want.len());
    let e: Vec<f32> = got.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
    let max = e.iter().cloned().fold(0.0, f32::max);
    let mean = e.iter().map(|x| *x as f64).sum::<f64>() / e.len() as f64;
    let within = e.iter().filter(|x| **x <= 1e-3).count() as f64 / e.len() as f64;
    (max, mean, within)
}

#[test]
fn forward_tiny_b_without_fake_quant_matches_within_1e_4() {
    let out = forward("tiny_b", &["--no-fake-quant", "--hidden"]);
    let io = fixture("tiny_b/io.safetensors");
    for name in ["logits", "mtp_logits", "hidden.0", "hidden.4"] {
        let (max, _, _) = errors(&floats(&out, name), &floats(&io, name));
        assert!(max <= 1e-4, "{name}: max abs error {max}");
    }
    std::fs::remove_file(out).ok();
}

#[test]
fn forward_tiny_a_meets_the_statistical_bound() {
    let out = forward("tiny_a", &[]);
    let io = fixture("tiny_a/io.safetensors");
    for name in ["logits", "mtp_logits"] {
        let (_, mean, within) = errors(&floats(&out, name), &floats(&io, name));
        assert!(
            mean <= 1e-3 && within >= 0.99,
            "{name}: mean {mean}, within {within}"
        );
    }
    std::fs::remove_file(out).ok();
}

#[test]
fn forward_tiny_q_release_storage_meets_the_statistical_bound() {
    // FP8/FP4 weights dequantized by the checkpoint reader; the reference ran on the same values.
    let out = forward("tiny_q", &[]);
    let io = fixture("tiny_q/io.safetensors");
    let (_, mean, within) = errors(&floats(&out, "logits"), &floats(&io, "logits"));
    assert!(
        mean <= 1e-3 && within >= 0.99,
        "logits: mean {mean}, within {within}"
    );
    std::fs::remove_file(out).ok();
}

fn write_ids(path: &Path, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
    let view = safetensors::tensor::TensorView::new(dtype, shape, &bytes).unwrap();
    safetensors::serialize_to_file(vec![("input_ids", view)], None, path).unwrap();
}

/// (case name, dtype, shape, raw bytes, expected message)
type BadCase = (&'static str, Dtype, Vec<usize>, Vec<u8>, &'static str);

#[test]
fn bad_inputs_fail_with_a_message() {
    let dir = std::env::temp_dir().join(format!("v4train-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixture("tiny_b");
    let cases: Vec<BadCase> = vec![
        (
            "range",
            Dtype::I64,
            vec![1, 2],
            [3i64, 256].iter().flat_map(|x| x.to_le_bytes()).collect(),
            "outside the vocabulary",
        ),
        (
            "dtype",
            Dtype::F32,
            vec![1, 2],
            [3f32, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
            "int64 or int32",
        ),
        (
            "rank",
            Dtype::I32,
            vec![2],
            [3i32, 4].iter().flat_map(|x| x.to_le_bytes()).collect(),
            "rank 2",
        ),
    ];
    for (name, dtype, shape, bytes, msg) in cases {
        let input = dir.join(format!("{name}.safetensors"));
        write_ids(&input, dtype, shape, bytes);
        let out = dir.join("out.safetensors");
        let o = forward_paths(&model, &input, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(msg) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    // int32 ids are accepted
    let input = dir.join("i32.safetensors");
    write_ids(
        &input,
        Dtype::I32,
        vec![1, 3],
        [3i32, 4, 5].iter().flat_map(|x| x.to_le_bytes()).collect(),
    );
    let out = dir.join("out.safetensors");
    let o = forward_paths(&model, &input, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(floats(&out, "logits").len(), 3 * 256);
    assert_eq!(floats(&out, "mtp_logits").len(), 2 * 256);
    std::fs::remove_dir_all(dir).ok();
}

fn ints(path: &Path, name: &str) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    v.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn write_i64(path: &Path, name: &str, shape: Vec<usize>, values: &[i64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::I64, shape, &bytes).unwrap();
    safetensors::serialize_to_file(vec![(name, view)], None, path).unwrap();
}

/// `--segments`: a row packing the reference sequence's first 170 tokens and its first 130 as
/// two samples gives, for each sample, DeepSeek's own logits and MTP logits of that prefix
/// (causal: the full sequence's first positions) within 1e-4; bad segment files are errors.
#[test]
fn forward_segments_compute_each_sample_alone() {
    let dir = std::env::temp_dir().join(format!("v4train-seg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let io = fixture("tiny_b/io.safetensors");
    let ids = ints(&io, "input_ids");
    let (a, b) = (170, 130);
    let mut row = ids[..a].to_vec();
    row.extend(&ids[..b]);
    let input = dir.join("ids.safetensors");
    write_i64(&input, "input_ids", vec![1, a + b], &row);
    let seg: Vec<i64> = (0..a + b).map(|t| i64::from(t >= a)).collect();
    let segments = dir.join("seg.safetensors");
    write_i64(&segments, "segment_ids", vec![1, a + b], &seg);
    let out = dir.join("out.safetensors");
    let [m, i, o, sg] =
        [&fixture("tiny_b"), &input, &out, &segments].map(|p| p.to_str().unwrap().to_string());
    let args = [
        "forward",
        "--model",
        &m,
        "--input",
        &i,
        "--output",
        &o,
        "--no-fake-quant",
    ];
    let run = v4train(&[&args[..], &["--segments", &sg]].concat());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success() && err.contains("(2 samples)"), "{err}");
    let v = 256;
    let (logits, want) = (floats(&out, "logits"), floats(&io, "logits"));
    let (mtp, want_mtp) = (floats(&out, "mtp_logits"), floats(&io, "mtp_logits"));
    for (start, len) in [(0, a), (a, b)] {
        let (max, _, _) = errors(&logits[start * v..(start + len) * v], &want[..len * v]);
        assert!(max <= 1e-4, "sample at {start}: logits max abs error {max}");
        let n = len - 1;
        let (max, _, _) = errors(&mtp[start * v..(start + n) * v], &want_mtp[..n * v]);
        assert!(max <= 1e-4, "sample at {start}: MTP max abs error {max}");
    }
    // Without --segments the second copy sees the first: its logits differ from the prefix's.
    let run = v4train(&args);
    assert!(run.status.success());
    let (max, _, _) = errors(&floats(&out, "logits")[a * v..(a + b) * v], &want[..b * v]);
    assert!(max > 1e-2, "unmasked packing should differ, max {max}");

    let bad = [
        (
            vec![1, a + b],
            {
                let mut s = seg.clone();
                s[200] = 0;
                s
            },
            "segment_ids[0, 200] = 0 is smaller than",
        ),
        (vec![2, (a + b) / 2], seg.clone(), "has shape [2, 150]"),
    ];
    for (shape, values, msg) in bad {
        write_i64(&segments, "segment_ids", shape, &values);
        let run = v4train(&[&args[..], &["--segments", &sg]].concat());
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{err}");
        assert!(
            err.contains(msg) && err.contains("seg.safetensors"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `--decode-from 290`: prefill 290 tokens, then one at a time through the KV cache, against the
/// reference's `decode_logits` — strictly without fake quant (tiny_b), statistically with it
/// (tiny_a, and tiny_q read from its FP8/FP4 release storage).
#[test]
fn forward_decode_matches_the_reference_decode_logits() {
    for (name, extra) in [
        ("tiny_b", &["--no-fake-quant"][..]),
        ("tiny_a", &[][..]),
        ("tiny_q", &[][..]),
    ] {
        let mut args = vec!["--decode-from", "290"];
        args.extend(extra);
        let out = forward(name, &args);
        let io = fixture(&format!("{name}/io.safetensors"));
        let (max, mean, within) = errors(
            &floats(&out, "decode_logits"),
            &floats(&io, "decode_logits"),
        );
        println!("{name}: decode max {max:.3e} mean {mean:.3e} within 1e-3 {within:.5}");
        if extra.is_empty() {
            assert!(
                mean <= 1e-3 && within >= 0.99,
                "{name}: mean {mean}, within {within}"
            );
        } else {
            assert!(max <= 1e-4, "{name}: decode max abs error {max}");
        }
        std::fs::remove_file(out).ok();
    }
}

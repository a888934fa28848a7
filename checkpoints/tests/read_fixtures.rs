//! The reader against the reference's fixtures: bit-exact dequantization of `tiny_q`, inventory
//! checks, the `WeightSource` seam and selective loading.

mod common;

use common::{copy_fixture, f32s, fixture, read_file, write_safetensors};
use safetensors::Dtype;
use std::time::Instant;
use v4_checkpoints::{layer_range, ModelDir, QuantFormat, Tensor};
use v4_model::{inventory, WeightSource};

#[test]
fn tiny_q_dequantizes_bit_exactly_to_the_reference() {
    let t0 = Instant::now();
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let open = t0.elapsed();
    let reference = read_file(&fixture("tiny_q/dequant.safetensors"));
    assert_eq!(reference.len(), 125);
    let t1 = Instant::now();
    for (name, (dtype, shape, bytes)) in &reference {
        assert_eq!(*dtype, Dtype::F32);
        let (got_shape, got) = md.tensor_f32(name).unwrap();
        assert_eq!(&got_shape, shape, "{name}");
        let want = f32s(bytes);
        let mismatches = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(mismatches, 0, "{name}: {mismatches} values differ");
    }
    eprintln!(
        "tiny_q: open {:?}, dequantize 125 FP8/FP4 tensors {:?}",
        open,
        t1.elapsed()
    );
}

#[test]
fn fixtures_match_the_inventory() {
    for name in ["tiny_a", "tiny_b", "tiny_q"] {
        let md = ModelDir::open(fixture(name)).unwrap();
        md.check_against(&inventory(md.config())).unwrap();
    }
}

#[test]
fn every_dtype_of_tiny_q_decodes() {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let file = read_file(&fixture("tiny_q/model.safetensors"));
    // BF16: the value is the 16 stored bits shifted into the top of an f32.
    let (_, _, b) = &file["embed.weight"];
    let want: Vec<u32> = b
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)
        .collect();
    let (_, got) = md.tensor_f32("embed.weight").unwrap();
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
    // F32 as stored.
    let (_, _, b) = &file["layers.1.attn.attn_sink"];
    assert_eq!(md.tensor_f32("layers.1.attn.attn_sink").unwrap().1, f32s(b));
    // I64 tid2eid (values read with python from the fixture).
    let (shape, ids) = md.tensor_i64("layers.0.ffn.gate.tid2eid").unwrap();
    assert_eq!(shape, vec![256, 2]);
    assert_eq!(&ids[..8], &[3, 0, 2, 1, 0, 2, 1, 0]);
    // Quantized tensors stay quantized until asked.
    match md.tensor("layers.1.ffn.experts.0.w2.weight").unwrap() {
        Tensor::Quantized(q) => {
            assert_eq!(q.format, QuantFormat::Fp4Group);
            assert_eq!(q.shape, [64, 32]);
            assert_eq!(q.data.len(), 64 * 16);
            assert_eq!(q.scale_shape(), [64, 1]);
        }
        other => panic!("expected quantized, got {:?}", other.shape()),
    }
    match md.tensor("layers.1.attn.wo_a.weight").unwrap() {
        Tensor::Quantized(q) => {
            assert_eq!(q.format, QuantFormat::Fp8Block);
            assert_eq!(q.scale_shape(), [1, 2]);
        }
        other => panic!("expected quantized, got {:?}", other.shape()),
    }
}

#[test]
fn weight_source_checks_shapes_and_names_the_tensor() {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let v = WeightSource::tensor_f32(&md, "layers.1.attn.wq_b.weight", &[384, 48]).unwrap();
    assert_eq!(v.len(), 384 * 48);
    let e = WeightSource::tensor_f32(&md, "layers.1.attn.wq_b.weight", &[48, 384])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.1.attn.wq_b.weight")
            && e.contains("[48, 384]")
            && e.contains("[384, 48]"),
        "{e}"
    );
    let e = WeightSource::tensor_f32(&md, "layers.9.nothing", &[1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("layers.9.nothing"), "{e}");
    let ids = WeightSource::tensor_i64(&md, "layers.0.ffn.gate.tid2eid", &[256, 2]).unwrap();
    assert_eq!(ids.len(), 512);
}

#[test]
fn load_filtered_streams_one_layer() {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let got: Vec<(String, Tensor<'_>)> = md
        .load_filtered(layer_range(1..2))
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with("layers.1.")));
    assert!(!names.iter().any(|n| n.ends_with(".scale")));
    let want = inventory(md.config())
        .into_iter()
        .filter(|s| s.name.starts_with("layers.1."))
        .count();
    assert_eq!(names.len(), want);
    let n_scales = md.tensor_names().filter(|n| n.ends_with(".scale")).count();
    assert_eq!(n_scales, 125);
}

/// Base-checkpoint spellings: `weight_scale_inv` names and F32 scales dequantize identically.
#[test]
fn weight_scale_inv_and_f32_scales() {
    let t = copy_fixture("tiny_q");
    let src = read_file(&fixture("tiny_q/model.safetensors"));
    let names = ["layers.1.attn.wo_a", "layers.1.ffn.experts.0.w1"];
    let mut out = Vec::new();
    for base in names {
        let (d, s, b) = &src[&format!("{base}.weight")];
        out.push((format!("{base}.weight"), *d, s.clone(), b.clone()));
        let (_, ss, sb) = &src[&format!("{base}.scale")];
        // E8M0 byte e → the f32 with exponent field e (2^(e-127)), written as F32.
        let f: Vec<u8> = sb
            .iter()
            .flat_map(|e| f32::from_bits(u32::from(*e) << 23).to_le_bytes())
            .collect();
        out.push((
            format!("{base}.weight_scale_inv"),
            Dtype::F32,
            ss.clone(),
            f,
        ));
    }
    let refs: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = out
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_safetensors(&t.path().join("model.safetensors"), &refs);
    let md = ModelDir::open(t.path()).unwrap();
    let reference = read_file(&fixture("tiny_q/dequant.safetensors"));
    for base in names {
        let n = format!("{base}.weight");
        let (_, got) = md.tensor_f32(&n).unwrap();
        assert_eq!(got, f32s(&reference[&n].2), "{n}");
        assert!(md.is_scale_companion(&format!("{base}.weight_scale_inv")));
    }
}

//! Export and the writer against the fixtures: `--dtype fp8` of `tiny_q` reproduces the release's
//! bytes, `bf16` of `tiny_a` reloads to the bf16-rounded values, sharding round-trips, and the
//! output carries the release's config keys, metadata and license.

mod common;

use common::{f32s, fixture, read_dir, read_file};
use half::bf16;
use safetensors::Dtype;
use v4_checkpoints::{
    export, write_checkpoint, CheckpointError, ModelDir, OutputDtype, Values, WriteOptions,
    PRODUCER,
};
use v4_model::{inventory, ReleaseDtype};

fn opts(dtype: OutputDtype, max: u64) -> WriteOptions {
    WriteOptions {
        dtype,
        max_shard_size: max,
        ..WriteOptions::default()
    }
}

fn export_to(src: &str, dtype: OutputDtype, max: u64) -> (tempfile::TempDir, usize) {
    let md = ModelDir::open(fixture(src)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut calls = 0;
    let summary = export(&md, out.path(), &opts(dtype, max), &mut |_| calls += 1).unwrap();
    assert_eq!(calls, inventory(md.config()).len());
    (out, summary.shards.len())
}

#[test]
fn fp8_export_of_tiny_q_reproduces_the_release_bytes() {
    let (out, shards) = export_to("tiny_q", OutputDtype::Fp8, 5_000_000_000);
    assert_eq!(shards, 1);
    let original = read_file(&fixture("tiny_q/model.safetensors"));
    let written = read_dir(out.path());
    let aliases = ["mtp.0.embed.weight", "mtp.0.head.weight"];
    assert_eq!(written.len() + aliases.len(), original.len());
    for (name, (dtype, shape, bytes)) in &original {
        if aliases.contains(&name.as_str()) {
            assert!(
                !written.contains_key(name),
                "{name} is an alias and is not exported"
            );
            continue;
        }
        let (d, s, b) = &written[name];
        assert_eq!((d, s), (dtype, shape), "{name}");
        let differ = b.iter().zip(bytes).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{name}: {differ} bytes differ");
    }
    let md = ModelDir::open(out.path()).unwrap();
    md.check_against(&inventory(md.config())).unwrap();
}

#[test]
fn bf16_export_of_tiny_a_reloads_to_bf16_rounded_values() {
    let (out, _) = export_to("tiny_a", OutputDtype::Bf16, 5_000_000_000);
    let src = read_file(&fixture("tiny_a/model.safetensors"));
    let md = ModelDir::open(out.path()).unwrap();
    let raw = read_dir(out.path());
    for spec in inventory(md.config()) {
        let (dtype, _, _) = &raw[&spec.name];
        let (sd, _, sb) = &src[&spec.name];
        match spec.dtype {
            ReleaseDtype::I64 => {
                assert_eq!(*dtype, Dtype::I64);
                assert_eq!(*sd, Dtype::I64);
                assert_eq!(&raw[&spec.name].2, sb);
            }
            ReleaseDtype::F32 => {
                assert_eq!(*dtype, Dtype::F32, "{}", spec.name);
                assert_eq!(md.tensor_f32(&spec.name).unwrap().1, f32s(sb));
            }
            _ => {
                assert_eq!(*dtype, Dtype::BF16, "{}", spec.name);
                let want: Vec<u32> = f32s(sb)
                    .into_iter()
                    .map(|v| bf16::from_f32(v).to_f32().to_bits())
                    .collect();
                let got: Vec<u32> = md
                    .tensor_f32(&spec.name)
                    .unwrap()
                    .1
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(got, want, "{}", spec.name);
            }
        }
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert!(cfg.get("quantization_config").is_none() && cfg.get("expert_dtype").is_none());
}

#[test]
fn a_tiny_shard_limit_gives_several_shards_that_load_back_identically() {
    let (out, shards) = export_to("tiny_q", OutputDtype::Fp8, 200_000);
    assert!(shards >= 5, "{shards} shards");
    for i in 1..=shards {
        assert!(out
            .path()
            .join(format!("model-{i:05}-of-{shards:05}.safetensors"))
            .is_file());
    }
    let (single, _) = export_to("tiny_q", OutputDtype::Fp8, 5_000_000_000);
    assert_eq!(read_dir(out.path()), read_dir(single.path()));
    let a = ModelDir::open(out.path()).unwrap();
    assert_eq!(a.shard_count(), shards);
    let b = ModelDir::open(fixture("tiny_q")).unwrap();
    for spec in inventory(a.config()) {
        if spec.dtype != ReleaseDtype::I64 {
            assert_eq!(
                a.tensor_f32(&spec.name).unwrap(),
                b.tensor_f32(&spec.name).unwrap()
            );
        }
    }
    // The index: total_size = the data bytes of every tensor, every tensor mapped.
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let total: usize = read_dir(out.path()).values().map(|(_, _, b)| b.len()).sum();
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total as u64));
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        read_dir(out.path()).len()
    );
}

#[test]
fn output_carries_release_config_metadata_license_and_tokenizer() {
    let src = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_q").join(f), src.path().join(f)).unwrap();
    }
    std::fs::write(src.path().join("tokenizer.json"), "{\"tok\":1}").unwrap();
    std::fs::write(src.path().join("generation_config.json"), "{\"gen\":1}").unwrap();
    let md = ModelDir::open(src.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    export(&md, out.path(), &WriteOptions::default(), &mut |_| {}).unwrap();
    let p = out.path();
    assert_eq!(
        std::fs::read_to_string(p.join("tokenizer.json")).unwrap(),
        "{\"tok\":1}"
    );
    assert!(p.join("generation_config.json").is_file());
    assert!(!p.join("tokenizer_config.json").exists());
    assert!(std::fs::read_to_string(p.join("LICENSE"))
        .unwrap()
        .starts_with("MIT License"));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"],
        serde_json::json!({"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8",
            "scale_fmt":"ue8m0","weight_block_size":[128,128]})
    );
    assert_eq!(cfg["expert_dtype"], "fp4");
    assert_eq!(
        cfg["compress_ratios"],
        serde_json::json!([0, 4, 128, 4, 0, 4])
    );
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["DeepseekV4ForCausalLM"])
    );
    assert_eq!(cfg["max_position_embeddings"], 320);
    let bytes = std::fs::read(p.join("model-00001-of-00001.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = meta.metadata().as_ref().unwrap();
    assert_eq!(m["format"], "pt");
    assert_eq!(m["license"], "MIT");
    assert_eq!(m["producer"], PRODUCER);
    assert!(PRODUCER.starts_with("v4train "));
    // No temporary files are left behind.
    assert!(std::fs::read_dir(p).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn refuses_a_non_empty_output_unless_forced() {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("notes.txt"), "keep").unwrap();
    let e = export(&md, out.path(), &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, CheckpointError::OutputNotEmpty { .. }), "{e}");
    assert!(e.to_string().contains("not empty"));
    let force = WriteOptions {
        force: true,
        max_shard_size: 300_000,
        ..WriteOptions::default()
    };
    export(&md, out.path(), &force, &mut |_| {}).unwrap();
    // Forcing again with fewer shards removes the stale ones.
    export(
        &md,
        out.path(),
        &WriteOptions {
            force: true,
            ..WriteOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let shards = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("model-")
        })
        .count();
    assert_eq!(shards, 1);
    ModelDir::open(out.path()).unwrap();
    // Exporting onto the source itself is refused.
    let e = export(&md, &fixture("tiny_q"), &force, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("source directory"), "{e}");
}

/// The trainer's path: named f32 tensors + the inventory's specs, any order.
#[test]
fn write_checkpoint_from_named_tensors() {
    let src = ModelDir::open(fixture("tiny_a")).unwrap();
    let specs = inventory(src.config());
    let tensors: Vec<(String, Values)> = specs
        .iter()
        .rev()
        .map(|s| {
            let v = if s.dtype == ReleaseDtype::I64 {
                Values::I64(src.tensor_i64(&s.name).unwrap().1)
            } else {
                Values::F32(src.tensor_f32(&s.name).unwrap().1)
            };
            (s.name.clone(), v)
        })
        .collect();
    let out = tempfile::tempdir().unwrap();
    let o = opts(OutputDtype::F32, 1_000_000);
    let summary = write_checkpoint(out.path(), src.config(), &specs, &o, tensors).unwrap();
    assert!(summary.shards.len() >= 3);
    let back = ModelDir::open(out.path()).unwrap();
    back.check_against(&specs).unwrap();
    let original = read_file(&fixture("tiny_a/model.safetensors"));
    for s in &specs {
        assert_eq!(
            read_dir(out.path())[&s.name].2,
            original[&s.name].2,
            "{}",
            s.name
        );
    }
}

/// `tiny_q` is `tiny_a` quantized by the reference: re-quantizing `tiny_a`'s f32 weights with our
/// FP8/FP4 quantizer and BF16 rounding gives the reference's bytes for every tensor.
#[test]
fn fp8_export_of_tiny_a_equals_the_reference_quantization_tiny_q() {
    let (out, _) = export_to("tiny_a", OutputDtype::Fp8, 5_000_000_000);
    let reference = read_file(&fixture("tiny_q/model.safetensors"));
    let written = read_dir(out.path());
    for (name, (d, s, b)) in &written {
        let (rd, rs, rb) = &reference[name];
        assert_eq!((d, s), (rd, rs), "{name}");
        let differ = b.iter().zip(rb).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{name}: {differ} bytes differ");
    }
    assert_eq!(written.len() + 2, reference.len());
}

/// Re-quantizing the reference's dequantized values with the amax rule gives back the same
/// values everywhere and the same bytes in every block except those whose largest stored code is
/// exactly qmax/2 (there the values fit both scales, see `export.rs`).
#[test]
fn requantizing_dequant_values_is_lossless() {
    use v4_checkpoints::{QuantFormat, QuantizedTensor, Tensor};
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let dequant = read_file(&fixture("tiny_q/dequant.safetensors"));
    let (mut blocks, mut ambiguous) = (0, 0);
    for (name, (_, shape, bytes)) in &dequant {
        let Tensor::Quantized(stored) = md.tensor(name).unwrap() else {
            panic!("{name}")
        };
        let values = f32s(bytes);
        let q = QuantizedTensor::quantize(&values, [shape[0], shape[1]], stored.format).unwrap();
        let back: Vec<u32> = q.dequantize().iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            back,
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
        for (i, (a, b)) in q.scales.iter().zip(&stored.scales).enumerate() {
            blocks += 1;
            if a != b {
                ambiguous += 1;
                assert_eq!(*b, 2.0 * a, "{name} block {i}");
                let half_max = match stored.format {
                    QuantFormat::Fp8Block => 224.0,
                    QuantFormat::Fp4Group => 3.0,
                };
                let amax = block_amax(&values, shape, stored.format, i);
                assert_eq!(amax, half_max * b, "{name} block {i}");
            }
        }
    }
    assert_eq!((blocks, ambiguous), (4700, 875));
}

fn block_amax(v: &[f32], shape: &[usize], f: v4_checkpoints::QuantFormat, i: usize) -> f32 {
    let (r, c) = (shape[0], shape[1]);
    let ((br, bc), sc) = match f {
        v4_checkpoints::QuantFormat::Fp8Block => ((128, 128), c.div_ceil(128)),
        v4_checkpoints::QuantFormat::Fp4Group => ((1, 32), c.div_ceil(32)),
    };
    let (i0, j0) = ((i / sc) * br, (i % sc) * bc);
    let mut m = 0f32;
    for ii in i0..(i0 + br).min(r) {
        for jj in j0..(j0 + bc).min(c) {
            m = m.max(v[ii * c + jj].abs());
        }
    }
    m
}

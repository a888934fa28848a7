//! Bad input never panics: every corruption becomes a `CheckpointError` naming the file and the
//! tensor; interrupted exports are rejected as incomplete.

mod common;

use common::{copy_fixture, fixture, read_file, write_safetensors};
use safetensors::Dtype;
use std::path::Path;
use v4_checkpoints::{export, CheckpointWriter, ModelDir, WriteOptions};
use v4_model::inventory;

fn open_err(dir: &Path) -> String {
    ModelDir::open(dir).unwrap_err().to_string()
}

fn model_bytes() -> Vec<u8> {
    std::fs::read(fixture("tiny_q/model.safetensors")).unwrap()
}

fn header_len(b: &[u8]) -> usize {
    u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
}

/// Replaces the header JSON (re-padded) and keeps the data.
fn with_header(b: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = header_len(b);
    let mut h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    edit(&mut h);
    let mut hj = serde_json::to_vec(&h).unwrap();
    hj.resize(hj.len().div_ceil(8) * 8, b' ');
    let mut out = (hj.len() as u64).to_le_bytes().to_vec();
    out.extend(hj);
    out.extend(&b[8 + n..]);
    out
}

fn write_model(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn truncated_shard() {
    let t = copy_fixture("tiny_q");
    let b = model_bytes();
    write_model(t.path(), &b[..b.len() - 100]);
    let e = open_err(t.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // The last tensor in data order is named.
    assert!(e.contains("tensor `"), "{e}");
    write_model(t.path(), &b[..5]);
    assert!(open_err(t.path()).contains("truncated"));
    write_model(t.path(), &b[..1000]);
    assert!(open_err(t.path()).contains("header length"));
}

#[test]
fn corrupt_and_oversized_headers() {
    let t = copy_fixture("tiny_q");
    let mut b = model_bytes();
    b[20] = b'#';
    write_model(t.path(), &b);
    let e = open_err(t.path());
    assert!(e.contains("model.safetensors") && e.contains("JSON"), "{e}");
    let mut b = model_bytes();
    b[..8].copy_from_slice(&(200_000_000u64).to_le_bytes());
    write_model(t.path(), &b);
    assert!(open_err(t.path()).contains("100 MB"));
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    write_model(t.path(), &b);
    let _ = open_err(t.path());
}

#[test]
fn overlapping_and_out_of_bounds_offsets() {
    let t = copy_fixture("tiny_q");
    let b = with_header(&model_bytes(), |h| {
        h["norm.weight"]["data_offsets"] = serde_json::json!([0, 128]);
    });
    write_model(t.path(), &b);
    let e = open_err(t.path());
    assert!(
        e.contains("model.safetensors") && e.contains("tensor `"),
        "{e}"
    );
    let b = with_header(&model_bytes(), |h| {
        let end = h["embed.weight"]["data_offsets"][1].as_u64().unwrap();
        h["embed.weight"]["data_offsets"][1] = serde_json::json!(end + 10_000_000);
    });
    write_model(t.path(), &b);
    let e = open_err(t.path());
    assert!(e.contains("embed.weight") || e.contains("tensor `"), "{e}");
}

#[test]
fn dtype_and_shape_mismatches() {
    let t = copy_fixture("tiny_q");
    // Shape that disagrees with its byte range.
    let b = with_header(&model_bytes(), |h| {
        h["norm.weight"]["shape"] = serde_json::json!([65])
    });
    write_model(t.path(), &b);
    let e = open_err(t.path());
    assert!(e.contains("norm.weight") && e.contains("[65]"), "{e}");
    // A consistent file whose tensor has the wrong shape / dtype for the inventory.
    let b = with_header(&model_bytes(), |h| {
        h["norm.weight"]["shape"] = serde_json::json!([2, 32]);
        h["layers.0.ffn.gate.tid2eid"]["dtype"] = serde_json::json!("F64");
    });
    write_model(t.path(), &b);
    let md = ModelDir::open(t.path()).unwrap();
    let e = md
        .check_against(&inventory(md.config()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("norm.weight")
            && e.contains("[64]")
            && e.contains("[2, 32]"),
        "{e}"
    );
    let e = md
        .tensor_i64("layers.0.ffn.gate.tid2eid")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tid2eid") && e.contains("F64"), "{e}");
    // A quantized weight stored for a BF16 tensor is not acceptable.
    let b = with_header(&model_bytes(), |h| {
        h["layers.0.ffn.gate.weight"]["dtype"] = serde_json::json!("F16");
        h["layers.0.attn.q_norm.weight"]["dtype"] = serde_json::json!("I64");
        h["layers.0.attn.q_norm.weight"]["shape"] = serde_json::json!([12]);
    });
    write_model(t.path(), &b);
    let md = ModelDir::open(t.path()).unwrap();
    let e = md
        .check_against(&inventory(md.config()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("q_norm") && e.contains("not acceptable"), "{e}");
}

#[test]
fn missing_unexpected_and_bad_scales() {
    let t = copy_fixture("tiny_q");
    let src = read_file(&fixture("tiny_q/model.safetensors"));
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = src
        .iter()
        .filter(|(n, _)| *n != "layers.2.attn.wkv.scale" && *n != "norm.weight")
        .map(|(n, (d, s, b))| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    tensors.push(("layers.0.extra", Dtype::F32, vec![1], vec![0; 4]));
    for t2 in tensors
        .iter_mut()
        .filter(|t| t.0 == "layers.1.attn.wkv.scale")
    {
        t2.3[0] = 0xFF;
    }
    write_safetensors(&t.path().join("model.safetensors"), &tensors);
    let md = ModelDir::open(t.path()).unwrap();
    let inv = inventory(md.config());
    let e = md.check_against(&inv).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("`norm.weight`") && e.contains("missing"),
        "{e}"
    );
    let inv2: Vec<_> = inv
        .into_iter()
        .filter(|s| s.name != "norm.weight")
        .collect();
    let e = md.check_against(&inv2).unwrap_err().to_string();
    assert!(
        e.contains("layers.2.attn.wkv.weight") && e.contains("scale"),
        "{e}"
    );
    let e = md
        .tensor_f32("layers.1.attn.wkv.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.1.attn.wkv.scale") && e.contains("NaN"),
        "{e}"
    );
    let inv3: Vec<_> = inv2
        .into_iter()
        .filter(|s| !s.name.starts_with("layers.2.attn.wkv"))
        .collect();
    let e = md.check_against(&inv3).unwrap_err().to_string();
    assert!(
        e.contains("layers.0.extra") && e.contains("unexpected"),
        "{e}"
    );
}

fn sharded_copy() -> tempfile::TempDir {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = WriteOptions {
        max_shard_size: 300_000,
        force: true,
        ..WriteOptions::default()
    };
    export(&md, out.path(), &opts, &mut |_| {}).unwrap();
    out
}

#[test]
fn index_problems() {
    let out = sharded_copy();
    let index_path = out.path().join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path).unwrap();
    // A tensor listed in the index but missing from its shard.
    let mut v: serde_json::Value = serde_json::from_str(&index).unwrap();
    let shard = v["weight_map"]["norm.weight"].as_str().unwrap().to_string();
    let other = (1..10)
        .map(|i| {
            format!(
                "model-{i:05}-of-{:05}.safetensors",
                shard[15..20].parse::<usize>().unwrap()
            )
        })
        .find(|s| *s != shard)
        .unwrap();
    v["weight_map"]["norm.weight"] = serde_json::json!(other);
    std::fs::write(&index_path, v.to_string()).unwrap();
    let e = open_err(out.path());
    assert!(
        e.contains(&other) && e.contains("norm.weight") && e.contains("missing from this shard"),
        "{e}"
    );
    // Path traversal and garbage.
    v["weight_map"]["norm.weight"] = serde_json::json!("../x.safetensors");
    std::fs::write(&index_path, v.to_string()).unwrap();
    assert!(open_err(out.path()).contains("not a file name"));
    std::fs::write(&index_path, "{\"weight_map\": 3").unwrap();
    assert!(open_err(out.path()).contains("model.safetensors.index.json"));
    std::fs::write(&index_path, index).unwrap();
    ModelDir::open(out.path()).unwrap();
}

#[test]
fn killed_exports_are_rejected_as_incomplete() {
    // Shards committed but the index never written.
    let out = sharded_copy();
    std::fs::remove_file(out.path().join("model.safetensors.index.json")).unwrap();
    let e = open_err(out.path());
    assert!(
        e.contains("incomplete checkpoint") && e.contains("no model.safetensors.index.json"),
        "{e}"
    );
    // An index naming a shard that is not there.
    let out = sharded_copy();
    std::fs::remove_file(out.path().join("model-00002-of-00005.safetensors")).unwrap();
    let e = open_err(out.path());
    assert!(
        e.contains("incomplete checkpoint") && e.contains("model-00002-of-00005.safetensors"),
        "{e}"
    );
    // A writer dropped midway leaves only temporary shards.
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let specs = inventory(md.config());
    let dir = tempfile::tempdir().unwrap();
    let mut w = CheckpointWriter::create(
        dir.path(),
        md.config(),
        None,
        &specs,
        &WriteOptions::default(),
    )
    .unwrap();
    for s in specs.iter().take(10) {
        w.write_f32(&s.name, &md.tensor_f32(&s.name).unwrap().1)
            .unwrap();
    }
    drop(w);
    let e = open_err(dir.path());
    assert!(e.contains("incomplete checkpoint"), "{e}");
    // finish() with tensors missing refuses and writes no index.
    let dir = tempfile::tempdir().unwrap();
    let w = CheckpointWriter::create(
        dir.path(),
        md.config(),
        None,
        &specs,
        &WriteOptions::default(),
    )
    .unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("never written"), "{e}");
    assert!(open_err(dir.path()).contains("incomplete checkpoint"));
}

#[test]
fn writer_rejects_misuse() {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let specs = inventory(md.config());
    let dir = tempfile::tempdir().unwrap();
    let mut w = CheckpointWriter::create(
        dir.path(),
        md.config(),
        None,
        &specs,
        &WriteOptions::default(),
    )
    .unwrap();
    let e = w.write_f32("nope", &[1.0]).unwrap_err().to_string();
    assert!(e.contains("`nope`"), "{e}");
    let e = w
        .write_f32("norm.weight", &[1.0; 3])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("norm.weight") && e.contains("3 values") && e.contains("[64]"),
        "{e}"
    );
    let mut nan = vec![0.0f32; 96 * 64];
    nan[7] = f32::NAN;
    let e = w
        .write_f32("layers.0.attn.wkv.weight", &nan)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wkv") && e.contains("not finite"), "{e}");
    let e = w
        .write_f32("layers.0.ffn.gate.tid2eid", &[0.0; 512])
        .unwrap_err()
        .to_string();
    assert!(e.contains("tid2eid"), "{e}");
    w.write_f32("norm.weight", &[1.0; 64]).unwrap();
    let e = w
        .write_f32("norm.weight", &[1.0; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("twice"), "{e}");
}

//! Property test: random bytes, random headers and mutated copies of a real shard never make the
//! reader panic; every error names the file.

mod common;

use common::fixture;
use proptest::prelude::*;
use std::path::Path;
use v4_checkpoints::ModelDir;
use v4_model::inventory;

/// A small valid shard: a few release tensors (BF16, FP8 + scale, FP4 + scale, I64, F32).
fn base_shard() -> Vec<u8> {
    let src = std::fs::read(fixture("tiny_q/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let keep = [
        "norm.weight",
        "layers.1.attn.wo_a.weight",
        "layers.1.attn.wo_a.scale",
        "layers.1.ffn.experts.0.w2.weight",
        "layers.1.ffn.experts.0.w2.scale",
        "layers.0.ffn.gate.tid2eid",
        "hc_head_base",
    ];
    let views: Vec<_> = keep
        .iter()
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Opens the directory and touches every tensor through every API; returns the error texts.
fn exercise(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    match ModelDir::open(dir) {
        Err(e) => errors.push(e.to_string()),
        Ok(md) => {
            if let Err(e) = md.check_against(&inventory(md.config())) {
                errors.push(e.to_string());
            }
            let names: Vec<String> = md.tensor_names().map(str::to_string).collect();
            for n in names {
                for r in [md.tensor_f32(&n).map(|_| ()), md.tensor_i64(&n).map(|_| ())] {
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                }
            }
        }
    }
    errors
}

fn run_case(bytes: &[u8]) {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("tiny_q/config.json"), t.path().join("config.json")).unwrap();
    std::fs::write(t.path().join("model.safetensors"), bytes).unwrap();
    for e in exercise(t.path()) {
        assert!(
            e.contains("model.safetensors"),
            "error does not name the file: {e}"
        );
    }
}

fn header_strategy() -> impl Strategy<Value = Vec<u8>> {
    let dtype = prop::sample::select(vec![
        "F32", "BF16", "F16", "F8_E4M3", "F8_E8M0", "I8", "U8", "I32", "I64", "F64", "BOOL", "X",
    ]);
    let name = prop::sample::select(vec![
        "norm.weight",
        "layers.1.attn.wo_a.weight",
        "layers.1.attn.wo_a.scale",
        "layers.1.attn.wo_a.weight_scale_inv",
        "layers.0.ffn.gate.tid2eid",
        "__metadata__",
        "x",
    ]);
    let entry = (
        name,
        dtype,
        prop::collection::vec(0usize..300, 0..3),
        0usize..2000,
        0usize..2000,
    );
    (
        prop::collection::vec(entry, 0..6),
        prop::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(entries, data)| {
            let obj: serde_json::Map<String, serde_json::Value> = entries
                .into_iter()
                .map(|(n, d, s, a, b)| {
                    (
                        n.to_string(),
                        serde_json::json!({"dtype": d, "shape": s, "data_offsets": [a, b]}),
                    )
                })
                .collect();
            let h = serde_json::to_vec(&obj).unwrap();
            let mut out = (h.len() as u64).to_le_bytes().to_vec();
            out.extend(h);
            out.extend(data);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        run_case(&bytes);
    }

    #[test]
    fn random_headers(bytes in header_strategy()) {
        run_case(&bytes);
    }

    #[test]
    fn mutated_shard(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        header_only in any::<bool>(),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut b = base_shard();
        let n = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        for (i, v) in edits {
            let at = if header_only { i.index(n) } else { i.index(b.len()) };
            b[at] = v;
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
        }
        run_case(&b);
    }
}

#[test]
fn the_base_shard_is_valid() {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("tiny_q/config.json"), t.path().join("config.json")).unwrap();
    std::fs::write(t.path().join("model.safetensors"), base_shard()).unwrap();
    let md = ModelDir::open(t.path()).unwrap();
    assert_eq!(
        md.tensor_f32("layers.1.attn.wo_a.weight").unwrap().0,
        vec![64, 192]
    );
    assert_eq!(
        md.tensor_f32("layers.1.ffn.experts.0.w2.weight").unwrap().0,
        vec![64, 32]
    );
}

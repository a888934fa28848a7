//! Exact resume: optimizer state survives a safetensors round trip bit for bit, and a resumed run
//! continues exactly like an uninterrupted one.

mod common;

use std::collections::HashMap;

use burn::tensor::{DType, Tensor};
use common::{gaussian, host, tensor, B};
use v4_optim::{OptimConfig, V4Optimizer};

struct Params {
    norm: Tensor<B, 1>,
    wq: Tensor<B, 2>,
    experts: Tensor<B, 3>,
}

fn init() -> Params {
    Params {
        norm: tensor(&[16], &gaussian(16, 1), DType::F32),
        wq: tensor(&[12, 20], &gaussian(240, 2), DType::F32),
        experts: tensor(&[3, 8, 6], &gaussian(144, 3), DType::F32),
    }
}

fn step(opt: &mut V4Optimizer<B>, p: Params, t: u64) -> Params {
    let g1 = tensor(&[16], &gaussian(16, 10 + t), DType::F32);
    let g2 = tensor(&[12, 20], &gaussian(240, 20 + t), DType::F32);
    let g3 = tensor(&[3, 8, 6], &gaussian(144, 30 + t), DType::F32);
    Params {
        norm: opt
            .step("layers.0.attn_norm.weight", p.norm, g1, 0.01)
            .expect("adamw"),
        wq: opt
            .step("layers.0.attn.wq_a.weight", p.wq, g2, 0.01)
            .expect("muon 2-D"),
        experts: opt
            .step("layers.0.ffn.experts.w1", p.experts, g3, 0.01)
            .expect("muon 3-D"),
    }
}

fn bits(p: &Params) -> Vec<u64> {
    [
        host(p.norm.clone()),
        host(p.wq.clone()),
        host(p.experts.clone()),
    ]
    .concat()
    .into_iter()
    .map(f64::to_bits)
    .collect()
}

#[test]
fn save_load_round_trip_is_bit_exact() {
    let cfg = OptimConfig::default();
    let mut a = V4Optimizer::<B>::new(&cfg).expect("config");
    let mut p = init();
    for t in 0..2 {
        p = step(&mut a, p, t);
    }
    let path =
        std::env::temp_dir().join(format!("v4_optim_state_{}.safetensors", std::process::id()));
    a.save_state(&path).expect("save");
    let mut b = V4Optimizer::<B>::new(&cfg).expect("config");
    b.load_state(&path, &common::device()).expect("load");
    let _ = std::fs::remove_file(&path);

    let (ea, eb) = (a.export_state(), b.export_state());
    assert_eq!(ea.len(), 7, "3 step counters + 2 AdamW moments + 2 momenta");
    assert_eq!(ea.keys().collect::<Vec<_>>(), eb.keys().collect::<Vec<_>>());
    for (k, d) in &ea {
        assert_eq!(d.dtype, eb[k].dtype, "{k}");
        assert_eq!(d.as_bytes(), eb[k].as_bytes(), "{k}");
    }
    assert_eq!(b.states()["layers.0.ffn.experts.w1"].shape(), &[3, 8, 6]);
    assert_eq!(b.states()["layers.0.attn.wq_a.weight"].step(), 2);

    let pa = step(&mut a, Params { ..clone(&p) }, 2);
    let pb = step(&mut b, p, 2);
    assert_eq!(bits(&pa), bits(&pb));
}

fn clone(p: &Params) -> Params {
    Params {
        norm: p.norm.clone(),
        wq: p.wq.clone(),
        experts: p.experts.clone(),
    }
}

#[test]
fn import_rejects_wrong_shapes_and_foreign_files() {
    let mut a = V4Optimizer::<B>::new(&OptimConfig::default()).expect("config");
    let _ = step(&mut a, init(), 0);
    let map = a.export_state();
    let mut shapes: HashMap<String, Vec<usize>> = a
        .states()
        .iter()
        .map(|(k, s)| (k.clone(), s.shape().to_vec()))
        .collect();
    shapes.insert("layers.0.attn.wq_a.weight".into(), vec![5, 5]);
    let mut b = V4Optimizer::<B>::new(&OptimConfig::default()).expect("config");
    assert!(b.import_state(&map, &shapes, &common::device()).is_err());
    assert!(b
        .state_from_bytes(b"not a safetensors file", &common::device())
        .is_err());
}

//! A frozen base kept in its stored FP8/FP4 form (`v4_model::stored_weight`) against the same
//! base dequantized at load, on the reference's quantized fixture `tiny_q`: the code tables agree
//! with the checkpoint codecs, every stored weight dequantizes to the reader's values bit for
//! bit, and the forward logits and the adapters' gradients are identical.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use common::fixture;
use v4_checkpoints::{e8m0, fp4, fp8, ModelDir};
use v4_model::lora::{LoraBuilder, LoraSpec};
use v4_model::named::{NamedParam, Value};
use v4_model::stored_weight::{e2m1, e4m3, e8m0 as e8m0_value};
use v4_model::{ForwardOptions, MapSource, V4Model, WeightSource};

type AD = Autodiff<Flex>;

#[test]
fn code_tables_match_the_checkpoint_codecs() {
    let t = fp8::table();
    for c in 0..=255u8 {
        let (a, b) = (e4m3(c), t[usize::from(c)]);
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "e4m3 {c:#x}"
        );
        assert_eq!(
            e2m1(c).to_bits(),
            fp4::decode(c & 0x0F).to_bits(),
            "e2m1 {c:#x}"
        );
        match e8m0::decode(c) {
            Some(v) => assert_eq!(e8m0_value(c).to_bits(), v.to_bits(), "e8m0 {c}"),
            None => assert!(e8m0_value(c).is_nan()),
        }
    }
}

fn load(stored: bool, spec: &LoraSpec, saved: &MapSource) -> V4Model<AD> {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let cfg = md.config().clone();
    let b = LoraBuilder {
        spec,
        saved: Some(saved as &dyn WeightSource),
    };
    V4Model::<AD>::load_adapted(
        &cfg,
        &md as &dyn WeightSource,
        Some(&b),
        stored,
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn stored_base_equals_the_dequantized_base() {
    let md = ModelDir::open(fixture("tiny_q")).unwrap();
    let cfg = md.config().clone();
    let spec = LoraSpec {
        rank: 2,
        alpha: 2.0,
        ..LoraSpec::default()
    };
    // Random non-zero adapters under every name the spec targets.
    let fresh = V4Model::<Flex>::load_adapted(
        &cfg,
        &md as &dyn WeightSource,
        Some(&LoraBuilder {
            spec: &spec,
            saved: None,
        }),
        false,
        &Default::default(),
    )
    .unwrap();
    let mut saved = MapSource::default();
    let mut seed = 1u64;
    fresh.visit_named(&mut |name, p| {
        if v4_model::lora::is_adapter(&name) {
            for (n, shape, v) in p.release_tensors(&name, &Value) {
                let v = v
                    .iter()
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                    })
                    .collect();
                saved.floats.insert(n, (shape, v));
            }
        }
    });
    let (dense, stored) = (load(false, &spec, &saved), load(true, &spec, &saved));

    // Every stored weight reads back as the reader's dequantized values.
    let mut n_stored = 0;
    stored.visit_named(&mut |name, p| {
        if let NamedParam::Stored(_) = p {
            for (n, _, v) in p.release_tensors(&name, &Value) {
                let (_, want) = md.tensor_f32(&n).unwrap();
                assert!(
                    v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{n}"
                );
                n_stored += 1;
            }
        }
    });
    assert!(n_stored > 50, "only {n_stored} weights kept stored");

    let ids: Vec<i64> = (0..48)
        .map(|i| (i * 37 + 11) % cfg.vocab_size as i64)
        .collect();
    let ids = Tensor::<AD, 2, Int>::from_data(TensorData::new(ids, [1, 48]), &Default::default());
    let opts = ForwardOptions {
        fake_quant: false,
        ..ForwardOptions::default()
    };
    let run = |m: &V4Model<AD>| {
        let out = m.forward(ids.clone(), opts, false, true);
        let mut loss = out.logits.clone().powi_scalar(2).mean();
        for t in &out.mtp_logits {
            loss = loss + t.clone().powi_scalar(2).mean();
        }
        let g = loss.backward();
        let mut grads = Vec::new();
        m.visit_named(&mut |name, p| {
            if v4_model::lora::is_adapter(&name) {
                grads.push((
                    name.clone(),
                    p.release_tensors(&name, &v4_model::named::Grad::<AD>(&g)),
                ));
            }
        });
        (v4_model::util::to_vec(out.logits.inner()), grads)
    };
    let ((la, ga), (lb, gb)) = (run(&dense), run(&stored));
    assert!(
        la.iter().zip(&lb).all(|(a, b)| a.to_bits() == b.to_bits()),
        "logits differ"
    );
    assert_eq!(ga.len(), gb.len());
    let mut nonzero = 0;
    for ((na, a), (_, b)) in ga.iter().zip(&gb) {
        for ((_, _, va), (_, _, vb)) in a.iter().zip(b) {
            let d = va
                .iter()
                .zip(vb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let m = va.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                d <= 1e-6 * m.max(1e-12),
                "{na}: gradient differs by {d} (max {m})"
            );
            nonzero += usize::from(m > 0.0);
        }
    }
    assert!(nonzero > 20, "only {nonzero} adapters got a gradient");
}

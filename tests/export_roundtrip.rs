//! `export --dtype bf16` of `tiny_a` reloads to the same forward output as the model with its
//! weights rounded to bf16 in memory (bit-identical logits),.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use std::path::Path;
use v4_checkpoints::{export, ModelDir, OutputDtype, WriteOptions};
use v4_model::{inventory, ForwardOptions, MapSource, ReleaseDtype, V4Model, WeightSource};

fn fixture(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn logits(model: &V4Model<Flex>) -> Vec<f32> {
    let ids: Vec<i64> = (0..64).map(|i| (i * 37 + 11) % 256).collect();
    let ids: Tensor<Flex, 2, Int> =
        Tensor::from_data(TensorData::new(ids, [1, 64]), &Default::default());
    let out = model.forward(ids, ForwardOptions::default(), false, true);
    let mut v = v4_model::util::to_vec(out.logits);
    v.extend(v4_model::util::to_vec(out.mtp_logits[0].clone()));
    v
}

fn bf16_round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

#[test]
fn bf16_export_reloads_to_the_same_forward_output() {
    let src = ModelDir::open(fixture("tiny_a")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = WriteOptions {
        dtype: OutputDtype::Bf16,
        max_shard_size: 300_000,
        ..Default::default()
    };
    export(&src, out.path(), &opts, &mut |_| {}).unwrap();
    let reloaded = ModelDir::open(out.path()).unwrap();
    assert!(reloaded.shard_count() > 1);
    let cfg = src.config().clone();
    reloaded.check_against(&inventory(&cfg)).unwrap();
    let dev = Default::default();
    let from_export = V4Model::<Flex>::load(&cfg, &reloaded as &dyn WeightSource, &dev).unwrap();

    let mut mem = MapSource::default();
    for spec in inventory(&cfg) {
        if spec.dtype == ReleaseDtype::I64 {
            let v = WeightSource::tensor_i64(&src, &spec.name, &spec.shape).unwrap();
            mem.ints.insert(spec.name, (spec.shape, v));
            continue;
        }
        let mut v = WeightSource::tensor_f32(&src, &spec.name, &spec.shape).unwrap();
        if spec.dtype != ReleaseDtype::F32 {
            v.iter_mut().for_each(|x| *x = bf16_round(*x));
        }
        mem.floats.insert(spec.name, (spec.shape, v));
    }
    let rounded = V4Model::<Flex>::load(&cfg, &mem, &dev).unwrap();
    let (a, b) = (logits(&from_export), logits(&rounded));
    assert_eq!(
        a, b,
        "bf16 export must reload to the bf16-rounded model exactly"
    );
    // and bf16 rounding is a real change from the f32 original
    let original = V4Model::<Flex>::load(&cfg, &src as &dyn WeightSource, &dev).unwrap();
    assert_ne!(logits(&original), a);
}

//! Fixture access for the parity tests: the reference's golden tensors (copied into
//! `tests/fixtures/` at the workspace root).

#![allow(dead_code)]

pub mod packed;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::PathBuf;
use v4_model::{MapSource, ModelConfig, V4Model};

pub type B = Flex;

/// The whole process runs f64: every float tensor the model creates (weights, masks, rope
/// tables) takes the device's default float dtype. Call it before creating any tensor.
pub fn use_f64() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        burn::tensor::set_default_dtypes::<Flex>(
            &Default::default(),
            burn::tensor::FloatDType::F64,
            burn::tensor::IntDType::I32,
        )
        .expect("set the default float dtype before any tensor is created");
    });
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

pub struct Tensors {
    pub floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

pub fn read(path: PathBuf) -> Tensors {
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut t = Tensors {
        floats: HashMap::new(),
        ints: HashMap::new(),
    };
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let d = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = d
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                t.floats.insert(name, (shape, v));
            }
            Dtype::I64 => {
                let v = d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                t.ints.insert(name, (shape, v));
            }
            Dtype::I32 => {
                let v = d
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect();
                t.ints.insert(name, (shape, v));
            }
            other => panic!("fixture dtype {other:?} for {name}"),
        }
    }
    t
}

pub fn load_model(name: &str) -> V4Model<B> {
    let cfg = ModelConfig::from_file(&fixture(name).join("config.json")).unwrap();
    let w = read(fixture(name).join("model.safetensors"));
    let src = MapSource {
        floats: w.floats,
        ints: w.ints,
    };
    V4Model::load(&cfg, &src, &Default::default()).unwrap()
}

pub fn ids(io: &Tensors) -> Tensor<B, 2, Int> {
    let (shape, v) = &io.ints["input_ids"];
    Tensor::from_data(
        TensorData::new(v.clone(), [shape[0], shape[1]]),
        &Default::default(),
    )
}

pub fn float<const D: usize>(io: &Tensors, name: &str) -> Tensor<B, D> {
    let (shape, v) = &io.floats[name];
    let s: [usize; D] = shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(v.clone(), s), &Default::default())
}

pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// (max abs error, mean abs error, fraction within `tol`).
pub fn compare(got: &[f32], want: &[f32], tol: f32) -> (f32, f32, f32) {
    assert_eq!(got.len(), want.len(), "length");
    let mut max = 0f32;
    let mut sum = 0f64;
    let mut within = 0usize;
    for (g, w) in got.iter().zip(want) {
        let e = (g - w).abs();
        assert!(e.is_finite(), "non-finite output");
        max = max.max(e);
        sum += e as f64;
        within += (e <= tol) as usize;
    }
    (
        max,
        (sum / got.len() as f64) as f32,
        within as f32 / got.len() as f32,
    )
}

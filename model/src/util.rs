//! Small tensor helpers shared by the modules.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Host copy of a float tensor's values (row-major) as f32.
pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    let data = t.into_data().convert::<f32>();
    data.into_vec::<f32>().unwrap_or_default()
}

/// Host copy of an int tensor's values as i64.
pub fn to_vec_int<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    let data = t.into_data().convert::<i64>();
    data.into_vec::<i64>().unwrap_or_default()
}

/// A float tensor from host values.
pub fn tensor_from<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// An int tensor from host values.
pub fn int_tensor_from<B: Backend, const D: usize>(
    values: Vec<i64>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A bool tensor from host values.
pub fn bool_tensor_from<B: Backend, const D: usize>(
    values: Vec<bool>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, burn::tensor::Bool> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

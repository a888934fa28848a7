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

/// The `n × n` 0/1 matrix with a one where `one(row, col)`: constant sums and permutations
/// applied as products.
pub fn indicator<B: Backend>(
    n: usize,
    one: impl Fn(usize, usize) -> bool,
    device: &B::Device,
) -> Tensor<B, 2> {
    let values = (0..n * n)
        .map(|i| f32::from(u8::from(one(i / n, i % n))))
        .collect();
    tensor_from(values, [n, n], device)
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

/// The index tensor of host positions `ids` (for `select`).
pub fn index_tensor<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    int_tensor_from(v, [ids.len()], device)
}

/// A bool tensor from host values.
pub fn bool_tensor_from<B: Backend, const D: usize>(
    values: Vec<bool>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, burn::tensor::Bool> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A per-forward memo: values computed once per key and handed out as clones (tensors are
/// reference-counted, so a clone shares the buffer).
#[derive(Debug)]
pub struct Memo<K, V>(std::cell::RefCell<Vec<(K, V)>>);

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self(std::cell::RefCell::new(Vec::new()))
    }
}

impl<K: PartialEq, V: Clone> Memo<K, V> {
    /// The value of `key`, computed by `make` the first time.
    pub fn get_or(&self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some((_, v)) = self.0.borrow().iter().find(|(k, _)| *k == key) {
            return v.clone();
        }
        let v = make();
        self.0.borrow_mut().push((key, v.clone()));
        v
    }
}

/// Rows `index` `[b, s, k]` (entries `0..n` of each batch row) of `entries` `[b, n, D]`,
/// gathered into `[b·s, k, D]`: the entries each query attends.
pub fn gather_entries<B: Backend>(entries: Tensor<B, 3>, index: Tensor<B, 3, Int>) -> Tensor<B, 3> {
    let [b, n, d] = entries.dims();
    let [_, s, k] = index.dims();
    let offset = Tensor::<B, 1, Int>::arange(0..b as i64, &index.device())
        .mul_scalar(n as i64)
        .reshape([b, 1, 1]);
    let flat = (index + offset).reshape([b * s * k]);
    entries
        .reshape([b * n, d])
        .select(0, flat)
        .reshape([b * s, k, d])
}

//! The seam between the model and checkpoint storage: the model asks a [`WeightSource`] for each
//! tensor of the release inventory by name, in checkpoint orientation (`[out, in]`), already
//! dequantized to f32; the `v4-checkpoints` crate implements it over safetensors shards.

use crate::error::ModelError;
use crate::stored_weight::StoredTensor;

/// Gives the model the values of checkpoint tensors.
pub trait WeightSource {
    /// The f32 values (row-major, checkpoint orientation) of `name`; an error names the tensor
    /// when it is missing or its shape differs from `shape`.
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError>;
    /// The integer values of `name` (`tid2eid`), accepting int32 or int64 storage.
    fn tensor_i64(&self, name: &str, shape: &[usize]) -> Result<Vec<i64>, ModelError>;
    /// The stored FP8/FP4 form of the matrix `name` (`[out, in]`), when the source holds it
    /// quantized; `None` when it is stored as floats (read it with [`Self::tensor_f32`]).
    fn tensor_stored(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Option<StoredTensor>, ModelError> {
        let _ = (name, shape);
        Ok(None)
    }
}

/// An in-memory source, for tests and random initialisation.
#[derive(Debug, Default, Clone)]
pub struct MapSource {
    /// name → (shape, f32 values).
    pub floats: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// name → (shape, int values).
    pub ints: std::collections::HashMap<String, (Vec<usize>, Vec<i64>)>,
}

fn check_shape(name: &str, want: &[usize], got: &[usize]) -> Result<(), ModelError> {
    if want != got {
        return Err(ModelError::Weight {
            name: name.to_string(),
            message: format!("expected shape {want:?}, found {got:?}"),
        });
    }
    Ok(())
}

fn missing(name: &str) -> ModelError {
    ModelError::Weight {
        name: name.to_string(),
        message: "missing from the checkpoint".into(),
    }
}

impl WeightSource for MapSource {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (s, v) = self.floats.get(name).ok_or_else(|| missing(name))?;
        check_shape(name, shape, s)?;
        Ok(v.clone())
    }

    fn tensor_i64(&self, name: &str, shape: &[usize]) -> Result<Vec<i64>, ModelError> {
        let (s, v) = self.ints.get(name).ok_or_else(|| missing(name))?;
        check_shape(name, shape, s)?;
        Ok(v.clone())
    }
}

//! `impl v4_model::WeightSource for ModelDir`: the model reads each inventory tensor as f32 in
//! checkpoint orientation; the shape is checked before anything is decoded.

use crate::error::CheckpointError;
use crate::quantized::QuantFormat;
use crate::reader::{ModelDir, Tensor};
use v4_model::stored_weight::StoredTensor;
use v4_model::{ModelError, WeightSource};

fn weight_error(name: &str, e: CheckpointError) -> ModelError {
    ModelError::Weight {
        name: name.to_string(),
        message: e.to_string(),
    }
}

impl ModelDir {
    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<(), ModelError> {
        let layout = self.layout(name).map_err(|e| weight_error(name, e))?;
        if layout.shape != shape {
            return Err(ModelError::Weight {
                name: name.to_string(),
                message: format!(
                    "expected shape {shape:?}, found {:?} in {}",
                    layout.shape,
                    layout.raw.file.display()
                ),
            });
        }
        Ok(())
    }
}

impl WeightSource for ModelDir {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.check_shape(name, shape)?;
        ModelDir::tensor_f32(self, name)
            .map(|(_, v)| v)
            .map_err(|e| weight_error(name, e))
    }

    fn tensor_i64(&self, name: &str, shape: &[usize]) -> Result<Vec<i64>, ModelError> {
        self.check_shape(name, shape)?;
        ModelDir::tensor_i64(self, name)
            .map(|(_, v)| v)
            .map_err(|e| weight_error(name, e))
    }

    fn tensor_stored(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Option<StoredTensor>, ModelError> {
        self.check_shape(name, &shape)?;
        let Tensor::Quantized(q) = self.tensor(name).map_err(|e| weight_error(name, e))? else {
            return Ok(None);
        };
        let scales = q.scales_e8m0().ok_or_else(|| ModelError::Weight {
            name: name.to_string(),
            message: "its scales are not all powers of two (E8M0), so it cannot be kept in \
                      its stored form; load the base dequantized ([finetune] base = \"f32\")"
                .into(),
        })?;
        Ok(Some(StoredTensor {
            fp4: q.format == QuantFormat::Fp4Group,
            codes: q.data.into_owned(),
            scales,
        }))
    }
}

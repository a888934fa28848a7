//! Optimizer state save/load for exact resume: every moment and step counter as named host
//! tensors (`exp_avg/<param>`, `exp_avg_sq/<param>`, `momentum/<param>` in their f32/f64 state
//! dtype, `step/<param>` as one i64), and a safetensors encoding of that map. Bit-exact.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::error::{OptimError, Result};
use crate::optimizer::{ParamState, V4Optimizer};

const FORMAT: &str = "v4-optim-state/1";

fn data_err(e: impl std::fmt::Debug) -> OptimError {
    OptimError::Data(format!("{e:?}"))
}

fn host<B: Backend>(t: &Tensor<B, 1>) -> TensorData {
    t.to_data()
}

fn st_dtype(dtype: DType) -> Result<Dtype> {
    match dtype {
        DType::F32 => Ok(Dtype::F32),
        DType::F64 => Ok(Dtype::F64),
        DType::I64 => Ok(Dtype::I64),
        other => Err(OptimError::State(format!(
            "unsupported state dtype {other:?}"
        ))),
    }
}

/// Decodes little-endian bytes of a safetensors tensor into Burn host data, bit for bit.
fn from_view(view: &TensorView<'_>) -> Result<TensorData> {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    macro_rules! decode {
        ($t:ty, $n:expr) => {
            TensorData::new(
                bytes
                    .chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])))
                    .collect::<Vec<$t>>(),
                shape,
            )
        };
    }
    match view.dtype() {
        Dtype::F32 => Ok(decode!(f32, 4)),
        Dtype::F64 => Ok(decode!(f64, 8)),
        Dtype::I64 => Ok(decode!(i64, 8)),
        other => Err(OptimError::State(format!("unsupported dtype {other:?}"))),
    }
}

impl<B: Backend> V4Optimizer<B> {
    /// Every moment and step counter as named host tensors.
    pub fn export_state(&self) -> BTreeMap<String, TensorData> {
        let mut out = BTreeMap::new();
        for (name, state) in &self.states {
            let step = TensorData::new(vec![state.step() as i64], [1]);
            out.insert(format!("step/{name}"), step);
            match state {
                ParamState::AdamW {
                    exp_avg,
                    exp_avg_sq,
                    ..
                } => {
                    out.insert(format!("exp_avg/{name}"), host(exp_avg));
                    out.insert(format!("exp_avg_sq/{name}"), host(exp_avg_sq));
                }
                ParamState::Muon { momentum, .. } => {
                    out.insert(format!("momentum/{name}"), host(momentum));
                }
            }
        }
        out
    }

    /// Replaces all state by `map` (as written by [`Self::export_state`]); `shapes` gives each
    /// parameter's shape (moments are stored flat).
    pub fn import_state(
        &mut self,
        map: &BTreeMap<String, TensorData>,
        shapes: &HashMap<String, Vec<usize>>,
        device: &B::Device,
    ) -> Result<()> {
        let mut states = BTreeMap::new();
        for (key, data) in map {
            let Some(name) = key.strip_prefix("step/") else {
                continue;
            };
            let step = data.to_vec::<i64>().map_err(data_err)?;
            let step = step.first().copied().unwrap_or(0).max(0) as u64;
            let shape = shapes
                .get(name)
                .cloned()
                .ok_or_else(|| OptimError::State(format!("no shape for `{name}`")))?;
            let numel: usize = shape.iter().product();
            let load = |prefix: &str| -> Result<Option<Tensor<B, 1>>> {
                let Some(d) = map.get(&format!("{prefix}/{name}")) else {
                    return Ok(None);
                };
                if d.num_elements() != numel {
                    return Err(OptimError::ShapeMismatch {
                        name: name.to_string(),
                        expected: vec![numel],
                        got: d.shape.to_vec(),
                    });
                }
                let dtype = d.dtype;
                Ok(Some(Tensor::from_data(d.clone(), (device, dtype))))
            };
            let state = if let Some(momentum) = load("momentum")? {
                ParamState::Muon {
                    step,
                    shape,
                    momentum,
                }
            } else {
                let missing = || OptimError::State(format!("no moments for `{name}`"));
                ParamState::AdamW {
                    step,
                    shape,
                    exp_avg: load("exp_avg")?.ok_or_else(missing)?,
                    exp_avg_sq: load("exp_avg_sq")?.ok_or_else(missing)?,
                }
            };
            states.insert(name.to_string(), state);
        }
        self.states = states;
        Ok(())
    }

    /// The state as a safetensors file image (shapes kept in the metadata).
    pub fn state_to_bytes(&self) -> Result<Vec<u8>> {
        let map = self.export_state();
        let mut views = Vec::with_capacity(map.len());
        for (k, d) in &map {
            views.push((
                k.as_str(),
                TensorView::new(st_dtype(d.dtype)?, d.shape.to_vec(), d.as_bytes())?,
            ));
        }
        let shapes: BTreeMap<&str, &[usize]> = self
            .states
            .iter()
            .map(|(k, s)| (k.as_str(), s.shape()))
            .collect();
        let shapes =
            serde_json::to_string(&shapes).map_err(|e| OptimError::State(e.to_string()))?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("shapes".to_string(), shapes),
        ]);
        Ok(safetensors::serialize(views, Some(meta))?)
    }

    /// Restores the state from [`Self::state_to_bytes`] output.
    pub fn state_from_bytes(&mut self, bytes: &[u8], device: &B::Device) -> Result<()> {
        let st = SafeTensors::deserialize(bytes)?;
        let (_, header) = SafeTensors::read_metadata(bytes)?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(OptimError::State(format!("not a {FORMAT} file")));
        }
        let shapes: HashMap<String, Vec<usize>> =
            serde_json::from_str(meta.get("shapes").map(String::as_str).unwrap_or("{}"))
                .map_err(|e| OptimError::State(e.to_string()))?;
        let mut map = BTreeMap::new();
        for (name, view) in st.iter() {
            map.insert(name.to_string(), from_view(&view)?);
        }
        self.import_state(&map, &shapes, device)
    }

    /// Writes the state to a safetensors file.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        Ok(std::fs::write(path, self.state_to_bytes()?)?)
    }

    /// Loads the state from a safetensors file.
    pub fn load_state(&mut self, path: &Path, device: &B::Device) -> Result<()> {
        let bytes = std::fs::read(path)?;
        self.state_from_bytes(&bytes, device)
    }
}

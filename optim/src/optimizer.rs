//! The V4 optimizer over Burn tensors: routes each named parameter (spec §2.3) to Muon or AdamW and
//! keeps its state, keyed by parameter name, in f32 (f64 when the parameter is f64).

use std::collections::BTreeMap;

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::adamw::{adamw_update, AdamWMoments};
use crate::config::{OptimConfig, OptimSettings};
use crate::error::{OptimError, Result};
use crate::muon::muon_update;
use crate::routing::{route, OptimizerKind, ParamGroup};

/// Optimizer state of one parameter; moments are stored flattened.
#[derive(Debug, Clone)]
pub enum ParamState<B: Backend> {
    /// AdamW moments.
    AdamW {
        /// Steps taken.
        step: u64,
        /// Parameter shape.
        shape: Vec<usize>,
        /// First moment, flattened.
        exp_avg: Tensor<B, 1>,
        /// Second moment, flattened.
        exp_avg_sq: Tensor<B, 1>,
    },
    /// Muon momentum buffer.
    Muon {
        /// Steps taken.
        step: u64,
        /// Parameter shape.
        shape: Vec<usize>,
        /// Momentum, flattened.
        momentum: Tensor<B, 1>,
    },
}

impl<B: Backend> ParamState<B> {
    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        match self {
            ParamState::AdamW { step, .. } | ParamState::Muon { step, .. } => *step,
        }
    }

    /// Parameter shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            ParamState::AdamW { shape, .. } | ParamState::Muon { shape, .. } => shape,
        }
    }

    /// The optimizer owning this state.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            ParamState::AdamW { .. } => OptimizerKind::AdamW,
            ParamState::Muon { .. } => OptimizerKind::Muon,
        }
    }
}

/// Muon + AdamW with per-parameter routing and named state.
#[derive(Debug, Clone)]
pub struct V4Optimizer<B: Backend> {
    settings: OptimSettings,
    pub(crate) states: BTreeMap<String, ParamState<B>>,
}

/// The state dtype for a parameter dtype: f64 stays f64, everything else is kept in f32.
pub fn state_dtype(param: DType) -> DType {
    if param == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

impl<B: Backend> V4Optimizer<B> {
    /// Builds the optimizer from the `[optim]` table.
    pub fn new(cfg: &OptimConfig) -> Result<Self> {
        Ok(Self::with_settings(cfg.resolve()?))
    }

    /// Orthogonalises Muon's matrix stacks on `threads` host threads (CPU backends; see
    /// [`crate::muon::MuonSettings::ns_threads`]).
    pub fn set_ns_threads(&mut self, threads: usize) {
        self.settings.muon.ns_threads = threads.max(1);
    }

    /// Trains LoRA adapters with `kind` (AdamW or Muon) instead of AdamW.
    pub fn set_adapter_optimizer(&mut self, kind: OptimizerKind) {
        self.settings.adapter_optimizer = kind;
    }

    /// Builds the optimizer from resolved settings.
    pub fn with_settings(settings: OptimSettings) -> Self {
        Self {
            settings,
            states: BTreeMap::new(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &OptimSettings {
        &self.settings
    }

    /// State of every parameter stepped so far.
    pub fn states(&self) -> &BTreeMap<String, ParamState<B>> {
        &self.states
    }

    /// One update of parameter `name` with learning rate `lr`; returns the new parameter (same
    /// dtype as `param`). Muon parameters must be 2-D or 3-D (`[E, n, m]` = E matrices).
    /// With an autodiff backend, pass the inner-backend tensors (`param.inner()`, the gradient from
    /// `grads`) so the update is not recorded in the graph.
    pub fn step<const D: usize>(
        &mut self,
        name: &str,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        lr: f64,
    ) -> Result<Tensor<B, D>> {
        let group = route(name, D)?;
        let dims = param.dims();
        if grad.dims() != dims {
            return Err(OptimError::ShapeMismatch {
                name: name.to_string(),
                expected: dims.to_vec(),
                got: grad.dims().to_vec(),
            });
        }
        let out_dtype = param.dtype();
        let dtype = state_dtype(out_dtype);
        let param = param.cast(dtype);
        let grad = grad.cast(dtype);
        let wd = self.settings.weight_decay(group);
        let prev = self.take_state(name, group, &dims)?;
        let numel = dims.iter().product::<usize>();
        let zeros = || Tensor::<B, 1>::zeros([numel], (&param.device(), dtype));
        let (new_param, state) = match self.settings.optimizer_of(group) {
            OptimizerKind::Excluded => return Err(OptimError::Excluded(name.to_string())),
            OptimizerKind::Muon => {
                let (step, momentum) = match prev {
                    Some(ParamState::Muon { step, momentum, .. }) => (step, momentum),
                    _ => (0, zeros()),
                };
                let momentum = momentum.cast(dtype).reshape(dims);
                let (p, m) = muon_update(&self.settings.muon, param, grad, momentum, lr, wd)
                    .map_err(|_| OptimError::MuonRank {
                        name: name.to_string(),
                        rank: D,
                    })?;
                let state = ParamState::Muon {
                    step: step + 1,
                    shape: dims.to_vec(),
                    momentum: m.reshape([numel]),
                };
                (p, state)
            }
            OptimizerKind::AdamW => {
                let (step, exp_avg, exp_avg_sq) = match prev {
                    Some(ParamState::AdamW {
                        step,
                        exp_avg,
                        exp_avg_sq,
                        ..
                    }) => (step, exp_avg, exp_avg_sq),
                    _ => (0, zeros(), zeros()),
                };
                let mut moments = AdamWMoments {
                    exp_avg: exp_avg.cast(dtype).reshape(dims),
                    exp_avg_sq: exp_avg_sq.cast(dtype).reshape(dims),
                };
                let cfg = &self.settings.adamw;
                let p = adamw_update(cfg, param, grad, &mut moments, step + 1, lr, wd);
                let state = ParamState::AdamW {
                    step: step + 1,
                    shape: dims.to_vec(),
                    exp_avg: moments.exp_avg.reshape([numel]),
                    exp_avg_sq: moments.exp_avg_sq.reshape([numel]),
                };
                (p, state)
            }
        };
        self.states.insert(name.to_string(), state);
        Ok(new_param.cast(out_dtype))
    }

    /// Removes and returns the state of `name` after checking it fits the parameter.
    fn take_state(
        &mut self,
        name: &str,
        group: ParamGroup,
        dims: &[usize],
    ) -> Result<Option<ParamState<B>>> {
        let Some(state) = self.states.get(name) else {
            return Ok(None);
        };
        if state.kind() != self.settings.optimizer_of(group) {
            return Err(OptimError::StateKind(name.to_string()));
        }
        if state.shape() != dims {
            return Err(OptimError::ShapeMismatch {
                name: name.to_string(),
                expected: state.shape().to_vec(),
                got: dims.to_vec(),
            });
        }
        Ok(self.states.remove(name))
    }
}

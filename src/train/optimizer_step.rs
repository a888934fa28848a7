//! One optimizer update over the whole model (training spec §2.3): every parameter that received a
//! gradient is updated by [`V4Optimizer`] under its release name, so the name-based routing
//! (Muon for matrices, AdamW for embeddings, head, norms, mHC biases/gates, sinks, `ape`) applies.
//! Burn 0.21 has no per-parameter optimizer groups; this mapper is the bridge.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use v4_model::named::stack_of;
use v4_model::V4Model;
use v4_optim::{OptimError, V4Optimizer};

struct NamedUpdate<'a, B: AutodiffBackend> {
    names: HashMap<ParamId, String>,
    grads: GradientsParams,
    optimizer: &'a mut V4Optimizer<B::InnerBackend>,
    lr: f64,
    error: Option<OptimError>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for NamedUpdate<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(name) = self.names.get(&param.id) else {
            return param;
        };
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return param;
        };
        if self.error.is_some() {
            return param;
        }
        let (id, value, mapper) = param.consume();
        let inner = value.inner();
        let (dims, device) = (inner.dims(), inner.device());
        // The parameter moves into the update (no clone), so its last products run in place.
        let updated = match self.optimizer.step(name, inner, grad, self.lr) {
            Ok(t) => t,
            Err(e) => {
                // The run stops here: `apply_optimizer` returns the error and drops the model.
                self.error = Some(e);
                Tensor::zeros(dims, &device)
            }
        };
        Param::from_mapped_value(id, Tensor::from_inner(updated).require_grad(), mapper)
    }
}

/// Updates every parameter of `model` that has a gradient in `grads`, at learning rate `lr`.
pub fn apply_optimizer<B: AutodiffBackend>(
    model: V4Model<B>,
    grads: GradientsParams,
    optimizer: &mut V4Optimizer<B::InnerBackend>,
    lr: f64,
) -> Result<V4Model<B>, OptimError> {
    let mut names = HashMap::new();
    model.visit_named(&mut |name, p| {
        if let Some((id, _)) = p.float_id() {
            names.insert(id, name);
        }
    });
    let mut mapper = NamedUpdate::<B> {
        names,
        grads,
        optimizer,
        lr,
        error: None,
    };
    let model = burn::module::Module::map(model, &mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok(model),
    }
}

/// Checks that every parameter state restored from `file` belongs to a parameter of `model`
/// (under the name the optimizer keys it by), so none is silently dropped on resume. State
/// written per routed expert, before the experts were stacked, is named as such.
pub fn check_state_names<B: AutodiffBackend>(
    model: &V4Model<B>,
    optimizer: &V4Optimizer<B::InnerBackend>,
    file: &Path,
) -> anyhow::Result<()> {
    let mut names = HashSet::new();
    model.visit_named(&mut |name, p| {
        if p.float_id().is_some() {
            names.insert(name);
        }
    });
    let Some(name) = optimizer.states().keys().find(|n| !names.contains(*n)) else {
        return Ok(());
    };
    match stack_of(name) {
        Some((stack, _)) => anyhow::bail!(
            "{}: the optimizer state of `{name}` is per routed expert, written by a v4train from \
             before routed experts were stacked; this version keeps one state per stack \
             (`{stack}`) and cannot resume it. Fine-tune from the checkpoint's weights instead \
             (`[model] dir` = that checkpoint directory, a new run directory): the optimizer \
             state starts afresh",
            file.display()
        ),
        None => anyhow::bail!(
            "{}: optimizer state for `{name}`, which is not a parameter of this model",
            file.display()
        ),
    }
}

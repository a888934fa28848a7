//! One optimizer update over the whole model (training spec §2.3): every parameter that received a
//! gradient is updated by [`V4Optimizer`] under its release name, so the name-based routing
//! (Muon for matrices, AdamW for embeddings, head, norms, mHC biases/gates, sinks, `ape`) applies.
//! Burn 0.21 has no per-parameter optimizer groups; this mapper is the bridge.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::collections::HashMap;
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
        let updated = match self.optimizer.step(name, inner.clone(), grad, self.lr) {
            Ok(t) => t,
            Err(e) => {
                self.error = Some(e);
                inner
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

//! Gradient bookkeeping of one optimizer step: accumulation over micro-batches and the global
//! gradient-norm clip (training spec §2.3: clipping over all parameters, then the update).

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use v4_model::V4Model;
use v4_optim::GradNorm;

/// (id, rank) of every float parameter.
fn float_params<B: AutodiffBackend>(model: &V4Model<B>) -> Vec<(burn::module::ParamId, usize)> {
    let mut ids = Vec::new();
    model.visit_named(&mut |_, p| ids.extend(p.float_id()));
    ids
}

/// Global gradient norm over every parameter with a gradient; scales the gradients in place
/// when `max_norm` is set and exceeded.
pub fn clip<B: AutodiffBackend>(
    model: &V4Model<B>,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> Result<f64> {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let ids = float_params(model);
    let mut norm = GradNorm::<I<B>>::new();
    for (id, rank) in &ids {
        match rank {
            1 => grads.get::<I<B>, 1>(*id).iter().for_each(|g| norm.add(g)),
            2 => grads.get::<I<B>, 2>(*id).iter().for_each(|g| norm.add(g)),
            _ => grads.get::<I<B>, 3>(*id).iter().for_each(|g| norm.add(g)),
        }
    }
    let stats = norm.finish(max_norm.unwrap_or(f64::INFINITY))?;
    if stats.scale < 1.0 {
        for (id, rank) in ids {
            match rank {
                1 => scale::<I<B>, 1>(grads, id, stats.scale),
                2 => scale::<I<B>, 2>(grads, id, stats.scale),
                _ => scale::<I<B>, 3>(grads, id, stats.scale),
            }
        }
    }
    Ok(stats.norm)
}

fn scale<B: burn::tensor::backend::Backend, const D: usize>(
    grads: &mut GradientsParams,
    id: burn::module::ParamId,
    s: f64,
) {
    if let Some(g) = grads.remove::<B, D>(id) {
        grads.register(id, g.mul_scalar(s));
    }
}

/// Sums two gradient sets (gradient accumulation).
pub fn merge<B: AutodiffBackend>(
    model: &V4Model<B>,
    mut acc: GradientsParams,
    mut g: GradientsParams,
) -> GradientsParams {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    if acc.is_empty() {
        return g;
    }
    for (id, rank) in float_params(model) {
        match rank {
            1 => add::<I<B>, 1>(&mut acc, &mut g, id),
            2 => add::<I<B>, 2>(&mut acc, &mut g, id),
            _ => add::<I<B>, 3>(&mut acc, &mut g, id),
        }
    }
    acc
}

fn add<B: burn::tensor::backend::Backend, const D: usize>(
    acc: &mut GradientsParams,
    g: &mut GradientsParams,
    id: burn::module::ParamId,
) {
    match (acc.remove::<B, D>(id), g.remove::<B, D>(id)) {
        (Some(a), Some(b)) => acc.register(id, a + b),
        (Some(a), None) | (None, Some(a)) => acc.register(id, a),
        (None, None) => {}
    }
}

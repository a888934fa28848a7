//! Expert load balancing (training spec §5, DeepSeek-V3 §2.1.2 kept by V4):
//!
//! - **Auxiliary-loss-free balancing**: after each optimizer step every score-routed MoE layer
//!   moves its selection bias by `b_i ← b_i + γ·sign(mean load − load_i)` (γ = 0.001 in V4). The
//!   bias only changes which experts are chosen, never the gate weights. Hash-routed layers have
//!   a fixed `tid2eid` table and no bias.
//! - The sequence-wise balance loss itself is computed beside the router
//!   ([`crate::balance_loss`]).

use crate::error::ModelError;
use crate::layer_aux::LayerAux;
use crate::model::V4Model;
use crate::router::{Router, Routing};
use crate::util::{tensor_from, to_vec};
use burn::tensor::backend::Backend;

/// The bias step of one layer: `rate·sign(mean − load_i)` per expert (0 where equal).
pub fn bias_step(load: &[u64], rate: f64) -> Vec<f32> {
    let total: u64 = load.iter().sum();
    let e = load.len().max(1) as u64;
    // Compare load_i·E with the total to stay in integers (mean = total / E).
    load.iter()
        .map(|l| match (total).cmp(&(l * e)) {
            std::cmp::Ordering::Greater => rate as f32,
            std::cmp::Ordering::Less => -rate as f32,
            std::cmp::Ordering::Equal => 0.0,
        })
        .collect()
}

/// Adds the expert loads of one forward pass (`ModelOutput::aux`) to `acc` (same order), for
/// summing over the micro-batches of a step. `acc` grows to fit.
pub fn add_loads<B: Backend>(acc: &mut Vec<Vec<u64>>, aux: &[LayerAux<B>]) {
    for (i, a) in aux.iter().enumerate() {
        if acc.len() <= i {
            acc.push(vec![0; a.expert_load.len()]);
        }
        let row = &mut acc[i];
        if row.len() < a.expert_load.len() {
            row.resize(a.expert_load.len(), 0);
        }
        for (r, l) in row.iter_mut().zip(&a.expert_load) {
            *r += l;
        }
    }
}

fn shift_bias<B: Backend>(router: &mut Router<B>, load: &[u64], rate: f64) {
    if let Routing::Score(bias) = &mut router.routing {
        let step = bias_step(load, rate);
        let n = step.len();
        let delta = tensor_from::<B, 1>(step, [n], &bias.device());
        // Same ParamId (optimizer state keyed by id stays attached); the new value is a fresh
        // leaf detached from any graph, with the parameter's require-grad flag unchanged.
        *bias = bias.clone().map(|b| {
            let rg = b.is_require_grad();
            (b + delta).detach().set_require_grad(rg)
        });
    }
}

impl<B: Backend> V4Model<B> {
    fn routers(&self) -> impl Iterator<Item = &Router<B>> {
        let main = self.layers.iter().map(|l| &l.ffn.gate);
        main.chain(self.mtp.iter().map(|m| &m.block.ffn.gate))
    }

    /// Checks `loads` for [`V4Model::update_balance_bias`]: one entry per main block, then at most
    /// one per MTP block (the order of `ModelOutput::aux`), each `n_routed_experts` wide.
    pub fn check_balance_loads(&self, loads: &[Vec<u64>]) -> Result<(), ModelError> {
        let (main, all) = (self.layers.len(), self.layers.len() + self.mtp.len());
        if loads.len() < main || loads.len() > all {
            return Err(ModelError::Input(format!(
                "expert loads for {} blocks; the model has {main} main blocks and {} MTP blocks",
                loads.len(),
                self.mtp.len()
            )));
        }
        let e = self.config.n_routed_experts;
        if let Some((i, l)) = loads.iter().enumerate().find(|(_, l)| l.len() != e) {
            return Err(ModelError::Input(format!(
                "expert loads of block {i} have {} entries; the model has {e} routed experts",
                l.len()
            )));
        }
        Ok(())
    }

    /// Auxiliary-loss-free balancing step: moves each score-routed layer's selection bias by
    /// `rate·sign(mean load − load_i)`. `loads` follows `ModelOutput::aux` (main blocks, then the
    /// MTP blocks that ran; MTP blocks without an entry are left alone), summed over the step's
    /// micro-batches. Hash-routed layers are untouched. Parameter ids are kept.
    pub fn update_balance_bias(
        mut self,
        loads: &[Vec<u64>],
        rate: f64,
    ) -> Result<Self, ModelError> {
        self.check_balance_loads(loads)?;
        let main = self.layers.len();
        for (layer, load) in self.layers.iter_mut().zip(loads) {
            shift_bias(&mut layer.ffn.gate, load, rate);
        }
        for (m, load) in self.mtp.iter_mut().zip(&loads[main..]) {
            shift_bias(&mut m.block.ffn.gate, load, rate);
        }
        Ok(self)
    }

    /// (min, max) of each block's selection bias (main blocks, then MTP blocks); `None` for
    /// hash-routed layers.
    pub fn balance_bias_ranges(&self) -> Vec<Option<(f32, f32)>> {
        self.routers()
            .map(|r| match &r.routing {
                Routing::Score(bias) => {
                    let v = to_vec(bias.val());
                    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    Some((min, max))
                }
                Routing::Hash(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_signs() {
        assert_eq!(bias_step(&[6, 2, 2, 2], 0.5), vec![-0.5, 0.5, 0.5, 0.5]);
        assert_eq!(bias_step(&[3, 3, 3, 3], 0.5), vec![0.0; 4]);
        // mean 10/3: 4 over, 3 under
        assert_eq!(bias_step(&[4, 3, 3], 1.0), vec![-1.0, 1.0, 1.0]);
        assert_eq!(bias_step(&[0, 0], 1.0), vec![0.0, 0.0]);
    }
}

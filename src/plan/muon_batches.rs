//! The Newton–Schulz calls of one Muon step (training spec §2.3: each matrix orthogonalised on
//! its own; §3.4.1: same-shape matrices batched): each routed-expert stack (`…ffn.experts.w1`,
//! the `E` experts' `w1`) and each grouped `wo_a` (`[g, H·D/g, r]`) is one batched call over its
//! matrices, every other Muon matrix one call of its own.

use super::params::gets_gradient;
use crate::recipe::Recipe;
use std::collections::BTreeMap;
use v4_model::named::stack_of;
use v4_model::{inventory, ModelConfig, TensorSpec};
use v4_optim::{route, OptimizerKind};

/// One batched Newton–Schulz call: `count` matrices of `rows × cols` (release orientation),
/// under the parameter name the optimizer keys them by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsBatch {
    /// The parameter (a stack's name for stacked experts).
    pub name: String,
    /// Matrices in the call.
    pub count: usize,
    /// Rows of each matrix.
    pub rows: usize,
    /// Columns of each matrix.
    pub cols: usize,
}

/// The Newton–Schulz calls of one training step of `recipe` (its trained tensors only).
pub fn step_ns_batches(cfg: &ModelConfig, recipe: &Recipe) -> Vec<NsBatch> {
    let trained: Vec<_> = inventory(cfg)
        .into_iter()
        .filter(|t| gets_gradient(cfg, recipe, t))
        .collect();
    ns_batches(cfg, &trained)
}

/// The Newton–Schulz calls of a Muon step over the tensors `specs` of model `cfg` (those routed
/// to Muon; pass only the trained ones to count a step).
pub fn ns_batches<'a>(
    cfg: &ModelConfig,
    specs: impl IntoIterator<Item = &'a TensorSpec>,
) -> Vec<NsBatch> {
    let mut out: Vec<NsBatch> = Vec::new();
    let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
    for s in specs {
        let muon = route(&s.name, s.shape.len()).map(|g| g.optimizer());
        if muon.ok() != Some(OptimizerKind::Muon) {
            continue;
        }
        let (rows, cols) = (s.shape[0], s.shape.get(1).copied().unwrap_or(1));
        let mut batch = NsBatch {
            name: s.name.clone(),
            count: 1,
            rows,
            cols,
        };
        if let Some((stack, _)) = stack_of(&s.name) {
            if let Some(&i) = stacks.get(&stack) {
                out[i].count += 1;
                continue;
            }
            stacks.insert(stack.clone(), out.len());
            batch.name = stack;
        } else if s.name.ends_with(".attn.wo_a.weight") {
            // Stored `[g, H·D/g, r]`: one matrix per output group.
            batch.count = cfg.o_groups.max(1);
            batch.rows = rows / batch.count;
        }
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_experts_are_one_call_per_stack() {
        let cfg = ModelConfig::v4_flash();
        let inv = v4_model::inventory(&cfg);
        let b = ns_batches(&cfg, &inv);
        let experts: Vec<&NsBatch> = b.iter().filter(|b| b.name.contains(".experts.")).collect();
        // 43 + 1 MTP blocks × (w1, w2, w3), each of the 256 experts.
        assert_eq!(experts.len(), 44 * 3);
        assert!(experts.iter().all(|b| b.count == 256));
        let w2 = b
            .iter()
            .find(|b| b.name == "layers.5.ffn.experts.w2")
            .unwrap();
        assert_eq!((w2.rows, w2.cols), (4096, 2048));
        let wo_a = b
            .iter()
            .find(|b| b.name == "layers.5.attn.wo_a.weight")
            .unwrap();
        assert_eq!((wo_a.count, wo_a.rows), (8, 1024));
        let matrices: usize = b.iter().map(|b| b.count).sum();
        let muon = inv
            .iter()
            .filter(|s| route(&s.name, s.shape.len()).unwrap().optimizer() == OptimizerKind::Muon)
            .count();
        // wo_a: one release tensor, 8 matrices.
        assert_eq!(matrices, muon + 44 * 7);
    }
}

//! The printable optimizer plan: every parameter with its group, optimizer, shape and weight
//! decay (spec §2.3 routing applied to a model inventory).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::OptimSettings;
use crate::error::Result;
use crate::routing::{route, OptimizerKind, ParamGroup};

/// One parameter of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanEntry {
    /// Parameter path.
    pub name: String,
    /// Routing group.
    pub group: ParamGroup,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Shape.
    pub shape: Vec<usize>,
    /// Decoupled weight decay applied.
    pub weight_decay: f64,
}

/// Totals of one optimizer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanTotals {
    /// Number of tensors.
    pub tensors: usize,
    /// Number of scalar parameters.
    pub params: u64,
}

/// Routes every `(name, shape)`.
pub fn plan<'a, I>(settings: &OptimSettings, params: I) -> Result<Vec<PlanEntry>>
where
    I: IntoIterator<Item = (&'a str, &'a [usize])>,
{
    params
        .into_iter()
        .map(|(name, shape)| {
            let group = route(name, shape.len())?;
            Ok(PlanEntry {
                name: name.to_string(),
                group,
                optimizer: group.optimizer(),
                shape: shape.to_vec(),
                weight_decay: settings.weight_decay(group),
            })
        })
        .collect()
}

/// Tensor and parameter totals per optimizer.
pub fn totals(entries: &[PlanEntry]) -> BTreeMap<&'static str, PlanTotals> {
    let mut out = BTreeMap::new();
    for e in entries {
        let key = match e.optimizer {
            OptimizerKind::Muon => "muon",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Excluded => "excluded",
        };
        let t: &mut PlanTotals = out.entry(key).or_default();
        t.tensors += 1;
        t.params += e.shape.iter().map(|&d| d as u64).product::<u64>();
    }
    out
}

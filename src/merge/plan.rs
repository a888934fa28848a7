//! Which release matrices a merge changes, and from which adapter slices: the adapter tensors of
//! `adapters.safetensors` matched against the base's projections exactly as
//! [`V4Model::load_adapted`](v4_model::V4Model::load_adapted) attaches them, so the merged model
//! computes what the adapted one did. Every name and shape is checked before anything is written.
//!
//! A projection `X.weight` `[out, in]` has `X.lora_A.weight` `[r, in]` and `X.lora_B.weight`
//! `[out, r]`. Two kinds are adapted as stacks of `G` members, `A` `[G, r, in]`, `B`
//! `[G, out', r]` (`[r, in]`, `[out', r]` when `G = 1`): a layer's routed experts
//! (`…ffn.experts.w1`, member `e` is `…ffn.experts.{e}.w1.weight`) and `wo_a` (member `g` is its
//! block of rows `g·o_lora_rank ..`).

use super::adapter_file::AdapterFile;
use super::error::{MergeError, ShapeMismatch};
use std::collections::{HashMap, HashSet};
use v4_model::lora::{adapter_names, LoraSpec};
use v4_model::named::{stack_members, stack_of};
use v4_model::{ModelConfig, ReleaseDtype, TensorSpec};

/// One adapter applied to rows `row0 .. row0 + rows` of a release matrix: `s · B @ A`, with `A`
/// `[rank, in]` at flat element `a_at` of tensor `a` and `B` `[rows, rank]` at `b_at` of `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// First row of the matrix it changes.
    pub row0: usize,
    /// Rows it changes.
    pub rows: usize,
    /// Rank `r`.
    pub rank: usize,
    /// `s` of rank `r`.
    pub scale: f64,
    /// `lora_A` tensor and the element its `[r, in]` matrix starts at.
    pub a: (String, usize),
    /// `lora_B` tensor and the element its `[rows, r]` matrix starts at.
    pub b: (String, usize),
}

/// A projection the model can adapt: its adapter stem and its members (release matrix, first
/// row), each `[out, in]`.
struct Projection {
    /// The name `rank_for` and `adapter_names` take (`X.weight`, or a stack name).
    name: String,
    /// Per member: the release matrix and the first row it adapts.
    members: Vec<(String, usize)>,
    /// Rows per member.
    out: usize,
    /// Columns.
    inp: usize,
}

/// 2-D float tensors the loader reads as plain parameters, never through an adaptable
/// projection: the embedding (a lookup) and the compressors' `ape`.
fn never_adapted(name: &str) -> bool {
    name == "embed.weight" || name.rsplit('.').next() == Some("ape")
}

/// The projections of the base the loader may adapt: every other 2-D float matrix, routed
/// experts as one stack per layer and projection, `wo_a` by groups.
fn projections(cfg: &ModelConfig, specs: &[TensorSpec]) -> Vec<Projection> {
    let mut out = Vec::new();
    for s in specs {
        let &[rows, inp] = s.shape.as_slice() else {
            continue;
        };
        if s.dtype == ReleaseDtype::I64 || never_adapted(&s.name) {
            continue;
        }
        if let Some((stack, e)) = stack_of(&s.name) {
            if e == 0 {
                let members = stack_members(&stack, cfg.n_routed_experts).map(|m| (m, 0));
                out.push(Projection {
                    members: members.collect(),
                    name: stack,
                    out: rows,
                    inp,
                });
            }
        } else if s.name.ends_with("attn.wo_a.weight") {
            let (g, o) = (cfg.o_groups, cfg.o_lora_rank);
            out.push(Projection {
                name: s.name.clone(),
                members: (0..g).map(|gi| (s.name.clone(), gi * o)).collect(),
                out: o,
                inp,
            });
        } else {
            out.push(Projection {
                name: s.name.clone(),
                members: vec![(s.name.clone(), 0)],
                out: rows,
                inp,
            });
        }
    }
    out
}

/// The patches of every adapted release matrix (release name → patches), after checking that
/// each targeted projection has both adapter tensors with the right shapes and that every
/// adapter tensor belongs to a targeted projection of the base.
pub fn plan(
    cfg: &ModelConfig,
    specs: &[TensorSpec],
    lora: &LoraSpec,
    file: &AdapterFile,
) -> Result<HashMap<String, Vec<Patch>>, MergeError> {
    let projections = projections(cfg, specs);
    let mut targeted: HashSet<String> = HashSet::new();
    let mut patches: HashMap<String, Vec<Patch>> = HashMap::new();
    for p in &projections {
        let Some(rank) = lora.rank_for(&p.name) else {
            continue;
        };
        let g = p.members.len();
        let shape = |a: usize, b: usize| if g == 1 { vec![a, b] } else { vec![g, a, b] };
        let names = adapter_names(&p.name);
        for (tensor, want) in names.iter().zip([shape(rank, p.inp), shape(p.out, rank)]) {
            let found = file.shape(tensor).ok_or_else(|| MergeError::Missing {
                file: file.path().to_path_buf(),
                tensor: tensor.clone(),
                projection: p.name.clone(),
            })?;
            if found != want.as_slice() {
                return Err(MergeError::Shape(Box::new(ShapeMismatch {
                    file: file.path().to_path_buf(),
                    tensor: tensor.clone(),
                    projection: p.name.clone(),
                    rank,
                    expected: want,
                    found: found.to_vec(),
                })));
            }
            targeted.insert(tensor.clone());
        }
        let [a, b] = names;
        for (i, (matrix, row0)) in p.members.iter().enumerate() {
            patches.entry(matrix.clone()).or_default().push(Patch {
                row0: *row0,
                rows: p.out,
                rank,
                scale: lora.scale(rank),
                a: (a.clone(), i * rank * p.inp),
                b: (b.clone(), i * p.out * rank),
            });
        }
    }
    if let Some(extra) = file.names().find(|n| !targeted.contains(*n)) {
        return Err(unexpected(extra, &projections, file));
    }
    Ok(patches)
}

/// The error for an adapter tensor no targeted projection uses.
fn unexpected(tensor: &str, projections: &[Projection], file: &AdapterFile) -> MergeError {
    let stem = tensor
        .strip_suffix(".lora_A.weight")
        .or_else(|| tensor.strip_suffix(".lora_B.weight"));
    let Some(stem) = stem else {
        return MergeError::Adapter {
            file: file.path().to_path_buf(),
            message: format!(
                "tensor `{tensor}` is not a LoRA adapter (`….lora_A.weight` / `….lora_B.weight`)"
            ),
        };
    };
    let known = projections
        .iter()
        .find(|p| p.name.strip_suffix(".weight").unwrap_or(&p.name) == stem);
    match known {
        Some(p) => MergeError::Untargeted {
            file: file.path().to_path_buf(),
            tensor: tensor.to_string(),
            projection: p.name.clone(),
        },
        None => MergeError::UnknownProjection {
            file: file.path().to_path_buf(),
            tensor: tensor.to_string(),
            projection: stem.to_string(),
        },
    }
}

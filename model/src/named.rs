//! Walks the model's parameters under their release names (spec §4) with the layout needed to
//! turn a parameter — or its gradient — back into checkpoint orientation. Export, optimizer
//! routing and gradient checks all go through this one walk. A stacked parameter (the routed
//! experts' `[E, in, out]` stacks) is visited once, under its stack name
//! `…ffn.experts.w1` (what the optimizer keys its state by); [`stack_members`] gives the release
//! names of its matrices (`…ffn.experts.{e}.w1.weight`) and [`stack_of`] goes back. LoRA
//! adapters are visited just before the projection they adapt, as `{projection}.lora_A.weight`
//! and `.lora_B.weight` (a stack's as one stacked tensor each).

use crate::attention::Attention;
use crate::base_weight::{StackWeight, Weight};
use crate::block::Block;
use crate::compressor::Compressor;
use crate::linear::Linear;
use crate::lora::{adapter_names, LoraStack};
use crate::mhc::{HcHead, HyperConnection};
use crate::model::V4Model;
use crate::moe::{Expert, Moe};
use crate::norm::RmsNorm;
use crate::routed_experts::RoutedExperts;
use crate::router::Routing;
use crate::stored_weight::{StoredWeight, View};
use burn::module::{Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor};

/// A parameter reference with its storage layout relative to the checkpoint.
pub enum NamedParam<'a, B: Backend> {
    /// Same shape as the checkpoint (vectors, `embed`, `ape`).
    Plain1(&'a Param<Tensor<B, 1>>),
    /// A matrix stored as in the checkpoint.
    Plain2(&'a Param<Tensor<B, 2>>),
    /// A linear weight stored `[in, out]`; the checkpoint has `[out, in]`.
    Transposed(&'a Param<Tensor<B, 2>>),
    /// `wo_a` stored `[g, in/g, r]`; the checkpoint has `[g·r, in/g]`.
    Grouped(&'a Param<Tensor<B, 3>>),
    /// Integer table (`tid2eid`), not trained.
    Int2(&'a Param<Tensor<B, 2, Int>>),
    /// Routed-expert stack `[E, in, out]`; the checkpoint has one `[out, in]` matrix per expert
    /// under the names of [`stack_members`].
    Experts(&'a Param<Tensor<B, 3>>),
    /// A frozen weight kept in its stored FP8/FP4 form ([`StoredWeight`]): not a gradient
    /// parameter; its release tensors are its dequantized values (one matrix, or one per member
    /// of a routed-expert stack).
    Stored(&'a StoredWeight<B>),
    /// A stack of LoRA matrices `[G, in, out]` ([`crate::lora::LoraStack`]); the checkpoint
    /// has one `[G, out, in]` tensor.
    Stacked(&'a Param<Tensor<B, 3>>),
}

impl<B: Backend> NamedParam<'_, B> {
    /// The parameter's id and tensor rank, for float parameters (integer tables: `None`).
    pub fn float_id(&self) -> Option<(ParamId, usize)> {
        match self {
            NamedParam::Plain1(t) => Some((t.id, 1)),
            NamedParam::Plain2(t) | NamedParam::Transposed(t) => Some((t.id, 2)),
            NamedParam::Grouped(t) | NamedParam::Experts(t) | NamedParam::Stacked(t) => {
                Some((t.id, 3))
            }
            NamedParam::Int2(_) | NamedParam::Stored(_) => None,
        }
    }
}

/// What to read from a parameter: its value ([`Value`]) or its gradient ([`Grad`]).
pub trait ParamTensor<B: Backend> {
    /// The backend of what is read.
    type Out: Backend;
    /// The tensor read from `p` (`None`: nothing there, e.g. no gradient).
    fn read<const D: usize>(&self, p: &Param<Tensor<B, D>>) -> Option<Tensor<Self::Out, D>>;
    /// What is read from a stored weight: its dequantized matrices `[members, rows, cols]` (f32)
    /// for values; nothing for gradients (it has none).
    fn read_stored(&self, s: &StoredWeight<B>) -> Option<Tensor<Self::Out, 3>> {
        let _ = s;
        None
    }
}

/// Reads a parameter's value.
pub struct Value;

impl<B: Backend> ParamTensor<B> for Value {
    type Out = B;
    fn read<const D: usize>(&self, p: &Param<Tensor<B, D>>) -> Option<Tensor<B, D>> {
        Some(p.val())
    }
    fn read_stored(&self, s: &StoredWeight<B>) -> Option<Tensor<B, 3>> {
        Some(s.dequantize(&View::default(), DType::F32))
    }
}

/// Reads a parameter's gradient.
pub struct Grad<'g, B: AutodiffBackend>(pub &'g B::Gradients);

impl<B: AutodiffBackend> ParamTensor<B> for Grad<'_, B> {
    type Out = B::InnerBackend;
    fn read<const D: usize>(&self, p: &Param<Tensor<B, D>>) -> Option<Tensor<B::InnerBackend, D>> {
        p.val().grad(self.0)
    }
}

impl<B: Backend> NamedParam<'_, B> {
    /// Elements of a float parameter (integer tables: `None`).
    pub fn numel(&self) -> Option<usize> {
        let n = |d: &[usize]| d.iter().product();
        match self {
            NamedParam::Plain1(t) => Some(n(&t.dims())),
            NamedParam::Plain2(t) | NamedParam::Transposed(t) => Some(n(&t.dims())),
            NamedParam::Grouped(t) | NamedParam::Experts(t) | NamedParam::Stacked(t) => {
                Some(n(&t.dims()))
            }
            NamedParam::Stored(s) => Some(s.members * s.rows * s.cols),
            NamedParam::Int2(_) => None,
        }
    }

    /// The release names of the parameter visited as `name`: the names of a stack's matrices,
    /// otherwise `name` itself.
    pub fn release_names(&self, name: &str) -> Vec<String> {
        match self {
            NamedParam::Experts(t) => stack_members(name, t.dims()[0]).collect(),
            // A stack is visited under its stack name (no `.weight`).
            NamedParam::Stored(s) if !name.ends_with(".weight") => {
                stack_members(name, s.members).collect()
            }
            _ => vec![name.to_string()],
        }
    }

    /// What `read` reads of the parameter visited as `name`, in the checkpoint's names,
    /// orientation and shapes: (release name, shape, values); a stack gives one entry per
    /// matrix, an integer table none.
    pub fn release_tensors<P: ParamTensor<B>>(
        &self,
        name: &str,
        read: &P,
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let one = |(shape, values)| vec![(name.to_string(), shape, values)];
        match self {
            NamedParam::Plain1(t) => read.read(t).map(checkpoint_vector).map_or(vec![], one),
            NamedParam::Plain2(t) => read
                .read(t)
                .map(|t| checkpoint_matrix(t, false))
                .map_or(vec![], one),
            NamedParam::Transposed(t) => read
                .read(t)
                .map(|t| checkpoint_matrix(t, true))
                .map_or(vec![], one),
            NamedParam::Grouped(t) => read.read(t).map(checkpoint_grouped).map_or(vec![], one),
            NamedParam::Experts(t) => read
                .read(t)
                .map(|t| checkpoint_experts(name, t))
                .unwrap_or_default(),
            NamedParam::Stacked(t) => read
                .read(t)
                .map(|t| {
                    let t = t.swap_dims(1, 2);
                    (t.dims().to_vec(), crate::util::to_vec(t))
                })
                .map_or(vec![], one),
            NamedParam::Stored(s) => {
                let Some(t) = read.read_stored(s) else {
                    return vec![];
                };
                let v = crate::util::to_vec(t);
                let names = self.release_names(name);
                v.chunks_exact((s.rows * s.cols).max(1))
                    .zip(names)
                    .map(|(m, n)| (n, vec![s.rows, s.cols], m.to_vec()))
                    .collect()
            }
            NamedParam::Int2(_) => vec![],
        }
    }
}

/// A vector (value or gradient) as (shape, values).
pub fn checkpoint_vector<B: Backend>(t: Tensor<B, 1>) -> (Vec<usize>, Vec<f32>) {
    (t.dims().to_vec(), crate::util::to_vec(t))
}

/// A stored matrix (value or gradient) in checkpoint orientation: transposed back from
/// `[in, out]` when `transposed`.
pub fn checkpoint_matrix<B: Backend>(t: Tensor<B, 2>, transposed: bool) -> (Vec<usize>, Vec<f32>) {
    let t = if transposed { t.transpose() } else { t };
    (t.dims().to_vec(), crate::util::to_vec(t))
}

/// Grouped `wo_a` `[g, gin, r]` (value or gradient) as the checkpoint's `[g·r, gin]`.
pub fn checkpoint_grouped<B: Backend>(t: Tensor<B, 3>) -> (Vec<usize>, Vec<f32>) {
    let [g, gin, r] = t.dims();
    let t = t.swap_dims(1, 2).reshape([g * r, gin]);
    (vec![g * r, gin], crate::util::to_vec(t))
}

/// Expert stack `[E, in, out]` (value or gradient) as the checkpoint's per-expert `[out, in]`
/// matrices, named by [`stack_members`] of `stack`.
pub fn checkpoint_experts<B: Backend>(
    stack: &str,
    t: Tensor<B, 3>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let [e, i, o] = t.dims();
    let values = crate::util::to_vec(t.swap_dims(1, 2));
    stack_members(stack, e)
        .zip(values.chunks_exact((i * o).max(1)))
        .map(|(name, v)| (name, vec![o, i], v.to_vec()))
        .collect()
}

/// The release names of the `n` matrices of stack `stack` (`…experts.w1` →
/// `…experts.0.w1.weight`, …).
pub fn stack_members(stack: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    let (pre, leaf) = stack.rsplit_once('.').unwrap_or(("", stack));
    (0..n).map(move |e| format!("{pre}.{e}.{leaf}.weight"))
}

/// The stack a release name belongs to, with its index: `…ffn.experts.7.w1.weight` →
/// (`…ffn.experts.w1`, 7). `None` for every other name (the shared expert included).
pub fn stack_of(name: &str) -> Option<(String, usize)> {
    let stem = name.strip_suffix(".weight")?;
    let (rest, leaf) = stem.rsplit_once('.')?;
    let (pre, e) = rest.rsplit_once('.')?;
    let e = e.parse().ok()?;
    (pre.ends_with(".ffn.experts") && matches!(leaf, "w1" | "w2" | "w3"))
        .then(|| (format!("{pre}.{leaf}"), e))
}

type Visit<'f, 'a, B> = &'f mut dyn FnMut(String, NamedParam<'a, B>);

fn linear<'a, B: Backend>(f: Visit<'_, 'a, B>, name: String, l: &'a Linear<B>) {
    if let Some(a) = &l.lora {
        let [an, bn] = adapter_names(&name);
        f(an, NamedParam::Transposed(&a.a));
        f(bn, NamedParam::Transposed(&a.b));
    }
    match &l.weight {
        Weight::Dense(p) => f(name, NamedParam::Transposed(p)),
        Weight::Stored(s) => f(name, NamedParam::Stored(s)),
    }
}

/// The adapters of the stack (or grouped projection) `name`, when present.
fn lora_stack<'a, B: Backend>(f: Visit<'_, 'a, B>, name: &str, l: &'a Option<LoraStack<B>>) {
    if let Some(l) = l {
        let [an, bn] = adapter_names(name);
        f(an, NamedParam::Stacked(&l.a));
        f(bn, NamedParam::Stacked(&l.b));
    }
}

fn norm<'a, B: Backend>(f: Visit<'_, 'a, B>, name: String, n: &'a RmsNorm<B>) {
    f(name, NamedParam::Plain1(&n.weight));
}

fn compressor<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, c: &'a Compressor<B>) {
    f(format!("{pre}ape"), NamedParam::Plain2(&c.ape));
    linear(f, format!("{pre}wkv.weight"), &c.wkv);
    linear(f, format!("{pre}wgate.weight"), &c.wgate);
    norm(f, format!("{pre}norm.weight"), &c.norm);
}

fn attention<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, a: &'a Attention<B>) {
    f(format!("{pre}attn_sink"), NamedParam::Plain1(&a.attn_sink));
    linear(f, format!("{pre}wq_a.weight"), &a.wq_a);
    norm(f, format!("{pre}q_norm.weight"), &a.q_norm);
    linear(f, format!("{pre}wq_b.weight"), &a.wq_b);
    linear(f, format!("{pre}wkv.weight"), &a.wkv);
    norm(f, format!("{pre}kv_norm.weight"), &a.kv_norm);
    lora_stack(f, &format!("{pre}wo_a.weight"), &a.wo_a_lora);
    match &a.wo_a {
        StackWeight::Dense(p) => f(format!("{pre}wo_a.weight"), NamedParam::Grouped(p)),
        StackWeight::Stored(s) => f(format!("{pre}wo_a.weight"), NamedParam::Stored(s)),
    }
    linear(f, format!("{pre}wo_b.weight"), &a.wo_b);
    if let Some(c) = &a.compressor {
        compressor(f, &format!("{pre}compressor."), c);
    }
    if let Some(ix) = &a.indexer {
        linear(f, format!("{pre}indexer.wq_b.weight"), &ix.wq_b);
        linear(
            f,
            format!("{pre}indexer.weights_proj.weight"),
            &ix.weights_proj,
        );
        compressor(f, &format!("{pre}indexer.compressor."), &ix.compressor);
    }
}

fn hyper<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, site: &str, h: &'a HyperConnection<B>) {
    linear(f, format!("{pre}hc_{site}_fn"), &h.fn_);
    f(format!("{pre}hc_{site}_base"), NamedParam::Plain1(&h.base));
    f(
        format!("{pre}hc_{site}_scale"),
        NamedParam::Plain1(&h.scale),
    );
}

fn hc_head<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, h: &'a HcHead<B>) {
    linear(f, format!("{pre}hc_head_fn"), &h.fn_);
    f(format!("{pre}hc_head_base"), NamedParam::Plain1(&h.base));
    f(format!("{pre}hc_head_scale"), NamedParam::Plain1(&h.scale));
}

fn expert<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, e: &'a Expert<B>) {
    linear(f, format!("{pre}w1.weight"), &e.w1);
    linear(f, format!("{pre}w2.weight"), &e.w2);
    linear(f, format!("{pre}w3.weight"), &e.w3);
}

fn routed_experts<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, r: &'a RoutedExperts<B>) {
    for (w, p, l) in [
        ("w1", &r.w1, &r.lora_w1),
        ("w2", &r.w2, &r.lora_w2),
        ("w3", &r.w3, &r.lora_w3),
    ] {
        lora_stack(f, &format!("{pre}{w}"), l);
        match p {
            StackWeight::Dense(p) => f(format!("{pre}{w}"), NamedParam::Experts(p)),
            StackWeight::Stored(s) => f(format!("{pre}{w}"), NamedParam::Stored(s)),
        }
    }
}

fn moe<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, m: &'a Moe<B>) {
    linear(f, format!("{pre}gate.weight"), &m.gate.weight);
    match &m.gate.routing {
        Routing::Hash(t) => f(format!("{pre}gate.tid2eid"), NamedParam::Int2(t)),
        Routing::Score(b) => f(format!("{pre}gate.bias"), NamedParam::Plain1(b)),
    }
    routed_experts(f, &format!("{pre}experts."), &m.experts);
    if let Some(s) = &m.shared_experts {
        expert(f, &format!("{pre}shared_experts."), s);
    }
}

fn block<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, b: &'a Block<B>) {
    attention(f, &format!("{pre}attn."), &b.attn);
    norm(f, format!("{pre}attn_norm.weight"), &b.attn_norm);
    norm(f, format!("{pre}ffn_norm.weight"), &b.ffn_norm);
    hyper(f, pre, "attn", &b.hc_attn);
    hyper(f, pre, "ffn", &b.hc_ffn);
    moe(f, &format!("{pre}ffn."), &b.ffn);
}

impl<B: Backend> V4Model<B> {
    /// Calls `f` for every parameter under its release name (a stack under its stack name), in
    /// inventory order.
    pub fn visit_named<'a>(&'a self, f: &mut dyn FnMut(String, NamedParam<'a, B>)) {
        f("embed.weight".into(), NamedParam::Plain2(&self.embed));
        linear(f, "head.weight".into(), &self.head);
        norm(f, "norm.weight".into(), &self.norm);
        hc_head(f, "", &self.hc_head);
        for (i, l) in self.layers.iter().enumerate() {
            block(f, &format!("layers.{i}."), l);
        }
        for (k, m) in self.mtp.iter().enumerate() {
            let pre = format!("mtp.{k}.");
            block(f, &pre, &m.block);
            linear(f, format!("{pre}e_proj.weight"), &m.e_proj);
            linear(f, format!("{pre}h_proj.weight"), &m.h_proj);
            norm(f, format!("{pre}enorm.weight"), &m.enorm);
            norm(f, format!("{pre}hnorm.weight"), &m.hnorm);
            norm(f, format!("{pre}norm.weight"), &m.norm);
            hc_head(f, &pre, &m.hc_head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_round_trip() {
        let m: Vec<String> = stack_members("layers.3.ffn.experts.w2", 2).collect();
        assert_eq!(
            m,
            [
                "layers.3.ffn.experts.0.w2.weight",
                "layers.3.ffn.experts.1.w2.weight"
            ]
        );
        assert_eq!(
            stack_of("mtp.0.ffn.experts.17.w3.weight"),
            Some(("mtp.0.ffn.experts.w3".to_string(), 17))
        );
        assert_eq!(stack_of("layers.3.ffn.shared_experts.w1.weight"), None);
        assert_eq!(stack_of("layers.3.ffn.experts.x.w1.weight"), None);
        assert_eq!(stack_of("layers.3.attn.wq_a.weight"), None);
    }
}

//! Walks the model's parameters under their release names (spec §4) with the layout needed to
//! turn a parameter — or its gradient — back into checkpoint orientation. Export, optimizer
//! routing and gradient checks all go through this one walk.

use crate::attention::Attention;
use crate::block::Block;
use crate::compressor::Compressor;
use crate::linear::Linear;
use crate::mhc::{HcHead, HyperConnection};
use crate::model::V4Model;
use crate::moe::{Expert, Moe};
use crate::norm::RmsNorm;
use crate::router::Routing;
use burn::module::{Param, ParamId};
use burn::tensor::{backend::Backend, Int, Tensor};

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
}

impl<B: Backend> NamedParam<'_, B> {
    /// The parameter's id and tensor rank, for float parameters (integer tables: `None`).
    pub fn float_id(&self) -> Option<(ParamId, usize)> {
        match self {
            NamedParam::Plain1(t) => Some((t.id, 1)),
            NamedParam::Plain2(t) | NamedParam::Transposed(t) => Some((t.id, 2)),
            NamedParam::Grouped(t) => Some((t.id, 3)),
            NamedParam::Int2(_) => None,
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

type Visit<'f, 'a, B> = &'f mut dyn FnMut(String, NamedParam<'a, B>);

fn linear<'a, B: Backend>(f: Visit<'_, 'a, B>, name: String, l: &'a Linear<B>) {
    f(name, NamedParam::Transposed(&l.weight));
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
    f(format!("{pre}wo_a.weight"), NamedParam::Grouped(&a.wo_a));
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

fn moe<'a, B: Backend>(f: Visit<'_, 'a, B>, pre: &str, m: &'a Moe<B>) {
    linear(f, format!("{pre}gate.weight"), &m.gate.weight);
    match &m.gate.routing {
        Routing::Hash(t) => f(format!("{pre}gate.tid2eid"), NamedParam::Int2(t)),
        Routing::Score(b) => f(format!("{pre}gate.bias"), NamedParam::Plain1(b)),
    }
    for (i, e) in m.experts.iter().enumerate() {
        expert(f, &format!("{pre}experts.{i}."), e);
    }
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
    /// Calls `f` for every parameter under its release name, in inventory order.
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

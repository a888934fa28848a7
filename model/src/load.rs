//! Builds a [`V4Model`] from any [`WeightSource`] by walking the release inventory's names
//! (spec §4), transposing `[out, in]` checkpoint matrices into Burn's `[in, out]`, and attaching
//! the LoRA adapters a [`LoraBuilder`] targets as it goes (see [`crate::lora`]).

use crate::attention::Attention;
use crate::base_weight::StackWeight;
use crate::block::Block;
use crate::compressor::Compressor;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::indexer::Indexer;
use crate::linear::{transposed, Linear};
use crate::lora::{LoraBuilder, LoraStack};
use crate::mhc::{HcHead, HyperConnection};
use crate::model::V4Model;
use crate::moe::{Expert, Moe};
use crate::mtp::MtpBlock;
use crate::named::stack_members;
use crate::norm::RmsNorm;
use crate::rope::inv_freqs;
use crate::routed_experts::RoutedExperts;
use crate::router::{Router, Routing};
use crate::stored_weight::{StoredTensor, StoredWeight};
use crate::util::{int_tensor_from, tensor_from};
use crate::weights::WeightSource;
use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor};

struct Loader<'a, B: Backend> {
    src: &'a dyn WeightSource,
    cfg: &'a ModelConfig,
    device: &'a B::Device,
    lora: Option<&'a LoraBuilder<'a>>,
    /// Keep quantized weights in their stored form (a frozen base).
    stored: bool,
}

type R<T> = Result<T, ModelError>;

impl<B: Backend> Loader<'_, B> {
    /// The stored form of `name`, when kept stored.
    fn stored(&self, name: &str, out: usize, inp: usize) -> R<Option<StoredTensor>> {
        if !self.stored {
            return Ok(None);
        }
        self.src.tensor_stored(name, [out, inp])
    }

    fn linear(&self, name: &str, out: usize, inp: usize) -> R<Linear<B>> {
        let mut l = match self.stored(name, out, inp)? {
            Some(t) => Linear::stored(StoredWeight::new(vec![t], [out, inp], 1, self.device)),
            None => {
                let v = self.src.tensor_f32(name, &[out, inp])?;
                Linear::from_checkpoint(&v, out, inp, self.device)
            }
        };
        if let Some(b) = self.lora {
            l.lora = b.linear(name, inp, out, self.device)?;
        }
        Ok(l)
    }

    /// The adapters of stack `name` (`g` projections `[inp] → [out]`), when targeted.
    fn lora_stack(&self, name: &str, g: usize, inp: usize, out: usize) -> R<Option<LoraStack<B>>> {
        match self.lora {
            Some(b) => b.stack(name, g, inp, out, self.device),
            None => Ok(None),
        }
    }

    fn vec1(&self, name: &str, n: usize) -> R<Param<Tensor<B, 1>>> {
        let v = self.src.tensor_f32(name, &[n])?;
        Ok(Param::from_tensor(tensor_from(v, [n], self.device)))
    }

    fn norm(&self, name: &str, n: usize) -> R<RmsNorm<B>> {
        let v = self.src.tensor_f32(name, &[n])?;
        Ok(RmsNorm::from_values(v, self.cfg.rms_norm_eps, self.device))
    }

    fn compressor(&self, pre: &str, ratio: usize, d: usize) -> R<Compressor<B>> {
        let c = if ratio == 4 { 2 } else { 1 };
        let dim = self.cfg.hidden_size;
        let ape = self.src.tensor_f32(&format!("{pre}ape"), &[ratio, c * d])?;
        Ok(Compressor {
            wkv: self.linear(&format!("{pre}wkv.weight"), c * d, dim)?,
            wgate: self.linear(&format!("{pre}wgate.weight"), c * d, dim)?,
            ape: Param::from_tensor(tensor_from(ape, [ratio, c * d], self.device)),
            norm: self.norm(&format!("{pre}norm.weight"), d)?,
            ratio,
            head_dim: d,
            rope_dim: self.cfg.qk_rope_head_dim,
        })
    }

    fn attention(&self, pre: &str, layer_id: usize) -> R<Attention<B>> {
        let cfg = self.cfg;
        let (d, h, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim);
        let ratio = cfg.ratio(layer_id);
        let (g, r) = (cfg.o_groups, cfg.o_lora_rank);
        let gin = h * hd / g;
        // wo_a [g·r, gin] → per group [gin, r]
        let wo_name = format!("{pre}wo_a.weight");
        let wo_a = match self.stored(&wo_name, g * r, gin)? {
            Some(t) => {
                StackWeight::Stored(StoredWeight::new(vec![t], [g * r, gin], g, self.device))
            }
            None => {
                let wo = self.src.tensor_f32(&wo_name, &[g * r, gin])?;
                let mut wo_t = vec![0f32; wo.len()];
                for gi in 0..g {
                    for o in 0..r {
                        for i in 0..gin {
                            wo_t[(gi * gin + i) * r + o] = wo[(gi * r + o) * gin + i];
                        }
                    }
                }
                StackWeight::Dense(Param::from_tensor(tensor_from(
                    wo_t,
                    [g, gin, r],
                    self.device,
                )))
            }
        };
        let indexer = if ratio == 4 {
            let (ih, ihd) = (cfg.index_n_heads, cfg.index_head_dim);
            let ip = format!("{pre}indexer.");
            Some(Indexer {
                wq_b: self.linear(&format!("{ip}wq_b.weight"), ih * ihd, cfg.q_lora_rank)?,
                weights_proj: self.linear(&format!("{ip}weights_proj.weight"), ih, d)?,
                compressor: self.compressor(&format!("{ip}compressor."), ratio, ihd)?,
                n_heads: ih,
                head_dim: ihd,
                rope_dim: cfg.qk_rope_head_dim,
                topk: cfg.index_topk,
            })
        } else {
            None
        };
        Ok(Attention {
            wq_a: self.linear(&format!("{pre}wq_a.weight"), cfg.q_lora_rank, d)?,
            q_norm: self.norm(&format!("{pre}q_norm.weight"), cfg.q_lora_rank)?,
            wq_b: self.linear(&format!("{pre}wq_b.weight"), h * hd, cfg.q_lora_rank)?,
            wkv: self.linear(&format!("{pre}wkv.weight"), hd, d)?,
            kv_norm: self.norm(&format!("{pre}kv_norm.weight"), hd)?,
            wo_a,
            wo_a_lora: self.lora_stack(&wo_name, g, gin, r)?,
            wo_b: self.linear(&format!("{pre}wo_b.weight"), d, g * r)?,
            attn_sink: self.vec1(&format!("{pre}attn_sink"), h)?,
            compressor: if ratio > 0 {
                Some(self.compressor(&format!("{pre}compressor."), ratio, hd)?)
            } else {
                None
            },
            indexer,
            n_heads: h,
            head_dim: hd,
            rope_dim: cfg.qk_rope_head_dim,
            window: cfg.sliding_window,
            ratio,
            eps: cfg.rms_norm_eps,
            freqs: inv_freqs(cfg, ratio > 0),
        })
    }

    fn hyper(&self, pre: &str, site: &str) -> R<HyperConnection<B>> {
        let cfg = self.cfg;
        let mix = cfg.hc_mix_dim();
        Ok(HyperConnection {
            fn_: self.linear(
                &format!("{pre}hc_{site}_fn"),
                mix,
                cfg.hc_mult * cfg.hidden_size,
            )?,
            base: self.vec1(&format!("{pre}hc_{site}_base"), mix)?,
            scale: self.vec1(&format!("{pre}hc_{site}_scale"), 3)?,
            hc: cfg.hc_mult,
            iters: cfg.hc_sinkhorn_iters,
            hc_eps: cfg.hc_eps,
            norm_eps: cfg.rms_norm_eps,
        })
    }

    fn hc_head(&self, pre: &str) -> R<HcHead<B>> {
        let cfg = self.cfg;
        let hc = cfg.hc_mult;
        Ok(HcHead {
            fn_: self.linear(&format!("{pre}hc_head_fn"), hc, hc * cfg.hidden_size)?,
            base: self.vec1(&format!("{pre}hc_head_base"), hc)?,
            scale: self.vec1(&format!("{pre}hc_head_scale"), 1)?,
            hc_eps: cfg.hc_eps,
            norm_eps: cfg.rms_norm_eps,
        })
    }

    fn expert(&self, pre: &str) -> R<Expert<B>> {
        let (d, i) = (self.cfg.hidden_size, self.cfg.moe_intermediate_size);
        Ok(Expert {
            w1: self.linear(&format!("{pre}w1.weight"), i, d)?,
            w2: self.linear(&format!("{pre}w2.weight"), d, i)?,
            w3: self.linear(&format!("{pre}w3.weight"), i, d)?,
        })
    }

    /// The routed experts' stacks, from each expert's release matrices.
    fn routed_experts(&self, pre: &str) -> R<RoutedExperts<B>> {
        let (d, i, e) = (
            self.cfg.hidden_size,
            self.cfg.moe_intermediate_size,
            self.cfg.n_routed_experts,
        );
        let stack = |w: &str, out: usize, inp: usize| -> R<StackWeight<B>> {
            let names: Vec<String> = stack_members(&format!("{pre}{w}"), e).collect();
            let stored = names
                .iter()
                .map(|n| self.stored(n, out, inp))
                .collect::<R<Option<Vec<_>>>>()?;
            if let Some(parts) = stored {
                return Ok(StackWeight::Stored(StoredWeight::new(
                    parts,
                    [out, inp],
                    1,
                    self.device,
                )));
            }
            let mut t = Vec::with_capacity(e * inp * out);
            for name in &names {
                t.extend(transposed(
                    &self.src.tensor_f32(name, &[out, inp])?,
                    out,
                    inp,
                ));
            }
            Ok(StackWeight::Dense(Param::from_tensor(tensor_from(
                t,
                [e, inp, out],
                self.device,
            ))))
        };
        let lora =
            |w: &str, inp: usize, out: usize| self.lora_stack(&format!("{pre}{w}"), e, inp, out);
        Ok(RoutedExperts {
            w1: stack("w1", i, d)?,
            w2: stack("w2", d, i)?,
            w3: stack("w3", i, d)?,
            lora_w1: lora("w1", d, i)?,
            lora_w2: lora("w2", i, d)?,
            lora_w3: lora("w3", d, i)?,
        })
    }

    fn moe(&self, pre: &str, layer_id: usize) -> R<Moe<B>> {
        let cfg = self.cfg;
        let e = cfg.n_routed_experts;
        let routing = if layer_id < cfg.num_hash_layers {
            let name = format!("{pre}gate.tid2eid");
            let k = cfg.num_experts_per_tok;
            let v = self.src.tensor_i64(&name, &[cfg.vocab_size, k])?;
            if let Some(bad) = v.iter().find(|x| **x < 0 || **x >= e as i64) {
                return Err(ModelError::Weight {
                    name,
                    message: format!("expert id {bad} outside [0, {e})"),
                });
            }
            Routing::Hash(Param::initialized(
                burn::module::ParamId::new(),
                int_tensor_from(v, [cfg.vocab_size, k], self.device),
            ))
        } else {
            Routing::Score(self.vec1(&format!("{pre}gate.bias"), e)?)
        };
        let experts = self.routed_experts(&format!("{pre}experts."))?;
        Ok(Moe {
            gate: Router {
                weight: self.linear(&format!("{pre}gate.weight"), e, cfg.hidden_size)?,
                routing,
                top_k: cfg.num_experts_per_tok,
                route_scale: cfg.routed_scaling_factor,
                scoring: cfg.scoring_func,
            },
            experts,
            shared_experts: if cfg.n_shared_experts > 0 {
                Some(self.expert(&format!("{pre}shared_experts."))?)
            } else {
                None
            },
            swiglu_limit: cfg.swiglu_limit,
        })
    }

    fn block(&self, pre: &str, layer_id: usize) -> R<Block<B>> {
        let d = self.cfg.hidden_size;
        Ok(Block {
            attn_norm: self.norm(&format!("{pre}attn_norm.weight"), d)?,
            attn: self.attention(&format!("{pre}attn."), layer_id)?,
            hc_attn: self.hyper(pre, "attn")?,
            ffn_norm: self.norm(&format!("{pre}ffn_norm.weight"), d)?,
            ffn: self.moe(&format!("{pre}ffn."), layer_id)?,
            hc_ffn: self.hyper(pre, "ffn")?,
        })
    }

    fn mtp(&self, k: usize) -> R<MtpBlock<B>> {
        let cfg = self.cfg;
        let d = cfg.hidden_size;
        let pre = format!("mtp.{k}.");
        Ok(MtpBlock {
            enorm: self.norm(&format!("{pre}enorm.weight"), d)?,
            hnorm: self.norm(&format!("{pre}hnorm.weight"), d)?,
            e_proj: self.linear(&format!("{pre}e_proj.weight"), d, d)?,
            h_proj: self.linear(&format!("{pre}h_proj.weight"), d, d)?,
            block: self.block(&pre, cfg.num_hidden_layers + k)?,
            hc_head: self.hc_head(&pre)?,
            norm: self.norm(&format!("{pre}norm.weight"), d)?,
        })
    }
}

impl<B: Backend> V4Model<B> {
    /// Builds the model for `cfg` from `src` (every tensor of [`crate::inventory`]).
    pub fn load(cfg: &ModelConfig, src: &dyn WeightSource, device: &B::Device) -> R<Self> {
        Self::load_adapted(cfg, src, None, false, device)
    }

    /// [`V4Model::load`] with the LoRA adapters `lora` targets attached (new, or as saved);
    /// `stored`: keep the weights the source holds quantized in their stored form (a frozen
    /// base, see [`crate::stored_weight`]).
    pub fn load_adapted(
        cfg: &ModelConfig,
        src: &dyn WeightSource,
        lora: Option<&LoraBuilder<'_>>,
        stored: bool,
        device: &B::Device,
    ) -> R<Self> {
        let l = Loader::<B> {
            src,
            cfg,
            device,
            lora,
            stored,
        };
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let embed = src.tensor_f32("embed.weight", &[v, d])?;
        Ok(Self {
            embed: Param::from_tensor(tensor_from(embed, [v, d], device)),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| l.block(&format!("layers.{i}."), i))
                .collect::<R<Vec<_>>>()?,
            hc_head: l.hc_head("")?,
            norm: l.norm("norm.weight", d)?,
            head: l.linear("head.weight", v, d)?,
            mtp: (0..cfg.num_nextn_predict_layers)
                .map(|k| l.mtp(k))
                .collect::<R<Vec<_>>>()?,
            config: cfg.clone(),
        })
    }
}

impl<B: Backend> V4Model<B> {
    /// A freshly initialised model for from-scratch training (see [`crate::init`]).
    pub fn init(cfg: &ModelConfig, seed: u64, device: &B::Device) -> R<Self> {
        Self::load(cfg, &crate::init::random_source(cfg, seed), device)
    }
}

//! One V4 block (spec §2.3): attention and MoE, each wrapped by its own mHC use-site.

use crate::attention::Attention;
use crate::layer_aux::LayerAux;
use crate::mhc::HyperConnection;
use crate::moe::Moe;
use crate::norm::RmsNorm;
use crate::options::ForwardOptions;
use crate::sample_layout::SampleLayout;
use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};

/// `layers.N` (or the block inside `mtp.K`).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// `attn_norm`.
    pub attn_norm: RmsNorm<B>,
    /// `attn`.
    pub attn: Attention<B>,
    /// `hc_attn_*`.
    pub hc_attn: HyperConnection<B>,
    /// `ffn_norm`.
    pub ffn_norm: RmsNorm<B>,
    /// `ffn`.
    pub ffn: Moe<B>,
    /// `hc_ffn_*`.
    pub hc_ffn: HyperConnection<B>,
}

impl<B: Backend> Block<B> {
    /// Streams `[b, s, hc, d]` → streams; `ids` `[b, s]` drive hash routing.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        opts: ForwardOptions,
    ) -> Tensor<B, 4> {
        self.forward_aux(x, ids, opts).0
    }

    /// [`Block::forward`] plus the block's side outputs (expert load, optional losses).
    pub fn forward_aux(
        &self,
        x: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 4>, LayerAux<B>) {
        let [b, s, _, _] = x.dims();
        let layout = SampleLayout::whole(b, s, &x.device());
        self.forward_samples(x, ids, &layout, opts)
    }

    /// [`Block::forward_aux`] for the packed samples of `layout` (each attends only to itself;
    /// side outputs count only its counted tokens).
    pub fn forward_samples(
        &self,
        x: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 4>, LayerAux<B>) {
        let (y, mix) = self.hc_attn.pre(&x);
        let (a, indexer_loss) = self
            .attn
            .forward_samples(self.attn_norm.forward(y), layout, opts);
        let x = self.hc_attn.post(a, x, mix);
        let (y, mix) = self.hc_ffn.pre(&x);
        let (f, moe) = self
            .ffn
            .forward_samples(self.ffn_norm.forward(y), ids, layout, opts);
        let aux = LayerAux {
            expert_load: moe.expert_load,
            biased: moe.biased,
            balance_loss: moe.balance_loss,
            indexer_loss,
        };
        (self.hc_ffn.post(f, x, mix), aux)
    }
}

//! Multi-token prediction block `mtp.K` (spec §2.9): at position t it combines the main model's
//! final streams with the embedding of token t+1 (`e_proj(enorm(e)) + h_proj(hnorm(X))`), runs a
//! full window-attention block, and predicts token t+2 through its own `hc_head` and norm and the
//! shared output head.

use crate::block::Block;
use crate::layer_aux::LayerAux;
use crate::linear::Linear;
use crate::mhc::HcHead;
use crate::norm::RmsNorm;
use crate::options::ForwardOptions;
use crate::precision;
use crate::sample_layout::SampleLayout;
use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};

/// `mtp.K`.
#[derive(Module, Debug)]
pub struct MtpBlock<B: Backend> {
    /// `enorm` on the next token's embedding.
    pub enorm: RmsNorm<B>,
    /// `hnorm` on each incoming stream.
    pub hnorm: RmsNorm<B>,
    /// `e_proj` `[d, d]`.
    pub e_proj: Linear<B>,
    /// `h_proj` `[d, d]`.
    pub h_proj: Linear<B>,
    /// The block.
    pub block: Block<B>,
    /// `hc_head_*`.
    pub hc_head: HcHead<B>,
    /// Final `norm`.
    pub norm: RmsNorm<B>,
}

impl<B: Backend> MtpBlock<B> {
    /// Streams `[b, s', hc, d]` of positions 0..s' and embeddings `[b, s', d]` of the next
    /// tokens (ids `[b, s']`) → (output streams, pre-head hidden `[b, s', d]`, block side
    /// outputs).
    pub fn forward(
        &self,
        streams: Tensor<B, 4>,
        next_embed: Tensor<B, 3>,
        next_ids: Tensor<B, 2, Int>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 4>, Tensor<B, 3>, LayerAux<B>) {
        let [b, s, _, _] = streams.dims();
        let layout = SampleLayout::whole(b, s, &streams.device());
        self.forward_samples(streams, next_embed, next_ids, &layout, opts)
    }

    /// [`MtpBlock::forward`] for packed samples: `layout` covers the block's positions (see
    /// [`SampleLayout::mtp`]); a position whose next token lies in the next sample belongs to
    /// no prediction and is not counted.
    pub fn forward_samples(
        &self,
        streams: Tensor<B, 4>,
        next_embed: Tensor<B, 3>,
        next_ids: Tensor<B, 2, Int>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 4>, Tensor<B, 3>, LayerAux<B>) {
        let _precision = precision::enter(opts.precision);
        let e = self.e_proj.forward(self.enorm.forward(next_embed));
        let h = self.h_proj.forward(self.hnorm.forward(streams));
        let x = h + e.unsqueeze_dim::<4>(2);
        let (x, aux) = self.block.forward_samples(x, next_ids, layout, opts);
        let y = self.norm.forward(self.hc_head.forward(x.clone()));
        (x, y, aux)
    }
}

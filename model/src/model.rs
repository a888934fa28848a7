//! The whole DeepSeek-V4 model (spec §2.1, §2.9): embedding expanded into `hc` streams, the
//! blocks, `hc_head` + final norm + output head, and the MTP blocks. The forward computes every
//! position at once (training shape).

use crate::block::Block;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::layer_aux::LayerAux;
use crate::linear::Linear;
use crate::mhc::HcHead;
use crate::mtp::MtpBlock;
use crate::norm::RmsNorm;
use crate::options::ForwardOptions;
use crate::sample_layout::SampleLayout;
use crate::token_ids::check_token_ids;
use crate::util::to_vec_int;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor};

/// DeepSeek-V4.
#[derive(Module, Debug)]
pub struct V4Model<B: Backend> {
    /// `embed.weight` `[vocab, d]`.
    pub embed: Param<Tensor<B, 2>>,
    /// `layers.N`.
    pub layers: Vec<Block<B>>,
    /// Top-level `hc_head_*`.
    pub hc_head: HcHead<B>,
    /// Final `norm`.
    pub norm: RmsNorm<B>,
    /// `head.weight` `[d, vocab]`.
    pub head: Linear<B>,
    /// `mtp.K`.
    pub mtp: Vec<MtpBlock<B>>,
    /// The hyper-parameters.
    #[module(skip)]
    pub config: ModelConfig,
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct ModelOutput<B: Backend> {
    /// Logits `[b, s, vocab]` for every position.
    pub logits: Tensor<B, 3>,
    /// Streams after each block `[b, s, hc, d]` (when requested).
    pub hidden: Vec<Tensor<B, 4>>,
    /// Final streams (input of `hc_head` and of the MTP block).
    pub last_streams: Tensor<B, 4>,
    /// MTP logits `[b, s − 1 − k, vocab]` per MTP block (when requested): position t of block
    /// k predicts token t + 2 + k.
    pub mtp_logits: Vec<Tensor<B, 3>>,
    /// Side outputs of every main block, then of every MTP block that ran.
    pub aux: Vec<LayerAux<B>>,
}

impl<B: Backend> V4Model<B> {
    /// Checks token ids: non-empty, inside the vocabulary (reads the tensor back; callers holding
    /// the ids on the host use [`crate::check_token_ids`] before building the tensor).
    pub fn check_ids(&self, ids: &Tensor<B, 2, Int>) -> Result<(), ModelError> {
        let shape = ids.dims();
        let vals = if shape.contains(&0) {
            Vec::new()
        } else {
            to_vec_int(ids.clone())
        };
        check_token_ids(&vals, shape, self.config.vocab_size)
    }

    /// Token embeddings `[b, s, d]`.
    pub fn embed_tokens(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, s] = ids.dims();
        let d = self.config.hidden_size;
        self.embed
            .val()
            .select(0, ids.reshape([b * s]))
            .reshape([b, s, d])
    }

    /// Embeddings repeated into `hc` identical streams `[b, s, hc, d]`.
    pub fn embed_streams(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 4> {
        let e = self.embed_tokens(ids);
        let [b, s, d] = e.dims();
        e.unsqueeze_dim::<4>(2)
            .expand([b, s, self.config.hc_mult, d])
    }

    /// Logits from final streams (main head path).
    pub fn logits(&self, streams: Tensor<B, 4>) -> Tensor<B, 3> {
        self.head
            .forward_f32(self.norm.forward(self.hc_head.forward(streams)))
    }

    /// MTP logits of block `k` from the streams of the previous depth (positions 0..s−1−k) and
    /// the ids: (output streams, logits, block side outputs).
    pub fn mtp_logits(
        &self,
        k: usize,
        streams: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 4>, Tensor<B, 3>, LayerAux<B>) {
        let [b, s] = ids.dims();
        let layout = SampleLayout::whole(b, s, &ids.device()).mtp(k);
        self.mtp_logits_samples(k, streams, ids, &layout, opts)
    }

    /// [`V4Model::mtp_logits`] with the block's own sample layout (`SampleLayout::mtp(k)` of
    /// the batch's layout).
    pub fn mtp_logits_samples(
        &self,
        k: usize,
        streams: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
    ) -> (Tensor<B, 4>, Tensor<B, 3>, LayerAux<B>) {
        let [b, s] = ids.dims();
        let n = streams.dims()[1] - 1;
        let x = streams.slice_dim(1, 0..n);
        let next = ids.slice([0..b, k + 1..s]);
        let e = self.embed_tokens(next.clone());
        let (x, y, aux) = self.mtp[k].forward_samples(x, e, next, layout, opts);
        (x, self.head.forward_f32(y), aux)
    }

    /// What follows the main blocks, from their final streams `x`: the logits and, when `mtp`,
    /// every MTP block's logits and side outputs (the blocks stop once fewer than two positions
    /// remain).
    pub fn heads(
        &self,
        x: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
        mtp: bool,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 3>>, Vec<LayerAux<B>>) {
        let logits = self.logits(x.clone());
        let (mut mtp_logits, mut aux) = (Vec::new(), Vec::new());
        if mtp {
            let mut streams = x;
            for k in 0..self.mtp.len() {
                if streams.dims()[1] < 2 {
                    break;
                }
                let sub = layout.mtp(k);
                let (next, lg, a) = self.mtp_logits_samples(k, streams, ids.clone(), &sub, opts);
                mtp_logits.push(lg);
                aux.push(a);
                streams = next;
            }
        }
        (logits, mtp_logits, aux)
    }

    /// Full forward of unpacked rows. `hidden`: keep every block's streams; `mtp`: run the MTP
    /// blocks.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        opts: ForwardOptions,
        hidden: bool,
        mtp: bool,
    ) -> ModelOutput<B> {
        let [b, s] = ids.dims();
        let layout = SampleLayout::whole(b, s, &ids.device());
        self.forward_samples(ids, &layout, opts, hidden, mtp)
    }

    /// Full forward of the packed samples of `layout`: each sample is computed as if it stood
    /// alone at the start of a sequence (positions, window, compressed entries, indexer
    /// candidates, MTP), and the side outputs count only the layout's counted tokens.
    pub fn forward_samples(
        &self,
        ids: Tensor<B, 2, Int>,
        layout: &SampleLayout<B>,
        opts: ForwardOptions,
        hidden: bool,
        mtp: bool,
    ) -> ModelOutput<B> {
        let mut x = self.embed_streams(ids.clone());
        let mut kept = Vec::new();
        let mut aux = Vec::with_capacity(self.layers.len() + self.mtp.len());
        for layer in &self.layers {
            let (y, a) = layer.forward_samples(x, ids.clone(), layout, opts);
            x = y;
            aux.push(a);
            if hidden {
                kept.push(x.clone());
            }
        }
        let (logits, mtp_logits, mtp_aux) = self.heads(x.clone(), ids, layout, opts, mtp);
        aux.extend(mtp_aux);
        ModelOutput {
            logits,
            hidden: kept,
            last_streams: x,
            mtp_logits,
            aux,
        }
    }
}

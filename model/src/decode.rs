//! Incremental decoding (spec §2.10, the reference's `start_pos > 0` path): a prefill runs the
//! prompts through the full-sequence forward in one pass and seeds the [`ModelCache`]; then each
//! step feeds one token per row and returns the next-token logits, at O(window + compressed
//! entries + top-k) per token and layer. Rows may hold prompts of different lengths (right
//! padding in the prefill: causal attention never sees it). The MTP blocks do not run.

use crate::attention::Attention;
use crate::block::Block;
use crate::compressor::{quantize_kv, CompressorKind};
use crate::error::ModelError;
use crate::kv_cache::{read_slots, LayerCache, ModelCache};
use crate::model::V4Model;
use crate::options::ForwardOptions;
use crate::precision;
use crate::rope::RopeTable;
use crate::sample_layout::SampleLayout;
use crate::token_ids::check_token_ids;
use crate::util::int_tensor_from;
use burn::tensor::{backend::Backend, Int, Tensor};

impl<B: Backend> Attention<B> {
    /// The layer's cache after a prefill of `x` `[b, s, d]` (after `attn_norm`) whose rows hold
    /// `lengths[r]` real tokens: the last `window` keys of each row, and its compressors' state.
    fn seed_cache(
        &self,
        x: &Tensor<B, 3>,
        lengths: &[usize],
        opts: ForwardOptions,
    ) -> LayerCache<B> {
        let _precision = precision::enter(opts.precision);
        let [b, s, _] = x.dims();
        let (rd, w) = (self.rope_dim, self.window);
        let device = x.device();
        let table = RopeTable::new(&self.freqs, 0..s, &device);
        let kv = self.kv_norm.forward(self.wkv.forward(x.clone()));
        let kv = quantize_kv(table.rotate_tail3(kv, rd, false), rd, opts.fake_quant);
        // Ring slot j of row r holds the newest real position p ≡ j (mod w), if any.
        let mut at = Vec::with_capacity(b * w);
        for (r, &len) in lengths.iter().enumerate() {
            for j in 0..w {
                let p = (j < len).then(|| j + w * ((len - 1 - j) / w));
                at.push((r, p.unwrap_or(0)));
            }
        }
        let window = read_slots(&kv, &at).reshape([b, w, self.head_dim]);
        let seed = |c: &crate::compressor::Compressor<B>, kind| {
            c.seed_cache(x, lengths, &self.freqs, kind, opts.fake_quant)
        };
        LayerCache {
            window,
            main: self
                .compressor
                .as_ref()
                .map(|c| seed(c, CompressorKind::Main)),
            indexer: self
                .indexer
                .as_ref()
                .map(|ix| seed(&ix.compressor, CompressorKind::Indexer)),
        }
    }
}

impl<B: Backend> Block<B> {
    /// The attention's input for streams `x`: `attn_norm(hc_pre(x))`.
    fn attention_input(&self, x: &Tensor<B, 4>) -> Tensor<B, 3> {
        self.attn_norm.forward(self.hc_attn.pre(x).0)
    }

    /// One decode step of the block for streams `x` `[b, 1, hc, d]` of tokens `ids` `[b, 1]` at
    /// positions `pos`.
    fn decode(
        &self,
        x: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        cache: &mut LayerCache<B>,
        pos: &[usize],
        opts: ForwardOptions,
    ) -> Tensor<B, 4> {
        let (y, mix) = self.hc_attn.pre(&x);
        let a = self
            .attn
            .decode(self.attn_norm.forward(y), cache, pos, opts);
        let x = self.hc_attn.post(a, x, mix);
        let (y, mix) = self.hc_ffn.pre(&x);
        let (f, _) = self.ffn.forward_aux(self.ffn_norm.forward(y), ids, opts);
        self.hc_ffn.post(f, x, mix)
    }
}

impl<B: Backend> V4Model<B> {
    /// Prefills `prompts` (token ids, one row each, lengths may differ) in one full-sequence
    /// pass: the next-token logits after each prompt `[rows, vocab]` and the decode cache.
    pub fn prefill(
        &self,
        prompts: &[Vec<i64>],
        opts: ForwardOptions,
    ) -> Result<(Tensor<B, 2>, ModelCache<B>), ModelError> {
        let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let (b, s) = (prompts.len(), lengths.iter().copied().max().unwrap_or(0));
        if b == 0 || lengths.contains(&0) {
            return Err(ModelError::Input(format!(
                "prefill needs at least one token per prompt; prompt lengths {lengths:?}"
            )));
        }
        let mut flat = Vec::with_capacity(b * s);
        for p in prompts {
            flat.extend(p);
            flat.extend(std::iter::repeat_n(0, s - p.len()));
        }
        check_token_ids(&flat, [b, s], self.config.vocab_size)?;
        let device = self.embed.device();
        let ids = int_tensor_from::<B, 2>(flat, [b, s], &device);
        let layout = SampleLayout::whole(b, s, &device);
        let mut x = self.embed_streams(ids.clone());
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            layers.push(
                layer
                    .attn
                    .seed_cache(&layer.attention_input(&x), &lengths, opts),
            );
            x = layer.forward_samples(x, ids.clone(), &layout, opts).0;
        }
        let last: Vec<i64> = lengths
            .iter()
            .enumerate()
            .map(|(r, &l)| (r * s + l - 1) as i64)
            .collect();
        let [_, _, hc, d] = x.dims();
        let x = x
            .reshape([b * s, hc, d])
            .select(0, int_tensor_from::<B, 1>(last, [b], &device))
            .reshape([b, 1, hc, d]);
        let logits = self.logits(x).reshape([b, self.config.vocab_size]);
        Ok((logits, ModelCache { layers, lengths }))
    }

    /// Feeds one token per row (`tokens[r]` at position `cache.lengths[r]`) and returns the
    /// next-token logits `[rows, vocab]`.
    pub fn decode_step(
        &self,
        cache: &mut ModelCache<B>,
        tokens: &[i64],
        opts: ForwardOptions,
    ) -> Result<Tensor<B, 2>, ModelError> {
        let b = cache.rows();
        if tokens.len() != b {
            return Err(ModelError::Input(format!(
                "decode step: {} tokens for a cache of {b} rows",
                tokens.len()
            )));
        }
        check_token_ids(tokens, [b, 1], self.config.vocab_size)?;
        let device = self.embed.device();
        let ids = int_tensor_from::<B, 2>(tokens.to_vec(), [b, 1], &device);
        let pos = cache.lengths.clone();
        let mut x = self.embed_streams(ids.clone());
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.decode(x, ids.clone(), c, &pos, opts);
        }
        cache.lengths.iter_mut().for_each(|l| *l += 1);
        Ok(self.logits(x).reshape([b, self.config.vocab_size]))
    }
}

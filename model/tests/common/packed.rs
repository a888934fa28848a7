//! Helpers of the packed-sample property tests: random tiny configs, forward options, and the
//! next-token + MTP loss of a forward restricted to each sample.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use v4_model::{AttentionMode, ForwardOptions, ModelConfig, ModelOutput, SampleBounds, V4Model};

pub type AD = Autodiff<Flex>;

/// Host values, as f64 whatever the tensor's dtype.
pub fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

/// A random tiny V4: 3 or 4 main layers mixing window-only, CSA and HCA (first layer hash-routed),
/// an MTP block (window-only or CSA), small windows and indexer top-k so that samples of a few
/// hundred tokens cross every boundary.
pub fn random_config(seed: u64) -> ModelConfig {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = ModelConfig::toy();
    let layers = rng.random_range(3..=4);
    c.num_hidden_layers = layers;
    let mut ratios = vec![0, 4, 128, 4];
    ratios.truncate(layers);
    ratios.push(if rng.random_bool(0.5) { 4 } else { 0 });
    c.compress_ratios = ratios;
    c.num_hash_layers = 1;
    c.sliding_window = [8, 16][rng.random_range(0..2)];
    c.index_topk = [3, 5][rng.random_range(0..2)];
    c.n_routed_experts = [4, 8][rng.random_range(0..2)];
    c.num_experts_per_tok = 2;
    c.hidden_size = [32, 64][rng.random_range(0..2)];
    c.validate("random").unwrap();
    c
}

pub fn ids(seed: u64, n: usize, vocab: usize) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as i64)).collect()
}

pub fn opts(mode: AttentionMode) -> ForwardOptions {
    ForwardOptions {
        fake_quant: false,
        attention: mode,
        indexer_loss: true,
        balance_loss: true,
        expert_fp4: false,
        // small chunks: the indexer's chunked score pass crosses sample boundaries
        indexer_chunk: 7,
        ..ForwardOptions::default()
    }
}

pub fn int_tensor(v: Vec<i64>, shape: [usize; 2]) -> Tensor<AD, 2, Int> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// `[s, ...]` rows `range` of row `row` of a `[b, s, ...]` tensor, flattened.
pub fn rows_of<const D: usize>(
    t: &Tensor<AD, D>,
    row: usize,
    range: std::ops::Range<usize>,
) -> Vec<f64> {
    let t = t.clone().slice_dim(0, row..row + 1).slice_dim(1, range);
    values(t)
}

pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// Summed next-token CE (+ `mtp_w` × summed MTP CE) of one forward over the labels `ids`
/// shifted within each sample, divided by `norm`.
pub fn loss(
    out: &ModelOutput<AD>,
    ids: &[i64],
    bounds: &SampleBounds,
    mtp_w: f64,
    norm: f64,
) -> Tensor<AD, 1> {
    let [b, s, v] = out.logits.dims();
    let mut total = Tensor::<AD, 1>::zeros([1], &Default::default());
    for (k, lg) in std::iter::once(&out.logits)
        .chain(&out.mtp_logits)
        .enumerate()
    {
        let w = if k == 0 { 1.0 } else { mtp_w };
        let n = lg.dims()[1];
        // Position t predicts token t + 1 + k, inside its sample only.
        let (mut pick, mut keep) = (Vec::new(), Vec::new());
        for r in 0..b {
            for t in 0..n {
                let u = t + 1 + k;
                let ok = u < s && bounds.same_sample(r, t, u);
                pick.push(if ok { ids[r * s + u] } else { 0 });
                keep.push(if ok { 1.0f32 } else { 0.0 });
            }
        }
        let lp = log_softmax(lg.clone().reshape([b * n, v]), 1)
            .gather(1, int_tensor(pick, [b * n, 1]).reshape([b * n, 1]));
        let keep =
            Tensor::<AD, 2>::from_data(TensorData::new(keep, [b * n, 1]), &Default::default());
        total = total + (lp * keep).sum().neg().mul_scalar(w);
    }
    total.div_scalar(norm)
}

/// Gradients of every float parameter, by id.
pub fn grads(model: &V4Model<AD>, loss: Tensor<AD, 1>) -> HashMap<ParamId, Vec<f64>> {
    struct Collect<'a> {
        g: &'a <AD as AutodiffBackend>::Gradients,
        out: HashMap<ParamId, Vec<f64>>,
    }
    impl ModuleVisitor<AD> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
            if let Some(g) = p.val().grad(self.g) {
                self.out.insert(p.id, values(g));
            }
        }
    }
    let g = loss.backward();
    let mut c = Collect {
        g: &g,
        out: HashMap::new(),
    };
    model.visit(&mut c);
    c.out
}

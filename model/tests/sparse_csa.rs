//! Sparse CSA (f64, fake quant off): attending the indexer's gathered top-k entries is the dense
//! all-entries attention when k covers every visible entry — logits, indexer KL and every
//! gradient — on whole and packed rows; the indexer's chunk size never changes the result; and
//! with a small k the two modes really differ (the selection is in effect).

use std::collections::HashMap;
use v4_model::{
    AttentionMode, ForwardOptions, ModelConfig, ModelOutput, SampleBounds, SampleLayout, V4Model,
};

mod common;
use common::packed::*;
use common::use_f64;

/// Logits, MTP logits and Σ indexer KL of one forward, and the gradients of
/// `CE + 0.3·MTP + KL` by parameter.
struct Run {
    outputs: Vec<f64>,
    kl: f64,
    grads: HashMap<burn::module::ParamId, Vec<f64>>,
}

fn run(model: &V4Model<AD>, ids: &[i64], bounds: &SampleBounds, opts: ForwardOptions) -> Run {
    let s = bounds.seq();
    let layout = SampleLayout::<AD>::new(bounds.clone(), None, &Default::default());
    let out: ModelOutput<AD> =
        model.forward_samples(int_tensor(ids.to_vec(), [1, s]), &layout, opts, false, true);
    let mut outputs = values(out.logits.clone());
    for lg in &out.mtp_logits {
        outputs.extend(values(lg.clone()));
    }
    let kls: Vec<_> = out
        .aux
        .iter()
        .filter_map(|a| a.indexer_loss.clone())
        .collect();
    assert!(!kls.is_empty(), "the CSA layers report their indexer KL");
    let kl = kls.into_iter().reduce(|a, b| a + b).expect("non-empty");
    let objective = loss(&out, ids, bounds, 0.3, s as f64) + kl.clone();
    Run {
        outputs,
        kl: values(kl)[0],
        grads: grads(model, objective),
    }
}

/// Worst |Δ| relative to the largest magnitude, over outputs, KL and every gradient.
fn worst(a: &Run, b: &Run) -> f64 {
    let rel = |x: &[f64], y: &[f64]| {
        let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
        max_diff(x, y) / scale
    };
    assert_eq!(a.grads.len(), b.grads.len(), "same parameters reached");
    let mut w = rel(&a.outputs, &b.outputs).max(rel(&[a.kl], &[b.kl]));
    for (id, g) in &a.grads {
        w = w.max(rel(g, &b.grads[id]));
    }
    w
}

fn config(seed: u64, topk: usize) -> ModelConfig {
    let mut c = random_config(seed);
    c.index_topk = topk;
    c.validate("sparse test").unwrap();
    c
}

#[test]
fn sparse_equals_dense_when_top_k_covers_every_visible_entry() {
    use_f64();
    let lens = [37usize, 130, 90];
    let s: usize = lens.iter().sum();
    let dev = Default::default();
    for seed in 0..2u64 {
        // s / 4 entries at most: every query's visible entries are selected.
        let cfg = config(20 + seed, s / 4);
        let model = V4Model::<AD>::init(&cfg, 3 + seed, &dev).unwrap();
        let all = ids(70 + seed, s, cfg.vocab_size);
        for bounds in [
            SampleBounds::whole(1, s),
            SampleBounds::from_lengths(&[lens.to_vec()], s).unwrap(),
        ] {
            let sparse = run(&model, &all, &bounds, opts(AttentionMode::Sparse));
            let dense = run(&model, &all, &bounds, opts(AttentionMode::Dense));
            let w = worst(&sparse, &dense);
            println!(
                "config {seed}, packed {}: worst {w:.2e}",
                bounds.count() > 1
            );
            assert!(w <= 1e-12, "config {seed}: sparse vs dense {w}");
        }
    }
}

#[test]
fn chunk_size_does_not_change_the_result_and_small_k_selects() {
    use_f64();
    let lens = [100usize, 157];
    let s: usize = lens.iter().sum();
    let dev = Default::default();
    // Top-1 makes the rows long enough for the block-pruned top-k (blocks of 4 and 8 here,
    // depending on the chunk); top-3 sorts whole rows.
    for topk in [3, 1] {
        let cfg = config(31, topk);
        let model = V4Model::<AD>::init(&cfg, 5, &dev).unwrap();
        let all = ids(90, s, cfg.vocab_size);
        let bounds = SampleBounds::from_lengths(&[lens.to_vec()], s).unwrap();
        let with_chunk = |chunk| ForwardOptions {
            indexer_chunk: chunk,
            ..opts(AttentionMode::Sparse)
        };
        let whole = run(&model, &all, &bounds, with_chunk(s));
        for chunk in [1, 7, 64, 0] {
            let w = worst(&run(&model, &all, &bounds, with_chunk(chunk)), &whole);
            assert!(w <= 1e-12, "top-{topk}, chunk {chunk}: {w}");
        }
        let dense = run(&model, &all, &bounds, opts(AttentionMode::Dense));
        let diff = max_diff(&whole.outputs, &dense.outputs);
        assert!(
            diff > 1e-6,
            "top-{topk} of up to 39 entries changes the logits ({diff})"
        );
    }
}

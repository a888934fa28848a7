//! Sample-level attention masking (V4 training report §4.2), property tests on random tiny
//! configs (hash layers, CSA, HCA, MTP; fake quant off, f32): a row that packs samples whose
//! lengths cross the window, ratio-4 and ratio-128 boundaries gives, for each sample, the same
//! logits, MTP logits and per-layer hidden states as a forward of that sample alone, in sparse
//! and dense attention; and tokens the layout does not count (padding) change none of the
//! balance loss, the expert loads or the indexer KL. Gradients: `packed_gradients.rs`.

use burn::tensor::Tensor;
use v4_model::{AttentionMode, SampleBounds, SampleLayout, V4Model};

mod common;
use common::packed::*;

#[test]
fn packed_samples_equal_samples_alone() {
    let lengths: [&[usize]; 2] = [&[37, 130, 300], &[300, 130, 37]];
    for seed in 0..3u64 {
        let cfg = random_config(seed);
        let dev = Default::default();
        let model = V4Model::<AD>::init(&cfg, 100 + seed, &dev).unwrap();
        let s: usize = lengths[0].iter().sum();
        let all = ids(seed, 2 * s, cfg.vocab_size);
        let bounds =
            SampleBounds::from_lengths(&lengths.iter().map(|l| l.to_vec()).collect::<Vec<_>>(), s)
                .unwrap();
        let layout = SampleLayout::<AD>::new(bounds.clone(), None, &dev);
        for mode in [AttentionMode::Sparse, AttentionMode::Dense] {
            let packed = model.forward_samples(
                int_tensor(all.clone(), [2, s]),
                &layout,
                opts(mode),
                true,
                true,
            );
            let mut worst = 0f64;
            for (r, row) in lengths.iter().enumerate() {
                let mut start = 0;
                for &len in row.iter() {
                    let alone_ids = all[r * s + start..r * s + start + len].to_vec();
                    let alone =
                        model.forward(int_tensor(alone_ids, [1, len]), opts(mode), true, true);
                    let range = start..start + len;
                    let d = max_diff(
                        &rows_of(&packed.logits, r, range.clone()),
                        &values(alone.logits.clone()),
                    );
                    worst = worst.max(d);
                    for (hp, ha) in packed.hidden.iter().zip(&alone.hidden) {
                        let d = max_diff(&rows_of(hp, r, range.clone()), &values(ha.clone()));
                        worst = worst.max(d);
                    }
                    // MTP position t of the sample predicts its token t + 2: L − 1 positions.
                    let mtp = start..start + len - 1;
                    let d = max_diff(
                        &rows_of(&packed.mtp_logits[0], r, mtp),
                        &values(alone.mtp_logits[0].clone()),
                    );
                    worst = worst.max(d);
                    start += len;
                }
            }
            println!("config {seed} {mode:?}: packed vs alone max |Δ| {worst:.2e}");
            assert!(worst <= 1e-5, "config {seed} {mode:?}: {worst}");
        }
    }
}

#[test]
fn uncounted_padding_changes_no_side_objective() {
    let cfg = random_config(21);
    let dev = Default::default();
    let model = V4Model::<AD>::init(&cfg, 3, &dev).unwrap();
    let lens = [37usize, 130];
    let s: usize = lens.iter().sum();
    let x = ids(9, s, cfg.vocab_size);
    let o = opts(AttentionMode::Sparse);
    let run = |pad: usize| {
        let mut row = x.clone();
        row.extend(std::iter::repeat_n(0, pad));
        let mut l = lens.to_vec();
        if pad > 0 {
            l.push(pad);
        }
        let bounds = SampleBounds::from_lengths(&[l], s + pad).unwrap();
        let counted: Vec<bool> = (0..s + pad).map(|t| t < s).collect();
        let layout = SampleLayout::<AD>::new(bounds, Some(counted), &dev);
        model.forward_samples(int_tensor(row, [1, s + pad]), &layout, o, false, true)
    };
    let (plain, padded) = (run(0), run(75));
    let scalar = |t: &Option<Tensor<AD, 1>>| t.as_ref().map(|t| values(t.clone())[0]);
    for (a, b) in plain.aux.iter().zip(&padded.aux) {
        assert_eq!(a.expert_load, b.expert_load, "expert load");
        let (ba, bb) = (scalar(&a.balance_loss), scalar(&b.balance_loss));
        let (ka, kb) = (scalar(&a.indexer_loss), scalar(&b.indexer_loss));
        for (u, v) in [(ba, bb), (ka, kb)] {
            match (u, v) {
                (Some(u), Some(v)) => {
                    assert!((u - v).abs() <= 1e-6 * u.abs().max(1.0), "{u} vs {v}")
                }
                (u, v) => assert_eq!(u.is_some(), v.is_some()),
            }
        }
    }
    assert!(plain.aux.iter().any(|a| a.balance_loss.is_some()));
    assert!(plain.aux.iter().any(|a| a.indexer_loss.is_some()));
}

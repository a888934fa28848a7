//! Sample-level attention masking, gradients (f64, fake quant off): the gradient of a packed
//! batch's next-token + MTP loss equals the sum of the gradients of each sample's own loss
//! under the same normalisation, for random tiny configs with hash layers, CSA, HCA and MTP.
//! Run in f64 so that tensors whose gradient is a sum of many nearly cancelling token terms
//! (the `hc_head` gates) are compared at full precision too; in f32 those reach ~4e-4 of their
//! own magnitude from summation order alone.

use burn::backend::Flex;
use std::collections::HashMap;
use v4_model::{AttentionMode, ForwardOptions, SampleBounds, SampleLayout, V4Model};

mod common;
use common::packed::*;
use common::use_f64;

#[test]
fn packed_gradients_are_the_sum_of_the_samples_gradients() {
    let lens = [37usize, 130, 300];
    use_f64();
    let s: usize = lens.iter().sum();
    for seed in 0..2u64 {
        let cfg = random_config(10 + seed);
        let dev = Default::default();
        let model = V4Model::<AD>::init(&cfg, 7 + seed, &dev).unwrap();
        let all = ids(50 + seed, s, cfg.vocab_size);
        let bounds = SampleBounds::from_lengths(&[lens.to_vec()], s).unwrap();
        // Labels in the packed row: every position with a successor in its sample.
        let norm = (s - lens.len()) as f64;
        let o = ForwardOptions {
            indexer_loss: false,
            balance_loss: false,
            ..opts(AttentionMode::Sparse)
        };
        let layout = SampleLayout::<AD>::new(bounds.clone(), None, &dev);
        let out = model.forward_samples(int_tensor(all.clone(), [1, s]), &layout, o, false, true);
        let packed = grads(&model, loss(&out, &all, &bounds, 0.3, norm));
        let mut summed: HashMap<burn::module::ParamId, Vec<f64>> = HashMap::new();
        let mut start = 0;
        for &len in &lens {
            let x = all[start..start + len].to_vec();
            let out = model.forward(int_tensor(x.clone(), [1, len]), o, false, true);
            let g = grads(
                &model,
                loss(&out, &x, &SampleBounds::whole(1, len), 0.3, norm),
            );
            for (id, v) in g {
                let acc = summed.entry(id).or_insert_with(|| vec![0.0; v.len()]);
                acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
            start += len;
        }
        assert_eq!(packed.len(), summed.len(), "same parameters reached");
        let mut names = HashMap::new();
        model.visit_named(&mut |name, p| {
            if let Some((id, _)) = p.float_id() {
                names.insert(id, name);
            }
        });
        let mut worst = 0f64;
        for (id, g) in &packed {
            let want = &summed[id];
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
            let rel = max_diff(g, want) / scale;
            if rel > 1e-5 {
                println!("{}: {rel:.2e} (max |g| {scale:.2e})", names[id]);
            }
            worst = worst.max(rel);
        }
        println!(
            "config {seed}: {} tensors, worst relative |Δ| {worst:.2e}",
            packed.len()
        );
        assert!(worst <= 1e-5, "config {seed}: {worst}");
    }
}

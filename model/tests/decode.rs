//! Incremental decoding with the V4 cache against DeepSeek's reference (`decode_logits`: prefill
//! 290 tokens, then one token at a time) and against the full forward: for random tiny configs
//! (hash, CSA, HCA layers), batches whose rows have different prompt lengths, and lengths that
//! cross the window, ratio-4 and ratio-128 boundaries, the logits of every decoded position equal
//! the full-sequence forward's.

mod common;
use burn::tensor::{Int, Tensor, TensorData};
use common::packed::random_config;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use v4_model::{AttentionMode, ForwardOptions, V4Model};

/// Prefill `p` tokens of the fixture's sequence, then decode the rest one by one: the logits at
/// positions `p − 1 … s − 1`, flattened.
fn decode_fixture(model: &V4Model<B>, ids: &[i64], p: usize, opts: ForwardOptions) -> Vec<f32> {
    let (logits, mut cache) = model.prefill(&[ids[..p].to_vec()], opts).unwrap();
    let mut out = values(logits);
    for &t in &ids[p..] {
        out.extend(values(model.decode_step(&mut cache, &[t], opts).unwrap()));
    }
    out
}

#[test]
fn decode_matches_the_reference_decode_logits() {
    // tiny_q (FP8/FP4 storage) goes through the binary: tests/forward_cli.rs.
    for (name, fake_quant) in [("tiny_b", false), ("tiny_a", true)] {
        let model = load_model(name);
        let io = read(fixture(name).join("io.safetensors"));
        let ids = io.ints["input_ids"].1.clone();
        let opts = ForwardOptions {
            fake_quant,
            ..Default::default()
        };
        // The reference's decode_logits: prefill 290, then tokens 290..299 one at a time;
        // logits at positions 289..299.
        let p = ids.len() - 10;
        let got = decode_fixture(&model, &ids, p, opts);
        let want = &io.floats["decode_logits"].1;
        let (max, mean, within) = compare(&got, want, 1e-3);
        println!("{name}: decode max {max:.3e} mean {mean:.3e} within 1e-3 {within:.5}");
        if fake_quant {
            assert!(mean <= 1e-3 && within >= 0.99, "{name}: {mean} {within}");
        } else {
            assert!(max <= 1e-4, "{name}: decode max abs error {max}");
        }
    }
}

#[test]
fn decode_equals_the_full_forward_at_every_position() {
    let mut rng = StdRng::seed_from_u64(11);
    for seed in 0..3u64 {
        let mut cfg = random_config(30 + seed);
        // Decoding does not run the MTP block.
        cfg.num_nextn_predict_layers = 0;
        cfg.compress_ratios.truncate(cfg.num_hidden_layers);
        cfg.validate("random").unwrap();
        let model = V4Model::<B>::init(&cfg, 40 + seed, &Default::default()).unwrap();
        // Rows of different prompt lengths crossing the window, ratio-4 and ratio-128 boundaries.
        let total = 300;
        let prompts = [7usize, 130, 258];
        let seqs: Vec<Vec<i64>> = prompts
            .iter()
            .map(|_| {
                (0..total)
                    .map(|_| rng.random_range(0..cfg.vocab_size as i64))
                    .collect()
            })
            .collect();
        for mode in [AttentionMode::Sparse, AttentionMode::Dense] {
            let opts = ForwardOptions {
                fake_quant: false,
                attention: mode,
                ..Default::default()
            };
            let full: Vec<Vec<f32>> = seqs
                .iter()
                .map(|s| {
                    let ids: Tensor<B, 2, Int> = Tensor::from_data(
                        TensorData::new(s.clone(), [1, total]),
                        &Default::default(),
                    );
                    values(model.forward(ids, opts, false, false).logits)
                })
                .collect();
            let v = cfg.vocab_size;
            let first: Vec<Vec<i64>> = seqs
                .iter()
                .zip(prompts)
                .map(|(s, p)| s[..p].to_vec())
                .collect();
            let (mut logits, mut cache) = model.prefill(&first, opts).unwrap();
            let mut worst = 0f32;
            // Every row decodes until the longest prompt's row reaches the end.
            let steps = total - prompts.iter().min().unwrap();
            for step in 0..steps {
                let got = values(logits.clone());
                for (r, &p) in prompts.iter().enumerate() {
                    let pos = p - 1 + step; // the position these logits predict from
                    if pos < total {
                        let want = &full[r][pos * v..(pos + 1) * v];
                        let (max, _, _) = compare(&got[r * v..(r + 1) * v], want, 1e-4);
                        worst = worst.max(max);
                    }
                }
                let next: Vec<i64> = seqs
                    .iter()
                    .zip(prompts)
                    .map(|(s, p)| s[(p + step).min(total - 1)])
                    .collect();
                logits = model.decode_step(&mut cache, &next, opts).unwrap();
            }
            println!("config {seed} {mode:?}: decode vs full forward max |Δ| {worst:.2e}");
            assert!(worst <= 1e-4, "config {seed} {mode:?}: {worst}");
        }
    }
}

#[test]
fn cache_rows_can_be_dropped() {
    let model = load_model("tiny_b");
    let io = read(fixture("tiny_b").join("io.safetensors"));
    let ids = io.ints["input_ids"].1.clone();
    let opts = ForwardOptions {
        fake_quant: false,
        ..Default::default()
    };
    let rows = vec![ids[..40].to_vec(), ids[..100].to_vec(), ids[..70].to_vec()];
    let (_, mut cache) = model.prefill(&rows, opts).unwrap();
    cache.retain(&[2, 1]);
    assert_eq!(cache.lengths, vec![70, 100]);
    let got = values(
        model
            .decode_step(&mut cache, &[ids[70], ids[100]], opts)
            .unwrap(),
    );
    let want = &io.floats["logits"].1;
    let v = 256;
    for (r, pos) in [(0, 70), (1, 100)] {
        let (max, _, _) = compare(
            &got[r * v..(r + 1) * v],
            &want[pos * v..(pos + 1) * v],
            1e-4,
        );
        assert!(max <= 1e-4, "row {r}: {max}");
    }
    assert!(model.prefill(&[vec![]], opts).is_err());
    assert!(model.decode_step(&mut cache, &[1], opts).is_err());
    assert!(model.decode_step(&mut cache, &[1, 256], opts).is_err());
}

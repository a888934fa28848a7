//! The dense-stage indexer KL computed per query chunk with injected gradients
//! (`v4_model::indexer_loss_dense`) against the plain autodiff computation of the same loss
//! (`indexer_kl` of `score_block` over all queries): the same value and the same gradients of
//! the indexer's queries, head weights and keys, for any chunk size, with packed-sample
//! visibility, uncounted queries, rows without candidates and rows without teacher mass.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Tensor, TensorData};
use v4_model::indexer::IndexInputs;
use v4_model::indexer_loss::indexer_kl;
use v4_model::indexer_loss_dense::dense_indexer_kl;

type AD = Autodiff<Flex>;

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Largest difference relative to the largest magnitude of `want`.
fn rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn chunked_dense_kl_has_the_value_and_gradients_of_autodiff() {
    let dev = Default::default();
    let (b, s, nh, hd, n) = (2, 37, 4, 8, 9);
    let q0 = Tensor::<AD, 4>::random([b, s, nh, hd], Distribution::Normal(0.0, 1.0), &dev);
    let w0 = Tensor::<AD, 3>::random([b, s, nh], Distribution::Normal(0.0, 0.5), &dev);
    let k0 = Tensor::<AD, 3>::random([b, n, hd], Distribution::Normal(0.0, 1.0), &dev);
    // Visibility: entry j once 4(j+1) tokens of the row's sample have passed; row 1 packs two
    // samples (the second restarts at token 20).
    let mut cand = vec![false; b * s * n];
    let mut target = vec![0f32; b * s * n];
    for r in 0..b {
        for t in 0..s {
            let (start, base) = if r == 1 && t >= 20 { (20, 5) } else { (0, 0) };
            let seen = (t + 1 - start) / 4;
            for j in 0..seen.min(n - base) {
                let i = (r * s + t) * n + base + j;
                cand[i] = true;
                // teacher mass on the candidates, none at all on query 30 of row 0
                target[i] = if r == 0 && t == 30 {
                    0.0
                } else {
                    1.0 + ((i * 7919) % 13) as f32
                };
            }
        }
    }
    for row in target.chunks_mut(n) {
        let total: f32 = row.iter().sum();
        if total > 0.0 {
            row.iter_mut().for_each(|v| *v /= total);
        }
    }
    let target = Tensor::<AD, 3>::from_data(TensorData::new(target, [b, s, n]), &dev);
    let cand = Tensor::<AD, 3, Bool>::from_data(TensorData::new(cand, [b, s, n]), &dev);
    let counted: Vec<f32> = (0..b * s)
        .map(|i| if i % 5 == 3 { 0.0 } else { 1.0 })
        .collect();
    let counted = Tensor::<AD, 2>::from_data(TensorData::new(counted, [b, s]), &dev);

    // Fresh leaves each time, so every loss has its own gradients.
    let leaves = || IndexInputs {
        q: q0.clone().detach().require_grad(),
        w: w0.clone().detach().require_grad(),
        k: k0.clone().detach().require_grad(),
    };
    let grads_of = |loss: Tensor<AD, 1>, x: &IndexInputs<AD>| {
        let g = loss.backward();
        (
            values(x.q.grad(&g).unwrap()),
            values(x.w.grad(&g).unwrap()),
            values(x.k.grad(&g).unwrap()),
        )
    };

    let inputs = leaves();
    let plain = indexer_kl(
        target.clone(),
        inputs.score_block(0..s, 0..n),
        cand.clone(),
        Some(counted.clone()),
    );
    let want_value = values(plain.clone())[0];
    let want = grads_of(plain, &inputs);
    assert!(want_value > 0.0);

    for rows in [1, 5, 36, 37, 100] {
        let inputs = leaves();
        let loss = dense_indexer_kl(
            &inputs,
            target.clone(),
            cand.clone(),
            Some(counted.clone()),
            rows,
        );
        let value = values(loss.clone())[0];
        assert!(
            (value - want_value).abs() <= 1e-6 * want_value,
            "{rows} rows: {value} vs {want_value}"
        );
        let got = grads_of(loss, &inputs);
        for (name, g, t) in [
            ("q", &got.0, &want.0),
            ("w", &got.1, &want.1),
            ("k", &got.2, &want.2),
        ] {
            let e = rel(g, t);
            println!("{rows} rows: d/d{name} {e:e}");
            assert!(e < 1e-5, "{rows} rows: d/d{name} off by {e:e}");
        }
    }
}

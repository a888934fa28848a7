//! Random initialisation for from-scratch training: a seeded [`MapSource`] holding every tensor of
//! the inventory, so a fresh model is built by the same loading path as a checkpoint.
//!
//! Choices (the V4 report does not publish its initialisation, training spec §1.3, §7): linear
//! weights `N(0, 1/fan_in)`, embedding `N(0, 1)`, RMSNorm gains 1, `ape` `N(0, 0.5²)`, attention
//! sinks 0, router bias 0; mHC gates α = 0.01 (mHC paper, Table 5), static biases 0 except an
//! identity-leaning residual mix (diagonal logits +4, so Sinkhorn starts near the identity);
//! `tid2eid` maps every token to `k` distinct experts drawn uniformly.

use crate::config::ModelConfig;
use crate::inventory::{inventory, ReleaseDtype};
use crate::weights::MapSource;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let z: f64 = StandardNormal.sample(rng);
            (z * std) as f32
        })
        .collect::<Vec<f32>>()
}

/// Seeded random weights for `cfg`, under the release names.
pub fn random_source(cfg: &ModelConfig, seed: u64) -> MapSource {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut src = MapSource::default();
    let hc = cfg.hc_mult;
    for spec in inventory(cfg) {
        let n: usize = spec.shape.iter().product();
        let name = spec.name.as_str();
        let last = name.rsplit('.').next().unwrap_or(name);
        if spec.dtype == ReleaseDtype::I64 {
            let (e, k) = (cfg.n_routed_experts, cfg.num_experts_per_tok);
            let mut ids: Vec<i64> = (0..e as i64).collect();
            let mut table = Vec::with_capacity(n);
            for _ in 0..spec.shape[0] {
                ids.shuffle(&mut rng);
                table.extend_from_slice(&ids[..k]);
            }
            src.ints
                .insert(spec.name.clone(), (spec.shape.clone(), table));
            continue;
        }
        let values = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if last == "ape" {
            normal(&mut rng, n, 0.5)
        } else if last == "attn_sink" || last == "bias" {
            vec![0.0; n]
        } else if last.ends_with("_scale") {
            vec![0.01; n]
        } else if last.ends_with("_base") {
            let mut v = vec![0.0; n];
            if n == (2 + hc) * hc {
                for j in 0..hc {
                    v[2 * hc + j * hc + j] = 4.0;
                }
            }
            v
        } else if name == "embed.weight" {
            normal(&mut rng, n, 1.0)
        } else {
            let fan_in = spec.shape.last().copied().unwrap_or(1).max(1);
            normal(&mut rng, n, (fan_in as f64).powf(-0.5))
        };
        src.floats
            .insert(spec.name.clone(), (spec.shape.clone(), values));
    }
    src
}

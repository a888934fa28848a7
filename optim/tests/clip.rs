//! Global gradient-norm clipping.

mod common;

use burn::tensor::DType;
use common::{host, tensor};
use v4_optim::{clip_grad_norm, ClipStats, GradNorm};

#[test]
fn global_norm_over_mixed_ranks() {
    let a = tensor::<1>(&[2], &[3.0, 0.0], DType::F32);
    let b = tensor::<2>(&[1, 2], &[0.0, 4.0], DType::F32);
    let c = tensor::<3>(&[1, 1, 1], &[12.0], DType::BF16);
    let mut acc = GradNorm::new();
    acc.add(&a);
    acc.add(&b);
    acc.add(&c);
    let stats = acc.finish(6.5).expect("norm");
    assert!((stats.norm - 13.0).abs() < 1e-6);
    assert!((stats.scale - 6.5 / (13.0 + 1e-6)).abs() < 1e-12);
    let clipped = host(stats.apply(b));
    assert!((clipped[1] - 4.0 * stats.scale).abs() < 1e-6);
}

#[test]
fn no_clip_below_threshold_or_when_disabled() {
    let g = vec![tensor::<2>(&[2, 2], &[1.0, 1.0, 1.0, 1.0], DType::F32)];
    let (out, stats) = clip_grad_norm(g, 10.0).expect("clip");
    assert_eq!(
        stats,
        ClipStats {
            norm: 2.0,
            scale: 1.0
        }
    );
    assert_eq!(host(out[0].clone()), vec![1.0; 4]);
    assert_eq!(ClipStats::new(100.0, 0.0).scale, 1.0);
}

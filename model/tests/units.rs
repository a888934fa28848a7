//! Hand-checkable unit tests of the pieces: hash routing and the overlapping compressor at
//! sequence lengths that are not multiples of the ratio (checked against a direct loop
//! transcription of spec §2.6 over the fixture's weights).

mod common;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use v4_model::compressor::CompressorKind;
use v4_model::router::Routing;

#[test]
fn hash_layers_route_by_the_tid2eid_table() {
    let model = load_model("tiny_b");
    let w = read(fixture("tiny_b").join("model.safetensors"));
    let table = &w.ints["layers.0.ffn.gate.tid2eid"].1;
    let gate = &model.layers[0].ffn.gate;
    assert!(matches!(gate.routing, Routing::Hash(_)));
    let dev = Default::default();
    let tokens: Vec<i64> = vec![5, 0, 255, 5];
    let x = Tensor::<B, 2>::ones([4, 64], &dev);
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(tokens.clone(), [4]), &dev);
    let (wts, idx) = gate.route(x, ids);
    let idx: Vec<i64> = idx.into_data().convert::<i64>().into_vec().unwrap();
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(
            &idx[2 * i..2 * i + 2],
            &table[2 * *t as usize..2 * *t as usize + 2]
        );
    }
    // weights renormalised then scaled by routed_scaling_factor = 1.5
    let wts = values(wts);
    for i in 0..4 {
        assert!((wts[2 * i] + wts[2 * i + 1] - 1.5).abs() < 1e-6);
    }
    // later layers route by score (bias present)
    assert!(matches!(
        model.layers[1].ffn.gate.routing,
        Routing::Score(_)
    ));
}

fn rms(v: &mut [f32], w: &[f32]) {
    let ms = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
    let r = 1.0 / (ms + 1e-6).sqrt();
    for (x, g) in v.iter_mut().zip(w) {
        *x *= r * g;
    }
}

/// Spec §2.6 as loops: entries before rope / quantization.
fn reference_entries(
    w: &Tensors,
    pre: &str,
    x: &[f32],
    s: usize,
    d: usize,
    r: usize,
    dd: usize,
) -> Vec<Vec<f32>> {
    let c = if r == 4 { 2 } else { 1 };
    let wkv = &w.floats[&format!("{pre}wkv.weight")].1;
    let wg = &w.floats[&format!("{pre}wgate.weight")].1;
    let ape = &w.floats[&format!("{pre}ape")].1;
    let norm = &w.floats[&format!("{pre}norm.weight")].1;
    let proj = |m: &[f32], t: usize| -> Vec<f32> {
        (0..c * dd)
            .map(|o| (0..d).map(|i| m[o * d + i] * x[t * d + i]).sum())
            .collect()
    };
    let n = s / r;
    (0..n)
        .map(|i| {
            let mut cands: Vec<(usize, usize, usize)> = Vec::new(); // (token, p, channel offset)
            if c == 2 && i > 0 {
                cands.extend((0..r).map(|p| ((i - 1) * r + p, p, 0)));
            }
            cands.extend((0..r).map(|p| (i * r + p, p, (c - 1) * dd)));
            let mut out = vec![0f32; dd];
            for (ch, o) in out.iter_mut().enumerate() {
                let sc: Vec<(f32, f32)> = cands
                    .iter()
                    .map(|&(t, p, off)| {
                        let k = proj(wkv, t)[off + ch];
                        let g = proj(wg, t)[off + ch] + ape[p * c * dd + off + ch];
                        (k, g)
                    })
                    .collect();
                let m = sc.iter().map(|e| e.1).fold(f32::NEG_INFINITY, f32::max);
                let z: f32 = sc.iter().map(|e| (e.1 - m).exp()).sum();
                *o = sc.iter().map(|e| e.0 * (e.1 - m).exp() / z).sum();
            }
            rms(&mut out, norm);
            out
        })
        .collect()
}

#[test]
fn overlap_compressor_at_ragged_lengths_matches_the_loop_reference() {
    let model = load_model("tiny_b");
    let w = read(fixture("tiny_b").join("model.safetensors"));
    let dev = Default::default();
    let d = 64;
    // ratio 4 (overlap, layer 1) at s = 7 and 10; ratio 128 (layer 2) at s = 130
    for (layer, s) in [(1usize, 7usize), (1, 10), (2, 130)] {
        let attn = &model.layers[layer].attn;
        let comp = attn.compressor.as_ref().unwrap();
        let xv: Vec<f32> = (0..s * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(xv.clone(), [1, s, d]), &dev);
        let got = values(
            comp.forward(&x, &[0.0; 16], CompressorKind::Main, false)
                .unwrap(),
        );
        let r = comp.ratio;
        let want = reference_entries(
            &w,
            &format!("layers.{layer}.attn.compressor."),
            &xv,
            s,
            d,
            r,
            96,
        );
        assert_eq!(
            got.len(),
            (s / r) * 96,
            "complete blocks only (s = {s}, ratio {r})"
        );
        for (i, e) in want.iter().enumerate() {
            for (ch, v) in e.iter().enumerate() {
                let g = got[i * 96 + ch];
                assert!(
                    (g - v).abs() < 1e-4,
                    "layer {layer} s {s} entry {i} ch {ch}: {g} vs {v}"
                );
            }
        }
    }
    // fewer tokens than the ratio: no entry
    let x = Tensor::<B, 3>::zeros([1, 3, d], &dev);
    let comp = model.layers[1].attn.compressor.as_ref().unwrap();
    assert!(comp
        .forward(&x, &[0.0; 16], CompressorKind::Main, false)
        .is_none());
}

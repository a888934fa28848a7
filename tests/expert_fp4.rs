//! FP4 QAT of the routed experts (training spec §5): with `expert_fp4` the forward equals the
//! forward of the same model whose routed-expert weights went through the checkpoint crate's
//! FP4 codec (quantize → dequantize, the bytes the release format stores), the gradients equal
//! those w.r.t. the dequantized weights (straight-through), and with the option off nothing
//! changes.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use v4_checkpoints::{e8m0, fp4};
use v4_model::base_weight::StackWeight;
use v4_model::expert_qat::fp4_weight_qdq;
use v4_model::linear::transposed;
use v4_model::named::{checkpoint_experts, Grad};
use v4_model::{ForwardOptions, ModelConfig, V4Model};

type B = Flex;
type AD = Autodiff<Flex>;

/// [`ModelConfig::toy`] (8 experts, top-2) with an expert width of 48 so `w2`'s input dimension
/// has a ragged last FP4 block (32 + 16).
fn tiny_config() -> ModelConfig {
    let mut c = ModelConfig::toy();
    c.moe_intermediate_size = 48;
    c.validate("tiny").unwrap();
    c
}

fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Release-format round trip of a checkpoint-orientation `[out, in]` weight.
fn codec_round_trip(w: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let (packed, exps) = fp4::quantize(w, out, inp).unwrap();
    let scales: Vec<f32> = exps.iter().map(|e| e8m0::pow2(*e)).collect();
    fp4::dequantize(&packed, &scales, out, inp)
}

fn dequantized_copy<BB: Backend>(model: &V4Model<BB>) -> V4Model<BB> {
    let mut m = model.clone();
    let dev = Default::default();
    let blocks = m
        .layers
        .iter_mut()
        .chain(m.mtp.iter_mut().map(|x| &mut x.block));
    for block in blocks {
        let ex = &mut block.ffn.experts;
        for w in [&mut ex.w1, &mut ex.w2, &mut ex.w3] {
            let [e, inp, out] = w.dims();
            let mut q = Vec::new();
            for (_, _, v) in checkpoint_experts("experts.w", w.val()) {
                q.extend(transposed(&codec_round_trip(&v, out, inp), out, inp));
            }
            *w = StackWeight::Dense(Param::from_tensor(Tensor::from_data(
                TensorData::new(q, [e, inp, out]),
                &dev,
            )));
        }
    }
    m
}

fn ids<BB: Backend>(seed: u64, b: usize, s: usize, vocab: usize) -> Tensor<BB, 2, Int> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<i64> = (0..b * s)
        .map(|_| rng.random_range(0..vocab as i64))
        .collect();
    Tensor::from_data(TensorData::new(v, [b, s]), &Default::default())
}

fn opts(expert_fp4: bool) -> ForwardOptions {
    ForwardOptions {
        fake_quant: false,
        expert_fp4,
        ..Default::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn fake_quant_equals_the_checkpoint_codec_on_weights() {
    // Random weights plus edge cases: block maxima exactly 6·2^k and one ulp around them, ties
    // of the e2m1 grid, an all-zero block, tiny and huge magnitudes, a ragged last block.
    let (inp, out) = (80, 6);
    let mut rng = StdRng::seed_from_u64(1);
    let mut w: Vec<f32> = (0..out * inp)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let row = |w: &mut Vec<f32>, o: usize, vals: &[f32]| {
        w[o * inp..o * inp + vals.len()].copy_from_slice(vals);
    };
    row(
        &mut w,
        0,
        &[6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -5.0],
    );
    let above = f32::from_bits(24.0f32.to_bits() + 1);
    let below = f32::from_bits(24.0f32.to_bits() - 1);
    row(&mut w, 1, &[24.0, 3.0, 1.0]);
    w[inp + 32] = above; // block 1 of row 1
    w[inp + 64] = below; // block 2 of row 1 (ragged)
    for i in 0..32 {
        w[2 * inp + i] = (i as f32 - 16.0) * 1e-30;
    }
    for v in &mut w[2 * inp + 32..2 * inp + 64] {
        *v = 0.0;
    }
    row(&mut w, 3, &[3e30, -1e29, 7.0]);
    row(&mut w, 4, &[6.0 * 2f32.powi(-126), 1e-45]);
    for i in 32..64 {
        w[4 * inp + i] = 0.0;
    }
    w[4 * inp + 33] = f32::from_bits((6.0f32 * 1024.0).to_bits() + 1);
    w[5 * inp] = f32::from_bits((6.0f32 * 1024.0).to_bits() - 1);
    // Our layout is [in, out]: transpose.
    let mut ours = vec![0f32; inp * out];
    for o in 0..out {
        for i in 0..inp {
            ours[i * out + o] = w[o * inp + i];
        }
    }
    let t = Tensor::<B, 2>::from_data(TensorData::new(ours, [inp, out]), &Default::default());
    let q = values(fp4_weight_qdq(t).transpose());
    let want = codec_round_trip(&w, out, inp);
    for (j, (a, b)) in q.iter().zip(&want).enumerate() {
        assert!(
            a == b,
            "[{}, {}]: fake quant {a:e}, codec {b:e}",
            j / inp,
            j % inp
        );
    }
}

/// Where the two rules part: a block whose `amax/6` lies a hair above `2^k` for larger `k`. The
/// exact `2^ceil(log2(·))` (the reference kernels' bit trick, `_pow2_ceil` in
/// `baseline/v4_torch.py`, and our `pow2_ceil`) picks `2^(k+1)`; the codec's f32 `log2().ceil()`
/// rounds `log2` down onto `k` and picks `2^k`. QAT follows the reference.
#[test]
fn fake_quant_uses_the_exact_power_of_two_ceiling() {
    let mut w = vec![0f32; 32];
    w[0] = f32::from_bits((6.0f32 * 1024.0).to_bits() + 1); // amax/6 = 1024·(1 + 2^-23)
    w[1] = 1700.0;
    let t = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [32, 1]), &Default::default());
    let q = values(fp4_weight_qdq(t));
    // scale 2^11: 1700/2048 = 0.83 → 1.0; amax → 3.0·2048.
    assert_eq!(&q[..2], &[6144.0, 2048.0]);
    // The checkpoint codec (what export writes) takes the same exact ceiling.
    let codec = codec_round_trip(&w, 1, 32);
    assert_eq!(&codec[..2], &q[..2]);
}

#[test]
fn qat_forward_equals_dequantized_model_and_off_changes_nothing() {
    let cfg = tiny_config();
    let model = V4Model::<B>::init(&cfg, 21, &Default::default()).unwrap();
    let deq = dequantized_copy(&model);
    let x = ids::<B>(3, 2, 24, cfg.vocab_size);

    let qat = model.forward(x.clone(), opts(true), true, true);
    let reference = deq.forward(x.clone(), opts(false), true, true);
    let off = model.forward(x.clone(), opts(false), true, true);
    let (lq, lr, lo) = (
        values(qat.logits.clone()),
        values(reference.logits.clone()),
        values(off.logits.clone()),
    );
    let d_logits = max_abs_diff(&lq, &lr);
    let d_mtp = max_abs_diff(
        &values(qat.mtp_logits[0].clone()),
        &values(reference.mtp_logits[0].clone()),
    );
    let d_off = max_abs_diff(&lo, &lr);
    println!("QAT vs dequantized model: logits {d_logits:e}, mtp logits {d_mtp:e}");
    println!("fp32 weights vs dequantized model (effect of FP4): logits {d_off:e}");
    assert_eq!(d_logits, 0.0);
    assert_eq!(d_mtp, 0.0);
    for (a, b) in qat.hidden.iter().zip(&reference.hidden) {
        assert_eq!(max_abs_diff(&values(a.clone()), &values(b.clone())), 0.0);
    }
    let loads = |o: &v4_model::ModelOutput<B>| -> Vec<Vec<u64>> {
        o.aux.iter().map(|a| a.expert_load.clone()).collect()
    };
    assert_eq!(loads(&qat), loads(&reference));
    assert!(d_off > 0.0, "FP4 must change something");

    // Off: the default options (expert_fp4 = false) give the plain fp32-expert forward, and a QAT
    // forward leaves the master weights as they were.
    let default = model.forward(
        x,
        ForwardOptions {
            fake_quant: false,
            ..Default::default()
        },
        false,
        false,
    );
    assert_eq!(values(default.logits), lo);
    let w = values(model.layers[1].ffn.experts.w1.val());
    let fresh = V4Model::<B>::init(&cfg, 21, &Default::default()).unwrap();
    assert_eq!(w, values(fresh.layers[1].ffn.experts.w1.val()));
}

fn grads_by_name(
    model: &V4Model<AD>,
    x: Tensor<AD, 2, Int>,
    fp4: bool,
) -> HashMap<String, Vec<f32>> {
    let out = model.forward(x, opts(fp4), false, true);
    // A fixed random linear functional of both heads' logits.
    let probe = |t: Tensor<AD, 3>, seed: u64| {
        let dims = t.dims();
        let mut rng = StdRng::seed_from_u64(seed);
        let n = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        (t * Tensor::<AD, 3>::from_data(TensorData::new(v, dims), &Default::default())).sum()
    };
    let loss = probe(out.logits, 1) + probe(out.mtp_logits[0].clone(), 2);
    let grads = loss.backward();
    let mut map = HashMap::new();
    model.visit_named(&mut |name, p| {
        for (n, _, v) in p.release_tensors(&name, &Grad::<AD>(&grads)) {
            map.insert(n, v);
        }
    });
    map
}

#[test]
fn qat_gradient_is_straight_through() {
    let cfg = tiny_config();
    let model = V4Model::<AD>::init(&cfg, 22, &Default::default()).unwrap();
    let deq = dequantized_copy(&model);
    let x = ids::<AD>(4, 2, 20, cfg.vocab_size);
    let g_qat = grads_by_name(&model, x.clone(), true);
    let g_deq = grads_by_name(&deq, x, false);
    let mut keys: Vec<_> = g_deq.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        {
            let mut k: Vec<_> = g_qat.keys().cloned().collect();
            k.sort();
            k
        },
        keys,
        "same parameters receive gradients"
    );
    let (mut experts, mut worst) = (0, 0f32);
    for k in &keys {
        let (a, b) = (&g_qat[k], &g_deq[k]);
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        let rel = max_abs_diff(a, b) / scale;
        worst = worst.max(rel);
        assert!(rel <= 1e-6, "{k}: relative gradient difference {rel:e}");
        if k.contains(".experts.") {
            experts += 1;
        }
    }
    println!(
        "{} gradients compared ({experts} routed-expert weights), worst relative difference {worst:e}",
        keys.len()
    );
    assert!(experts >= 3 * 8);
}

//! The lightning indexer's KL loss (`v4_model::indexer_loss`, issue #6 item 1) on `tiny_a`
//! (fake quant on, as the reference):
//! - sparse mode: the LM (+ MTP) cross-entropy reaches no indexer parameter, and the indexer loss
//!   reaches only indexer parameters (every one of them);
//! - turning the loss on changes no output, in either attention mode;
//! - the loss equals an independent f64 computation from the layer's q / KV / sink (full
//!   softmax over window + compressed + sink, summed over heads, L1-normalised; student
//!   log-softmax over the same set), in dense and sparse mode;
//! - dense mode: plain gradient descent on the indexer parameters alone lowers the KL;
//! - the KL is ≥ 0 and vanishes when the student equals the teacher.

mod common;
use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use std::time::Instant;
use v4_model::compressor::{quantize_kv, CompressorKind};
use v4_model::indexer_loss::{indexer_kl, kl_per_query, teacher};
use v4_model::masks::compressed_visible;
use v4_model::named::NamedParam;
use v4_model::norm::rms_normalize;
use v4_model::rope::RopeTable;
use v4_model::sink_attention::{sink_attention_probs, CompressedKeys};
use v4_model::{AttentionMode, ForwardOptions, MapSource, ModelConfig, V4Model};

type AD = Autodiff<B>;
type Grads = <AD as AutodiffBackend>::Gradients;

fn load<Bk: Backend>() -> V4Model<Bk> {
    let cfg = ModelConfig::from_file(&fixture("tiny_a").join("config.json")).unwrap();
    let w = read(fixture("tiny_a").join("model.safetensors"));
    let src = MapSource {
        floats: w.floats,
        ints: w.ints,
    };
    V4Model::load(&cfg, &src, &Default::default()).unwrap()
}

/// `b` windows of `s` tokens of the fixture's input (sequence i starts at token 100·i).
fn tokens<Bk: Backend>(b: usize, s: usize) -> Tensor<Bk, 2, Int> {
    let io = read(fixture("tiny_a").join("io.safetensors"));
    let all = &io.ints["input_ids"].1;
    let v: Vec<i64> = (0..b)
        .flat_map(|i| all[100 * i..100 * i + s].to_vec())
        .collect();
    Tensor::from_data(TensorData::new(v, [b, s]), &Default::default())
}

fn opts(attention: AttentionMode, indexer_loss: bool) -> ForwardOptions {
    ForwardOptions {
        attention,
        indexer_loss,
        ..Default::default()
    }
}

fn ce(logits: Tensor<AD, 3>, targets: Tensor<AD, 2, Int>) -> Tensor<AD, 1> {
    let [b, s, v] = logits.dims();
    let lp = log_softmax(logits.reshape([b * s, v]), 1);
    lp.gather(1, targets.reshape([b * s, 1])).mean().neg()
}

/// Largest |gradient| of a parameter (`None`: no gradient at all); panics on a non-finite one.
fn grad_max(p: &NamedParam<'_, AD>, grads: &Grads) -> Option<f32> {
    let v = match p {
        NamedParam::Plain1(t) => t.val().grad(grads).map(values),
        NamedParam::Plain2(t) | NamedParam::Transposed(t) => t.val().grad(grads).map(values),
        NamedParam::Grouped(t) | NamedParam::Experts(t) | NamedParam::Stacked(t) => {
            t.val().grad(grads).map(values)
        }
        NamedParam::Int2(_) | NamedParam::Stored(_) => None,
    }?;
    assert!(v.iter().all(|x| x.is_finite()), "non-finite gradient");
    Some(v.iter().fold(0f32, |m, x| m.max(x.abs())))
}

fn indexer_losses<Bk: Backend>(out: &v4_model::ModelOutput<Bk>) -> Vec<Tensor<Bk, 1>> {
    out.aux
        .iter()
        .filter_map(|a| a.indexer_loss.clone())
        .collect()
}

/// Gradient reach in sparse mode: LM (+ MTP) CE → no indexer tensor; indexer KL → only indexer
/// tensors. Returns the indexer tensors the KL reached.
fn sparse_reach(fake_quant: bool) -> Vec<String> {
    let t0 = Instant::now();
    let model = load::<AD>();
    let (b, s) = (2, 64);
    let ids = tokens::<AD>(b, s);
    let o = ForwardOptions {
        fake_quant,
        ..opts(AttentionMode::Sparse, true)
    };
    let mut indexers = 0;
    model.visit_named(&mut |name, _| indexers += name.ends_with("indexer.wq_b.weight") as usize);
    assert_eq!(indexers, 3, "tiny_a: CSA layers 1 and 3 and the MTP block");

    let out = model.forward(ids.clone(), o, false, true);
    let lm = ce(
        out.logits.clone().slice_dim(1, 0..s - 1),
        ids.clone().slice([0..b, 1..s]),
    ) + ce(
        out.mtp_logits[0].clone().slice_dim(1, 0..s - 2),
        ids.clone().slice([0..b, 2..s]),
    );
    let g_lm = lm.backward();

    let out = model.forward(ids, o, false, true);
    let losses = indexer_losses(&out);
    assert_eq!(losses.len(), indexers, "one loss per CSA block");
    let kl: Vec<f32> = losses
        .iter()
        .map(|l| values(l.clone().inner())[0])
        .collect();
    assert!(kl.iter().all(|v| v.is_finite() && *v >= 0.0), "{kl:?}");
    let g_ix = losses.into_iter().reduce(|a, b| a + b).unwrap().backward();

    let (mut lm_reached, mut ix_reached, mut ix_total) = (0, Vec::new(), 0);
    model.visit_named(&mut |name, p| {
        let lm = grad_max(&p, &g_lm).unwrap_or(0.0);
        let ix = grad_max(&p, &g_ix).unwrap_or(0.0);
        if name.contains(".attn.indexer.") {
            assert!(lm == 0.0, "{name}: LM loss gradient {lm:e}");
            ix_total += 1;
            if ix > 0.0 {
                ix_reached.push(name);
            }
        } else {
            assert!(ix == 0.0, "{name}: indexer-loss gradient {ix:e}");
            lm_reached += (lm > 0.0) as usize;
        }
    });
    println!(
        "fake quant {fake_quant}: sparse KL per CSA block {kl:?}; the LM loss reached \
         {lm_reached} non-indexer tensors and no indexer tensor; the indexer loss reached \
         {} of {ix_total} indexer tensors and nothing else ({:.1} s)",
        ix_reached.len(),
        t0.elapsed().as_secs_f32()
    );
    assert_eq!(ix_total, 6 * indexers);
    assert!(lm_reached > 100);
    ix_reached
}

#[test]
fn sparse_mode_keeps_the_lm_loss_and_the_indexer_loss_apart() {
    let reached = sparse_reach(false);
    assert_eq!(
        reached.len(),
        18,
        "every indexer tensor learns: {reached:?}"
    );
}

#[test]
fn sparse_mode_keeps_the_losses_apart_with_fake_quant() {
    let reached = sparse_reach(true);
    assert_eq!(
        reached.len(),
        18,
        "every indexer tensor learns through the FP4 straight-through estimator: {reached:?}"
    );
}

#[test]
fn the_loss_changes_no_output() {
    let model = load::<B>();
    let ids = tokens::<B>(1, 128);
    for mode in [AttentionMode::Sparse, AttentionMode::Dense] {
        let off = model.forward(ids.clone(), opts(mode, false), false, true);
        let on = model.forward(ids.clone(), opts(mode, true), false, true);
        assert!(indexer_losses(&off).is_empty());
        assert_eq!(indexer_losses(&on).len(), 3);
        assert_eq!(values(off.logits), values(on.logits), "{mode:?} logits");
        assert_eq!(
            values(off.mtp_logits[0].clone()),
            values(on.mtp_logits[0].clone()),
            "{mode:?} mtp logits"
        );
    }
}

/// Layer 1 (CSA) of tiny_a on its real input (the fixture's `hidden.0` through `hc_attn` and
/// `attn_norm`), two windows of `s` positions.
fn layer1_input(model: &V4Model<B>, s: usize) -> Tensor<B, 3> {
    let io = read(fixture("tiny_a").join("io.safetensors"));
    let h0 = float::<4>(&io, "hidden.0");
    let streams = Tensor::cat(
        vec![h0.clone().slice_dim(1, 0..s), h0.slice_dim(1, 100..100 + s)],
        0,
    );
    let block = &model.layers[1];
    block.attn_norm.forward(block.hc_attn.pre(&streams).0)
}

#[test]
fn the_loss_matches_an_independent_computation() {
    let model = load::<B>();
    let attn = &model.layers[1].attn;
    assert_eq!(attn.ratio, 4);
    let dev = Default::default();
    let s = 48; // > window (16); 12 blocks > top-k (8)
    let x = layer1_input(&model, s);
    let [b, _, _] = x.dims();
    let (h, hd, rd, w) = (attn.n_heads, attn.head_dim, attn.rope_dim, attn.window);
    let scale = (hd as f64).powf(-0.5);

    // The layer's own q, KV, compressed KV and indexer scores (fake quant on).
    let table = RopeTable::new(&attn.freqs, 0..s, &dev);
    let qr = attn.q_norm.forward(attn.wq_a.forward(x.clone()));
    let q = attn.wq_b.forward(qr.clone()).reshape([b, s, h, hd]);
    let q = table.rotate_tail(rms_normalize(q, attn.eps), rd, false);
    let kv = attn.kv_norm.forward(attn.wkv.forward(x.clone()));
    let kv = quantize_kv(table.rotate_tail3(kv, rd, false), rd, true);
    let comp = attn.compressor.as_ref().unwrap();
    let ckv = comp
        .forward(&x, &attn.freqs, CompressorKind::Main, true)
        .unwrap();
    let n = ckv.dims()[1];
    let ix = attn.indexer.as_ref().unwrap();
    let scores = ix.scores(&x, &qr, &table, &attn.freqs, true).unwrap();
    let visible = v4_model::util::bool_tensor_from::<B, 3>(
        compressed_visible(s, n, attn.ratio),
        [1, s, n],
        &dev,
    )
    .expand([b, s, n]);

    let (qv, kvv, cv, sv) = (
        values(q.clone()),
        values(kv.clone()),
        values(ckv.clone()),
        values(scores.clone()),
    );
    let sink = values(attn.attn_sink.val());
    let dot =
        |a: &[f32], c: &[f32]| -> f64 { a.iter().zip(c).map(|(x, y)| *x as f64 * *y as f64).sum() };

    for mode in [AttentionMode::Dense, AttentionMode::Sparse] {
        let cand_t = match mode {
            AttentionMode::Dense => visible.clone(),
            AttentionMode::Sparse => ix.select(scores.clone(), visible.clone()),
        };
        let cand: Vec<bool> = values(cand_t.clone().float())
            .iter()
            .map(|v| *v > 0.5)
            .collect();

        // f64 by hand: per head, softmax over window keys ∪ candidates ∪ sink.
        let mut want_p = vec![0f64; b * s * n];
        let (mut kl, mut rows) = (0f64, 0usize);
        for bi in 0..b {
            for t in 0..s {
                let js: Vec<usize> = (0..n).filter(|&j| cand[(bi * s + t) * n + j]).collect();
                if js.is_empty() {
                    continue;
                }
                rows += 1;
                let mut mass = vec![0f64; n];
                for hh in 0..h {
                    let qq = &qv[((bi * s + t) * h + hh) * hd..][..hd];
                    let mut z: Vec<f64> = (t + 1 - (t + 1).min(w)..=t)
                        .map(|u| scale * dot(qq, &kvv[(bi * s + u) * hd..][..hd]))
                        .collect();
                    let zc: Vec<f64> = js
                        .iter()
                        .map(|&j| scale * dot(qq, &cv[(bi * n + j) * hd..][..hd]))
                        .collect();
                    z.extend(&zc);
                    z.push(sink[hh] as f64);
                    let m = z.iter().cloned().fold(f64::MIN, f64::max);
                    let den: f64 = z.iter().map(|v| (v - m).exp()).sum();
                    for (&j, zj) in js.iter().zip(&zc) {
                        mass[j] += (zj - m).exp() / den;
                    }
                }
                let total: f64 = mass.iter().sum();
                let lse = js
                    .iter()
                    .map(|&j| sv[(bi * s + t) * n + j] as f64)
                    .fold(f64::MIN, f64::max);
                let lse = lse
                    + js.iter()
                        .map(|&j| (sv[(bi * s + t) * n + j] as f64 - lse).exp())
                        .sum::<f64>()
                        .ln();
                for &j in &js {
                    let p = mass[j] / total;
                    want_p[(bi * s + t) * n + j] = p;
                    if p > 0.0 {
                        kl += p * (p.ln() - (sv[(bi * s + t) * n + j] as f64 - lse));
                    }
                }
            }
        }
        let want = kl / rows as f64;

        // The teacher straight from the attention kernel.
        let keys = CompressedKeys {
            kv: ckv.clone(),
            visible: cand_t,
        };
        let (_, probs) = sink_attention_probs(
            q.clone(),
            kv.clone(),
            Some(&keys),
            attn.attn_sink.val(),
            scale,
            w,
            true,
        );
        let got_p = values(teacher(probs.unwrap()));
        let p_err = got_p
            .iter()
            .zip(&want_p)
            .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));

        let got = values(attn.forward_aux(x.clone(), opts(mode, true)).1.unwrap())[0] as f64;
        println!(
            "{mode:?}: KL {got:.7} vs f64 {want:.7} (|Δ| {:.1e}); teacher max |Δ| {p_err:.1e}; \
             {rows} of {} queries with candidates",
            (got - want).abs(),
            b * s
        );
        assert_eq!(rows, b * (s - 3), "queries 0..3 see no complete block");
        assert!(p_err < 1e-6, "{mode:?}: teacher off by {p_err:e}");
        assert!((got - want).abs() < 2e-6, "{mode:?}: {got} vs {want}");
    }
}

/// Plain gradient descent on one module's float parameters.
struct Descent<'a> {
    grads: &'a Grads,
    lr: f64,
}

impl ModuleMapper<AD> for Descent<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
        let (id, t, _) = param.consume();
        let new = match t.grad(self.grads) {
            Some(g) => t.inner() - g.mul_scalar(self.lr),
            None => t.inner(),
        };
        Param::initialized(id, Tensor::from_inner(new).require_grad())
    }
}

#[test]
fn dense_mode_descent_on_the_indexer_alone_lowers_the_kl() {
    let t0 = Instant::now();
    let mut model = load::<AD>();
    let ids = tokens::<AD>(1, 64);
    // Fake quant off: with it on, every indexer tensor behind the FP4 fake quant of qI / kI
    // learns only once `straight_through` passes activation gradients (see above).
    let o = ForwardOptions {
        fake_quant: false,
        ..opts(AttentionMode::Dense, true)
    };
    let (steps, lr) = (20, 0.5);
    let mut history = Vec::new();
    for step in 0..=steps {
        let out = model.forward(ids.clone(), o, false, true);
        let losses = indexer_losses(&out);
        let kl: Vec<f32> = losses
            .iter()
            .map(|l| values(l.clone().inner())[0])
            .collect();
        assert!(kl.iter().all(|v| v.is_finite() && *v >= 0.0), "{kl:?}");
        history.push(kl);
        if step == steps {
            break;
        }
        let grads = losses.into_iter().reduce(|a, b| a + b).unwrap().backward();
        let mut descent = Descent { grads: &grads, lr };
        for block in model
            .layers
            .iter_mut()
            .chain(model.mtp.iter_mut().map(|m| &mut m.block))
        {
            block.attn.indexer = block.attn.indexer.take().map(|ix| ix.map(&mut descent));
        }
    }
    let (first, last) = (&history[0], &history[steps]);
    println!("dense KL per CSA block, step 0 → {steps} (lr {lr}): {first:?} → {last:?}");
    println!(
        "sum: {}",
        history
            .iter()
            .map(|k| format!("{:.4}", k.iter().sum::<f32>()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("({:.1} s)", t0.elapsed().as_secs_f32());
    for (a, z) in first.iter().zip(last) {
        assert!(z < &(0.5 * a), "KL {a} → {z}");
    }
    for k in history.windows(2) {
        assert!(
            k[1].iter().sum::<f32>() < k[0].iter().sum::<f32>(),
            "KL rose"
        );
    }
}

#[test]
fn kl_is_zero_for_a_matching_student_and_positive_otherwise() {
    let dev = Default::default();
    let (s, h, n) = (9, 3, 5);
    let val = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 1000.0;
    // candidates: causal-ish pattern, query 0 has none
    let cand: Vec<bool> = (0..s * n).map(|i| i % n < i / n).collect();
    let probs: Vec<f32> = (0..s * h * n)
        .map(|i| {
            let (t, j) = (i / (h * n), i % n);
            if cand[t * n + j] {
                0.05 + val(i) / 8.0
            } else {
                0.0
            }
        })
        .collect();
    let p = teacher(Tensor::<B, 4>::from_data(
        TensorData::new(probs, [1, s, h, n]),
        &dev,
    ));
    let pv = values(p.clone());
    let cand_t = v4_model::util::bool_tensor_from::<B, 3>(cand.clone(), [1, s, n], &dev);
    // the student's scores = log teacher + a per-query shift, anything on non-candidates
    let matching: Vec<f32> = (0..s * n)
        .map(|i| {
            if cand[i] {
                pv[i].ln() + (i / n) as f32
            } else {
                100.0 * val(i + 7)
            }
        })
        .collect();
    let zero = indexer_kl(
        p.clone(),
        Tensor::from_data(TensorData::new(matching, [1, s, n]), &dev),
        cand_t.clone(),
        None,
    );
    let zero = values(zero)[0];
    assert!(zero.abs() < 1e-6, "matching student: KL {zero}");
    for seed in 0..5 {
        let sc: Vec<f32> = (0..s * n).map(|i| 6.0 * val(i * 31 + seed) - 3.0).collect();
        let per = kl_per_query(
            p.clone(),
            Tensor::from_data(TensorData::new(sc, [1, s, n]), &dev),
            cand_t.clone(),
        );
        let per = values(per);
        assert_eq!(per[0], 0.0, "query without candidates");
        assert!(per.iter().all(|v| *v >= -1e-7), "{per:?}");
        assert!(per[1..].iter().any(|v| *v > 1e-3));
    }
}

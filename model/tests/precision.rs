//! bf16 mixed precision ([`v4_model::precision`]): on random tiny configs with every V4 part
//! (hash layer, CSA, HCA, MTP), the bf16 forward and gradients stay close to f32 (the
//! products round their operands to 8 mantissa bits, everything else is f32), every gradient
//! reaches its f32 parameter as f32, and the f32 path is untouched by the switch.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use v4_model::{AttentionMode, ForwardOptions, Precision, SampleBounds, V4Model};

mod common;
use common::packed::*;

/// `|a − b|₂ / |b|₂`.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-300)).sqrt()
}

#[test]
fn bf16_forward_and_gradients_track_f32() {
    let s = 160;
    for seed in 0..2u64 {
        let cfg = random_config(40 + seed);
        let dev = Default::default();
        let model = V4Model::<AD>::init(&cfg, 3 + seed, &dev).unwrap();
        let x = ids(70 + seed, s, cfg.vocab_size);
        let run = |precision| {
            let o = ForwardOptions {
                precision,
                indexer_loss: false,
                ..opts(AttentionMode::Sparse)
            };
            let out = model.forward(int_tensor(x.clone(), [1, s]), o, false, true);
            let logits = values(out.logits.clone());
            let l = loss(&out, &x, &SampleBounds::whole(1, s), 0.3, s as f64);
            let lv = values(l.clone())[0];
            (logits, lv, grads(&model, l))
        };
        let (l32, loss32, g32) = run(Precision::F32);
        let (l16, loss16, g16) = run(Precision::Bf16);
        let (again, _, _) = run(Precision::F32);
        assert_eq!(
            l32, again,
            "the f32 path does not depend on an earlier bf16 call"
        );
        let dl = rel(&l16, &l32);
        assert!(dl > 0.0, "bf16 changed nothing: the switch is not applied");
        // Per position: most rows move by bf16 rounding only (~1e-2); a few move more where a
        // near-tie in expert routing or the indexer's top-k flips (discrete, as in any bf16 run).
        let v = l32.len() / s;
        let mut rows: Vec<f64> = (0..s)
            .map(|t| rel(&l16[t * v..(t + 1) * v], &l32[t * v..(t + 1) * v]))
            .collect();
        rows.sort_by(f64::total_cmp);
        let median = rows[s / 2];
        assert!(
            median < 2e-2,
            "seed {seed}: median row differs by {median:.3e}"
        );
        assert!(
            dl < 0.1,
            "seed {seed}: logits differ by {dl:.3e} (relative)"
        );
        let dloss = (loss16 - loss32).abs() / loss32;
        assert!(
            dloss < 2e-3,
            "seed {seed}: loss {loss32} vs {loss16} in bf16"
        );

        assert_eq!(g16.len(), g32.len(), "the same parameters get gradients");
        let (all16, all32): (Vec<f64>, Vec<f64>) = g32
            .iter()
            .flat_map(|(id, g)| g16[id].iter().copied().zip(g.iter().copied()))
            .unzip();
        let dg = rel(&all16, &all32);
        assert!(
            dg < 0.15,
            "seed {seed}: gradients differ by {dg:.3e} (relative)"
        );
        println!(
            "seed {seed}: logits {dl:.2e} (median row {median:.2e}), loss {dloss:.2e}, \
             gradients {dg:.2e} relative to f32"
        );
    }
}

#[test]
fn bf16_gradients_are_f32() {
    let cfg = random_config(44);
    let dev = Default::default();
    let model = V4Model::<AD>::init(&cfg, 1, &dev).unwrap();
    let x = ids(3, 64, cfg.vocab_size);
    let o = ForwardOptions {
        precision: Precision::Bf16,
        ..opts(AttentionMode::Sparse)
    };
    let out = model.forward(int_tensor(x.clone(), [1, 64]), o, false, true);
    assert_eq!(
        out.logits.dtype(),
        DType::F32,
        "logits (and the loss) stay f32"
    );
    struct Dtypes<'a> {
        g: &'a <AD as AutodiffBackend>::Gradients,
        seen: Vec<DType>,
    }
    impl ModuleVisitor<AD> for Dtypes<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
            if let Some(g) = p.val().grad(self.g) {
                self.seen.push(g.dtype());
            }
        }
    }
    let g = out.logits.sum().backward();
    let mut d = Dtypes {
        g: &g,
        seen: vec![],
    };
    model.visit(&mut d);
    assert!(d.seen.len() > 20, "{} gradients", d.seen.len());
    assert!(d.seen.iter().all(|&t| t == DType::F32), "{:?}", d.seen);
}

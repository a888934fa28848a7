//! Gradients through the model (Burn autodiff) against `tiny_b/grads.safetensors`: gradients of
//! the mean next-token cross-entropy (`grad.*`) and of the MTP cross-entropy against tokens 2..
//! (`grad_mtp.*`), computed by an independent autograd implementation of the reference in f64,
//! fake quant off. Each tensor must match within 1e-4 of its largest gradient magnitude.

mod common;
use burn::backend::Autodiff;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use v4_model::named::Grad;
use v4_model::{ForwardOptions, MapSource, ModelConfig, V4Model};

type AD = Autodiff<B>;

fn ce(logits: Tensor<AD, 3>, targets: Tensor<AD, 2, Int>) -> Tensor<AD, 1> {
    let [b, s, v] = logits.dims();
    let lp = log_softmax(logits.reshape([b * s, v]), 1);
    let picked = lp.gather(1, targets.reshape([b * s, 1]));
    picked.mean().neg()
}

fn check(prefix: &str, mtp: bool) {
    let cfg = ModelConfig::from_file(&fixture("tiny_b").join("config.json")).unwrap();
    let w = read(fixture("tiny_b").join("model.safetensors"));
    let src = MapSource {
        floats: w.floats,
        ints: w.ints,
    };
    let model = V4Model::<AD>::load(&cfg, &src, &Default::default()).unwrap();
    let io = read(fixture("tiny_b").join("io.safetensors"));
    let (shape, ids) = &io.ints["input_ids"];
    let s = shape[1];
    let ids: Tensor<AD, 2, Int> =
        Tensor::from_data(TensorData::new(ids.clone(), [1, s]), &Default::default());
    let opts = ForwardOptions {
        fake_quant: false,
        ..Default::default()
    };
    let out = model.forward(ids.clone(), opts, false, mtp);
    let loss = if mtp {
        let lg = out.mtp_logits[0].clone();
        ce(lg.slice_dim(1, 0..s - 2), ids.slice([0..1, 2..s]))
    } else {
        ce(out.logits.slice_dim(1, 0..s - 1), ids.slice([0..1, 1..s]))
    };
    let want_loss = io.floats[if mtp { "loss_mtp" } else { "loss" }].1[0];
    let got_loss = values(loss.clone().inner())[0];
    assert!(
        (got_loss - want_loss).abs() < 1e-5,
        "loss {got_loss} vs {want_loss}"
    );
    let grads = loss.backward();
    let want = read(fixture("tiny_b").join("grads.safetensors"));
    let mut checked = 0;
    let mut worst = (String::new(), 0f32);
    let mut got = Vec::new();
    model.visit_named(&mut |name, p| {
        let g = p.release_tensors(&name, &Grad::<AD>(&grads));
        if g.is_empty() && p.float_id().is_some() {
            got.extend(p.release_names(&name).into_iter().map(|n| (n, None))); // no gradient
        }
        got.extend(g.into_iter().map(|(n, s, v)| (n, Some((s, v)))));
    });
    for (name, got) in got {
        let key = format!("{prefix}{name}");
        match (want.floats.get(&key), got) {
            (Some((ws, wv)), Some((gs, gv))) => {
                assert_eq!(ws, &gs, "{key} shape");
                let scale = wv.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
                let err = gv
                    .iter()
                    .zip(wv)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err <= 1e-4 * scale,
                    "{key}: max abs error {err:e}, largest gradient {scale:e}"
                );
                if err / scale > worst.1 {
                    worst = (key, err / scale);
                }
                checked += 1;
            }
            (Some((_, wv)), None) => {
                assert!(
                    wv.iter().all(|x| *x == 0.0),
                    "{key}: reference has a gradient, we have none"
                );
            }
            (None, Some((_, gv))) => {
                let m = gv.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(
                    m == 0.0,
                    "{key}: we have a non-zero gradient ({m:e}), the reference none"
                );
            }
            (None, None) => {}
        }
    }
    println!(
        "{prefix}: {checked} tensors checked, worst relative error {:.2e} ({})",
        worst.1, worst.0
    );
    assert!(checked > 100);
}

#[test]
fn lm_loss_gradients_match_the_reference() {
    check("grad.", false);
}

#[test]
fn mtp_loss_gradients_match_the_reference() {
    check("grad_mtp.", true);
}

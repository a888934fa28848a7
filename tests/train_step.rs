//! A freshly initialised tiny V4 trained for a few steps with V4's optimizers (Muon + AdamW routed
//! by name) on a learnable synthetic sequence: the next-token loss must fall well below chance.

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use std::path::Path;
use v4_model::{ForwardOptions, ModelConfig, V4Model};
use v4_optim::{OptimConfig, V4Optimizer};
use v4train::train::apply_optimizer;
use v4train::train::loss::cross_entropy;

type AD = Autodiff<Flex>;

#[test]
fn loss_falls_on_a_learnable_sequence() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_a/config.json");
    let cfg = ModelConfig::from_file(&path).unwrap();
    let dev = Default::default();
    let mut model = V4Model::<AD>::init(&cfg, 7, &dev).unwrap();
    let mut opt = V4Optimizer::<Flex>::new(&OptimConfig::default()).unwrap();
    // token t+1 = (5·t + 3) mod 256, two sequences with different starts
    let (b, s) = (2, 48);
    let ids: Vec<i64> = (0..b)
        .flat_map(|r| {
            let mut t = 17 + 90 * r as i64;
            (0..s).map(move |_| {
                let cur = t;
                t = (5 * t + 3) % 256;
                cur
            })
        })
        .collect();
    let ids: Tensor<AD, 2, Int> = Tensor::from_data(TensorData::new(ids, [b, s]), &dev);
    let opts = ForwardOptions {
        fake_quant: false,
        ..Default::default()
    };
    let mut losses = Vec::new();
    for _ in 0..12 {
        let out = model.forward(ids.clone(), opts, false, false);
        let (loss, _) = cross_entropy(
            out.logits.slice_dim(1, 0..s - 1),
            ids.clone().slice([0..b, 1..s]),
            -100,
        );
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = apply_optimizer(model, grads, &mut opt, 1e-2).unwrap();
    }
    println!("losses: {losses:?}");
    let chance = (256f32).ln();
    assert!(losses[0] > 0.8 * chance, "start near chance: {}", losses[0]);
    assert!(
        *losses.last().unwrap() < 0.5 * losses[0],
        "loss did not fall: {losses:?}"
    );
    assert!(losses.iter().all(|l| l.is_finite()));
}

/// One trainer step (V4 objective: CE, MTP, indexer KL, balance loss, bias update) on a row of
/// two packed samples, and on the same row with 50 padding tokens appended: loss, MTP loss,
/// indexer KL, balance loss, expert loads and the selection biases after the update agree.
#[test]
fn padding_changes_no_step_figure() {
    use v4train::recipe::Recipe;
    use v4train::train::objectives::forward_options;
    use v4train::train::step::{train_step, StepConfig};
    use v4train::train::MicroBatch;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/tiny-pretrain.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let recipe = Recipe::from_str_named(&text, "tiny-pretrain.toml", &[]).unwrap();
    let cfg = recipe.model.resolve().unwrap();
    let dev = Default::default();
    let model = V4Model::<AD>::init(&cfg, 5, &dev).unwrap();
    let ignore = recipe.loss.ignore_index;
    let tokens: Vec<i64> = (0..101).map(|t| (7 * t * t + 3 * t) % 256).collect();
    // Samples start at 0 and 60; what follows position 100 is padding (never trained).
    let plain = MicroBatch::from_windows(1, 100, &tokens).with_samples(
        vec![vec![60, 100]],
        2,
        true,
        ignore,
    );
    let mut padded_window = tokens[..100].to_vec();
    padded_window.extend(std::iter::repeat_n(0, 51));
    let mut padded = MicroBatch::from_windows(1, 150, &padded_window).with_samples(
        vec![vec![60, 100]],
        2,
        true,
        ignore,
    );
    padded.labels[100..].iter_mut().for_each(|l| *l = ignore);
    let cfg_step = StepConfig {
        recipe: &recipe,
        opts: forward_options(&recipe),
    };
    let run = |b: &MicroBatch| {
        let mut opt = V4Optimizer::<Flex>::new(&recipe.optim).unwrap();
        let (m, r) = train_step(
            model.clone(),
            &mut opt,
            std::slice::from_ref(b),
            &cfg_step,
            (0, 1e-3, 0.3),
            &dev,
        )
        .unwrap();
        (m.balance_bias_ranges(), r)
    };
    let ((bias_a, a), (bias_b, b)) = (run(&plain), run(&padded));
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(1e-3);
    assert!(close(a.loss, b.loss), "loss {} vs {}", a.loss, b.loss);
    let pairs = [
        (a.mtp_loss, b.mtp_loss),
        (a.indexer_kl, b.indexer_kl),
        (a.balance, b.balance),
    ];
    for (x, y) in pairs {
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(close(x, y), "{x} vs {y}");
    }
    assert_eq!(a.loads.loads, b.loads.loads, "expert loads");
    assert_eq!(bias_a, bias_b, "selection biases after the update");
    assert!(
        bias_a.iter().flatten().any(|(lo, hi)| lo != hi),
        "biases moved"
    );
}

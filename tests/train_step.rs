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

//! Activation checkpointing per block (`[train] activation_checkpointing = "block"`, f64): the
//! gradients of the V4 objective (next-token CE, MTP CE, indexer KL, balance loss) computed by
//! recomputing one block at a time equal those of one backward pass over the whole graph, for
//! every parameter, on a row of packed samples with sparse CSA, HCA and MTP, in f32 and in bf16
//! mixed precision.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{FloatDType, Int, IntDType, Tensor, TensorData};
use v4_model::{ForwardOptions, LayerAux, Precision, SampleBounds, SampleLayout, V4Model};
use v4train::recipe::Recipe;
use v4train::train::loss::cross_entropy;
use v4train::train::objectives::{aux_loss, forward_options};
use v4train::train::recompute::backward_by_block;

type AD = Autodiff<Flex>;

/// The largest |Δ| of each parameter's gradient relative to its largest entry.
struct Compare<'a> {
    a: &'a GradientsParams,
    b: &'a GradientsParams,
    reached: usize,
    worst: f64,
}

impl ModuleVisitor<AD> for Compare<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
        let (ga, gb) = (self.a.get::<Flex, D>(p.id), self.b.get::<Flex, D>(p.id));
        assert_eq!(
            ga.is_some(),
            gb.is_some(),
            "the same parameters get a gradient"
        );
        let (Some(ga), Some(gb)) = (ga, gb) else {
            return;
        };
        let values = |t: Tensor<Flex, D>| t.into_data().convert::<f64>().into_vec::<f64>().unwrap();
        let (ga, gb) = (values(ga), values(gb));
        let scale = ga.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
        let diff = ga
            .iter()
            .zip(&gb)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        self.reached += 1;
        self.worst = self.worst.max(diff / scale);
    }
}

#[test]
fn block_recomputation_gives_the_gradients_of_the_whole_graph() {
    let dev = Default::default();
    burn::tensor::set_default_dtypes::<Flex>(&dev, FloatDType::F64, IntDType::I32)
        .expect("set the default float dtype before any tensor is created");
    let recipe = Recipe::load("recipes/tiny-pretrain.toml", &[]).unwrap();
    let cfg = recipe.model.resolve().unwrap();
    let model = V4Model::<AD>::init(&cfg, 11, &dev).unwrap();
    let opts = forward_options(&recipe);
    assert!(
        opts.indexer_loss && opts.balance_loss,
        "every side objective on"
    );
    let (s, vocab) = (200usize, cfg.vocab_size as i64);
    let tokens: Vec<i64> = (0..s as i64 + 2)
        .map(|t| (11 * t * t + 5 * t) % vocab)
        .collect();
    let ids = |from: usize| -> Tensor<AD, 2, Int> {
        Tensor::from_data(
            TensorData::new(tokens[from..from + s].to_vec(), [1, s]),
            &dev,
        )
    };
    let mtp_targets: Tensor<AD, 2, Int> =
        Tensor::from_data(TensorData::new(tokens[2..s + 1].to_vec(), [1, s - 1]), &dev);
    let bounds = SampleBounds::from_lengths(&[vec![70, 130]], s).unwrap();
    let layout = SampleLayout::<AD>::new(bounds, None, &dev);
    let heads = |logits: Tensor<AD, 3>, mtp: &[Tensor<AD, 3>]| {
        let (main, _) = cross_entropy(logits, ids(1), -100);
        let (m, _) = cross_entropy(mtp[0].clone(), mtp_targets.clone(), -100);
        main + m.mul_scalar(0.3)
    };
    let side = |aux: &[LayerAux<AD>]| aux_loss(aux, 1.0, 0.01).loss;
    let plus = |a: Tensor<AD, 1>, b: Option<Tensor<AD, 1>>| match b {
        Some(b) => a + b,
        None => a,
    };

    // In f32 and in bf16 mixed precision (the recomputed forward enters the same precision).
    for precision in [Precision::F32, Precision::Bf16] {
        let opts = ForwardOptions { precision, ..opts };
        let out = model.forward_samples(ids(0), &layout, opts, false, true);
        let loss = plus(heads(out.logits, &out.mtp_logits), side(&out.aux));
        let whole = GradientsParams::from_grads(loss.backward(), &model);

        let (by_block, aux) = backward_by_block(
            &model,
            ids(0),
            &layout,
            opts,
            true,
            |logits, mtp, mtp_aux| plus(heads(logits, mtp), side(mtp_aux)),
            |a| side(std::slice::from_ref(a)),
        );
        assert_eq!(aux.len(), out.aux.len(), "side outputs of every block");
        assert!(aux.iter().any(|a| a.indexer_loss.is_some()));

        let mut cmp = Compare {
            a: &whole,
            b: &by_block,
            reached: 0,
            worst: 0.0,
        };
        model.visit(&mut cmp);
        println!(
            "{precision:?}: {} gradients, worst relative |Δ| {:.2e}",
            cmp.reached, cmp.worst
        );
        assert!(cmp.reached > 50, "{} gradients", cmp.reached);
        assert!(
            cmp.worst <= 1e-12,
            "worst relative difference {}",
            cmp.worst
        );
    }
}

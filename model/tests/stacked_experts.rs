//! Stacked routed experts (grouped matmuls over capacity-padded segments) against the per-expert
//! form (each expert its own three matrices, run on its own tokens), on a layer with 64 experts
//! top-6: the same output and the same gradients — for the input, the routing weights (through
//! the gate) and every expert's matrices — within 1e-6 of each tensor's largest value. Also the
//! name walk: a stack saves under, and loads from, the release's per-expert names.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor};
use std::collections::HashMap;
use v4_model::dispatch::group_by_expert;
use v4_model::expert_qat::{fp4_stack_qdq, fp4_weight_qdq};
use v4_model::moe::Moe;
use v4_model::named::{NamedParam, Value};
use v4_model::util::{int_tensor_from, to_vec, to_vec_int};
use v4_model::{ForwardOptions, MapSource, ModelConfig, V4Model};

type AD = Autodiff<Flex>;

fn config(experts: usize, top_k: usize) -> ModelConfig {
    let mut c = ModelConfig::toy();
    c.num_hidden_layers = 1;
    c.num_nextn_predict_layers = 0;
    c.num_hash_layers = 0;
    c.compress_ratios = vec![0];
    c.n_routed_experts = experts;
    c.num_experts_per_tok = top_k;
    c.validate("test").unwrap();
    c
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Largest |a − b| over the largest |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    d / max_abs(b).max(1e-30)
}

/// The per-expert form: the routed pairs grouped by expert, each expert (its own parameters)
/// on its own rows, combined by token; plus the shared expert.
fn per_expert(
    moe: &Moe<AD>,
    experts: &[v4_model::moe::Expert<AD>],
    x: Tensor<AD, 2>,
) -> Tensor<AD, 2> {
    let [n, d] = x.dims();
    let dev = x.device();
    let ids = Tensor::<AD, 1, Int>::zeros([n], &dev);
    let (w, idx, _) = moe.gate.route_with_scores(x.clone(), ids);
    let k = w.dims()[1];
    let idx = to_vec_int(idx);
    let w = w.reshape([n * k]);
    let mut y = Tensor::<AD, 2>::zeros([n, d], &dev);
    for (e, pairs) in group_by_expert(&idx, experts.len()).iter().enumerate() {
        if pairs.is_empty() {
            continue;
        }
        let m = pairs.len();
        let tokens: Vec<i64> = pairs.iter().map(|p| (p / k) as i64).collect();
        let tokens = int_tensor_from::<AD, 1>(tokens, [m], &dev);
        let pairs: Vec<i64> = pairs.iter().map(|&p| p as i64).collect();
        let we = w
            .clone()
            .select(0, int_tensor_from::<AD, 1>(pairs, [m], &dev));
        let out = experts[e].forward(
            x.clone().select(0, tokens.clone()),
            Some(we.unsqueeze_dim(1)),
            moe.swiglu_limit,
        );
        y = y.select_assign(0, tokens, out, IndexingUpdateOp::Add);
    }
    let shared = moe.shared_experts.as_ref().unwrap();
    y + shared.forward(x, None, moe.swiglu_limit)
}

#[test]
fn stacked_experts_match_per_expert_forward_and_gradients() {
    let cfg = config(64, 6);
    let dev = Default::default();
    let model = V4Model::<AD>::init(&cfg, 7, &dev).unwrap();
    let moe = &model.layers[0].ffn;
    let (n, d) = (96, cfg.hidden_size);
    let x0 = Tensor::<AD, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);
    let probe = Tensor::<AD, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);

    // Stacked.
    let x = x0.clone().detach().require_grad();
    let ids = Tensor::<AD, 2, Int>::zeros([1, n], &dev);
    let (y, aux) = moe.forward_aux(x.clone().reshape([1, n, d]), ids, ForwardOptions::default());
    assert!(aux.expert_load.iter().filter(|&&l| l > 0).count() > 40);
    let y = y.reshape([n, d]);
    let g = (y.clone() * probe.clone()).sum().backward();

    // Per expert, on detached copies of the same matrices.
    let experts: Vec<_> = (0..64).map(|e| moe.experts.expert(e)).collect();
    let xr = x0.detach().require_grad();
    let yr = per_expert(moe, &experts, xr.clone());
    let gr = (yr.clone() * probe).sum().backward();

    let fwd = rel_err(&to_vec(y.inner()), &to_vec(yr.inner()));
    let gx = rel_err(&to_vec(x.grad(&g).unwrap()), &to_vec(xr.grad(&gr).unwrap()));
    let gate = moe.gate.weight.weight.val();
    let ggate = rel_err(
        &to_vec(gate.grad(&g).unwrap()),
        &to_vec(gate.grad(&gr).unwrap()),
    );
    let mut worst = 0f32;
    let stacks = [&moe.experts.w1, &moe.experts.w2, &moe.experts.w3];
    for (j, stack) in stacks.into_iter().enumerate() {
        let gs = stack.val().grad(&g).unwrap();
        let [_, i, o] = gs.dims();
        let gs = to_vec(gs);
        for (e, ex) in experts.iter().enumerate() {
            let lin = [&ex.w1, &ex.w2, &ex.w3][j];
            let want = lin
                .weight
                .val()
                .grad(&gr)
                .map(to_vec)
                .unwrap_or_else(|| vec![0.0; i * o]);
            let got = &gs[e * i * o..(e + 1) * i * o];
            if max_abs(&want) == 0.0 {
                assert_eq!(max_abs(got), 0.0, "expert {e} has no tokens");
            } else {
                worst = worst.max(rel_err(got, &want));
            }
        }
    }
    println!("forward {fwd:e}, d/dx {gx:e}, d/dgate {ggate:e}, d/dexperts {worst:e}");
    for (what, err) in [
        ("forward", fwd),
        ("x", gx),
        ("gate", ggate),
        ("experts", worst),
    ] {
        assert!(err <= 1e-6, "{what}: relative difference {err:e}");
    }
}

#[test]
fn fp4_of_a_stack_is_fp4_of_each_expert() {
    // `in` = 48: a ragged last block (32 + 16).
    let w = Tensor::<Flex, 3>::random(
        [5, 48, 24],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    let stacked = to_vec(fp4_stack_qdq(w.clone()));
    for e in 0..5 {
        let one = to_vec(fp4_weight_qdq(
            w.clone().slice_dim(0, e..e + 1).reshape([48, 24]),
        ));
        assert_eq!(
            &stacked[e * 48 * 24..(e + 1) * 48 * 24],
            &one[..],
            "expert {e}"
        );
    }
}

#[test]
fn stacks_save_under_and_load_from_the_release_names() {
    let cfg = config(5, 2);
    let dev = Default::default();
    let model = V4Model::<Flex>::init(&cfg, 3, &dev).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    let mut stacks = Vec::new();
    model.visit_named(&mut |name, p| {
        if matches!(p, NamedParam::Experts(_)) {
            stacks.push(name.clone());
        }
        for (n, s, v) in p.release_tensors(&name, &Value) {
            tensors.insert(n, (s, v));
        }
    });
    assert_eq!(
        stacks,
        [
            "layers.0.ffn.experts.w1",
            "layers.0.ffn.experts.w2",
            "layers.0.ffn.experts.w3"
        ]
    );
    // Exactly the release inventory's float tensors, with its shapes.
    for spec in v4_model::inventory(&cfg) {
        if spec.dtype == v4_model::ReleaseDtype::I64 {
            continue;
        }
        let (shape, _) = tensors
            .get(&spec.name)
            .unwrap_or_else(|| panic!("{} not saved", spec.name));
        assert_eq!(shape, &spec.shape, "{}", spec.name);
    }
    // Expert 3's `w2` in the release orientation `[d, I]` is `w2[3]` `[I, d]` transposed.
    let (_, v) = &tensors["layers.0.ffn.experts.3.w2.weight"];
    let w2 = model.layers[0].ffn.experts.w2.val();
    let want = to_vec(w2.slice_dim(0, 3..4).reshape([32, 64]).transpose());
    assert_eq!(v, &want);
    // Loading the saved tensors (plus the integer tables) rebuilds the same stacks.
    let src = MapSource {
        floats: tensors,
        ..Default::default()
    };
    let back = V4Model::<Flex>::load(&cfg, &src, &dev).unwrap();
    for (a, b) in [
        (
            &model.layers[0].ffn.experts.w1,
            &back.layers[0].ffn.experts.w1,
        ),
        (
            &model.layers[0].ffn.experts.w2,
            &back.layers[0].ffn.experts.w2,
        ),
        (
            &model.layers[0].ffn.experts.w3,
            &back.layers[0].ffn.experts.w3,
        ),
    ] {
        assert_eq!(to_vec(a.val()), to_vec(b.val()));
    }
}

//! Parity with DeepSeek's reference on `tiny_a` (FP8/FP4 fake quant on): each block fed the
//! reference's input streams reproduces the reference's output streams within 1e-4; the MTP block
//! fed `hidden.4` reproduces `mtp_logits` within 1e-4; end to end the logits meet the statistical
//! bound (mean abs ≤ 1e-3, ≥ 99% of entries within 1e-3).

mod common;
use common::*;
use v4_model::ForwardOptions;

#[test]
fn tiny_a_each_block_fed_the_reference_input_matches() {
    let model = load_model("tiny_a");
    let io = read(fixture("tiny_a").join("io.safetensors"));
    let opts = ForwardOptions::default();
    let ids = ids(&io);
    for n in 0..model.layers.len() {
        let input = if n == 0 {
            model.embed_streams(ids.clone())
        } else {
            float::<4>(&io, &format!("hidden.{}", n - 1))
        };
        let out = model.layers[n].forward(input, ids.clone(), opts);
        let (max, mean, _) = compare(&values(out), &io.floats[&format!("hidden.{n}")].1, 1e-4);
        println!("block {n}: max {max:.3e} mean {mean:.3e}");
        assert!(max <= 1e-4, "block {n} max abs error {max}");
    }
    let (_, mtp, _) = model.mtp_logits(0, float::<4>(&io, "hidden.4"), ids, opts);
    let (max, mean, _) = compare(&values(mtp), &io.floats["mtp_logits"].1, 1e-4);
    println!("mtp block: max {max:.3e} mean {mean:.3e}");
    assert!(max <= 1e-4, "mtp max abs error {max}");
}

#[test]
fn tiny_a_end_to_end_meets_the_statistical_bound() {
    let model = load_model("tiny_a");
    let io = read(fixture("tiny_a").join("io.safetensors"));
    let out = model.forward(ids(&io), ForwardOptions::default(), false, true);
    for (name, got) in [
        ("logits", out.logits),
        ("mtp_logits", out.mtp_logits[0].clone()),
    ] {
        let (max, mean, within) = compare(&values(got), &io.floats[name].1, 1e-3);
        println!(
            "{name}: max {max:.3e} mean {mean:.3e} within 1e-3: {:.4}%",
            within * 100.0
        );
        assert!(mean <= 1e-3, "{name} mean abs error {mean}");
        assert!(
            within >= 0.99,
            "{name}: only {within} of entries within 1e-3"
        );
    }
}

//! Parity with DeepSeek's reference on `tiny_b` (fake quant off): every block's streams, the
//! logits and the MTP logits within max abs 1e-4.

mod common;
use common::*;
use v4_model::ForwardOptions;

#[test]
fn tiny_b_end_to_end_matches_the_reference() {
    let model = load_model("tiny_b");
    let io = read(fixture("tiny_b").join("io.safetensors"));
    let opts = ForwardOptions {
        fake_quant: false,
        ..Default::default()
    };
    let out = model.forward(ids(&io), opts, true, true);
    for (n, h) in out.hidden.iter().enumerate() {
        let want = &io.floats[&format!("hidden.{n}")].1;
        let (max, mean, _) = compare(&values(h.clone()), want, 1e-4);
        println!("hidden.{n}: max {max:.3e} mean {mean:.3e}");
        assert!(max <= 1e-4, "hidden.{n} max abs error {max}");
    }
    let (max, mean, _) = compare(&values(out.logits), &io.floats["logits"].1, 1e-4);
    println!("logits: max {max:.3e} mean {mean:.3e}");
    assert!(max <= 1e-4, "logits max abs error {max}");
    let (max, mean, _) = compare(
        &values(out.mtp_logits[0].clone()),
        &io.floats["mtp_logits"].1,
        1e-4,
    );
    println!("mtp_logits: max {max:.3e} mean {mean:.3e}");
    assert!(max <= 1e-4, "mtp_logits max abs error {max}");
}

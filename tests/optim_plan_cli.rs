//! `v4train optim-plan recipe.toml` reads the model and `[optim]` from a recipe; recipe errors
//! exit non-zero with the file:line:key message.

use std::process::Command;

fn v4train(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_v4train"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn plan_from_the_tiny_recipe() {
    let o = v4train(&["optim-plan", "recipes/tiny-pretrain.toml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_string()
    };
    assert!(line("embed.weight").contains("adamw"));
    assert!(line("layers.1.attn.wq_a.weight").contains("muon"));
    assert!(line("layers.1.ffn.experts.3.w2.weight").contains("muon"));
    assert!(line("layers.2.attn.compressor.ape").contains("adamw"));
    assert!(line("layers.1.ffn.gate.bias").contains("excluded"));
    assert!(line("mtp.0.hc_head_scale").contains("adamw"));
    // Each routed-expert stack is one Newton–Schulz call over its 4 experts (4 MoE blocks × w1
    // and w3 `[32, 64]`, w2 `[64, 32]`), each grouped `wo_a` one over its 2 groups (4 blocks).
    assert!(
        out.contains("8 × [4, 32, 64]  e.g. layers.0.ffn.experts.w1"),
        "{out}"
    );
    assert!(
        out.contains("4 × [4, 64, 32]  e.g. layers.0.ffn.experts.w2"),
        "{out}"
    );
    assert!(
        out.contains("4 × [2, 32, 192]  e.g. layers.0.attn.wo_a.weight"),
        "{out}"
    );
    // --set reaches the model
    let o = v4train(&[
        "optim-plan",
        "recipes/tiny-pretrain.toml",
        "--set",
        "model.hidden_size=128",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("embed.weight") && l.contains("[256, 128]")),
        "{out}"
    );
}

#[test]
fn recipe_errors_name_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("v4train-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = dir.join("bad.toml");
    std::fs::write(
        &recipe,
        "[model]\npreset = \"v4-flash\"\n\n[train]\nmicro_batch = 0\n",
    )
    .unwrap();
    let o = v4train(&["optim-plan", recipe.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "{}:5: [train] micro_batch must be ≥ 1, got 0",
        recipe.display()
    );
    assert!(err.contains(&want) && !err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

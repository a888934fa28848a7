//! No input a user controls makes `v4train` panic: thousands of seeded generated cases through
//! `forward`, `export`, `chat-encode` and the recipe parser (via `optim-plan` and in-process),
//! each of which must end in success or a clean error (exit 0, 1 or 2; no "panicked at"), plus
//! named regressions for the panics this test found.
//!
//! The cases are the same every run. `V4TRAIN_FUZZ_SCALE=F` runs F times as many,
//! `V4TRAIN_FUZZ_SEED=S` draws a different set, `V4TRAIN_FUZZ_BIN=PATH` runs them against another
//! build. A failing case is printed with its command line and kept under
//! `target/tmp/no_panic_failures/`.

mod no_panic {
    pub mod chat_cases;
    pub mod export_cases;
    pub mod forward_cases;
    pub mod gen;
    pub mod model_dir;
    pub mod recipe_cases;
    pub mod regressions;
    pub mod runner;
    pub mod safetensors_gen;
}

use std::path::Path;
use std::sync::OnceLock;

use no_panic::runner::{binary_suite, case_count, in_process_suite};
use no_panic::{chat_cases, export_cases, forward_cases, model_dir, recipe_cases};
use v4_data::{encode_chat_jsonl, ChatOptions, V4Tokenizer};
use v4train::recipe::Recipe;

fn tokenizer_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizer/deepseek-v4")
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn forward_never_panics() {
    binary_suite("forward", case_count(1500), forward_cases::case);
}

#[test]
fn export_never_panics() {
    binary_suite("export", case_count(600), export_cases::case);
}

#[test]
fn chat_encode_binary_never_panics() {
    let tokenizer = path(&tokenizer_dir());
    binary_suite("chat-encode", case_count(16), |g, dir| {
        let input = dir.join("in.jsonl");
        std::fs::write(&input, chat_cases::file(g)).expect("write jsonl");
        vec![
            "chat-encode".into(),
            "--tokenizer".into(),
            tokenizer.clone(),
            "--input".into(),
            path(&input),
            "--output".into(),
            path(&dir.join("out.jsonl")),
        ]
    });
}

#[test]
fn chat_encode_library_never_panics() {
    static TOKENIZER: OnceLock<V4Tokenizer> = OnceLock::new();
    let tokenizer =
        TOKENIZER.get_or_init(|| V4Tokenizer::from_dir(tokenizer_dir()).expect("tokenizer"));
    in_process_suite("chat-lib", case_count(2000), |g, dir| {
        let input = dir.join("in.jsonl");
        std::fs::write(&input, chat_cases::file(g)).expect("write jsonl");
        let mut out = Vec::new();
        encode_chat_jsonl(tokenizer, &input, &ChatOptions::default(), &mut out).is_ok()
    });
}

#[test]
fn optim_plan_recipes_never_panic() {
    binary_suite("optim-plan", case_count(600), |g, dir| {
        if g.chance(0.25) {
            // A config.json and an [optim] table as JSON instead of a recipe.
            let mut args = vec!["optim-plan".to_string(), "--summary-only".into()];
            if g.chance(0.7) {
                let config = dir.join("config.json");
                std::fs::write(&config, model_dir::config_json(g)).expect("write config");
                args.extend(["--config".into(), path(&config)]);
            }
            let optim = dir.join("optim.json");
            std::fs::write(&optim, recipe_cases::optim_json(g)).expect("write optim");
            args.extend(["--optim".into(), path(&optim)]);
            return args;
        }
        let (text, sets) = recipe_cases::text(g);
        let recipe = dir.join("recipe.toml");
        std::fs::write(&recipe, text).expect("write recipe");
        let mut args = vec!["optim-plan".into(), path(&recipe), "--summary-only".into()];
        for s in sets {
            args.push("--set".into());
            args.push(s);
        }
        args
    });
}

#[test]
fn recipe_parser_never_panics() {
    in_process_suite("recipe", case_count(3000), |g, dir| {
        let (text, sets) = recipe_cases::text(g);
        std::fs::write(dir.join("recipe.toml"), &text).expect("write recipe");
        let text = String::from_utf8_lossy(&text);
        Recipe::from_str_named(&text, "recipe.toml", &sets)
            .is_ok_and(|r| r.model.resolve().is_ok() && r.optim.resolve().is_ok())
    });
}

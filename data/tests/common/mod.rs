//! Helpers shared by the loader integration tests.
#![allow(dead_code)] // each test binary uses a subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use v4_data::{Batch, DataConfig, DataLoader, V4Tokenizer};

/// The shipped V4 tokenizer, loaded once per test binary.
pub fn tokenizer() -> Arc<V4Tokenizer> {
    static TOKENIZER: std::sync::OnceLock<Arc<V4Tokenizer>> = std::sync::OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tokenizer/deepseek-v4");
            Arc::new(V4Tokenizer::from_dir(dir).expect("tokenizer"))
        })
        .clone()
}

/// Writes `lines` as a jsonl file.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// The `[data]` table of a recipe text.
pub fn config(toml_text: &str) -> DataConfig {
    #[derive(serde::Deserialize)]
    struct Recipe {
        data: DataConfig,
    }
    toml::from_str::<Recipe>(toml_text).expect("recipe").data
}

/// The next `n` batches.
pub fn take(loader: &mut DataLoader, n: usize) -> Vec<Batch> {
    (0..n)
        .map(|_| loader.next_batch().unwrap().expect("batch"))
        .collect()
}

/// A one-turn conversation as a jsonl line.
pub fn chat_line(user: &str, assistant: &str) -> String {
    serde_json::json!({"messages": [
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant}
    ]})
    .to_string()
}

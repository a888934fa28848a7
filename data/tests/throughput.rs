//! Tokenization + packing throughput (run with `cargo test -p v4-data --release
//! --test throughput -- --ignored --nocapture`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use v4_data::{DataConfig, DataLoader, V4Tokenizer};

const WORDS: &[&str] = &[
    "the",
    "model",
    "training",
    "data",
    "of",
    "and",
    "to",
    "in",
    "is",
    "a",
    "for",
    "with",
    "on",
    "that",
    "by",
    "this",
    "from",
    "we",
    "are",
    "as",
    "an",
    "be",
    "at",
    "it",
    "tokens",
    "attention",
    "layer",
    "expert",
    "gradient",
    "optimizer",
    "learning",
    "rate",
    "batch",
    "sequence",
    "memory",
    "compute",
    "throughput",
    "latency",
    "mixture",
    "sparse",
    "dense",
    "embedding",
    "vector",
    "matrix",
    "function",
    "return",
    "value",
    "error",
    "result",
    "number",
    "2026",
    "42",
    "3.14",
    "Hello,",
    "world!",
    "(see",
    "Section",
    "4.2)",
    "e.g.",
    "i.e.",
    "—",
    "模型",
    "训练",
    "数据",
];

fn document(seed: &mut u64, words: usize) -> String {
    let mut out = String::new();
    for i in 0..words {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if i > 0 {
            out.push(if i % 17 == 0 { '\n' } else { ' ' });
        }
        out.push_str(WORDS[(*seed >> 33) as usize % WORDS.len()]);
    }
    out
}

fn tokenizer() -> Arc<V4Tokenizer> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tokenizer/deepseek-v4");
    Arc::new(V4Tokenizer::from_dir(dir).unwrap())
}

/// Drains the loader; returns (window tokens, trained tokens, seconds).
fn drain(cfg: &DataConfig) -> (usize, usize, f64) {
    let mut loader = DataLoader::new(cfg, tokenizer(), None).unwrap();
    let start = Instant::now();
    let (mut tokens, mut trained) = (0, 0);
    while let Some(b) = loader.next_batch().unwrap() {
        tokens += b.rows * b.seq_len;
        trained += b.trained_tokens();
    }
    (tokens, trained, start.elapsed().as_secs_f64())
}

#[test]
#[ignore]
fn tokenize_and_pack_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut seed = 1u64;
    let docs = 4000;
    for _ in 0..docs {
        let doc = document(&mut seed, 400);
        writeln!(f, "{}", serde_json::json!({ "text": doc })).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let bytes = std::fs::metadata(&path).unwrap().len();
    // Shuffled in blocks of 1024 rows (the default), then in file order.
    for shuffle_block in [1024, 0] {
        let cfg: DataConfig = serde_json::from_value(serde_json::json!({
            "seq_len": 4096, "batch_size": 8, "repeat": false, "shuffle_block": shuffle_block,
            "sources": [{ "path": path.to_string_lossy() }]
        }))
        .unwrap();
        let (tokens, _, secs) = drain(&cfg);
        println!(
            "tokenize+pack (shuffle_block {shuffle_block}): {docs} docs, {:.1} MB, {tokens} tokens in {secs:.2}s = {:.0} tokens/s ({:.1} MB/s)",
            bytes as f64 / 1e6,
            tokens as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
}

#[test]
#[ignore]
fn chat_encode_and_sft_pack_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chats.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut seed = 2u64;
    let convs = 3000;
    for _ in 0..convs {
        let msgs = serde_json::json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": document(&mut seed, 60)},
            {"role": "assistant", "reasoning_content": document(&mut seed, 120), "content": document(&mut seed, 200)},
            {"role": "user", "content": document(&mut seed, 30)},
            {"role": "assistant", "reasoning_content": document(&mut seed, 80), "content": document(&mut seed, 100)}
        ]);
        writeln!(f, "{}", serde_json::json!({ "messages": msgs })).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let cfg: DataConfig = serde_json::from_value(serde_json::json!({
        "seq_len": 4096, "batch_size": 8, "repeat": false, "mode": "sft", "sft_packing": true,
        "chat": { "thinking_mode": "thinking" },
        "sources": [{ "path": path.to_string_lossy(), "field": "messages" }]
    }))
    .unwrap();
    let (tokens, trained, secs) = drain(&cfg);
    println!(
        "chat-encode+sft-pack: {convs} conversations, {:.1} MB, {tokens} window tokens ({trained} trained) in {secs:.2}s = {:.0} tokens/s",
        bytes as f64 / 1e6,
        tokens as f64 / secs
    );
}

/// Reading + shuffling + packing alone (pre-tokenized rows, no tokenizer work):
/// the overhead of the block shuffle against file order.
#[test]
#[ignore]
fn pretokenized_read_shuffle_and_pack_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let rows = 20_000;
    for r in 0..rows {
        let ids: Vec<u32> = (0..500).map(|i| (r * 7 + i * 13) % 120_000).collect();
        writeln!(f, "{}", serde_json::json!({ "input_ids": ids })).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    for shuffle_block in [1024, 0] {
        let cfg: DataConfig = serde_json::from_value(serde_json::json!({
            "seq_len": 4096, "batch_size": 8, "repeat": false, "shuffle_block": shuffle_block,
            "sources": [{ "path": path.to_string_lossy(), "field": "input_ids" }]
        }))
        .unwrap();
        let (tokens, _, secs) = drain(&cfg);
        println!(
            "read+pack input_ids (shuffle_block {shuffle_block}): {rows} rows, {tokens} tokens in {secs:.2}s = {:.0} tokens/s",
            tokens as f64 / secs
        );
    }
}

//! `v4train chat-encode`: renders each line of a jsonl file of chat requests
//! with the official DeepSeek-V4 encoding and prints one JSON line per input
//! line with the `text`, its token `ids` and the per-token `loss_mask`
//! (1 = assistant-produced token).

use anyhow::Context;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use v4_data::{encode_chat_jsonl, ChatOptions, V4Tokenizer};

/// Arguments of `chat-encode`.
#[derive(clap::Args, Debug)]
pub struct ChatEncodeArgs {
    /// Tokenizer or model directory holding `tokenizer.json` (or the file itself).
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Input jsonl: per line `messages` and optional `thinking_mode` ("chat" |
    /// "thinking"), `drop_thinking`, `reasoning_effort`.
    #[arg(long)]
    pub input: PathBuf,
    /// Output jsonl (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs `chat-encode`.
pub fn run(args: &ChatEncodeArgs) -> anyhow::Result<()> {
    let tokenizer = V4Tokenizer::from_dir(&args.tokenizer)?;
    let defaults = ChatOptions::default();
    let lines = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = BufWriter::new(file);
            let n = encode_chat_jsonl(&tokenizer, &args.input, &defaults, &mut out)
                .with_context(|| format!("chat-encode into {}", path.display()))?;
            out.flush()
                .with_context(|| format!("writing {}", path.display()))?;
            n
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let n = encode_chat_jsonl(&tokenizer, &args.input, &defaults, &mut out)
                .context("chat-encode to stdout")?;
            out.flush().context("writing stdout")?;
            n
        }
    };
    tracing::info!(
        "chat-encode: encoded {lines} conversations from {}",
        args.input.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_fixture_file() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let output = std::env::temp_dir().join(format!("chat-encode-{}.jsonl", std::process::id()));
        let args = ChatEncodeArgs {
            tokenizer: root.join("data/tokenizer/deepseek-v4"),
            input: root.join("tests/fixtures/chat/v4_chat_cases.jsonl"),
            output: Some(output.clone()),
        };
        run(&args).expect("chat-encode");
        let got = std::fs::read_to_string(&output).expect("output");
        let _ = std::fs::remove_file(&output);
        let expected = std::fs::read_to_string(&args.input).expect("fixture");
        let mut count = 0;
        for (g, e) in got.lines().zip(expected.lines()) {
            let g: serde_json::Value = serde_json::from_str(g).expect("output line");
            let e: serde_json::Value = serde_json::from_str(e).expect("fixture line");
            assert_eq!(g["text"], e["text"]);
            assert_eq!(g["ids"], e["ids"]);
            let ids = g["ids"].as_array().map_or(0, Vec::len);
            assert_eq!(g["loss_mask"].as_array().map_or(0, Vec::len), ids);
            count += 1;
        }
        assert_eq!(count, 15);
    }
}

//! v4-data: the DeepSeek-V4 tokenizer, the official V4 chat encoding with loss
//! masks, and streaming, resumable dataset pipelines (jsonl / parquet sources,
//! weighted mixing, pretraining packing, SFT padding or packing, prefetching).
//!
//! A recipe's `[data]` section ([`DataConfig`]):
//!
//! ```toml
//! [data]
//! seq_len = 4096
//! batch_size = 8
//! mode = "sft"            # or "pretrain" (default); sources may override it
//! sft_packing = true      # pack conversations instead of padding each
//! seed = 0                # source mixing and shuffling within sources
//! shuffle_block = 1024    # rows shuffled together per source (0 or 1: file order)
//! bad_rows = "skip"       # or "error"
//! [data.chat]
//! thinking_mode = "thinking"
//! [[data.sources]]
//! path = "data/chat/*.parquet"   # file, directory or glob; jsonl or parquet
//! field = "messages"             # kind inferred: messages / input_ids / text
//! weight = 3.0
//! domain_field = "domain"
//! [[data.sources]]
//! path = "data/web/*.jsonl"
//! mode = "pretrain"              # packed into EOS-separated windows, every token trained
//! shuffle_block = 4096           # overrides [data] shuffle_block
//! ```
//!
//! **Shuffling** ([`source`]): per epoch each source visits its files, and each
//! parquet file its row groups, in a seeded order, and returns its rows in
//! seeded permutations of consecutive blocks of `shuffle_block` rows. A source
//! holds one block in memory, never the dataset; the cursor stores where the
//! current block began and how many of its rows were returned, so a resumed
//! run re-reads that block and continues exactly.
//!
//! **Modes** ([`packing`]): rows of `pretrain` sources are concatenated
//! (EOS-separated) and cut into windows, every token trained; rows of `sft`
//! sources are kept whole (one per window, or packed with `sft_packing`),
//! conversations trained on assistant tokens and text / `input_ids` rows on
//! all tokens but the first (which would otherwise be predicted from the
//! previous sample's EOS). Windows never mix the two kinds.
//!
//! The trainer opens a [`Prefetcher`] with [`open_loader`], calls
//! [`Prefetcher::next_batch`] and saves [`Prefetcher::cursor`] with each
//! checkpoint; passing that cursor back to [`open_loader`] resumes with the
//! next unseen sample.

pub mod bad_rows;
pub mod batch;
pub mod chat_encoding;
pub mod chat_jsonl;
pub mod chat_message;
pub mod chat_preprocess;
pub mod chat_templates;
pub mod config;
pub mod cursor;
pub mod error;
pub mod file_set;
pub mod json_py;
pub mod loader;
pub mod loss_mask;
pub mod mixture;
pub mod packing;
pub mod prefetch;
pub mod rng;
pub mod row;
pub mod sample;
pub mod shard;
pub mod source;
pub mod source_jsonl;
pub mod source_parquet;
pub mod tokenizer;

pub use bad_rows::{BadRow, BadRowKind, BadRowPolicy, BadRowStats, RowLocation};
pub use batch::Batch;
pub use chat_encoding::{encode_chat, ChatEncoding};
pub use chat_jsonl::encode_chat_jsonl;
pub use chat_message::{ChatMessage, ChatOptions, ChatRequest, ReasoningEffort, ThinkingMode};
pub use config::{DataConfig, DataMode, SourceConfig};
pub use cursor::DataCursor;
pub use error::{ChatError, DataError};
pub use loader::DataLoader;
pub use loss_mask::{tokenize_chat, TokenizedChat};
pub use packing::{PackMode, Segment};
pub use prefetch::Prefetcher;
pub use row::FieldKind;
pub use shard::Shard;
pub use tokenizer::V4Tokenizer;

use std::sync::Arc;

/// Opens a prefetching loader for `config` and data-parallel `shard` (the
/// trainer's entry point; `Shard::default()` for a single process).
pub fn open_loader(
    config: &DataConfig,
    tokenizer: Arc<V4Tokenizer>,
    cursor: Option<&DataCursor>,
    shard: Shard,
) -> Result<Prefetcher, DataError> {
    let loader = DataLoader::new(config, tokenizer, cursor)?.with_shard(shard)?;
    Prefetcher::spawn(loader, config.prefetch)
}

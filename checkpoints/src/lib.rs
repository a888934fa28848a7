//! The official DeepSeek-V4 Hugging Face checkpoint layout, in and out (spec
//! `v4-architecture.md` §3.1 formats, §4 names): a memory-mapped reader ([`ModelDir`], also a
//! [`v4_model::WeightSource`]) that decodes F32/BF16/F16, FP8 e4m3 with 128×128 E8M0 block scales,
//! FP4 e2m1 experts with per-32 scales and I32/I64 bit-exactly, and a crash-safe writer
//! ([`CheckpointWriter`], [`write_checkpoint`], [`export()`]) that re-emits the release layout.
//!
//! ```no_run
//! use v4_checkpoints::{export, ModelDir, OutputDtype, WriteOptions};
//! # fn main() -> Result<(), v4_checkpoints::CheckpointError> {
//! let dir = ModelDir::open("DeepSeek-V4-Flash")?;
//! dir.check_against(&v4_model::inventory(dir.config()))?;
//! let (shape, wq_a) = dir.tensor_f32("layers.0.attn.wq_a.weight")?; // dequantized f32
//! let opts = WriteOptions { dtype: OutputDtype::Bf16, ..WriteOptions::default() };
//! export(&dir, "out".as_ref(), &opts, &mut |p| eprintln!("{}/{}", p.done, p.total))?;
//! # let _ = (shape, wq_a); Ok(()) }
//! ```
pub mod check;
pub mod config_json;
pub mod dtype;
pub mod e8m0;
pub mod error;
pub mod export;
pub mod filter;
pub mod fp4;
pub mod fp8;
pub mod fsutil;
pub mod index;
pub mod license;
pub mod plan;
pub mod quantized;
pub mod reader;
pub mod shard;
pub mod source;
pub mod writer;

pub use config_json::release_config;
pub use error::{CheckpointError, Result};
pub use export::{export, ExportProgress};
pub use filter::layer_range;
pub use index::{ShardIndex, INDEX_FILE, SINGLE_FILE};
pub use plan::{parse_size, OutputDtype};
pub use quantized::{QuantFormat, QuantizedTensor};
pub use reader::{ModelDir, Tensor};
pub use writer::{
    write_checkpoint, CheckpointWriter, Values, WriteOptions, WriteSummary, PRODUCER,
};

//! The `v4train` library: the pieces of the trainer that the binary drives.
pub mod adapter_files;
pub mod bench;
pub mod generate;
pub mod merge;
pub mod metrics;
pub mod peft_export;
pub mod plan;
pub mod recipe;
pub mod tensor_file;
pub mod train;

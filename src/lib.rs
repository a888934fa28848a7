//! The `v4train` library: the pieces of the trainer that the binary drives.
pub mod bench;
pub mod generate;
pub mod metrics;
pub mod plan;
pub mod recipe;
pub mod train;

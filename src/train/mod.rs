//! The training step machinery: applying the optimizers to a model's parameters by release name.

pub mod optimizer_step;

pub use optimizer_step::apply_optimizer;

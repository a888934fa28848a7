//! The training recipe (`v4train recipe.toml`): a TOML file with the sections `[model]`,
//! `[data]`, `[train]`, `[finetune]`, `[lora]`, `[optim]`, `[schedule]`, `[loss]`,
//! `[checkpoint]` and `[log]`, plus
//! `--set section.key=value` overrides. [`Recipe::load`] parses, applies the overrides, checks
//! every value and reports problems as `file:line: [section] key message`.

mod checkpoint;
mod data;
mod de;
mod error;
mod finetune;
mod log;
mod lora;
mod loss;
mod model;
mod overrides;
mod schedule;
mod source;
mod train;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};
use v4_optim::{LrSchedule, OptimConfig, ScheduleConfig};

pub use checkpoint::{CheckpointConfig, Resume};
pub use data::{DataRecipe, DataSource, SyntheticData, TokenFile, TokenFormat};
pub use error::{Location, RecipeError, Result};
pub use finetune::{BaseStorage, FinetuneConfig, FinetuneMode};
pub use log::LogConfig;
pub use lora::{AdapterOptimizer, LoraRecipe};
pub use loss::LossConfig;
pub use model::{ModelRecipe, ModelSource};
pub use overrides::Override;
pub use train::{
    ActivationCheckpointing, Attention, Dtype, Freeze, NanPolicy, TrainConfig, MAX_MICRO_TOKENS,
    MAX_STEP_TOKENS,
};

use de::{blame, path, typed};
use source::SourceMap;

/// The top-level sections, in file order.
pub const SECTIONS: [&str; 10] = [
    "model",
    "data",
    "train",
    "finetune",
    "lora",
    "optim",
    "schedule",
    "loss",
    "checkpoint",
    "log",
];

/// A parsed and validated recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// `[model]`: architecture source (required).
    pub model: ModelRecipe,
    /// `[data]`: token source (default: synthetic, seed 0).
    pub data: DataRecipe,
    /// `[train]`: steps, batch geometry, precision, policies.
    pub train: TrainConfig,
    /// `[finetune]`: full training or LoRA, and how a LoRA base is held.
    pub finetune: FinetuneConfig,
    /// `[lora]`: the adapters of a LoRA run (`None` without the section).
    pub lora: Option<LoraRecipe>,
    /// `[optim]`: Muon / AdamW settings (`v4_optim::OptimConfig`, V4 defaults).
    pub optim: OptimConfig,
    /// `[schedule]`: learning-rate schedule (`v4_optim::ScheduleConfig`); `total_steps`
    /// defaults to `train.steps`, `warmup_steps` to min(2000, 10%) and `decay_steps` to 10%.
    pub schedule: ScheduleConfig,
    /// `[loss]`: MTP weight and ignored label.
    pub loss: LossConfig,
    /// `[checkpoint]`: save / keep / resume.
    pub checkpoint: CheckpointConfig,
    /// `[log]`: metric cadence and sinks.
    pub log: LogConfig,
    /// Where the recipe came from (file, text, overrides), for provenance.
    pub origin: RecipeOrigin,
}

/// How a recipe was made: recorded in every checkpoint so it says how it was trained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeOrigin {
    /// The recipe file as given (or the name given to [`Recipe::from_str_named`]).
    pub file: String,
    /// Its text as read.
    pub text: String,
    /// The `--set section.key=value` overrides, in order.
    pub overrides: Vec<String>,
    /// The recipe after the overrides, as TOML (what the run really used).
    pub effective: String,
}

impl Recipe {
    /// Reads `path`, applies `overrides` (`section.key=value` each) and validates the result.
    pub fn load(path: impl AsRef<Path>, overrides: &[String]) -> Result<Self> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Read {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Self::from_str_named(&text, &file, overrides)
    }

    /// Like [`Recipe::load`] for recipe text; `file` names it in errors.
    pub fn from_str_named(text: &str, file: &str, overrides: &[String]) -> Result<Self> {
        let mut src = SourceMap::parse(file, text)?;
        let mut root: Table = text
            .parse()
            .map_err(|e| source::syntax_error(file, text, &e))?;
        for raw in overrides {
            let o = Override::parse(raw)?;
            o.apply(&mut root)?;
            src.add_override(o.path, raw);
        }
        let origin = RecipeOrigin {
            file: file.to_string(),
            text: text.to_string(),
            overrides: overrides.to_vec(),
            effective: toml::to_string(&root).unwrap_or_else(|e| format!("# not printable: {e}")),
        };
        Self::from_table(&src, root, origin)
    }

    fn from_table(src: &SourceMap<'_>, mut root: Table, origin: RecipeOrigin) -> Result<Self> {
        if let Some(key) = root.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            return Err(src.error(
                &path(&[key]),
                format!(
                    "is not a known section; expected one of {}",
                    SECTIONS.join(", ")
                ),
            ));
        }
        let mut section = |name: &str| take_section(src, &mut root, name);
        let (model, data, train, optim) = (
            section("model")?,
            section("data")?,
            section("train")?,
            section("optim")?,
        );
        let (finetune, lora) = (section("finetune")?, section("lora")?);
        let (mut schedule, loss, checkpoint, log) = (
            section("schedule")?,
            section("loss")?,
            section("checkpoint")?,
            section("log")?,
        );

        let train: TrainConfig = typed(src, &["train"], Value::Table(train))?;
        for (key, v) in train.positive() {
            at_least_one(src, &["train", key], v)?;
        }
        if let Some((key, message)) = train.size_error() {
            return Err(src.error(&path(&["train", key]), message));
        }
        let model = ModelRecipe::parse(src, model)?;
        let (finetune, lora) = parse_finetune(src, finetune, lora, &model, &train)?;
        let data = DataRecipe::parse(src, data, &train)?;
        if let Some(cfg) = &model.config {
            data.check_vocab(src, cfg.vocab_size)?;
        }

        let optim_cfg: OptimConfig = parse(src, "optim", &optim)?;
        optim_cfg
            .resolve()
            .map_err(|e| blame(src, &["optim"], Some(&optim), &config_message(&e)))?;

        let written = schedule.clone();
        schedule::fill_defaults(&mut schedule, train.steps);
        let schedule_cfg: ScheduleConfig = parse(src, "schedule", &schedule)?;
        LrSchedule::new(schedule_cfg.clone())
            .map_err(|e| blame(src, &["schedule"], Some(&written), &config_message(&e)))?;

        let loss: LossConfig = typed(src, &["loss"], Value::Table(loss))?;
        for (key, v) in loss.non_negative() {
            if !(v.is_finite() && v >= 0.0) {
                return Err(src.error(
                    &path(&["loss", key]),
                    format!("must be a finite number ≥ 0, got {v}"),
                ));
            }
        }
        let checkpoint: CheckpointConfig = typed(src, &["checkpoint"], Value::Table(checkpoint))?;
        let log: LogConfig = typed(src, &["log"], Value::Table(log))?;
        at_least_one(src, &["log", "every"], log.every)?;

        Ok(Self {
            model,
            data,
            train,
            finetune,
            lora,
            optim: optim_cfg,
            schedule: schedule_cfg,
            loss,
            checkpoint,
            log,
            origin,
        })
    }
}

/// `[finetune]` and `[lora]`: a LoRA run needs a checkpoint `dir` to adapt, and `[lora]` is
/// only meaningful in one.
fn parse_finetune(
    src: &SourceMap<'_>,
    finetune: Table,
    lora: Table,
    model: &ModelRecipe,
    train: &TrainConfig,
) -> Result<(FinetuneConfig, Option<LoraRecipe>)> {
    let has_lora = !lora.is_empty();
    let ft: FinetuneConfig = typed(src, &["finetune"], Value::Table(finetune))?;
    let lr: LoraRecipe = typed(src, &["lora"], Value::Table(lora))?;
    if ft.mode == FinetuneMode::Full {
        if has_lora {
            return Err(src.error(
                &path(&["lora"]),
                "is set but [finetune] mode is \"full\"; set [finetune] mode = \"lora\"",
            ));
        }
        return Ok((ft, None));
    }
    if !matches!(model.source, ModelSource::Dir(_)) {
        return Err(src.error(
            &path(&["finetune", "mode"]),
            "= \"lora\" adapts a checkpoint: set [model] dir to the base model's directory",
        ));
    }
    if train.freeze != Freeze::None {
        return Err(src.error(
            &path(&["train", "freeze"]),
            "cannot be combined with [finetune] mode = \"lora\" (only adapters train there)",
        ));
    }
    lr.spec(train.seed)
        .validate()
        .map_err(|m| src.error(&path(&["lora"]), m))?;
    if lr.dropout > 0.0 && train.activation_checkpointing == ActivationCheckpointing::Block {
        // The block recomputation's graph-free pass draws no dropout masks, so the loss and the
        // recomputed blocks would see different adapters' inputs.
        return Err(src.error(
            &path(&["lora", "dropout"]),
            "must be 0 with [train] activation_checkpointing = \"block\"",
        ));
    }
    Ok((ft, Some(lr)))
}

/// Removes the table of section `name` (empty when absent).
fn take_section(src: &SourceMap<'_>, root: &mut Table, name: &str) -> Result<Table> {
    match root.remove(name) {
        None => Ok(Table::new()),
        Some(Value::Table(t)) => Ok(t),
        Some(other) => Err(src.error(
            &path(&[name]),
            format!("must be a table, got {}", other.type_str()),
        )),
    }
}

/// Deserializes a section, keeping its table for [`blame`].
fn parse<T: DeserializeOwned>(src: &SourceMap<'_>, name: &str, table: &Table) -> Result<T> {
    typed(src, &[name], Value::Table(table.clone()))
}

/// `must be ≥ 1, got 0`.
fn at_least_one(src: &SourceMap<'_>, key: &[&str], v: u64) -> Result<()> {
    if v == 0 {
        return Err(src.error(&path(key), "must be ≥ 1, got 0"));
    }
    Ok(())
}

/// The message of an optimizer-config error without its generic prefix.
fn config_message(e: &v4_optim::OptimError) -> String {
    match e {
        v4_optim::OptimError::Config(m) => m.trim_start_matches("schedule: ").to_string(),
        other => other.to_string(),
    }
}

//! `[model]`: a built-in `preset` (from-scratch runs, with any `ModelConfig` key overridden on
//! top, e.g. `hidden_size = 64`) or the `dir` of a released checkpoint (its `config.json`).

use std::path::PathBuf;

use toml::{Table, Value};
use v4_model::{ModelConfig, ModelError};

use super::de::{blame, path, typed};
use super::error::{RecipeError, Result};
use super::source::SourceMap;

/// Where the architecture comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `preset = "v4-flash" | "v4-pro"`: fresh weights.
    Preset(String),
    /// `dir = "path"`: a checkpoint directory holding `config.json` and the weights.
    Dir(PathBuf),
}

/// The `[model]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecipe {
    /// Preset or checkpoint directory.
    pub source: ModelSource,
    /// `ModelConfig` keys set in the recipe (presets only).
    pub overrides: Table,
    /// The validated config: the preset with the overrides (`None` for `dir`, whose
    /// `config.json` is read by [`ModelRecipe::resolve`]).
    pub config: Option<ModelConfig>,
}

impl ModelRecipe {
    /// The model config: the validated preset, or the checkpoint's `config.json`.
    pub fn resolve(&self) -> std::result::Result<ModelConfig, ModelError> {
        match (&self.config, &self.source) {
            (Some(cfg), _) => Ok(cfg.clone()),
            (None, ModelSource::Dir(dir)) => ModelConfig::from_file(&dir.join("config.json")),
            (None, ModelSource::Preset(name)) => ModelConfig::preset(name),
        }
    }

    /// [`ModelRecipe::resolve`] with errors naming the recipe's source (`[model] dir = "…"` or
    /// `[model] preset = "…"`).
    pub fn config(&self) -> anyhow::Result<ModelConfig> {
        use anyhow::Context;
        self.resolve().with_context(|| match &self.source {
            ModelSource::Dir(d) => format!("[model] dir = {:?}", d.display().to_string()),
            ModelSource::Preset(p) => format!("[model] preset = {p:?}"),
        })
    }

    /// Reads `[model]`.
    pub(crate) fn parse(src: &SourceMap<'_>, mut table: Table) -> Result<Self> {
        let preset = take_string(src, &mut table, "preset")?;
        let dir = take_string(src, &mut table, "dir")?;
        let source = match (preset, dir) {
            (Some(p), None) => ModelSource::Preset(p),
            (None, Some(d)) => ModelSource::Dir(PathBuf::from(d)),
            (Some(_), Some(_)) => {
                return Err(src.error(&path(&["model", "dir"]), "and `preset` are exclusive"))
            }
            (None, None) => {
                return Err(src.error(&path(&["model"]), "needs `preset` or `dir`"));
            }
        };
        let ModelSource::Preset(name) = &source else {
            if let Some(key) = table.keys().next() {
                return Err(src.error(
                    &path(&["model", key]),
                    "cannot be overridden for a checkpoint `dir` (only with `preset`)",
                ));
            }
            return Ok(Self {
                source,
                overrides: table,
                config: None,
            });
        };
        let base = ModelConfig::preset(name).map_err(|_| {
            src.error(
                &path(&["model", "preset"]),
                format!("must be \"v4-flash\" or \"v4-pro\", got {name:?}"),
            )
        })?;
        let config = apply(src, &base, &table)?;
        config
            .validate(&format!("preset `{name}`"))
            .map_err(|e| match e {
                ModelError::Config { message, .. } => {
                    blame(src, &["model"], Some(&table), &message)
                }
                other => blame(src, &["model"], Some(&table), &other.to_string()),
            })?;
        Ok(Self {
            source,
            overrides: table,
            config: Some(config),
        })
    }
}

/// `base` with the keys of `overrides` replaced (sub-tables such as `rope_scaling` merge).
fn apply(src: &SourceMap<'_>, base: &ModelConfig, overrides: &Table) -> Result<ModelConfig> {
    let Ok(Value::Table(mut merged)) = Value::try_from(base) else {
        return Err(src.error(&path(&["model"]), "preset cannot be represented in TOML"));
    };
    for (key, value) in overrides {
        let Some(slot) = merged.get_mut(key) else {
            return Err(unknown(src, &["model", key], &merged));
        };
        match (slot, value) {
            (Value::Table(dst), Value::Table(set)) => {
                for (k, v) in set {
                    if !dst.contains_key(k) {
                        return Err(unknown(src, &["model", key, k], dst));
                    }
                    dst.insert(k.clone(), v.clone());
                }
            }
            (slot, value) => *slot = value.clone(),
        }
    }
    typed(src, &["model"], Value::Table(merged))
}

fn unknown(src: &SourceMap<'_>, key: &[&str], known: &Table) -> RecipeError {
    let names: Vec<&str> = known.keys().map(String::as_str).collect();
    let top = if key.len() == 2 {
        "`preset`, `dir` or "
    } else {
        ""
    };
    src.error(
        &path(key),
        format!(
            "is not a known key; expected {top}one of {}",
            names.join(", ")
        ),
    )
}

/// Removes a string key, checking its type.
fn take_string(src: &SourceMap<'_>, table: &mut Table, key: &str) -> Result<Option<String>> {
    match table.remove(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(src.error(
            &path(&["model", key]),
            format!(
                "has the wrong type (expected a string, got {})",
                other.type_str()
            ),
        )),
    }
}

//! Provenance of a training checkpoint: the recipe as written and as run (after `--set`
//! overrides), the overrides themselves, and the binary (version, git revision) and host that
//! produced it. Stored in every `trainer_state.json` next to the files' checksums.

use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};

/// How a checkpoint was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The recipe file as given on the command line.
    pub recipe_file: String,
    /// `--set section.key=value` overrides, in order.
    pub overrides: Vec<String>,
    /// The recipe after the overrides, as TOML.
    pub effective_recipe: String,
    /// `v4train` version.
    pub version: String,
    /// Git commit of the binary (`-dirty`: uncommitted changes; `unknown`: not from git).
    pub git_revision: String,
    /// Host that wrote the checkpoint.
    pub host: String,
}

impl Provenance {
    /// The provenance of a run of `recipe` by this binary on this host.
    pub fn of(recipe: &Recipe) -> Self {
        Self {
            recipe_file: recipe.origin.file.clone(),
            overrides: recipe.origin.overrides.clone(),
            effective_recipe: recipe.origin.effective.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: env!("V4TRAIN_GIT_REVISION").to_string(),
            host: super::run_lock::host_name(),
        }
    }
}

//! `RecipeError`: every recipe problem, located as `file:line` (or the `--set` override that
//! introduced the value) plus the `[section] key` it concerns.

use std::fmt;

/// Where a recipe value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A line (1-based) of the recipe file.
    File {
        /// The recipe file as given to [`crate::recipe::Recipe::load`].
        file: String,
        /// 1-based line number.
        line: usize,
    },
    /// A `--set section.key=value` override (the raw argument).
    Override(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line } => write!(f, "{file}:{line}"),
            Location::Override(raw) => write!(f, "--set {raw}"),
        }
    }
}

/// A recipe that cannot be read, parsed or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// The file could not be read.
    #[error("{file}: {message}")]
    Read {
        /// The recipe path.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// The file is not valid TOML.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The recipe path.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A `--set` argument that is not `section.key=value`.
    #[error("--set {raw}: {message}")]
    Override {
        /// The raw argument.
        raw: String,
        /// What is wrong with it.
        message: String,
    },
    /// An unknown key, a value of the wrong type or an invalid value.
    #[error("{location}: [{section}] {}{message}", key_prefix(key))]
    Key {
        /// Where the key was written.
        location: Location,
        /// Dotted table path, e.g. `train` or `optim.adamw`.
        section: String,
        /// The key inside the section (empty when the whole section is concerned).
        key: String,
        /// What is wrong, e.g. `must be ≥ 1, got 0`.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key} ")
    }
}

impl RecipeError {
    /// The location of a [`RecipeError::Key`] error.
    pub fn location(&self) -> Option<&Location> {
        match self {
            RecipeError::Key { location, .. } => Some(location),
            _ => None,
        }
    }
}

/// Result of recipe functions.
pub type Result<T> = std::result::Result<T, RecipeError>;

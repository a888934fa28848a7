//! `--set section.key=value` overrides: the value is parsed as a TOML value (falling back to a
//! plain string) and written into the parsed document before it is deserialized.

use toml::{Table, Value};

use super::error::{RecipeError, Result};

/// A parsed override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Key path, e.g. `["train", "steps"]`.
    pub path: Vec<String>,
    /// The new value.
    pub value: Value,
    /// The raw argument, for error messages.
    pub raw: String,
}

impl Override {
    /// Parses `section.key=value`.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |message: &str| RecipeError::Override {
            raw: raw.to_string(),
            message: message.to_string(),
        };
        let (key, value) = raw
            .split_once('=')
            .ok_or_else(|| bad("expected section.key=value"))?;
        let path: Vec<String> = key
            .trim()
            .split('.')
            .map(|s| s.trim().to_string())
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(bad("the key must be section.key (e.g. train.steps)"));
        }
        Ok(Self {
            path,
            value: parse_value(value.trim()),
            raw: raw.to_string(),
        })
    }

    /// Writes the value into `root`, creating missing tables on the way.
    pub fn apply(&self, root: &mut Table) -> Result<()> {
        let mut table = root;
        let (last, parents) = self
            .path
            .split_last()
            .ok_or_else(|| self.error("empty key"))?;
        for seg in parents {
            let entry = table
                .entry(seg.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| self.error(&format!("`{seg}` is not a table")))?;
        }
        table.insert(last.clone(), self.value.clone());
        Ok(())
    }

    fn error(&self, message: &str) -> RecipeError {
        RecipeError::Override {
            raw: self.raw.clone(),
            message: message.to_string(),
        }
    }
}

/// A TOML value (`5`, `true`, `[0, 4]`, `"x"`), else the text as a string.
fn parse_value(text: &str) -> Value {
    format!("v = {text}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(text.to_string()))
}

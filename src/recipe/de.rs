//! Typed deserialization of one recipe section from a `toml::Value`, turning serde's messages
//! (unknown field, missing field, wrong type) into located [`RecipeError`]s, and attributing the
//! messages of the crates' own validators to the key they name.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::error::RecipeError;
use super::source::SourceMap;

/// Path segments from string slices.
pub fn path(segs: &[&str]) -> Vec<String> {
    segs.iter().map(|s| s.to_string()).collect()
}

/// Deserializes `value` (the table at `section`) into `T`.
pub fn typed<T: DeserializeOwned>(
    src: &SourceMap<'_>,
    section: &[&str],
    value: Value,
) -> Result<T, RecipeError> {
    T::deserialize(value).map_err(|e| {
        let shown = e.to_string();
        let mut full = path(section);
        if let Some(keys) = shown
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
        {
            full.extend(keys.split('.').map(str::to_string));
        }
        let msg = e.message().trim();
        let message = if let Some((field, rest)) = backticked_after(msg, "unknown field ") {
            full.push(field);
            format!(
                "is not a known key{}",
                rest.replacen(", expected", "; expected", 1)
            )
        } else if let Some((field, _)) = backticked_after(msg, "missing field ") {
            full.push(field);
            "is required".to_string()
        } else if msg.starts_with("invalid type") {
            format!("has the wrong type ({msg})")
        } else {
            format!("is invalid ({msg})")
        };
        src.error(&full, message)
    })
}

/// `prefix` `X`rest → (X, rest).
fn backticked_after(msg: &str, prefix: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix(prefix)?.strip_prefix('`')?;
    let (name, rest) = rest.split_once('`')?;
    Some((name.to_string(), rest.to_string()))
}

/// An error from a validator outside this module (model, optim, data, schedule): the key is the
/// first `` `key` `` of the message, else the first key of `table` the message mentions, else the
/// section itself.
pub fn blame(
    src: &SourceMap<'_>,
    section: &[&str],
    table: Option<&Table>,
    message: &str,
) -> RecipeError {
    let mut full = path(section);
    if let Some((key, rest)) = message.split_once('`').and_then(|(_, r)| r.split_once('`')) {
        full.extend(key.split('.').map(str::to_string));
        let rest = rest.trim_start();
        let rest = rest
            .strip_prefix('=')
            .map_or(rest.to_string(), |r| format!("= {}", r.trim_start()));
        return src.error(&full, rest);
    }
    if let Some(key) = table.and_then(|t| mentioned(t, message)) {
        full.extend(key);
    }
    src.error(&full, format!("is invalid: {message}"))
}

/// Path (inside `table`) of the first leaf key whose name appears as a word of `message`.
fn mentioned(table: &Table, message: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = message
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    for (k, v) in table {
        if let Value::Table(sub) = v {
            if let Some(mut p) = mentioned(sub, message) {
                p.insert(0, k.clone());
                return Some(p);
            }
        } else if words.contains(&k.as_str()) {
            return Some(vec![k.clone()]);
        }
    }
    None
}

//! Maps a key path (`["train", "micro_batch"]`) back to where it was written: a line of the
//! recipe file (via the spans of `toml::de::DeTable`) or the `--set` override that set it.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{Location, RecipeError};

/// The parsed recipe text plus the overrides applied to it, for locating errors.
pub struct SourceMap<'a> {
    file: String,
    text: &'a str,
    doc: Spanned<DeTable<'a>>,
    /// `(key path, raw argument)` of each `--set`, in order.
    overrides: Vec<(Vec<String>, String)>,
}

impl<'a> SourceMap<'a> {
    /// Parses `text`; a syntax error is reported with its line.
    pub fn parse(file: &str, text: &'a str) -> Result<Self, RecipeError> {
        let doc = DeTable::parse(text).map_err(|e| syntax_error(file, text, &e))?;
        Ok(Self {
            file: file.to_string(),
            text,
            doc,
            overrides: Vec::new(),
        })
    }

    /// Records that `path` was set by the override `raw`.
    pub fn add_override(&mut self, path: Vec<String>, raw: &str) {
        self.overrides.push((path, raw.to_string()));
    }

    /// Where the value at `path` came from: the last override setting it (or a table above
    /// it), else the line of the deepest key of `path` present in the file (the section header
    /// when the key itself is absent), else an override creating the section.
    pub fn locate(&self, path: &[String]) -> Location {
        let last_override = |covers: &dyn Fn(&[String]) -> bool| {
            self.overrides
                .iter()
                .rev()
                .find(|(p, _)| covers(p))
                .map(|(_, raw)| Location::Override(raw.clone()))
        };
        if let Some(loc) = last_override(&|p| path.starts_with(p)) {
            return loc;
        }
        let offset = self.offset(path);
        if offset.is_none() {
            if let Some(loc) = last_override(&|p| p.starts_with(path)) {
                return loc;
            }
        }
        Location::File {
            file: self.file.clone(),
            line: line_of(self.text, offset.unwrap_or(0)),
        }
    }

    /// An error about the key at `path` (section = all but the last segment).
    pub fn error(&self, path: &[String], message: impl Into<String>) -> RecipeError {
        let (section, key) = match path.split_last() {
            Some((key, section)) if !section.is_empty() => (join(section), key.clone()),
            _ => (join(path), String::new()),
        };
        RecipeError::Key {
            location: self.locate(path),
            section,
            key,
            message: message.into(),
        }
    }

    /// Byte offset of the deepest key of `path` found in the document.
    fn offset(&self, path: &[String]) -> Option<usize> {
        let mut table = self.doc.get_ref();
        let mut found = None;
        for seg in path {
            let (name, index) = split_index(seg);
            let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
                break;
            };
            found = Some(key.span().start);
            let value = match (value.get_ref(), index) {
                (DeValue::Array(items), Some(i)) => match items.get(i) {
                    Some(item) => {
                        found = Some(item.span().start);
                        item.get_ref()
                    }
                    None => break,
                },
                (v, _) => v,
            };
            match value {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        found
    }
}

/// Joins key segments as a dotted path (`sources[0]` is one segment).
pub fn join(path: &[String]) -> String {
    path.join(".")
}

/// `sources[2]` → (`sources`, Some(2)).
fn split_index(seg: &str) -> (&str, Option<usize>) {
    if let Some((name, rest)) = seg.split_once('[') {
        if let Some(i) = rest.strip_suffix(']').and_then(|i| i.parse().ok()) {
            return (name, Some(i));
        }
    }
    (seg, None)
}

/// A TOML parse error at its line.
pub fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> RecipeError {
    RecipeError::Syntax {
        file: file.to_string(),
        line: line_of(text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim().to_string(),
    }
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

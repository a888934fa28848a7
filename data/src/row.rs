//! A dataset row before tokenization: its payload (`text`, `messages` or
//! `input_ids`), optional domain tag and `file:line` location, and the parser
//! that pulls just the configured fields out of a JSON object without
//! materializing the rest of it.

use crate::bad_rows::{BadRow, BadRowKind, RowLocation};
use crate::chat_message::ChatMessage;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the configured field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Plain text (tokenized, all tokens trained).
    Text,
    /// An OpenAI-format conversation (V4 chat encoding, assistant tokens trained).
    Messages,
    /// Pre-tokenized ids (all trained).
    InputIds,
}

/// Which fields of a row to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpec {
    /// Name of the payload field / column.
    pub field: String,
    /// What the payload field holds.
    pub kind: FieldKind,
    /// Optional field / column with a domain tag carried to the batch.
    pub domain_field: Option<String>,
}

/// A row's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum RowPayload {
    /// Plain text.
    Text(String),
    /// A conversation.
    Messages(Vec<ChatMessage>),
    /// Token ids.
    InputIds(Vec<u32>),
}

/// A parsed row.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// The payload.
    pub payload: RowPayload,
    /// Domain tag, when configured and present.
    pub domain: Option<String>,
    /// Where the row is.
    pub location: RowLocation,
}

/// A row, or why it is unusable.
pub type RowResult = Result<RawRow, BadRow>;

impl RowSpec {
    /// Parses one JSON object (a jsonl line) into a row.
    pub fn parse_json(&self, line: &[u8], location: RowLocation) -> RowResult {
        let mut de = serde_json::Deserializer::from_slice(line);
        let parsed = de
            .deserialize_map(RowVisitor { spec: self })
            .and_then(|v| de.end().map(|_| v));
        let bad = |kind| BadRow {
            location: location.clone(),
            kind,
        };
        match parsed {
            Err(e) => Err(bad(BadRowKind::Malformed(e.to_string()))),
            Ok((None, _)) => Err(bad(BadRowKind::MissingField(self.field.clone()))),
            Ok((Some(payload), domain)) => Ok(RawRow {
                payload,
                domain,
                location,
            }),
        }
    }
}

struct RowVisitor<'a> {
    spec: &'a RowSpec,
}

struct PayloadSeed(FieldKind);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Option<RowPayload>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(match self.0 {
            FieldKind::Text => Option::<String>::deserialize(d)?.map(RowPayload::Text),
            FieldKind::Messages => {
                Option::<Vec<ChatMessage>>::deserialize(d)?.map(RowPayload::Messages)
            }
            FieldKind::InputIds => Option::<Vec<u32>>::deserialize(d)?.map(RowPayload::InputIds),
        })
    }
}

impl<'de> Visitor<'de> for RowVisitor<'_> {
    type Value = (Option<RowPayload>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut payload, mut domain) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            if key == self.spec.field {
                payload = map.next_value_seed(PayloadSeed(self.spec.kind))?;
            } else if self.spec.domain_field.as_deref() == Some(key.as_str()) {
                domain = map.next_value::<Option<String>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((payload, domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn loc() -> RowLocation {
        RowLocation {
            file: PathBuf::from("f.jsonl"),
            line: 3,
        }
    }

    #[test]
    fn parses_fields_and_reports_problems() {
        let spec = RowSpec {
            field: "text".into(),
            kind: FieldKind::Text,
            domain_field: Some("domain".into()),
        };
        let row = spec
            .parse_json(
                br#"{"id": 1, "text": "hi", "domain": "web", "x": [1, {"a": 2}]}"#,
                loc(),
            )
            .unwrap();
        assert_eq!(row.payload, RowPayload::Text("hi".into()));
        assert_eq!(row.domain.as_deref(), Some("web"));

        let err = spec.parse_json(br#"{"txt": "hi"}"#, loc()).unwrap_err();
        assert_eq!(err.kind, BadRowKind::MissingField("text".into()));
        assert_eq!(err.to_string(), "f.jsonl:3: missing field `text`");
        let err = spec.parse_json(br#"{"text": "hi""#, loc()).unwrap_err();
        assert!(matches!(err.kind, BadRowKind::Malformed(_)));
        let err = spec.parse_json(br#"{"text": 5}"#, loc()).unwrap_err();
        assert!(matches!(err.kind, BadRowKind::Malformed(_)));
    }
}

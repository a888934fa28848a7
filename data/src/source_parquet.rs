//! Streams rows from one parquet file, record batch by record batch, reading
//! only the payload and domain columns. Resuming at row `n` skips whole row
//! groups from the metadata, then the remaining rows of the first group.
//! Text and messages columns are strings (messages as a JSON array);
//! `input_ids` is a list of integers.

use crate::bad_rows::{BadRow, BadRowKind, RowLocation};
use crate::chat_message::ChatMessage;
use crate::error::DataError;
use crate::row::{FieldKind, RawRow, RowPayload, RowResult, RowSpec};
use crate::source::FileRows;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows per decoded record batch.
const BATCH_ROWS: usize = 1024;

/// An open parquet file.
pub struct ParquetFile {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    batch_row: usize,
    to_skip: u64,
    row: u64,
}

impl ParquetFile {
    /// Opens `path` positioned at 0-based row `row`.
    pub fn open(path: &Path, spec: &RowSpec, row: u64) -> Result<Self, DataError> {
        let err = |message: String| DataError::Parquet {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(e.to_string()))?;
        let schema = builder.schema().clone();
        let mut roots = vec![schema
            .index_of(&spec.field)
            .map_err(|_| err(format!("no column `{}`", spec.field)))?];
        if let Some(domain) = &spec.domain_field {
            if let Ok(i) = schema.index_of(domain) {
                roots.push(i);
            }
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut skipped = 0u64;
        let mut groups = Vec::new();
        for (i, rg) in builder.metadata().row_groups().iter().enumerate() {
            let rows = rg.num_rows().max(0) as u64;
            if groups.is_empty() && skipped + rows <= row {
                skipped += rows;
            } else {
                groups.push(i);
            }
        }
        let reader = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| err(e.to_string()))?;
        Ok(ParquetFile {
            path: path.to_path_buf(),
            reader,
            batch: None,
            batch_row: 0,
            to_skip: row - skipped,
            row: skipped,
        })
    }

    fn next_batch(&mut self) -> Result<bool, DataError> {
        match self.reader.next() {
            None => Ok(false),
            Some(Err(e)) => Err(DataError::Parquet {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Some(Ok(batch)) => {
                self.batch = Some(batch);
                self.batch_row = 0;
                Ok(true)
            }
        }
    }
}

impl FileRows for ParquetFile {
    fn next_row(&mut self, spec: &RowSpec) -> Result<Option<RowResult>, DataError> {
        loop {
            let available = self.batch.as_ref().map_or(0, |b| b.num_rows());
            if self.batch_row >= available {
                if !self.next_batch()? {
                    return Ok(None);
                }
                continue;
            }
            let i = self.batch_row;
            self.batch_row += 1;
            self.row += 1;
            if self.to_skip > 0 {
                self.to_skip -= 1;
                continue;
            }
            let Some(batch) = self.batch.as_ref() else {
                return Ok(None);
            };
            let location = RowLocation {
                file: self.path.clone(),
                line: self.row,
            };
            return Ok(Some(extract_row(batch, i, spec, location)));
        }
    }

    fn position(&self) -> (u64, u64) {
        (self.row, self.row)
    }
}

fn extract_row(batch: &RecordBatch, i: usize, spec: &RowSpec, location: RowLocation) -> RowResult {
    let bad = |kind| BadRow {
        location: location.clone(),
        kind,
    };
    let column = batch
        .column_by_name(&spec.field)
        .ok_or_else(|| bad(BadRowKind::MissingField(spec.field.clone())))?;
    if column.is_null(i) {
        return Err(bad(BadRowKind::MissingField(spec.field.clone())));
    }
    let payload = match spec.kind {
        FieldKind::Text => RowPayload::Text(string_at(column, i).map_err(bad)?.to_owned()),
        FieldKind::Messages => {
            let text = string_at(column, i).map_err(bad)?;
            let messages: Vec<ChatMessage> = serde_json::from_str(text)
                .map_err(|e| bad(BadRowKind::Malformed(e.to_string())))?;
            RowPayload::Messages(messages)
        }
        FieldKind::InputIds => RowPayload::InputIds(ids_at(column, i).map_err(bad)?),
    };
    let domain = spec
        .domain_field
        .as_deref()
        .and_then(|d| batch.column_by_name(d))
        .filter(|c| !c.is_null(i))
        .and_then(|c| string_at(c, i).ok())
        .map(str::to_owned);
    Ok(RawRow {
        payload,
        domain,
        location,
    })
}

fn string_at(column: &ArrayRef, i: usize) -> Result<&str, BadRowKind> {
    if let Some(a) = column.as_string_opt::<i32>() {
        Ok(a.value(i))
    } else if let Some(a) = column.as_string_opt::<i64>() {
        Ok(a.value(i))
    } else if let Some(a) = column.as_string_view_opt() {
        Ok(a.value(i))
    } else {
        Err(BadRowKind::Malformed(format!(
            "expected a string column, found {}",
            column.data_type()
        )))
    }
}

fn ids_at(column: &ArrayRef, i: usize) -> Result<Vec<u32>, BadRowKind> {
    let values = if let Some(a) = column.as_list_opt::<i32>() {
        a.value(i)
    } else if let Some(a) = column.as_list_opt::<i64>() {
        a.value(i)
    } else {
        return Err(BadRowKind::Malformed(format!(
            "expected a list column, found {}",
            column.data_type()
        )));
    };
    let out_of_range = || BadRowKind::Malformed("token id out of u32 range".into());
    let convert = |v: Option<i128>| -> Result<u32, BadRowKind> {
        v.and_then(|x| u32::try_from(x).ok())
            .ok_or_else(out_of_range)
    };
    let ids: Result<Vec<u32>, BadRowKind> = if let Some(a) = values.as_primitive_opt::<Int32Type>()
    {
        a.iter().map(|v| convert(v.map(i128::from))).collect()
    } else if let Some(a) = values.as_primitive_opt::<Int64Type>() {
        a.iter().map(|v| convert(v.map(i128::from))).collect()
    } else if let Some(a) = values.as_primitive_opt::<UInt32Type>() {
        a.iter().map(|v| convert(v.map(i128::from))).collect()
    } else if let Some(a) = values.as_primitive_opt::<UInt64Type>() {
        a.iter().map(|v| convert(v.map(i128::from))).collect()
    } else {
        Err(BadRowKind::Malformed(format!(
            "expected integer token ids, found {}",
            values.data_type()
        )))
    };
    ids
}

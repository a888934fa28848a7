//! Streams rows from one parquet file, record batch by record batch, reading
//! only the payload and domain columns, one row group at a time in a given
//! order (file order, or a seeded permutation when the source is shuffled).
//! The resume position is the number of rows already read in that order:
//! whole row groups are skipped from the metadata, then the remaining rows of
//! the first group. Text and messages columns are strings (messages as a JSON
//! array); `input_ids` is a list of integers.

use crate::bad_rows::{BadRow, BadRowKind, RowLocation};
use crate::chat_message::ChatMessage;
use crate::error::DataError;
use crate::rng::permutation;
use crate::row::{FieldKind, RawRow, RowPayload, RowResult, RowSpec};
use crate::source::FileRows;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows per decoded record batch.
const BATCH_ROWS: usize = 1024;

/// An open parquet file.
pub struct ParquetFile {
    path: PathBuf,
    file: File,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// Row groups in reading order.
    order: Vec<usize>,
    /// First file row of each row group (by group index).
    starts: Vec<u64>,
    /// Index into `order` of the next group to open.
    next_group: usize,
    /// Rows to skip at the start of the next group opened (resume).
    skip: u64,
    reader: Option<ParquetRecordBatchReader>,
    /// Row group being read and how many of its rows were consumed.
    group: usize,
    group_row: u64,
    batch: Option<RecordBatch>,
    batch_row: usize,
    /// Rows consumed in reading order.
    consumed: u64,
}

impl ParquetFile {
    /// Opens `path` after `row` rows of its reading order: the row groups in
    /// file order, or permuted by a generator seeded with `shuffle`.
    pub fn open(
        path: &Path,
        spec: &RowSpec,
        row: u64,
        shuffle: Option<&[u64]>,
    ) -> Result<Self, DataError> {
        let err = |message: String| DataError::Parquet {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
            .map_err(|e| err(e.to_string()))?;
        let schema = metadata.schema().clone();
        let mut roots = vec![schema
            .index_of(&spec.field)
            .map_err(|_| err(format!("no column `{}`", spec.field)))?];
        if let Some(domain) = &spec.domain_field {
            if let Ok(i) = schema.index_of(domain) {
                roots.push(i);
            }
        }
        let parquet = metadata.metadata();
        let mask = ProjectionMask::roots(parquet.file_metadata().schema_descr(), roots);
        let lens: Vec<u64> = parquet
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows().max(0) as u64)
            .collect();
        let mut starts = Vec::with_capacity(lens.len());
        let mut total = 0u64;
        for &n in &lens {
            starts.push(total);
            total += n;
        }
        let order = match shuffle {
            Some(seed) => permutation(lens.len(), seed),
            None => (0..lens.len()).collect(),
        };
        let mut next_group = 0;
        let mut skipped = 0u64;
        while next_group < order.len() && skipped + lens[order[next_group]] <= row {
            skipped += lens[order[next_group]];
            next_group += 1;
        }
        if next_group == order.len() && skipped < row {
            return Err(err(format!(
                "resume position {row} is past the file's {total} rows; the file changed"
            )));
        }
        Ok(ParquetFile {
            path: path.to_path_buf(),
            file,
            metadata,
            mask,
            order,
            starts,
            next_group,
            skip: row - skipped,
            reader: None,
            group: 0,
            group_row: 0,
            batch: None,
            batch_row: 0,
            consumed: row,
        })
    }

    /// Moves to the next record batch (opening the next row group when the
    /// current one is done); `false` at the end of the file.
    fn next_batch(&mut self) -> Result<bool, DataError> {
        let err = |message: String| DataError::Parquet {
            path: self.path.clone(),
            message,
        };
        loop {
            if let Some(reader) = self.reader.as_mut() {
                match reader.next() {
                    Some(Err(e)) => return Err(err(e.to_string())),
                    Some(Ok(batch)) => {
                        self.batch = Some(batch);
                        self.batch_row = 0;
                        return Ok(true);
                    }
                    None => self.reader = None,
                }
            }
            if self.next_group >= self.order.len() {
                return Ok(false);
            }
            let group = self.order[self.next_group];
            self.next_group += 1;
            let input = self.file.try_clone().map_err(|source| DataError::Io {
                path: self.path.clone(),
                source,
            })?;
            let mut builder =
                ParquetRecordBatchReaderBuilder::new_with_metadata(input, self.metadata.clone())
                    .with_projection(self.mask.clone())
                    .with_row_groups(vec![group])
                    .with_batch_size(BATCH_ROWS);
            let skip = std::mem::take(&mut self.skip);
            if skip > 0 {
                builder = builder.with_offset(skip as usize);
            }
            self.reader = Some(builder.build().map_err(|e| err(e.to_string()))?);
            self.group = group;
            self.group_row = skip;
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
            self.group_row += 1;
            self.consumed += 1;
            let Some(batch) = self.batch.as_ref() else {
                return Ok(None);
            };
            let location = RowLocation {
                file: self.path.clone(),
                line: self.starts[self.group] + self.group_row,
            };
            return Ok(Some(extract_row(batch, i, spec, location)));
        }
    }

    fn position(&self) -> (u64, u64) {
        (self.consumed, self.consumed)
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

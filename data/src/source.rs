//! One configured data source: its file list (jsonl and/or parquet), the row
//! spec, and a resumable position (file, offset, line, epoch). With `repeat`
//! the source starts a new epoch after its last file.

use crate::error::DataError;
use crate::file_set::{expand, FileFormat};
use crate::row::{RowResult, RowSpec};
use crate::source_jsonl::JsonlFile;
use crate::source_parquet::ParquetFile;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Row reader over one open file.
pub trait FileRows: Send {
    /// The next row, `None` at the end of the file. `Err` only for I/O-level failures.
    fn next_row(&mut self, spec: &RowSpec) -> Result<Option<RowResult>, DataError>;
    /// `(offset, line)` to resume after the last returned row.
    fn position(&self) -> (u64, u64);
}

/// Where a source resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Index into the sorted file list.
    pub file_index: usize,
    /// Byte offset (jsonl) or row index (parquet) of the next row in that file.
    pub offset: u64,
    /// Lines (rows) of that file already consumed.
    pub line: u64,
    /// Completed passes over all files.
    pub epoch: u64,
    /// No more rows (finite source, or a repeating source with no rows at all).
    pub exhausted: bool,
}

/// A streaming, resumable source of rows.
pub struct Source {
    files: Vec<PathBuf>,
    formats: Vec<FileFormat>,
    spec: RowSpec,
    repeat: bool,
    pos: SourcePosition,
    current: Option<Box<dyn FileRows>>,
    rows_in_fresh_epoch: Option<u64>,
}

impl Source {
    /// Opens the files named by `pattern`. `format` overrides the extension;
    /// `key` names the config entry in errors.
    pub fn open(
        pattern: &str,
        format: Option<FileFormat>,
        spec: RowSpec,
        repeat: bool,
        position: SourcePosition,
        key: &str,
    ) -> Result<Self, DataError> {
        let files = expand(pattern, key)?;
        let formats = files
            .iter()
            .map(|f| {
                format
                    .or_else(|| FileFormat::from_path(f))
                    .ok_or_else(|| DataError::Config {
                        key: format!("{key}.format"),
                        message: format!(
                            "cannot infer the format of {}; set `format`",
                            f.display()
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if position.file_index > files.len() {
            return Err(DataError::Cursor {
                key: format!("{key}.file_index"),
                message: format!(
                    "{} but the source has {} files",
                    position.file_index,
                    files.len()
                ),
            });
        }
        let fresh = position == SourcePosition::default();
        Ok(Source {
            files,
            formats,
            spec,
            repeat,
            pos: position,
            current: None,
            rows_in_fresh_epoch: fresh.then_some(0),
        })
    }

    /// The sorted data files.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Position after the last returned row.
    pub fn position(&self) -> SourcePosition {
        self.pos.clone()
    }

    /// The next row; `None` once a finite source is exhausted.
    pub fn next_row(&mut self) -> Result<Option<RowResult>, DataError> {
        loop {
            if self.pos.exhausted {
                return Ok(None);
            }
            let Some(current) = self.current.as_mut() else {
                self.open_next()?;
                continue;
            };
            match current.next_row(&self.spec)? {
                Some(row) => {
                    (self.pos.offset, self.pos.line) = current.position();
                    if let Some(n) = self.rows_in_fresh_epoch.as_mut() {
                        *n += 1;
                    }
                    return Ok(Some(row));
                }
                None => {
                    self.current = None;
                    self.pos.file_index += 1;
                    self.pos.offset = 0;
                    self.pos.line = 0;
                }
            }
        }
    }

    fn open_next(&mut self) -> Result<(), DataError> {
        if self.pos.file_index >= self.files.len() {
            let empty_epoch = self.rows_in_fresh_epoch == Some(0);
            if !self.repeat || empty_epoch {
                self.pos.exhausted = true;
                return Ok(());
            }
            self.pos = SourcePosition {
                epoch: self.pos.epoch + 1,
                ..SourcePosition::default()
            };
            self.rows_in_fresh_epoch = Some(0);
        }
        let path = &self.files[self.pos.file_index];
        self.current = Some(match self.formats[self.pos.file_index] {
            FileFormat::Jsonl => Box::new(JsonlFile::open(path, self.pos.offset, self.pos.line)?),
            FileFormat::Parquet => Box::new(ParquetFile::open(path, &self.spec, self.pos.offset)?),
        });
        Ok(())
    }
}

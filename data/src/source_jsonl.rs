//! Streams rows from one jsonl file, line by line, starting at a byte offset so
//! that a resumed run seeks straight to its next unseen line.

use crate::bad_rows::{BadRow, BadRowKind, RowLocation};
use crate::error::DataError;
use crate::row::{RowResult, RowSpec};
use crate::source::FileRows;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// An open jsonl file.
pub struct JsonlFile {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    line: u64,
    buf: Vec<u8>,
}

impl JsonlFile {
    /// Opens `path` positioned at byte `offset`, which is the start of line `line + 1`.
    pub fn open(path: &Path, offset: u64, line: u64) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(JsonlFile {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            offset,
            line,
            buf: Vec::new(),
        })
    }
}

impl FileRows for JsonlFile {
    fn next_row(&mut self, spec: &RowSpec) -> Result<Option<RowResult>, DataError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| DataError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.offset += n as u64;
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let location = RowLocation {
                file: self.path.clone(),
                line: self.line,
            };
            if std::str::from_utf8(&self.buf).is_err() {
                return Ok(Some(Err(BadRow {
                    location,
                    kind: BadRowKind::Malformed("invalid UTF-8".into()),
                })));
            }
            return Ok(Some(spec.parse_json(&self.buf, location)));
        }
    }

    fn position(&self) -> (u64, u64) {
        (self.offset, self.line)
    }
}

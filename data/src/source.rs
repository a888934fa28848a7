//! One configured data source: its file list (jsonl and/or parquet), the row
//! spec, the seeded streaming shuffle, and a resumable position. With `repeat`
//! the source starts a new epoch after its last file.
//!
//! # Shuffling (deterministic, streaming)
//!
//! With `shuffle_block = B > 1` a source is shuffled at three levels, each by
//! a permutation derived from `(seed, source index, epoch, …)` and regenerated
//! on demand, never stored:
//! 1. **files**: each epoch visits the source's files in a fresh permutation;
//! 2. **parquet row groups**: each file's row groups are read in a permutation
//!    seeded by (epoch, file);
//! 3. **blocks**: the next `B` rows of that stream are read into a block and
//!    returned in a permutation seeded by (epoch, block index). Blocks span
//!    file boundaries but not epochs (the last block of an epoch may be short).
//!
//! Memory: a source holds at most one block of `B` parsed rows (plus one
//! decoded parquet record batch of at most 1024 rows, or a 1 MiB jsonl read
//! buffer), whatever the dataset size; nothing else is buffered, so the
//! working set is `O(B × row size)` per source and the dataset streams from
//! disk. `B ≤ 1` disables all three levels (files and rows in sorted order).
//!
//! # Position
//!
//! The cursor ([`SourcePosition`]) records where the *current block* began in
//! the epoch's (shuffled) file order — file slot, byte offset (jsonl) or rows
//! read in row-group order (parquet) — the block's index and how many of its
//! rows were already returned. Resuming seeks to the block start, re-reads the
//! block (at most `B` rows), regenerates its permutation and drops the rows
//! already returned; no row contents are stored in the cursor.

use crate::error::DataError;
use crate::file_set::{expand, FileFormat};
use crate::rng::permutation;
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

/// Where a source resumes: the start of its current shuffle block and how
/// many rows of that block were already returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePosition {
    /// Completed passes over all files.
    pub epoch: u64,
    /// Index of the current block within the epoch (blocks already finished).
    pub block: u64,
    /// Where the current block begins: slot in this epoch's file order
    /// (the sorted list when not shuffled).
    pub file_index: usize,
    /// Where the current block begins in that file: byte offset (jsonl) or
    /// rows already read in the file's row-group order (parquet).
    pub offset: u64,
    /// Lines (jsonl) or rows (parquet) of that file before `offset`.
    pub line: u64,
    /// Rows of the current block already returned.
    pub emitted: u64,
    /// The block size the position was taken with (`≤ 1`: not shuffled).
    pub shuffle_block: usize,
    /// No more rows (finite source, or a repeating source with no rows at all).
    pub exhausted: bool,
}

/// How a source is shuffled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shuffle {
    /// Rows per shuffle block; `≤ 1` disables shuffling.
    pub block: usize,
    /// The run's seed (`[data] seed`).
    pub seed: u64,
    /// Index of the source in `[[data.sources]]` (decorrelates sources).
    pub source: usize,
}

impl Shuffle {
    /// No shuffling: files, row groups and rows in order.
    pub const OFF: Shuffle = Shuffle {
        block: 1,
        seed: 0,
        source: 0,
    };

    fn enabled(&self) -> bool {
        self.block > 1
    }
}

/// Domain tags of the derived seeds.
const FILES: u64 = 1;
const ROW_GROUPS: u64 = 2;
const BLOCK: u64 = 3;

/// The sequential reader under the block shuffle.
struct Reader {
    /// Slot in the epoch's file order.
    slot: usize,
    offset: u64,
    line: u64,
    current: Option<Box<dyn FileRows>>,
}

/// A streaming, resumable, optionally shuffled source of rows.
pub struct Source {
    files: Vec<PathBuf>,
    formats: Vec<FileFormat>,
    spec: RowSpec,
    repeat: bool,
    shuffle: Shuffle,
    /// Cursor state: after the last returned row.
    pos: SourcePosition,
    /// File order of `pos.epoch` (indices into `files`).
    order: Vec<usize>,
    /// Positioned after the last row read into `block`.
    reader: Reader,
    /// The current block in emission order; rows before `pos.emitted` are taken.
    block: Vec<Option<RowResult>>,
    /// The config entry, for errors.
    key: String,
}

impl Source {
    /// Opens the files named by `pattern`. `format` overrides the extension;
    /// `position` (from a cursor) continues a previous run, `None` starts
    /// afresh; `key` names the config entry in errors.
    pub fn open(
        pattern: &str,
        format: Option<FileFormat>,
        spec: RowSpec,
        repeat: bool,
        shuffle: Shuffle,
        position: Option<SourcePosition>,
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
        let shuffle = Shuffle {
            block: shuffle.block.max(1),
            ..shuffle
        };
        let pos = match position {
            None => SourcePosition {
                shuffle_block: shuffle.block,
                ..SourcePosition::default()
            },
            Some(p) => {
                check_position(&p, shuffle.block, files.len(), key)?;
                p
            }
        };
        let mut source = Source {
            files,
            formats,
            spec,
            repeat,
            shuffle,
            reader: Reader {
                slot: pos.file_index,
                offset: pos.offset,
                line: pos.line,
                current: None,
            },
            pos,
            order: Vec::new(),
            block: Vec::new(),
            key: key.to_owned(),
        };
        source.order = source.file_order(source.pos.epoch);
        Ok(source)
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
            let next = self.pos.emitted as usize;
            if next < self.block.len() {
                let row = self.block[next].take();
                self.pos.emitted += 1;
                if next + 1 == self.block.len() {
                    // Block done: the next one starts where the reader stands.
                    self.block.clear();
                    self.pos.block += 1;
                    self.pos.emitted = 0;
                    self.pos.file_index = self.reader.slot;
                    self.pos.offset = self.reader.offset;
                    self.pos.line = self.reader.line;
                }
                match row {
                    Some(row) => return Ok(Some(row)),
                    None => unreachable!("a block row is taken once"),
                }
            }
            self.load_block()?;
        }
    }

    /// Reads the block starting at `pos` (the reader stands there), permutes
    /// it, and drops the rows a resumed cursor says were already returned.
    fn load_block(&mut self) -> Result<(), DataError> {
        let mut rows = Vec::with_capacity(self.shuffle.block.min(4096));
        while rows.len() < self.shuffle.block {
            match self.read_row()? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        let emitted = self.pos.emitted as usize;
        if emitted > 0 && rows.len() <= emitted {
            return Err(self.changed(rows.len()));
        }
        if rows.is_empty() {
            // End of the epoch.
            if !self.repeat || self.pos.block == 0 {
                // Finite data, or an epoch without a single row.
                self.pos.exhausted = true;
            } else {
                self.start_epoch(self.pos.epoch + 1);
            }
            return Ok(());
        }
        self.block = if self.shuffle.enabled() && rows.len() > 1 {
            let perm = permutation(
                rows.len(),
                &[
                    self.shuffle.seed,
                    self.shuffle.source as u64,
                    BLOCK,
                    self.pos.epoch,
                    self.pos.block,
                ],
            );
            let mut slots: Vec<Option<RowResult>> = rows.into_iter().map(Some).collect();
            perm.iter().map(|&i| slots[i].take()).collect()
        } else {
            rows.into_iter().map(Some).collect()
        };
        for row in &mut self.block[..emitted] {
            *row = None;
        }
        Ok(())
    }

    fn changed(&self, found: usize) -> DataError {
        DataError::Cursor {
            key: format!("{}.emitted", self.key),
            message: format!(
                "block {} of epoch {} has {found} rows now, but {} were already returned \
                 when the cursor was saved; the data files changed since",
                self.pos.block, self.pos.epoch, self.pos.emitted
            ),
        }
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.pos = SourcePosition {
            epoch,
            shuffle_block: self.shuffle.block,
            ..SourcePosition::default()
        };
        self.order = self.file_order(epoch);
        self.reader = Reader {
            slot: 0,
            offset: 0,
            line: 0,
            current: None,
        };
    }

    /// The files of `epoch` in reading order.
    fn file_order(&self, epoch: u64) -> Vec<usize> {
        let n = self.files.len();
        if self.shuffle.enabled() && n > 1 {
            permutation(
                n,
                &[self.shuffle.seed, self.shuffle.source as u64, FILES, epoch],
            )
        } else {
            (0..n).collect()
        }
    }

    /// The next row of the epoch's file stream.
    fn read_row(&mut self) -> Result<Option<RowResult>, DataError> {
        loop {
            let Some(current) = self.reader.current.as_mut() else {
                if self.reader.slot >= self.files.len() {
                    return Ok(None);
                }
                self.reader.current = Some(self.open_file()?);
                continue;
            };
            match current.next_row(&self.spec)? {
                Some(row) => {
                    (self.reader.offset, self.reader.line) = current.position();
                    return Ok(Some(row));
                }
                None => {
                    self.reader = Reader {
                        slot: self.reader.slot + 1,
                        offset: 0,
                        line: 0,
                        current: None,
                    };
                }
            }
        }
    }

    fn open_file(&self) -> Result<Box<dyn FileRows>, DataError> {
        let file = self.order[self.reader.slot];
        let path = &self.files[file];
        Ok(match self.formats[file] {
            FileFormat::Jsonl => {
                Box::new(JsonlFile::open(path, self.reader.offset, self.reader.line)?)
            }
            FileFormat::Parquet => {
                let seed = [
                    self.shuffle.seed,
                    self.shuffle.source as u64,
                    ROW_GROUPS,
                    self.pos.epoch,
                    file as u64,
                ];
                let groups = self.shuffle.enabled().then_some(&seed[..]);
                Box::new(ParquetFile::open(
                    path,
                    &self.spec,
                    self.reader.offset,
                    groups,
                )?)
            }
        })
    }
}

fn check_position(
    p: &SourcePosition,
    block: usize,
    files: usize,
    key: &str,
) -> Result<(), DataError> {
    let err = |field: &str, message: String| DataError::Cursor {
        key: format!("{key}.{field}"),
        message,
    };
    if p.shuffle_block.max(1) != block {
        return Err(err(
            "shuffle_block",
            format!(
                "the cursor was saved with shuffle_block = {}, the config has {block}; resume \
                 with the original value (the block order depends on it)",
                p.shuffle_block
            ),
        ));
    }
    if p.file_index > files {
        return Err(err(
            "file_index",
            format!("{} but the source has {files} files", p.file_index),
        ));
    }
    if p.emitted as usize >= block {
        return Err(err(
            "emitted",
            format!("{} rows of a block of {block}", p.emitted),
        ));
    }
    Ok(())
}

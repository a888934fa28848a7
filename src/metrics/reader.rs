//! Reads event files back: every file of a log dir in order, both CRCs of every record
//! checked. Used by tests and on resume.

use super::event::{Event, What};
use super::tfrecord::{RecordError, RecordReader};
use super::{io_err, MetricsError, Result};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarRecord {
    pub tag: String,
    pub step: i64,
    pub value: f32,
    pub wall_time: f64,
}

/// The event files (names containing `tfevents`) of `dir`, oldest first: ordered by the
/// `<unix_secs>` in the name, then by name.
pub fn event_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains("tfevents") && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by_cached_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let secs = name
            .split_once("tfevents.")
            .and_then(|(_, rest)| rest.split('.').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        (secs, name.to_string())
    });
    Ok(files)
}

/// All events of one file. A truncated last record (a killed writer) ends the file; a CRC
/// mismatch or an undecodable event is [`MetricsError::Corrupt`] with the record's offset.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let mut records = RecordReader::new(BufReader::new(file));
    let mut events = Vec::new();
    loop {
        let offset = records.offset();
        let corrupt = |reason: String| MetricsError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        let data = match records.next_record() {
            Ok(Some(data)) => data,
            Ok(None) => return Ok(events),
            Err(RecordError::Io(e)) => return Err(io_err(path)(e)),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        events.push(Event::decode(&data).map_err(|e| corrupt(e.to_string()))?);
    }
}

/// Every scalar of every event file in `dir`, in file then write order, including steps
/// that a later resume superseded.
pub fn read_scalars(dir: impl AsRef<Path>) -> Result<Vec<ScalarRecord>> {
    read_dir_scalars(dir.as_ref(), false)
}

/// Like [`read_scalars`], but as TensorBoard shows the run: a `SessionLog START` event at
/// step `s` (written by [`TensorBoardWriter::resume`](super::TensorBoardWriter::resume))
/// drops the scalars read before it with `step >= s`.
pub fn read_scalars_latest(dir: impl AsRef<Path>) -> Result<Vec<ScalarRecord>> {
    read_dir_scalars(dir.as_ref(), true)
}

fn read_dir_scalars(dir: &Path, purge: bool) -> Result<Vec<ScalarRecord>> {
    let mut out = Vec::new();
    for path in event_files(dir)? {
        for ev in read_events(&path)? {
            match ev.what {
                What::Summary(values) => {
                    out.extend(values.into_iter().filter_map(|v| {
                        Some(ScalarRecord {
                            value: v.simple_value?,
                            tag: v.tag,
                            step: ev.step,
                            wall_time: ev.wall_time,
                        })
                    }));
                }
                What::SessionStart if purge => out.retain(|s| s.step < ev.step),
                _ => {}
            }
        }
    }
    Ok(out)
}

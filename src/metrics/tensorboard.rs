//! [`TensorBoardWriter`]: scalar summaries in a TensorBoard event file.
//!
//! Each writer owns one new file `events.out.tfevents.<unix_secs>.<hostname>.<pid>.v4train`
//! in the log dir; TensorBoard merges all event files of a directory into one run.
//!
//! Resume: [`TensorBoardWriter::resume`] opens another new file in the same dir and writes a
//! `SessionLog{status: START}` event at `resumed_step + 1`. TensorBoard's Python loader
//! (`purge_orphaned_data`, on by default) then drops the crashed run's events with
//! `step > resumed_step`, so the re-run steps are not shown twice; the files themselves keep
//! them, and [`crate::metrics::read_scalars_latest`] applies the same rule when reading.

use super::event::{Event, Value, What, FILE_VERSION};
use super::tfrecord::encode_record;
use super::{io_err, unix_time, MetricsError, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Writes scalar events to a new event file; buffered until [`flush`](Self::flush) or drop.
pub struct TensorBoardWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TensorBoardWriter {
    /// Creates `dir` if needed and starts a new event file in it.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (path, file) = new_event_file(dir)?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        w.write_event(0, What::FileVersion(FILE_VERSION.to_string()))?;
        w.flush()?;
        Ok(w)
    }

    /// Continues the run in `dir` after a restart from the checkpoint of `resumed_step`:
    /// a new file whose first event after the version tells TensorBoard to hide the
    /// earlier files' events with `step > resumed_step`.
    pub fn resume(dir: impl AsRef<Path>, resumed_step: u64) -> Result<Self> {
        let mut w = Self::create(dir)?;
        let start = resumed_step.saturating_add(1);
        w.write_event(start, What::SessionStart)?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs one scalar.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f32) -> Result<()> {
        self.scalars(step, &[(tag, value)])
    }

    /// Logs several scalars of one step as a single event.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f32)]) -> Result<()> {
        let values = values
            .iter()
            .map(|&(tag, v)| Value {
                tag: tag.to_string(),
                simple_value: Some(v),
            })
            .collect();
        self.write_event(step, What::Summary(values))
    }

    /// Writes buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(io_err(&self.path))
    }

    fn write_event(&mut self, step: u64, what: What) -> Result<()> {
        let step = i64::try_from(step).map_err(|_| MetricsError::InvalidInput {
            path: self.path.clone(),
            reason: format!("step {step} does not fit the int64 Event.step"),
        })?;
        let event = Event {
            wall_time: unix_time(),
            step,
            what,
        };
        self.out
            .write_all(&encode_record(&event.encode()))
            .map_err(io_err(&self.path))
    }
}

/// Creates a new, uniquely named event file in `dir` (a counter is appended if a file of
/// the same second and pid exists, e.g. after a resume within the same second).
fn new_event_file(dir: &Path) -> Result<(PathBuf, File)> {
    let secs = unix_time() as u64;
    let base = format!(
        "events.out.tfevents.{secs}.{}.{}.v4train",
        hostname(),
        std::process::id()
    );
    for n in 0u32.. {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Err(MetricsError::InvalidInput {
        path: dir.join(base),
        reason: "no free event file name".into(),
    })
}

/// The host name (Linux `/proc`, then `$HOSTNAME`, else `localhost`), reduced to
/// characters safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

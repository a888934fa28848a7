//! `metrics.jsonl`: one JSON object per logged step, e.g.
//! `{"step":10,"time":1763900000.5,"loss":2.31,"lr":0.0003,"grad_norm":1.2,"tokens_per_s":5120.0}`.
//!
//! Each line goes out with a single `write_all` and a flush, so a killed run leaves at most
//! one partial last line; [`MetricsJsonl::open`] drops it. Non-finite values (a NaN loss) are
//! written as `null`, since JSON has no NaN.

use super::{io_err, unix_time, MetricsError, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Keys written by every line; extra scalars may not reuse them.
const RESERVED: [&str; 7] = [
    "step",
    "time",
    "loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "mtp_loss",
];

/// The metrics of one logged step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Multi-token-prediction loss, written only when present.
    pub mtp_loss: Option<f64>,
    /// Further named scalars, written after the fixed keys in this order.
    pub extra: Vec<(String, f64)>,
}

impl StepMetrics {
    /// The JSON line (with its `\n`), or the name of a clashing extra key.
    fn to_line(&self, time: f64) -> std::result::Result<String, String> {
        let mut fields: Vec<(&str, f64)> = vec![
            ("time", time),
            ("loss", self.loss),
            ("lr", self.lr),
            ("grad_norm", self.grad_norm),
            ("tokens_per_s", self.tokens_per_s),
        ];
        fields.extend(self.mtp_loss.map(|v| ("mtp_loss", v)));
        for (i, (name, v)) in self.extra.iter().enumerate() {
            let dup = self.extra[..i].iter().any(|(n, _)| n == name);
            if dup || RESERVED.contains(&name.as_str()) {
                return Err(name.clone());
            }
            fields.push((name, *v));
        }
        let mut line = format!("{{\"step\":{}", self.step);
        for (name, v) in fields {
            line.push_str(&format!(",{}:{}", Value::from(name), Value::from(v)));
        }
        line.push_str("}\n");
        Ok(line)
    }
}

/// An open `metrics.jsonl`, appending one line per [`log`](Self::log).
pub struct MetricsJsonl {
    path: PathBuf,
    file: File,
}

impl MetricsJsonl {
    /// Opens `path` for a run. `None` starts a fresh file (replacing any old one).
    /// `Some(step)` resumes: keeps the lines with `step <=` it, drops later ones (logged by
    /// the killed run after its last checkpoint) and a partial last line, then appends.
    pub fn open(path: impl AsRef<Path>, resume_from_step: Option<u64>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let file = match resume_from_step {
            None => File::create(&path),
            Some(step) => {
                keep_through_step(&path, step)?;
                OpenOptions::new().create(true).append(true).open(&path)
            }
        }
        .map_err(io_err(&path))?;
        Ok(Self { path, file })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one step's line and flushes it.
    pub fn log(&mut self, m: &StepMetrics) -> Result<()> {
        let line = m
            .to_line(unix_time())
            .map_err(|name| MetricsError::InvalidInput {
                path: self.path.clone(),
                reason: format!("extra metric {name:?} is reserved or repeated"),
            })?;
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io_err(&self.path))
    }
}

/// Rewrites `path` (atomically, via a temp file) to its complete lines with `step <= last`.
fn keep_through_step(path: &Path, last: u64) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut kept = Vec::with_capacity(bytes.len());
    // Every piece but the last ends with '\n'; the last is empty or a partial line.
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        if !line.ends_with(b"\n") {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let step = serde_json::from_slice::<Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.get("step")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| "no unsigned integer \"step\"".to_string())
            })
            .map_err(|reason| MetricsError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            })?;
        if step <= last {
            kept.extend_from_slice(line);
        }
    }
    if kept.len() == bytes.len() {
        return Ok(());
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&kept)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

//! Crash-safe file writing: every file is written under a temporary name in its final directory,
//! fsynced, then renamed over the final name, and the directory is fsynced, so a killed process
//! leaves either the old file, the new file, or a `.tmp` leftover — never a torn file. Also the
//! output-directory policy (refuse a non-empty directory unless forced).

use crate::error::{io, CheckpointError, Result};
use crate::index::{is_shard_file_name, INDEX_FILE, SINGLE_FILE};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written: `.<name>.tmp` next to it.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Fsyncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Fsyncs the finished temporary file and renames it to `path`.
pub fn commit(tmp: &Path, file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(io(tmp))?;
    std::fs::rename(tmp, path).map_err(io(path))
}

/// Writes `bytes` to `path` atomically (temporary name, fsync, rename, directory fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    commit(&tmp, &f, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Copies `from` to `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let tmp = tmp_path(to);
    std::fs::copy(from, &tmp).map_err(io(from))?;
    let f = File::open(&tmp).map_err(io(&tmp))?;
    commit(&tmp, &f, to)?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Creates `dir` or checks it is empty; with `force`, first removes an existing index (so the
/// directory stops looking complete) and the old weights.
pub fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(CheckpointError::OutputNotEmpty {
            dir: dir.to_path_buf(),
        });
    }
    for stale in [INDEX_FILE, SINGLE_FILE] {
        let p = dir.join(stale);
        if p.exists() {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    sync_dir(dir)?;
    for n in names.iter().filter(|n| is_shard_file_name(n)) {
        let p = dir.join(n);
        std::fs::remove_file(&p).map_err(io(&p))?;
    }
    Ok(())
}

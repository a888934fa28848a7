//! SHA-256 checksums of a checkpoint's files: written into `trainer_state.json` when a
//! checkpoint is saved, verified before a run resumes from it, so a corrupt or truncated file is
//! found (and named) before any of it is loaded.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Hex SHA-256 of a file, read in 4 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Checksums of every regular file directly in `dir` except `skip`, by file name. Files are
/// hashed on up to 4 threads (a V4-Flash checkpoint is hundreds of shards).
pub fn checksum_dir(dir: &Path, skip: &str) -> Result<BTreeMap<String, String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != skip && e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            names.push(name);
        }
    }
    names.sort();
    let sums = hash_all(dir, &names);
    names
        .into_iter()
        .zip(sums)
        .map(|(n, h)| Ok((n, h?)))
        .collect()
}

/// Hashes `dir/name` for every name, on up to 4 threads (a V4-Flash checkpoint has hundreds of
/// shards), in order.
fn hash_all(dir: &Path, names: &[String]) -> Vec<Result<String>> {
    let workers = names.len().clamp(1, 4);
    let per = names.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(per)
            .map(|chunk| {
                let h = s.spawn(move || {
                    chunk
                        .iter()
                        .map(|n| sha256_file(&dir.join(n)))
                        .collect::<Vec<_>>()
                });
                (chunk.len(), h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| Err(anyhow::anyhow!("a checksum thread panicked")))
                        .collect()
                })
            })
            .collect()
    })
}

/// Why a checkpoint failed verification: the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct Corruption {
    /// The bad file (path).
    pub file: String,
    /// What is wrong (missing, unreadable, checksum mismatch).
    pub problem: String,
}

/// Checks every file of `expected` in `dir` against its checksum.
pub fn verify(
    dir: &Path,
    expected: &BTreeMap<String, String>,
) -> std::result::Result<(), Corruption> {
    let names: Vec<String> = expected.keys().cloned().collect();
    let current = hash_all(dir, &names);
    for ((name, want), got) in expected.iter().zip(current) {
        let file = dir.join(name).display().to_string();
        match got {
            Err(e) => {
                return Err(Corruption {
                    file,
                    problem: if dir.join(name).exists() {
                        format!("cannot be read ({e:#})")
                    } else {
                        "is missing".to_string()
                    },
                })
            }
            Ok(got) if &got != want => {
                return Err(Corruption {
                    file,
                    problem: format!("SHA-256 mismatch (recorded {want}, found {got})"),
                })
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        std::fs::write(dir.path().join("b.bin"), vec![7u8; 10_000]).unwrap();
        std::fs::write(dir.path().join("state.json"), b"{}").unwrap();
        let sums = checksum_dir(dir.path(), "state.json").unwrap();
        assert_eq!(sums.len(), 2);
        assert_eq!(
            sums["a.bin"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        verify(dir.path(), &sums).unwrap();
        let mut bytes = std::fs::read(dir.path().join("b.bin")).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(dir.path().join("b.bin"), bytes).unwrap();
        let err = verify(dir.path(), &sums).unwrap_err();
        assert!(
            err.file.ends_with("b.bin") && err.problem.contains("mismatch"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("a.bin")).unwrap();
        let err = verify(dir.path(), &sums).unwrap_err();
        assert!(
            err.file.ends_with("a.bin") && err.problem.contains("missing"),
            "{err}"
        );
    }
}

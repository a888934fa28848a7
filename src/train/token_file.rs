//! `[data] kind = "tokens"`: a flat, pre-tokenized id array in a `.safetensors` or `.npy` file,
//! memory-mapped (never read into RAM as a whole) and served as training windows.
//!
//! The file is cut into windows of `seq_len + 1` tokens with stride `seq_len` (inputs are a
//! window's first `seq_len` tokens, labels its last `seq_len`, so consecutive windows share one
//! token and no label is skipped). Windows are visited in a seeded permutation per epoch — a
//! Feistel bijection, so no order is stored — and epochs repeat. Sequence `g` of the run (counted
//! over steps, micro-batches and rows) is a pure function of (seed, g): resume needs only the step.
//! Every id read is checked against the model's vocabulary.

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype as StDtype, SafeTensors};
use std::fs::File;
use std::path::{Path, PathBuf};
use v4_data::rng::SplitMix64;

use crate::recipe::{TokenFile, TokenFormat};

/// Element type of a token array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDtype {
    /// Signed 32-bit.
    I32,
    /// Signed 64-bit.
    I64,
    /// Unsigned 16-bit.
    U16,
    /// Unsigned 32-bit.
    U32,
}

impl TokenDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::I32 | TokenDtype::U32 => 4,
            TokenDtype::I64 => 8,
        }
    }
}

/// A memory-mapped, little-endian token array.
#[derive(Debug)]
pub struct TokenArray {
    path: PathBuf,
    map: Mmap,
    start: usize,
    len: usize,
    dtype: TokenDtype,
}

impl TokenArray {
    /// Maps `path` (`.safetensors` or `.npy`); `tensor` names the safetensors tensor (default: the
    /// only one). Errors name the file.
    pub fn open(path: &Path, format: TokenFormat, tensor: Option<&str>) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("[data] path {}", path.display()))?;
        // SAFETY: the mapping is read-only; a file truncated by another process while training
        // would fault, as with any memory-mapped dataset.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("[data] path {}: memory-mapping", path.display()))?;
        let (start, len, dtype) = match format {
            TokenFormat::Safetensors => safetensors_layout(&map, tensor),
            TokenFormat::Npy => {
                if tensor.is_some() {
                    Err("`tensor` applies to .safetensors files only".to_string())
                } else {
                    npy_layout(&map)
                }
            }
        }
        .map_err(|m| anyhow::anyhow!("[data] path {}: {m}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            start,
            len,
            dtype,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element type.
    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token `i` (`i < len`, checked by the caller) widened to i64 (u64 cannot occur).
    fn get(&self, i: usize) -> i64 {
        let o = self.start + i * self.dtype.size();
        let b = &self.map[o..o + self.dtype.size()];
        match self.dtype {
            TokenDtype::U16 => i64::from(u16::from_le_bytes([b[0], b[1]])),
            TokenDtype::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            TokenDtype::U32 => i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            TokenDtype::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }

    /// Tokens `from..from + n`, each checked to be in `0..vocab`.
    pub fn read_checked(
        &self,
        from: usize,
        n: usize,
        vocab: usize,
        out: &mut Vec<i64>,
    ) -> Result<()> {
        if from + n > self.len {
            bail!(
                "[data] path {}: tokens {from}..{} requested, the file holds {}",
                self.path.display(),
                from + n,
                self.len
            );
        }
        for i in from..from + n {
            let id = self.get(i);
            if id < 0 || id as u64 >= vocab as u64 {
                bail!(
                    "[data] path {}: token at offset {i} is {id}, outside the model's vocabulary \
                     0..{vocab} ([model] vocab_size)",
                    self.path.display()
                );
            }
            out.push(id);
        }
        Ok(())
    }
}

/// `(data start, elements, dtype)` of the token tensor of a safetensors file.
fn safetensors_layout(
    bytes: &[u8],
    tensor: Option<&str>,
) -> std::result::Result<(usize, usize, TokenDtype), String> {
    let (header, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a valid safetensors file ({e})"))?;
    let mut names: Vec<String> = meta.tensors().into_keys().collect();
    names.sort();
    let name = match tensor {
        Some(t) if names.iter().any(|n| n == t) => t.to_string(),
        Some(t) => {
            return Err(format!(
                "has no tensor {t:?} ([data] tensor); it holds {names:?}"
            ))
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(format!(
                "holds {} tensors {names:?}; choose one with [data] tensor",
                names.len()
            ))
        }
    };
    let info = meta
        .info(&name)
        .ok_or_else(|| format!("tensor {name:?} vanished from the header"))?;
    let dtype = match info.dtype {
        StDtype::I32 => TokenDtype::I32,
        StDtype::I64 => TokenDtype::I64,
        StDtype::U16 => TokenDtype::U16,
        StDtype::U32 => TokenDtype::U32,
        other => {
            return Err(format!(
                "tensor {name:?} has dtype {other:?}; token ids must be I32, I64, U16 or U32"
            ))
        }
    };
    let len = flat_len(&info.shape, &name)?;
    Ok((8 + header + info.data_offsets.0, len, dtype))
}

/// Elements of a 1-D or 2-D shape (2-D `[n, L]` is read flattened, row-major).
fn flat_len(shape: &[usize], what: &str) -> std::result::Result<usize, String> {
    if shape.is_empty() || shape.len() > 2 {
        return Err(format!(
            "{what} has shape {shape:?}; expected a 1-D token array or a 2-D [n, L] one"
        ));
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{what}: shape {shape:?} overflows"))
}

/// `(data start, elements, dtype)` of a `.npy` file.
///
/// The NPY format is small enough to parse here rather than pull in a crate: the magic
/// `\x93NUMPY`, a version byte pair, a little-endian header length (u16 for version 1, u32 for 2
/// and 3), then a Python dict literal such as
/// `{'descr': '<i4', 'fortran_order': False, 'shape': (1000,), }`, then the raw data.
fn npy_layout(bytes: &[u8]) -> std::result::Result<(usize, usize, TokenDtype), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-UTF-8 .npy header")?;
    let descr = dict_value(header, "descr")
        .and_then(quoted)
        .ok_or_else(|| format!("no 'descr' in the .npy header {header:?}"))?;
    let dtype = match descr {
        "<i4" => TokenDtype::I32,
        "<i8" => TokenDtype::I64,
        "<u2" => TokenDtype::U16,
        "<u4" => TokenDtype::U32,
        other => {
            return Err(format!(
                "dtype {other:?}; token ids must be little-endian int32, int64, uint16 or uint32 \
                 ('<i4', '<i8', '<u2', '<u4')"
            ))
        }
    };
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| format!("no 'fortran_order' in the .npy header {header:?}"))?
        .starts_with("True");
    let shape: Vec<usize> = dict_value(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split_once(')'))
        .map(|(inner, _)| {
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_end_matches('L').parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .and_then(|r| r.ok())
        .ok_or_else(|| format!("unreadable 'shape' in the .npy header {header:?}"))?;
    if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(
            "Fortran-order (column-major) arrays are not supported; save it in C order".into(),
        );
    }
    let len = flat_len(&shape, "the array")?;
    let start = hstart + hlen;
    let need = len
        .checked_mul(dtype.size())
        .and_then(|n| n.checked_add(start))
        .ok_or("the array size overflows")?;
    if bytes.len() < need {
        return Err(format!(
            "truncated: the header promises {len} elements ({need} bytes), the file has {} bytes",
            bytes.len()
        ));
    }
    Ok((start, len, dtype))
}

/// The text after `'key':` in a Python dict literal, leading spaces trimmed.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start();
    Some(rest.strip_prefix(':')?.trim_start())
}

/// The contents of a leading `'…'` or `"…"` string.
fn quoted(s: &str) -> Option<&str> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &s[1..];
    rest.find(q).map(|end| &rest[..end])
}

/// A seeded bijection of `0..n`: a 4-round Feistel network on the smallest even bit width
/// covering `n`, cycle-walking until the value falls back into range (at most ~4 rounds trips
/// on average, since that domain is < 4n). A shuffled order with no stored permutation.
pub fn permute(i: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = splitmix(r ^ splitmix(key ^ round.wrapping_mul(0xA076_1D64_78BD_642F))) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

/// SplitMix64's output for state `z` (the data crate's generator): a well-mixed 64-bit hash.
pub fn splitmix(z: u64) -> u64 {
    SplitMix64(z).next_u64()
}

/// The windows of a token file in their seeded, epoch-wise order.
#[derive(Debug)]
pub struct TokenWindows {
    array: TokenArray,
    seq_len: usize,
    windows: u64,
    seed: u64,
    vocab: usize,
}

impl TokenWindows {
    /// Opens `file` for windows of `seq_len + 1` tokens; ids must be below `vocab`.
    pub fn open(file: &TokenFile, seq_len: usize, seed: u64, vocab: usize) -> Result<Self> {
        let format = file.format().with_context(|| {
            format!(
                "[data] path {}: must end in .safetensors or .npy",
                file.path.display()
            )
        })?;
        let array = TokenArray::open(&file.path, format, file.tensor.as_deref())?;
        if array.len() < seq_len + 1 {
            bail!(
                "[data] path {}: holds {} tokens, too few for one training window of \
                 [train] seq_len + 1 = {} tokens",
                file.path.display(),
                array.len(),
                seq_len + 1
            );
        }
        let windows = ((array.len() - 1) / seq_len) as u64;
        Ok(Self {
            array,
            seq_len,
            windows,
            seed,
            vocab,
        })
    }

    /// Windows per epoch.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// The file.
    pub fn array(&self) -> &TokenArray {
        &self.array
    }

    /// Which window sequence `g` of the run reads.
    pub fn window_index(&self, g: u64) -> u64 {
        let epoch = g / self.windows;
        let key = splitmix(self.seed ^ splitmix(epoch));
        permute(g % self.windows, self.windows, key)
    }

    /// Appends the `seq_len + 1` tokens of run sequence `g` to `out`.
    pub fn window(&self, g: u64, out: &mut Vec<i64>) -> Result<()> {
        let w = self.window_index(g) as usize;
        self.array
            .read_checked(w * self.seq_len, self.seq_len + 1, self.vocab, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection() {
        for n in [1u64, 2, 3, 5, 16, 17, 100, 1000] {
            for key in [0, 7, u64::MAX] {
                let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, key)).collect();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n {n} key {key}");
            }
        }
        let a: Vec<u64> = (0..100).map(|i| permute(i, 100, 1)).collect();
        let b: Vec<u64> = (0..100).map(|i| permute(i, 100, 2)).collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }

    fn npy(descr: &str, shape: &str, data: usize) -> Vec<u8> {
        let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let padded = format!("{h:<117}\n");
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        f.extend((padded.len() as u16).to_le_bytes());
        f.extend(padded.as_bytes());
        f.extend(vec![0u8; data]);
        f
    }

    #[test]
    fn npy_headers() {
        assert_eq!(
            npy_layout(&npy("<u2", "(2, 3)", 12)),
            Ok((128, 6, TokenDtype::U16))
        );
        assert_eq!(
            npy_layout(&npy("<i8", "(5,)", 40)),
            Ok((128, 5, TokenDtype::I64))
        );
        assert!(npy_layout(&npy("<u2", "(2, 3)", 11))
            .unwrap_err()
            .contains("truncated"));
        assert!(npy_layout(&npy("<f4", "(3,)", 12))
            .unwrap_err()
            .contains("<f4"));
        assert!(npy_layout(&npy(">i4", "(3,)", 12)).is_err());
        assert!(npy_layout(&npy("<i4", "()", 4)).is_err());
        assert!(npy_layout(b"PK\x03\x04 not npy").is_err());
    }
}

//! TFRecord framing: `u64 length (LE) | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)`.

use std::io::{self, Read};

/// Added to the rotated CRC by TensorFlow's mask.
const MASK_DELTA: u32 = 0xa282_ead8;

/// TensorFlow's masked CRC32C (Castagnoli) of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // `(crc >> 15) | (crc << 17)`, then the delta.
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Frames `data` as one TFRecord.
pub fn encode_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("length CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    LengthCrc { stored: u32, computed: u32 },
    #[error("data CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    DataCrc { stored: u32, computed: u32 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads TFRecords one by one from a byte stream.
///
/// A record cut short by the end of the stream (what a killed writer leaves) ends the
/// stream like TensorBoard does; a CRC mismatch is an error.
pub struct RecordReader<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> RecordReader<R> {
    /// Reads records from `inner`, starting at byte offset 0.
    pub fn new(inner: R) -> Self {
        Self { inner, offset: 0 }
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record's data, or `None` at the end (or at a truncated last record).
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        let mut header = [0u8; 12];
        if !read_full(&mut self.inner, &mut header)? {
            return Ok(None);
        }
        let (len_bytes, crc_bytes) = header.split_at(8);
        check(crc_bytes, len_bytes, |stored, computed| {
            RecordError::LengthCrc { stored, computed }
        })?;
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(len);
        // `take` + `read_to_end` grows with the data actually present, never trusting `len`
        // for one big allocation.
        let mut data = Vec::new();
        (&mut self.inner).take(len).read_to_end(&mut data)?;
        let mut footer = [0u8; 4];
        if (data.len() as u64) < len || !read_full(&mut self.inner, &mut footer)? {
            return Ok(None);
        }
        check(&footer, &data, |stored, computed| RecordError::DataCrc {
            stored,
            computed,
        })?;
        self.offset += 16 + len;
        Ok(Some(data))
    }
}

/// Errors with `mk(stored, computed)` unless `stored` is the masked CRC of `data`.
fn check(
    stored: &[u8],
    data: &[u8],
    mk: impl FnOnce(u32, u32) -> RecordError,
) -> Result<(), RecordError> {
    let mut b = [0u8; 4];
    b.copy_from_slice(stored);
    let (stored, computed) = (u32::from_le_bytes(b), masked_crc32c(data));
    if stored == computed {
        Ok(())
    } else {
        Err(mk(stored, computed))
    }
}

/// Fills `buf`; `false` if the stream ended first (partially filled or empty).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

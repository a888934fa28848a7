//! The `tensorflow.Event` protobuf messages that TensorBoard reads, encoded by hand.
//!
//! Hand-written rather than with `prost`: the trainer needs five fields of three messages
//! (`Event.wall_time/step/file_version/summary`, `Summary.value`, `Value.tag/simple_value`)
//! plus `SessionLog.status`, and ~150 lines of encoder/decoder cost less than a proc-macro
//! dependency on a 2-core build. Decoding skips unknown fields, as protobuf requires, so
//! event files written by TensorFlow or PyTorch decode too.

/// `Event.file_version` of a version-2 event file (the first record of every file).
pub const FILE_VERSION: &str = "brain.Event:2";

/// One `tensorflow.Event`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch (field 1).
    pub wall_time: f64,
    /// Global step (field 2).
    pub step: i64,
    /// The `what` oneof (fields 3, 5, 7; others decode as `Other`).
    pub what: What,
}

/// The payload of an [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// `file_version` (field 3).
    FileVersion(String),
    /// `summary` (field 5): the summary's `value`s.
    Summary(Vec<Value>),
    /// `session_log` (field 7) with `status = START`: TensorBoard drops earlier events
    /// with `step >=` this event's step.
    SessionStart,
    /// Anything else (graphs, log messages, other session-log statuses, ...).
    Other,
}

/// One `Summary.Value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// `tag` (field 1).
    pub tag: String,
    /// `simple_value` (field 2); `None` for non-scalar values (images, tensors, ...).
    pub simple_value: Option<f32>,
}

/// A malformed protobuf message.
#[derive(Debug, thiserror::Error)]
#[error("malformed Event protobuf at byte {pos}: {reason}")]
pub struct DecodeError {
    pub pos: usize,
    pub reason: &'static str,
}

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;
/// `SessionLog.SessionStatus.START`.
const SESSION_START: u64 = 1;

impl Event {
    /// Serializes the event as protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_key(&mut out, 1, FIXED64);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        put_key(&mut out, 2, VARINT);
        put_varint(&mut out, self.step as u64);
        match &self.what {
            What::FileVersion(v) => put_bytes(&mut out, 3, v.as_bytes()),
            What::Summary(values) => {
                let mut summary = Vec::new();
                for v in values {
                    put_bytes(&mut summary, 1, &v.encode());
                }
                put_bytes(&mut out, 5, &summary);
            }
            What::SessionStart => {
                let mut log = Vec::new();
                put_key(&mut log, 1, VARINT);
                put_varint(&mut log, SESSION_START);
                put_bytes(&mut out, 7, &log);
            }
            What::Other => {}
        }
        out
    }

    /// Parses protobuf bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut ev = Event {
            wall_time: 0.0,
            step: 0,
            what: What::Other,
        };
        let mut r = Reader { buf, pos: 0 };
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, FIXED64) => ev.wall_time = f64::from_le_bytes(r.fixed()?),
                (2, VARINT) => ev.step = r.varint()? as i64,
                (3, LEN) => ev.what = What::FileVersion(r.string()?),
                (5, LEN) => ev.what = What::Summary(decode_summary(r.bytes()?)?),
                (7, LEN) => ev.what = decode_session_log(r.bytes()?)?,
                (1..=3 | 5 | 7, _) => return Err(r.err("unexpected wire type")),
                _ => r.skip(wire)?,
            }
        }
        Ok(ev)
    }
}

impl Value {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.tag.as_bytes());
        if let Some(v) = self.simple_value {
            put_key(&mut out, 2, FIXED32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

fn decode_summary(buf: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut values = Vec::new();
    let mut r = Reader { buf, pos: 0 };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => values.push(decode_value(r.bytes()?)?),
            (1, _) => return Err(r.err("unexpected wire type")),
            _ => r.skip(wire)?,
        }
    }
    Ok(values)
}

fn decode_value(buf: &[u8]) -> Result<Value, DecodeError> {
    let mut v = Value {
        tag: String::new(),
        simple_value: None,
    };
    let mut r = Reader { buf, pos: 0 };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => v.tag = r.string()?,
            (2, FIXED32) => v.simple_value = Some(f32::from_le_bytes(r.fixed()?)),
            (1 | 2, _) => return Err(r.err("unexpected wire type")),
            _ => r.skip(wire)?,
        }
    }
    Ok(v)
}

fn decode_session_log(buf: &[u8]) -> Result<What, DecodeError> {
    let mut what = What::Other;
    let mut r = Reader { buf, pos: 0 };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, VARINT) if r.varint()? == SESSION_START => what = What::SessionStart,
            (1, VARINT) => what = What::Other,
            _ => r.skip(wire)?,
        }
    }
    Ok(what)
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            pos: self.pos,
            reason,
        }
    }

    /// The next field's number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, DecodeError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("field runs past the end of the message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| self.err("length overflows"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => Err(self.err("unsupported wire type (groups are not used by Event)")),
        }
    }
}

//! The metrics writers against real files: TensorBoard event files read back exactly with
//! both CRCs checked (also by an independent bitwise CRC32C), known answers for the masked
//! CRC and the Event encoding, corruption detection, resume, and metrics.jsonl repair.

use std::path::{Path, PathBuf};
use v4train::metrics::event::{Event, What, FILE_VERSION};
use v4train::metrics::reader::event_files;
use v4train::metrics::tfrecord::{encode_record, masked_crc32c};
use v4train::metrics::{
    read_events, read_scalars, read_scalars_latest, MetricsError, MetricsJsonl, StepMetrics,
    TensorBoardWriter,
};

/// Bitwise CRC32C (reflected Castagnoli polynomial), independent of the `crc32c` crate.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The mask as the spec writes it (not `rotate_right`, to stay independent of the library).
#[allow(clippy::manual_rotate)]
fn mask(crc: u32) -> u32 {
    ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits a whole event file into records, checking both CRCs with the bitwise CRC;
/// returns each record's (offset, data).
fn records_checked(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        assert_eq!(u32_at(bytes, at + 8), mask(crc32c_bitwise(len_bytes)));
        let data = &bytes[at + 12..at + 12 + len];
        assert_eq!(u32_at(bytes, at + 12 + len), mask(crc32c_bitwise(data)));
        out.push((at, data.to_vec()));
        at += 16 + len;
    }
    assert_eq!(at, bytes.len());
    out
}

fn only_event_file(dir: &Path) -> PathBuf {
    let files = event_files(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

const SCALARS: [(&str, u64, f32); 6] = [
    ("train/loss", 1, 2.345_678_9),
    ("train/lr", 1, 3.0e-4),
    ("train/loss", 2, 2.1),
    ("train/grad_norm", 2, 1.0e-7),
    ("train/loss", 10, -0.0),
    ("train/tokens_per_s", 10, 123_456.79),
];

fn write_scalars(w: &mut TensorBoardWriter, scalars: &[(&str, u64, f32)]) {
    for &(tag, step, v) in scalars {
        w.scalar(tag, step, v).unwrap();
    }
    w.flush().unwrap();
}

#[test]
fn masked_crc32c_known_answers() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);
    assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    // The length field of an empty record, and its empty data.
    assert_eq!(masked_crc32c(&0u64.to_le_bytes()), 0x0798_0329);
    assert_eq!(
        masked_crc32c(&0u64.to_le_bytes()),
        mask(crc32c_bitwise(&[0; 8]))
    );
    assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
    let mut empty = vec![0u8; 8];
    empty.extend_from_slice(&0x0798_0329u32.to_le_bytes());
    empty.extend_from_slice(&0xA282_EAD8u32.to_le_bytes());
    assert_eq!(encode_record(b""), empty);
}

#[test]
fn event_encoding_known_bytes() {
    let version = Event {
        wall_time: 1.5,
        step: 0,
        what: What::FileVersion(FILE_VERSION.into()),
    };
    let mut want = vec![0x09];
    want.extend_from_slice(&1.5f64.to_le_bytes());
    want.extend_from_slice(&[0x10, 0x00, 0x1a, 13]);
    want.extend_from_slice(b"brain.Event:2");
    assert_eq!(version.encode(), want);
    assert_eq!(Event::decode(&want).unwrap(), version);

    let scalar = Event {
        wall_time: 2.0,
        step: 5,
        what: What::Summary(vec![v4train::metrics::event::Value {
            tag: "loss".into(),
            simple_value: Some(1.5),
        }]),
    };
    let mut want = vec![0x09];
    want.extend_from_slice(&2.0f64.to_le_bytes());
    // step; summary (field 5, 13 bytes) { value (field 1, 11 bytes) { tag; simple_value } }
    want.extend_from_slice(&[0x10, 5, 0x2a, 13, 0x0a, 11, 0x0a, 4]);
    want.extend_from_slice(b"loss");
    want.push(0x15);
    want.extend_from_slice(&1.5f32.to_le_bytes());
    assert_eq!(scalar.encode(), want);
    assert_eq!(Event::decode(&want).unwrap(), scalar);

    // Unknown fields (here Event.log_message = 6 and a varint field 99) are skipped.
    let mut extra = want.clone();
    extra.extend_from_slice(&[0x32, 2, 0x08, 1, 0x98, 0x06, 7]);
    assert_eq!(Event::decode(&extra).unwrap(), scalar);
    assert!(Event::decode(&want[..want.len() - 2]).is_err());
}

#[test]
fn scalars_read_back_exactly_with_valid_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TensorBoardWriter::create(dir.path().join("tb")).unwrap();
    write_scalars(&mut w, &SCALARS);
    w.scalars(11, &[("eval/loss", 1.75), ("eval/ppl", 5.754_603)])
        .unwrap();
    w.flush().unwrap();
    let path = w.path().to_path_buf();
    drop(w);

    let name = path.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"]);
    assert!(parts[3].parse::<u64>().unwrap() > 1_700_000_000);
    assert!(name.ends_with(&format!(".{}.v4train", std::process::id())));

    let read = read_scalars(dir.path().join("tb")).unwrap();
    let got: Vec<(&str, i64, u32)> = read
        .iter()
        .map(|s| (s.tag.as_str(), s.step, s.value.to_bits()))
        .collect();
    let mut want: Vec<(&str, i64, u32)> = SCALARS
        .iter()
        .map(|&(t, s, v)| (t, s as i64, v.to_bits()))
        .collect();
    want.extend([
        ("eval/loss", 11, 1.75f32.to_bits()),
        ("eval/ppl", 11, 5.754_603_f32.to_bits()),
    ]);
    assert_eq!(got, want);
    assert_eq!(
        read[6].wall_time, read[7].wall_time,
        "one event per scalars()"
    );
    assert!(read.windows(2).all(|p| p[0].wall_time <= p[1].wall_time));

    // Both CRCs of every record, by the independent CRC; first record is the version.
    let records = records_checked(&std::fs::read(&path).unwrap());
    assert_eq!(records.len(), 1 + SCALARS.len() + 1);
    let first = Event::decode(&records[0].1).unwrap();
    assert_eq!(first.step, 0);
    assert_eq!(first.what, What::FileVersion("brain.Event:2".into()));
    assert_eq!(read_events(&path).unwrap()[0], first);
}

#[test]
fn corrupted_bytes_are_detected_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TensorBoardWriter::create(dir.path()).unwrap();
    write_scalars(&mut w, &SCALARS);
    let path = w.path().to_path_buf();
    drop(w);
    let clean = std::fs::read(&path).unwrap();
    let third = records_checked(&clean)[2].0;

    // One flipped bit in the third record's data, then in its length field.
    for (at, what) in [(third + 14, "data CRC"), (third + 1, "length CRC")] {
        let mut bad = clean.clone();
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let err = read_scalars(dir.path()).unwrap_err();
        match &err {
            MetricsError::Corrupt {
                path: p, offset, ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(*offset, third as u64);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(path.file_name().unwrap().to_str().unwrap()),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("offset {third}")) && msg.contains(what),
            "{msg}"
        );
    }

    // A truncated last record (a killed writer) ends the file without an error.
    std::fs::write(&path, &clean[..clean.len() - 3]).unwrap();
    assert_eq!(read_scalars(dir.path()).unwrap().len(), SCALARS.len() - 1);
}

#[test]
fn resume_appends_a_second_file_and_purges_later_steps() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<(&str, u64, f32)> = (1..=5).map(|s| ("loss", s, 10.0 - s as f32)).collect();
    let mut w = TensorBoardWriter::create(dir.path()).unwrap();
    write_scalars(&mut w, &first);
    let first_path = w.path().to_path_buf();
    drop(w);

    // Crashed after step 5, resumed from the checkpoint of step 3.
    let second: Vec<(&str, u64, f32)> = (4..=6).map(|s| ("loss", s, 0.5 * s as f32)).collect();
    let mut w = TensorBoardWriter::resume(dir.path(), 3).unwrap();
    write_scalars(&mut w, &second);
    assert_ne!(w.path(), first_path);
    drop(w);

    let files = event_files(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], first_path);
    let resumed = read_events(&files[1]).unwrap();
    assert_eq!(resumed[1].what, What::SessionStart);
    assert_eq!(resumed[1].step, 4);

    let steps = |v: Vec<v4train::metrics::ScalarRecord>| -> Vec<(i64, f32)> {
        v.iter().map(|s| (s.step, s.value)).collect()
    };
    let all = steps(read_scalars(dir.path()).unwrap());
    let want_all: Vec<(i64, f32)> = first
        .iter()
        .chain(&second)
        .map(|&(_, s, v)| (s as i64, v))
        .collect();
    assert_eq!(all, want_all);
    let latest = steps(read_scalars_latest(dir.path()).unwrap());
    assert_eq!(
        latest,
        [(1, 9.0), (2, 8.0), (3, 7.0), (4, 2.0), (5, 2.5), (6, 3.0)]
    );
}

#[test]
fn resume_of_a_new_dir_and_bad_dir_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let w = TensorBoardWriter::resume(dir.path().join("fresh"), 0).unwrap();
    assert_eq!(only_event_file(&dir.path().join("fresh")), w.path());

    let file = dir.path().join("not_a_dir");
    std::fs::write(&file, b"x").unwrap();
    match TensorBoardWriter::create(&file) {
        Err(MetricsError::Io { path, .. }) => assert_eq!(path, file),
        other => panic!(
            "expected Io error, got {:?}",
            other.map(|w| w.path().to_owned())
        ),
    }
    let mut w = TensorBoardWriter::create(dir.path().join("big")).unwrap();
    assert!(matches!(
        w.scalar("x", u64::MAX, 1.0),
        Err(MetricsError::InvalidInput { .. })
    ));
}

fn step_metrics(step: u64) -> StepMetrics {
    StepMetrics {
        step,
        loss: 3.0 - 0.25 * step as f64,
        lr: 1e-4 * step as f64,
        grad_norm: 1.5,
        tokens_per_s: 4096.0,
        mtp_loss: step.is_multiple_of(2).then_some(0.5),
        extra: vec![("moe/aux_loss".into(), 0.01)],
    }
}

fn jsonl_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn jsonl_lines_hold_the_step_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/metrics.jsonl");
    let mut m = MetricsJsonl::open(&path, None).unwrap();
    m.log(&step_metrics(1)).unwrap();
    m.log(&step_metrics(2)).unwrap();
    let mut nan = step_metrics(3);
    nan.loss = f64::NAN;
    m.log(&nan).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"step\":1,\"time\":"), "{text}");
    let lines = jsonl_lines(&path);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["loss"], 2.75);
    assert_eq!(lines[0]["lr"], 1e-4);
    assert_eq!(lines[0]["grad_norm"], 1.5);
    assert_eq!(lines[0]["tokens_per_s"], 4096.0);
    assert_eq!(lines[0]["moe/aux_loss"], 0.01);
    assert!(lines[0].get("mtp_loss").is_none());
    assert_eq!(lines[1]["mtp_loss"], 0.5);
    assert!(lines[2]["loss"].is_null(), "NaN is written as null");
    assert!(lines[2]["time"].as_f64().unwrap() > 1.7e9);

    let mut dup = step_metrics(4);
    dup.extra.push(("loss".into(), 1.0));
    assert!(matches!(
        m.log(&dup),
        Err(MetricsError::InvalidInput { .. })
    ));
    assert_eq!(
        jsonl_lines(&path).len(),
        3,
        "a rejected step writes nothing"
    );

    // A fresh (non-resumed) open starts the file over.
    drop(m);
    MetricsJsonl::open(&path, None).unwrap();
    assert!(jsonl_lines(&path).is_empty());
}

#[test]
fn jsonl_resume_drops_later_steps_and_a_partial_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut m = MetricsJsonl::open(&path, None).unwrap();
    for step in 1..=5 {
        m.log(&step_metrics(step)).unwrap();
    }
    drop(m);
    // A kill in the middle of step 6's write.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"step\":6,\"time\":17");
    std::fs::write(&path, &bytes).unwrap();

    // Resuming past every step only repairs the partial line.
    drop(MetricsJsonl::open(&path, Some(100)).unwrap());
    let steps = |p: &Path| -> Vec<u64> {
        jsonl_lines(p)
            .iter()
            .map(|l| l["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps(&path), [1, 2, 3, 4, 5]);

    std::fs::write(&path, &bytes).unwrap();
    let mut m = MetricsJsonl::open(&path, Some(3)).unwrap();
    assert_eq!(steps(&path), [1, 2, 3]);
    m.log(&step_metrics(4)).unwrap();
    assert_eq!(steps(&path), [1, 2, 3, 4]);
    assert_eq!(jsonl_lines(&path)[3]["mtp_loss"], 0.5);

    // Resuming where no file exists yet starts one.
    let fresh = dir.path().join("new/metrics.jsonl");
    MetricsJsonl::open(&fresh, Some(7)).unwrap();
    assert!(fresh.exists());
}

#[test]
fn jsonl_resume_rejects_a_damaged_complete_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"step\":1}\nnot json\n{\"step\":3}\n").unwrap();
    let err = MetricsJsonl::open(&path, Some(2)).err().unwrap();
    assert!(
        matches!(&err, MetricsError::BadLine { path: p, line: 2, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("metrics.jsonl: line 2"), "{err}");
}

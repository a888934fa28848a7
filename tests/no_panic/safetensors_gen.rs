//! Safetensors files for the cases, valid or not: written by hand (so headers can lie about
//! dtypes, shapes and offsets), and rebuilt from a fixture with one tensor changed consistently
//! (so the reader's own checks, not the file format's, are exercised).

use safetensors::SafeTensors;
use serde_json::{json, Map, Value};

use super::gen::Gen;

/// One stored tensor: dtype name as written in the header, shape, bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Bytes per element of the dtype names safetensors knows (`None` for unknown names).
pub fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Dtype names, known and unknown.
pub const DTYPES: [&str; 16] = [
    "F32", "BF16", "F16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U64", "BOOL", "F8_E4M3",
    "F8_E8M0", "F8_E5M2", "Q4",
];

/// A file with `entries` laid out back to back and a consistent header.
pub fn file(entries: &[Entry]) -> Vec<u8> {
    let mut header = Map::new();
    let mut offset = 0usize;
    for e in entries {
        let end = offset + e.data.len();
        header.insert(
            e.name.clone(),
            json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let data: Vec<u8> = entries.iter().flat_map(|e| e.data.clone()).collect();
    raw(&Value::Object(header).to_string(), &data)
}

/// The 8-byte length, `header` padded to 8 bytes, then `data`.
pub fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(data);
    out
}

/// The entries of a valid file, in data order.
pub fn entries(bytes: &[u8]) -> Vec<Entry> {
    let Ok(st) = SafeTensors::deserialize(bytes) else {
        return Vec::new();
    };
    let mut v: Vec<(usize, Entry)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
            let dtype = serde_json::to_value(view.dtype())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let entry = Entry {
                name,
                dtype,
                shape: view.shape().iter().map(|d| *d as u64).collect(),
                data: view.data().to_vec(),
            };
            (start, entry)
        })
        .collect();
    v.sort_by_key(|(start, _)| *start);
    v.into_iter().map(|(_, e)| e).collect()
}

/// Random data for `shape` in `dtype` (empty when the size is unknown or too large).
fn data_for(g: &mut Gen, dtype: &str, shape: &[u64]) -> Vec<u8> {
    let numel = shape
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d))
        .unwrap_or(u64::MAX);
    match dtype_size(dtype) {
        Some(size) if numel <= 1 << 20 => g.bytes(numel as usize * size),
        _ => Vec::new(),
    }
}

/// `bytes` (a valid file) rebuilt with one consistent change to a random tensor: another dtype,
/// another shape, non-finite or out-of-range values, a removed, renamed or extra tensor.
pub fn rebuild_changed(g: &mut Gen, bytes: &[u8]) -> Vec<u8> {
    let mut es = entries(bytes);
    if es.is_empty() {
        return bytes.to_vec();
    }
    let i = g.below(es.len());
    match g.below(8) {
        0 => {
            let dtype = g.pick(&DTYPES).to_string();
            es[i].data = data_for(g, &dtype, &es[i].shape.clone());
            es[i].dtype = dtype;
        }
        1 => {
            let mut shape = es[i].shape.clone();
            match g.below(5) {
                0 => shape.reverse(),
                1 => shape.push(1 + g.below(3) as u64),
                2 => {
                    shape.pop();
                }
                3 => {
                    let k = g.below(shape.len());
                    if let Some(d) = shape.get_mut(k) {
                        *d = 0;
                    }
                }
                _ => {
                    let k = g.below(shape.len());
                    if let Some(d) = shape.get_mut(k) {
                        *d = *d * 2 + 1;
                    }
                }
            }
            es[i].data = data_for(g, &es[i].dtype.clone(), &shape);
            es[i].shape = shape;
        }
        2 => {
            // Non-finite or extreme values in the tensor's own dtype.
            let e = &mut es[i];
            let size = dtype_size(&e.dtype).unwrap_or(1);
            let word: Vec<u8> = match (e.dtype.as_str(), g.below(3)) {
                ("F32", 0) => f32::NAN.to_le_bytes().to_vec(),
                ("F32", 1) => f32::INFINITY.to_le_bytes().to_vec(),
                ("F32", _) => f32::MAX.to_le_bytes().to_vec(),
                ("BF16" | "F16", _) => vec![0xFF, 0x7F],
                ("I64", _) => g.int().to_le_bytes().to_vec(),
                ("I32", _) => (g.int() as i32).to_le_bytes().to_vec(),
                (_, _) => vec![0xFF; size],
            };
            let n = e.data.len() / size.max(1);
            for _ in 0..1 + g.below(4) {
                let k = g.below(n) * size;
                if k + word.len() <= e.data.len() {
                    e.data[k..k + word.len()].copy_from_slice(&word);
                }
            }
        }
        3 => {
            es.remove(i);
        }
        4 => {
            let base = es[i].name.trim_end_matches(".weight").to_string();
            es[i].name = match g.below(4) {
                0 => format!("{base}.scale"),
                1 => format!("{base}.weight_scale_inv"),
                2 => g.string(12),
                _ => format!("mtp.0.{}", es[i].name),
            };
        }
        5 => {
            let dtype = g.pick(&DTYPES).to_string();
            let shape: Vec<u64> = (0..g.below(3)).map(|_| g.below(5) as u64).collect();
            let data = data_for(g, &dtype, &shape);
            let name = if g.chance(0.5) {
                format!("{}.scale", es[i].name.trim_end_matches(".weight"))
            } else {
                g.string(16)
            };
            es.push(Entry {
                name,
                dtype,
                shape,
                data,
            });
        }
        6 => {
            // Quantized storage claimed for a float tensor: FP8 or FP4 codes, with or without
            // a scale companion of a random shape.
            let e = es[i].clone();
            let dtype = if g.chance(0.5) { "F8_E4M3" } else { "U8" };
            es[i].dtype = dtype.into();
            es[i].data = data_for(g, dtype, &e.shape);
            if g.chance(0.7) {
                let shape: Vec<u64> = e
                    .shape
                    .iter()
                    .map(|d| d.div_ceil(1 + g.below(130) as u64))
                    .collect();
                let scale_dtype = if g.chance(0.7) { "F8_E8M0" } else { "F32" };
                let data = data_for(g, scale_dtype, &shape);
                es.push(Entry {
                    name: format!("{}.scale", e.name.trim_end_matches(".weight")),
                    dtype: scale_dtype.into(),
                    shape,
                    data,
                });
            }
        }
        _ => {
            let j = g.below(es.len());
            es.swap(i, j);
        }
    }
    let mut out = file(&es);
    if g.chance(0.2) {
        // Metadata of the wrong types.
        let header =
            json!({"__metadata__": {"format": g.pick(&[json!(1), json!("pt"), json!(null)])}});
        out = raw(&header.to_string(), &[]);
    }
    out
}

/// A header that lies: huge or negative dims, offsets past the data, wrong JSON types.
pub fn lying_header(g: &mut Gen, name: &str) -> Vec<u8> {
    let big = [
        json!(0),
        json!(1),
        json!(2),
        json!(u64::MAX),
        json!(1u64 << 62),
        json!(1u64 << 32),
        json!(-1),
        json!(1.5),
        json!("2"),
        json!(null),
    ];
    let shape: Vec<Value> = (0..g.below(4)).map(|_| g.pick(&big).clone()).collect();
    let start = g.pick(&big).clone();
    let end = g.pick(&big).clone();
    let mut info = json!({"dtype": g.pick(&DTYPES), "shape": shape, "data_offsets": [start, end]});
    if g.chance(0.2) {
        info["extra"] = json!(true);
    }
    if g.chance(0.1) {
        info = json!([1, 2, 3]);
    }
    let header = json!({ name: info });
    let data = g.bytes_upto(64);
    let mut out = raw(&header.to_string(), &data);
    if g.chance(0.15) {
        // A length prefix that points past the file, or is absurd.
        let len = *g.pick(&[u64::MAX, 1 << 40, out.len() as u64, 100_000_001]);
        out[..8].copy_from_slice(&len.to_le_bytes());
    }
    out
}

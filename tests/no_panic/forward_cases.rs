//! `v4train forward` cases: random bytes and lying headers as the input file, valid files with
//! extreme ids, wrong dtypes, ranks and empty shapes, and corrupted model directories.

use std::path::Path;

use super::gen::Gen;
use super::model_dir::{corrupted, fixture};
use super::safetensors_gen::{dtype_size, file, lying_header, Entry, DTYPES};

/// An `input_ids` entry of `dtype` `[b, s]` holding `ids` (narrowed to the dtype's width).
pub fn ids_entry(dtype: &str, shape: Vec<u64>, ids: &[i64]) -> Entry {
    let data = match dtype {
        "I64" => ids.iter().flat_map(|x| x.to_le_bytes()).collect(),
        "I32" => ids.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        other => {
            let size = dtype_size(other).unwrap_or(1);
            ids.iter()
                .flat_map(|x| x.to_le_bytes()[..size.min(8)].to_vec())
                .collect()
        }
    };
    Entry {
        name: "input_ids".into(),
        dtype: dtype.into(),
        shape,
        data,
    }
}

/// In-vocabulary ids `[b, s]` for the 256-token fixtures, with an extreme id at one position
/// most of the time.
fn ids(g: &mut Gen, b: usize, s: usize) -> Vec<i64> {
    let mut v: Vec<i64> = (0..b * s).map(|_| g.below(256) as i64).collect();
    if g.chance(0.75) && !v.is_empty() {
        let k = g.below(v.len());
        v[k] = g.int();
    }
    v
}

/// The input file of one case.
fn input(g: &mut Gen) -> Vec<u8> {
    match g.below(6) {
        0 => {
            let n = g.below(300);
            let mut b = g.bytes(n);
            if g.chance(0.5) && b.len() >= 8 {
                let len = (g.below(n) as u64).to_le_bytes();
                b[..8].copy_from_slice(&len);
            }
            b
        }
        1 => {
            let valid = file(&[ids_entry("I64", vec![1, 4], &[1, 2, 3, 4])]);
            g.corrupt(&valid)
        }
        2 => lying_header(g, "input_ids"),
        3 => {
            // Any dtype, rank and shape (small enough to hold the data).
            let dtype = *g.pick(&DTYPES);
            let shape: Vec<u64> = (0..g.below(4))
                .map(|_| *g.pick(&[0u64, 1, 2, 3, 5, 17]))
                .collect();
            let n = shape.iter().product::<u64>() as usize;
            let values = ids(g, 1, n);
            file(&[ids_entry(dtype, shape, &values)])
        }
        _ => {
            // The forward proper: int64 / int32 [b, s], one extreme id most of the time.
            let dtype = if g.chance(0.6) { "I64" } else { "I32" };
            let b = 1 + g.below(3);
            let s = *g.pick(&[1usize, 2, 3, 4, 5, 8, 16, 17, 33]);
            let values = ids(g, b, s);
            let mut entries = vec![ids_entry(dtype, vec![b as u64, s as u64], &values)];
            if g.chance(0.1) {
                entries[0].name = g.pick(&["ids", "", "input_ids "]).to_string();
            }
            if g.chance(0.1) {
                entries.push(ids_entry("F32", vec![1], &[0]));
            }
            file(&entries)
        }
    }
}

/// Arguments of one `forward` case, its files written into `dir`.
pub fn case(g: &mut Gen, dir: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let (model, input_file) = if g.chance(0.25) {
        // A corrupted model directory, valid ids.
        let values: Vec<i64> = (0..6).map(|i| (i * 37) % 256).collect();
        (
            corrupted(g, dir),
            file(&[ids_entry("I64", vec![2, 3], &values)]),
        )
    } else {
        let name = *g.pick(&["tiny_b", "tiny_q"]);
        (fixture(name), input(g))
    };
    std::fs::write(dir.join("ids.safetensors"), input_file).expect("write ids");
    let mut args = vec![
        "forward".to_string(),
        "--model".into(),
        path(&model),
        "--input".into(),
        path(&dir.join("ids.safetensors")),
        "--output".into(),
        path(&dir.join("out.safetensors")),
    ];
    if g.chance(0.3) {
        args.push("--hidden".into());
    }
    if g.chance(0.5) {
        args.push("--no-fake-quant".into());
    }
    args
}

//! `v4train export` cases: corrupted model directories, odd output dtypes and shard sizes, an
//! output directory that exists, is a file or is the source.

use std::path::Path;

use super::gen::Gen;
use super::model_dir::{corrupted, fixture};

/// Arguments of one `export` case, its files written into `dir`.
pub fn case(g: &mut Gen, dir: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let model = if g.chance(0.85) {
        corrupted(g, dir)
    } else {
        let name = *g.pick(&["tiny_b", "tiny_q", "tiny_a"]);
        fixture(name)
    };
    let out = dir.join("out");
    match g.below(10) {
        0 => {
            std::fs::create_dir_all(&out).expect("out dir");
            std::fs::write(out.join("keep.txt"), b"x").expect("write");
        }
        1 => std::fs::write(&out, b"a file").expect("write"),
        _ => {}
    }
    let out = if g.chance(0.05) { model.clone() } else { out };
    let mut args = vec![
        "export".to_string(),
        "--model".into(),
        path(&model),
        "--out".into(),
        path(&out),
    ];
    if g.chance(0.7) {
        args.push("--dtype".into());
        let valid = ["fp8", "bf16", "f32"];
        let dtype = if g.chance(0.95) {
            g.pick(&valid)
        } else {
            g.pick(&["fp4", "", "FP8"])
        };
        args.push(dtype.to_string());
    }
    if g.chance(0.5) {
        args.push("--max-shard-size".into());
        let valid = [
            "5GB",
            "1",
            "100KB",
            "200KiB",
            "1e30GB",
            "18446744073709551615",
        ];
        let invalid = ["0", "-1", "0.5", "NaN", "inf", "1e400"];
        let size = if g.chance(0.9) {
            g.pick(&valid)
        } else {
            g.pick(&invalid)
        };
        args.push(size.to_string());
    }
    if g.chance(0.3) {
        args.push("--force".into());
    }
    args
}

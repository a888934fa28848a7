//! The CLI glue `src/export_cmd.rs` (compiled here so the crate's tests cover it until the lead
//! wires it into `src/main.rs`).

#[path = "../../src/export_cmd.rs"]
mod export_cmd;
#[path = "../../src/write_args.rs"]
mod write_args;

mod common;

use clap::Parser;
use export_cmd::ExportArgs;
use v4_checkpoints::{ModelDir, OutputDtype};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    export: ExportArgs,
}

#[test]
fn defaults_and_parsing() {
    let c = Cli::try_parse_from(["x", "--model", "a", "--out", "b"]).unwrap();
    assert_eq!(c.export.write.dtype, OutputDtype::Fp8);
    assert_eq!(c.export.write.max_shard_size, 5_000_000_000);
    assert!(!c.export.write.force);
    let c = Cli::try_parse_from([
        "x",
        "--model",
        "a",
        "--out",
        "b",
        "--dtype",
        "bf16",
        "--max-shard-size",
        "200KB",
        "--force",
    ])
    .unwrap();
    assert_eq!(
        (
            c.export.write.dtype,
            c.export.write.max_shard_size,
            c.export.write.force
        ),
        (OutputDtype::Bf16, 200_000, true)
    );
    assert!(Cli::try_parse_from(["x", "--model", "a", "--out", "b", "--dtype", "int4"]).is_err());
    assert!(
        Cli::try_parse_from(["x", "--model", "a", "--out", "b", "--max-shard-size", "5XB"])
            .is_err()
    );
}

#[test]
fn run_exports_tiny_q() {
    let out = tempfile::tempdir().unwrap();
    let model = common::fixture("tiny_q");
    let c = Cli::try_parse_from([
        "x",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--max-shard-size",
        "400KB",
        "--force",
    ])
    .unwrap();
    export_cmd::run(&c.export).unwrap();
    let md = ModelDir::open(out.path()).unwrap();
    assert!(md.shard_count() > 1);
    let bad = Cli::try_parse_from([
        "x",
        "--model",
        "/nonexistent",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .unwrap();
    let e = format!("{:#}", export_cmd::run(&bad.export).unwrap_err());
    assert!(e.contains("/nonexistent"), "{e}");
}

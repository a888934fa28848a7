//! Seeded shuffling within sources (files, parquet row groups, row blocks),
//! exact resume through shuffled blocks, and per-source pretrain / SFT modes.

mod common;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, ListArray, RecordBatch};
use common::{chat_line, config, take, tokenizer, write_lines};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use v4_data::{open_loader, Batch, DataConfig, DataCursor, DataLoader, Shard, V4Tokenizer};

/// Row `id` as pre-tokenized ids `[id, id + 1]` (EOS is appended by the loader).
fn id_line(id: u32) -> String {
    format!(r#"{{"input_ids": [{id}, {}]}}"#, id + 1)
}

/// A parquet file of `input_ids` rows `[id, id + 1]` for `ids`, `group` rows per row group.
fn write_id_parquet(path: &Path, ids: &[u32], group: usize) {
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
        ids.iter()
            .map(|&i| Some(vec![Some(i as i32), Some(i as i32 + 1)])),
    ));
    let batch = RecordBatch::try_from_iter([("input_ids", list)]).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Three jsonl files of 20 rows (ids 0..60 in sorted-file order) and one
/// parquet file of 30 rows in row groups of 3 (ids 1000..1030).
fn id_files(dir: &Path) {
    for f in 0..3u32 {
        let lines: Vec<String> = (0..20).map(|i| id_line(f * 20 + i)).collect();
        write_lines(&dir.join(format!("part-{f}.jsonl")), &lines);
    }
    let ids: Vec<u32> = (1000..1030).collect();
    write_id_parquet(&dir.join("groups.parquet"), &ids, 3);
}

/// SFT-padded windows with one row each: a window's first token is the row id.
fn id_config(dir: &Path, path: &str, extra: &str) -> DataConfig {
    config(&format!(
        "[data]\nmode = \"sft\"\nseq_len = 4\nbatch_size = 1\n{extra}\n[[data.sources]]\npath = \"{}/{path}\"\nfield = \"input_ids\"\n",
        dir.display()
    ))
}

/// The row ids of the next `n` rows (all rows of a finite source when `n` is `usize::MAX`).
fn row_ids(cfg: &DataConfig, n: usize) -> Vec<u32> {
    let mut loader = DataLoader::new(cfg, tokenizer(), None).unwrap();
    let mut ids = Vec::new();
    while ids.len() < n {
        let Some(b) = loader.next_batch().unwrap() else {
            break;
        };
        for r in 0..b.rows {
            ids.push(b.input_ids[r * b.seq_len]);
        }
    }
    ids
}

#[test]
fn shuffling_is_seeded_and_permutes_rows() {
    let dir = tempfile::tempdir().unwrap();
    id_files(dir.path());
    let d = dir.path();
    let file_order: Vec<u32> = (0..60).collect();

    // Disabled (0 or 1): rows in sorted-file order.
    for off in ["shuffle_block = 0", "shuffle_block = 1"] {
        let cfg = id_config(d, "part-*.jsonl", &format!("repeat = false\n{off}"));
        assert_eq!(row_ids(&cfg, usize::MAX), file_order, "{off}");
    }

    // Shuffled: a permutation of the epoch, not file order, fixed by the seed.
    let cfg = id_config(d, "part-*.jsonl", "repeat = false\nseed = 1");
    let a = row_ids(&cfg, usize::MAX);
    assert_ne!(a, file_order);
    assert_ne!(a[..8], file_order[..8], "the first batches are shuffled");
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, file_order, "one epoch holds every row once");
    assert_eq!(row_ids(&cfg, usize::MAX), a, "same seed, same order");
    let b = row_ids(
        &id_config(d, "part-*.jsonl", "repeat = false\nseed = 2"),
        usize::MAX,
    );
    assert_ne!(a, b, "another seed, another order");

    // Same seed → identical batches, padding, masks and segments included.
    let mut x = DataLoader::new(&cfg, tokenizer(), None).unwrap();
    let mut y = DataLoader::new(&cfg, tokenizer(), None).unwrap();
    assert_eq!(take(&mut x, 30), take(&mut y, 30));

    // Blocks: with shuffle_block = 8 in one file, each block of 8 emitted rows
    // is a permutation of 8 consecutive file rows.
    let cfg = id_config(d, "part-1.jsonl", "repeat = false\nshuffle_block = 8");
    let rows = row_ids(&cfg, usize::MAX);
    assert_eq!(rows.len(), 20);
    for (k, block) in rows.chunks(8).enumerate() {
        let got: BTreeSet<u32> = block.iter().copied().collect();
        let want: BTreeSet<u32> = (20 + 8 * k as u32..).take(block.len()).collect();
        assert_eq!(got, want, "block {k}");
    }
    assert_ne!(rows, (20..40).collect::<Vec<_>>());

    // Files: each epoch visits the files in its own seeded order (blocks of 20
    // rows = one file each), and rows differ between epochs.
    let cfg = id_config(d, "part-*.jsonl", "shuffle_block = 20\nseed = 3");
    let rows = row_ids(&cfg, 60 * 6);
    let file_orders: Vec<Vec<u32>> = rows
        .chunks(60)
        .map(|epoch| {
            epoch
                .chunks(20)
                .map(|blk| {
                    let f = blk[0] / 20;
                    assert!(blk.iter().all(|&r| r / 20 == f), "a block is one file");
                    f
                })
                .collect()
        })
        .collect();
    for order in &file_orders {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2], "every epoch visits every file once");
    }
    assert!(
        file_orders.iter().any(|o| o != &[0, 1, 2]),
        "file orders {file_orders:?}"
    );
    assert!(
        file_orders.windows(2).any(|w| w[0] != w[1]),
        "file orders {file_orders:?}"
    );
    assert_ne!(rows[..60], rows[60..120], "epochs are shuffled afresh");

    // Parquet row groups: blocks of 3 = one row group each, visited in a
    // seeded order that is not the file order.
    let cfg = id_config(d, "groups.parquet", "repeat = false\nshuffle_block = 3");
    let rows = row_ids(&cfg, usize::MAX);
    let groups: Vec<u32> = rows
        .chunks(3)
        .map(|blk| {
            let g = (blk[0] - 1000) / 3;
            assert!(blk.iter().all(|&r| (r - 1000) / 3 == g), "{blk:?}");
            g
        })
        .collect();
    let mut sorted = groups.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(groups, sorted, "row groups are shuffled");
}

/// Mixed jsonl glob + parquet (row groups of 3), both shuffled in blocks of 5.
fn mixed_shuffled(dir: &Path, mode: &str) -> DataConfig {
    id_files(dir);
    config(&format!(
        r#"
[data]
seq_len = 8
batch_size = 2
seed = 11
shuffle_block = 5
mode = "{mode}"
sft_packing = true
[[data.sources]]
path = "{dir}/part-*.jsonl"
field = "input_ids"
weight = 2.0
[[data.sources]]
path = "{dir}/groups.parquet"
field = "input_ids"
shuffle_block = 4
"#,
        dir = dir.display()
    ))
}

#[test]
fn resume_is_exact_inside_and_across_shuffled_blocks() {
    let tok = tokenizer();
    for mode in ["sft", "pretrain"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = mixed_shuffled(dir.path(), mode);
        let total = 70; // ≈ 2 epochs of every source
        let mut straight = DataLoader::new(&cfg, tok.clone(), None).unwrap();
        let mut expected = Vec::new();
        let mut cursors = Vec::new();
        for _ in 0..total {
            expected.push(straight.next_batch().unwrap().unwrap());
            cursors.push(straight.cursor());
        }
        let mid_block = cursors
            .iter()
            .filter(|c| c.sources.iter().any(|s| s.emitted > 0))
            .count();
        assert!(
            mid_block > total / 2,
            "{mode}: most cuts are inside a block"
        );
        assert!(cursors
            .iter()
            .any(|c| c.sources.iter().all(|s| s.block > 0 && s.emitted > 0)));
        assert!(cursors.last().unwrap().sources.iter().all(|s| s.epoch >= 1));

        const K: usize = 8;
        for n in 1..total - K {
            let json = cursors[n - 1].to_json().unwrap();
            let cursor = DataCursor::from_json(&json, "cursor.json").unwrap();
            assert_eq!(cursor, cursors[n - 1]);
            let mut resumed = DataLoader::new(&cfg, tok.clone(), Some(&cursor)).unwrap();
            assert_eq!(
                take(&mut resumed, K),
                expected[n..n + K],
                "{mode}: resume after {n} batches, cursor {json}"
            );
        }

        // Through the prefetch thread, as the trainer does.
        let mut pre = open_loader(&cfg, tok.clone(), None, Shard::default()).unwrap();
        for b in &expected[..17] {
            assert_eq!(&pre.next_batch().unwrap().unwrap(), b);
        }
        let saved = dir.path().join("data_cursor.json");
        pre.cursor().save(&saved).unwrap();
        drop(pre);
        let cursor = DataCursor::load(&saved).unwrap();
        let mut resumed = open_loader(&cfg, tok.clone(), Some(&cursor), Shard::default()).unwrap();
        for b in &expected[17..] {
            assert_eq!(&resumed.next_batch().unwrap().unwrap(), b);
        }
    }
}

#[test]
fn cursors_that_do_not_fit_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_shuffled(dir.path(), "sft");
    let tok = tokenizer();
    let mut loader = DataLoader::new(&cfg, tok.clone(), None).unwrap();
    take(&mut loader, 3);
    let cursor = loader.cursor();

    let mut other = cfg.clone();
    other.shuffle_block = 6;
    let err = DataLoader::new(&other, tok.clone(), Some(&cursor))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("data.sources[0].shuffle_block") && err.contains('5'),
        "{err}"
    );
    let mut other = cfg.clone();
    other.seed = 12;
    let err = DataLoader::new(&other, tok.clone(), Some(&cursor))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("seed"), "{err}");

    // A version-1 cursor (no shuffle positions) is refused with its file named.
    let path = dir.path().join("data_cursor.json");
    std::fs::write(
        &path,
        r#"{"version":1,"sources":[{"file_index":0,"offset":0,"line":0,"epoch":0,"exhausted":false}],"rng":1,"packer":{},"batches":3,"finished":false,"bad_rows":{"total":0,"by_kind":{},"examples":[]},"rows_read":6,"shard":{"index":0,"count":1}}"#,
    )
    .unwrap();
    let err = DataCursor::load(&path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}.version", path.display())) && err.contains("version 1"),
        "{err}"
    );
    let mut old = cursor.clone();
    old.version = 1;
    let err = DataLoader::new(&cfg, tok, Some(&old))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("version 1"), "{err}");
}

#[test]
fn config_validates_shuffle_block_and_mode() {
    let base = "[data]\nseq_len = 8\nbatch_size = 1\n";
    let cfg = config(&format!("{base}[[data.sources]]\npath = \"x\"\n"));
    assert_eq!(cfg.shuffle_block, 1024, "default");
    assert_eq!(cfg.shuffle_block(0), 1024);
    let cfg = config(&format!(
        "{base}shuffle_block = 4194304\n[[data.sources]]\npath = \"x\"\n"
    ));
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("`data.shuffle_block`"), "{err}");
    let cfg = config(&format!(
        "{base}[[data.sources]]\npath = \"x\"\n[[data.sources]]\npath = \"y\"\nshuffle_block = 4194304\n"
    ));
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("`data.sources[1].shuffle_block`"), "{err}");
    let cfg = config(&format!(
        "{base}mode = \"sft\"\n[[data.sources]]\npath = \"x\"\nmode = \"pretrain\"\nshuffle_block = 0\n[[data.sources]]\npath = \"y\"\n"
    ));
    assert_eq!(cfg.source_mode(0), v4_data::DataMode::Pretrain);
    assert_eq!(cfg.source_mode(1), v4_data::DataMode::Sft);
    assert_eq!((cfg.shuffle_block(0), cfg.shuffle_block(1)), (0, 1024));

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Recipe {
        data: DataConfig,
    }
    let err = toml::from_str::<Recipe>(&format!(
        "{base}[[data.sources]]\npath = \"x\"\nmode = \"chat\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("mode") || err.contains("chat"), "{err}");
}

fn trained_text(tok: &V4Tokenizer, labels: &[u32], mask: &[u8]) -> String {
    let ids: Vec<u32> = labels
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t)
        .collect();
    tok.decode(&ids).unwrap()
}

const EOS: &str = "<｜end▁of▁sentence｜>";

/// Per row of a batch: (window tokens, window loss mask, sources of its segments).
fn windows(b: &Batch) -> Vec<(Vec<u32>, Vec<u8>, BTreeSet<usize>)> {
    let l = b.seq_len;
    (0..b.rows)
        .map(|r| {
            let mut tokens = vec![b.input_ids[r * l]];
            tokens.extend_from_slice(&b.labels[r * l..(r + 1) * l]);
            let mut mask = vec![0];
            mask.extend_from_slice(&b.loss_mask[r * l..(r + 1) * l]);
            let sources = b.segments[r].iter().map(|s| s.source).collect();
            (tokens, mask, sources)
        })
        .collect()
}

#[test]
fn a_pretrain_source_in_an_sft_run_is_packed_as_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let chats: Vec<String> = (0..6)
        .map(|i| chat_line(&format!("Q{i}?"), &format!("A{i}.")))
        .collect();
    write_lines(&dir.path().join("c.jsonl"), &chats);
    // Documents longer than a window too: SFT would reject them as too long.
    let docs: Vec<String> = (0..8)
        .map(|i| {
            format!(
                "document {i} {}",
                "lorem ipsum dolor sit amet ".repeat(1 + i % 3 * 4)
            )
        })
        .collect();
    let doc_lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    write_lines(&dir.path().join("t.jsonl"), &doc_lines);
    let cfg = config(&format!(
        r#"
[data]
mode = "sft"
sft_packing = true
seq_len = 24
batch_size = 2
repeat = false
shuffle_block = 0
[[data.sources]]
path = "{d}/c.jsonl"
field = "messages"
[[data.sources]]
path = "{d}/t.jsonl"
mode = "pretrain"
"#,
        d = dir.path().display()
    ));
    let tok = tokenizer();
    let mut loader = DataLoader::new(&cfg, tok.clone(), None).unwrap();
    let mut chat_trained = String::new();
    let mut stream: Vec<u32> = Vec::new();
    let mut pretrain_windows = 0;
    while let Some(b) = loader.next_batch().unwrap() {
        for (tokens, mask, sources) in windows(&b) {
            assert_eq!(sources.len(), 1, "a window holds one mode: {sources:?}");
            if sources.contains(&0) {
                chat_trained += &trained_text(&tok, &tokens[1..], &mask[1..]);
            } else {
                pretrain_windows += 1;
                // Every label of a pretrain window is trained (bar the final window's padding).
                let n = mask[1..].iter().filter(|&&m| m == 1).count();
                assert!(mask[1..=n].iter().all(|&m| m == 1));
                assert!(mask[n + 1..].iter().all(|&m| m == 0));
                if stream.is_empty() {
                    stream.push(tokens[0]);
                }
                stream.extend_from_slice(&tokens[1..=n]);
            }
        }
    }
    assert_eq!(loader.bad_rows().total, 0, "{}", loader.bad_rows());
    assert!(pretrain_windows > docs.len() / 2);
    let want: Vec<u32> = docs
        .iter()
        .flat_map(|d| {
            let mut ids = tok.encode(d).unwrap();
            ids.push(tok.eos_id());
            ids
        })
        .collect();
    assert!(want.len() > 2 * 25, "documents span several windows");
    assert_eq!(
        stream, want,
        "the EOS-separated document stream, every token trained"
    );
    let answers: String = (0..6).map(|i| format!("A{i}.{EOS}")).collect();
    assert_eq!(chat_trained, answers);
}

#[test]
fn an_sft_text_row_packed_after_a_sample_does_not_train_its_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let chats: Vec<String> = (0..4)
        .map(|i| chat_line(&format!("Q{i}?"), &format!("A{i}.")))
        .collect();
    write_lines(&dir.path().join("c.jsonl"), &chats);
    let docs: Vec<String> = (0..4).map(|i| format!("Short note {i}.")).collect();
    let doc_lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    write_lines(&dir.path().join("t.jsonl"), &doc_lines);
    let cfg = config(&format!(
        r#"
[data]
mode = "sft"
sft_packing = true
seq_len = 128
batch_size = 1
repeat = false
[[data.sources]]
path = "{d}/c.jsonl"
field = "messages"
[[data.sources]]
path = "{d}/t.jsonl"
"#,
        d = dir.path().display()
    ));
    let tok = tokenizer();
    let mut loader = DataLoader::new(&cfg, tok.clone(), None).unwrap();
    let mut text_segments_after_another = 0;
    let mut trained_docs = BTreeSet::new();
    while let Some(b) = loader.next_batch().unwrap() {
        for (r, (tokens, mask, _)) in windows(&b).into_iter().enumerate() {
            for seg in b.segments[r].iter().filter(|s| s.source == 1) {
                let span = seg.start..seg.start + seg.len;
                assert_eq!(
                    mask[seg.start], 0,
                    "the document's first token is not trained"
                );
                assert!(mask[span.start + 1..span.end].iter().all(|&m| m == 1));
                if seg.start > 0 {
                    text_segments_after_another += 1;
                    assert_eq!(tokens[seg.start - 1], tok.eos_id());
                }
                let whole = tok.decode(&tokens[span.clone()]).unwrap();
                trained_docs.insert(whole);
            }
        }
    }
    assert!(text_segments_after_another > 0);
    let want: BTreeSet<String> = docs.iter().map(|d| format!("{d}{EOS}")).collect();
    assert_eq!(trained_docs, want, "text rows are kept whole in SFT mode");
}

#[test]
fn an_sft_source_in_a_pretrain_run_keeps_conversations_whole() {
    let dir = tempfile::tempdir().unwrap();
    let chats: Vec<String> = (0..5)
        .map(|i| chat_line(&format!("Q{i}?"), &format!("A{i}.")))
        .collect();
    write_lines(&dir.path().join("c.jsonl"), &chats);
    let doc_lines: Vec<String> = (0..6)
        .map(|i| serde_json::json!({ "text": format!("plain text {i} ").repeat(3) }).to_string())
        .collect();
    write_lines(&dir.path().join("t.jsonl"), &doc_lines);
    let cfg = config(&format!(
        r#"
[data]
seq_len = 32
batch_size = 2
repeat = false
seed = 5
[[data.sources]]
path = "{d}/c.jsonl"
field = "messages"
mode = "sft"
[[data.sources]]
path = "{d}/t.jsonl"
"#,
        d = dir.path().display()
    ));
    let tok = tokenizer();
    let mut loader = DataLoader::new(&cfg, tok.clone(), None).unwrap();
    let mut answers = BTreeSet::new();
    let mut chat_windows = 0;
    while let Some(b) = loader.next_batch().unwrap() {
        for (tokens, mask, sources) in windows(&b) {
            assert_eq!(sources.len(), 1, "{sources:?}");
            if sources.contains(&0) {
                chat_windows += 1;
                // sft_packing is off: one padded conversation per window, starting with BOS.
                assert_eq!(tokens[0], tok.bos_id());
                answers.insert(trained_text(&tok, &tokens[1..], &mask[1..]));
            }
        }
    }
    assert_eq!(chat_windows, 5);
    let want: BTreeSet<String> = (0..5).map(|i| format!("A{i}.{EOS}")).collect();
    assert_eq!(answers, want);
}

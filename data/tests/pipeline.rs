//! Streaming sources, mixing, packing, bad rows and resumption on small
//! generated jsonl / parquet files.

mod common;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, ListArray, RecordBatch, StringArray};
use common::{chat_line, config, take, tokenizer, write_lines};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use v4_data::{open_loader, BadRowPolicy, DataConfig, DataCursor, DataError, DataLoader, Shard};

fn text_lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let domain = if i % 2 == 0 { "web" } else { "code" };
            format!(
                r#"{{"text": "{prefix} document {i}: the quick brown fox jumps over {i} lazy dogs.", "domain": "{domain}"}}"#
            )
        })
        .collect()
}

fn write_parquet(path: &Path, texts: &[String], ids: &[Vec<i32>]) {
    let text: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
        ids.iter()
            .map(|v| Some(v.iter().map(|&x| Some(x)).collect::<Vec<_>>())),
    ));
    let domain: ArrayRef = Arc::new(StringArray::from(vec!["books"; texts.len()]));
    let batch =
        RecordBatch::try_from_iter([("text", text), ("input_ids", list), ("domain", domain)])
            .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(3))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn mixed_config(dir: &Path) -> DataConfig {
    write_lines(&dir.join("a-0.jsonl"), &text_lines("alpha", 7));
    write_lines(&dir.join("a-1.jsonl"), &text_lines("beta", 5));
    let texts: Vec<String> = (0..10)
        .map(|i| format!("parquet row {i} with some words"))
        .collect();
    let ids: Vec<Vec<i32>> = (0..10).map(|i| vec![100 + i, 200 + i, 300 + i]).collect();
    write_parquet(&dir.join("p.parquet"), &texts, &ids);
    config(&format!(
        r#"
[data]
seq_len = 16
batch_size = 2
seed = 7
[[data.sources]]
path = "{dir}/a-*.jsonl"
domain_field = "domain"
weight = 2.0
[[data.sources]]
path = "{dir}/p.parquet"
field = "input_ids"
weight = 1.0
[[data.sources]]
path = "{dir}/p.parquet"
field = "text"
domain_field = "domain"
weight = 0.5
"#,
        dir = dir.display()
    ))
}

#[test]
fn resume_gives_the_same_next_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_config(dir.path());
    let tok = tokenizer();
    let mut straight = DataLoader::new(&cfg, tok.clone(), None).unwrap();
    let expected = take(&mut straight, 40); // several epochs of every source

    for n in [1, 3, 11, 25] {
        let mut first = DataLoader::new(&cfg, tok.clone(), None).unwrap();
        let head = take(&mut first, n);
        assert_eq!(head, expected[..n]);
        let saved = dir.path().join("cursor.json");
        first.cursor().save(&saved).unwrap();
        drop(first);
        let cursor = DataCursor::load(&saved).unwrap();
        let mut resumed = DataLoader::new(&cfg, tok.clone(), Some(&cursor)).unwrap();
        let tail = take(&mut resumed, 40 - n);
        assert_eq!(tail, expected[n..], "resume after {n} batches");
    }

    // Batches are well formed: shifted labels, all sources and domains present.
    let b = &expected[0];
    assert_eq!((b.rows, b.seq_len, b.input_ids.len()), (2, 16, 32));
    assert_eq!(b.input_ids[1..16], b.labels[..15]);
    let mut sources = std::collections::BTreeSet::new();
    let mut domains = std::collections::BTreeSet::new();
    for seg in expected.iter().flat_map(|b| b.segments.iter().flatten()) {
        sources.insert(seg.source);
        domains.insert(seg.domain.clone());
    }
    assert_eq!(sources.len(), 3);
    assert!(domains.contains(&Some("web".into())) && domains.contains(&Some("books".into())));
}

#[test]
fn prefetcher_matches_loader_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_config(dir.path());
    let tok = tokenizer();
    let mut straight = DataLoader::new(&cfg, tok.clone(), None).unwrap();
    let expected = take(&mut straight, 12);
    let mut pre = open_loader(&cfg, tok.clone(), None, Shard::default()).unwrap();
    for b in &expected[..5] {
        assert_eq!(&pre.next_batch().unwrap().unwrap(), b);
    }
    let cursor = pre.cursor().clone();
    assert_eq!(cursor.batches, 5);
    drop(pre);
    let mut resumed = open_loader(&cfg, tok, Some(&cursor), Shard::default()).unwrap();
    for b in &expected[5..] {
        assert_eq!(&resumed.next_batch().unwrap().unwrap(), b);
    }
}

#[test]
fn pretrain_packing_is_the_eos_separated_token_stream() {
    let dir = tempfile::tempdir().unwrap();
    let lines = text_lines("gamma", 6);
    write_lines(&dir.path().join("g.jsonl"), &lines);
    let cfg = config(&format!(
        "[data]\nseq_len = 8\nbatch_size = 3\nrepeat = false\nshuffle_block = 0\n[[data.sources]]\npath = \"{}/g.jsonl\"\n",
        dir.path().display()
    ));
    let tok = tokenizer();
    let mut stream = Vec::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        stream.extend(tok.encode(v["text"].as_str().unwrap()).unwrap());
        stream.push(tok.eos_id());
    }
    let mut loader = DataLoader::new(&cfg, tok, None).unwrap();
    let mut rebuilt = Vec::new();
    let mut first = true;
    while let Some(b) = loader.next_batch().unwrap() {
        for r in 0..b.rows {
            let inputs = &b.input_ids[r * 8..(r + 1) * 8];
            let labels = &b.labels[r * 8..(r + 1) * 8];
            if first {
                rebuilt.push(inputs[0]);
                first = false;
            }
            let mask = &b.loss_mask[r * 8..(r + 1) * 8];
            rebuilt.extend(
                labels
                    .iter()
                    .zip(mask)
                    .filter(|(_, &m)| m == 1)
                    .map(|(&t, _)| t),
            );
        }
    }
    assert_eq!(rebuilt, stream);
    assert!(loader.cursor().finished);
}

#[test]
fn sft_padding_and_packing_carry_the_loss_mask() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..5)
        .map(|i| chat_line(&format!("Q{i}?"), &format!("A{i}.")))
        .collect();
    write_lines(&dir.path().join("c.jsonl"), &lines);
    let tok = tokenizer();
    for packing in [false, true] {
        let cfg = config(&format!(
            "[data]\nmode = \"sft\"\nsft_packing = {packing}\nseq_len = 32\nbatch_size = 2\nrepeat = false\nshuffle_block = 0\n[[data.sources]]\npath = \"{}/c.jsonl\"\nfield = \"messages\"\n",
            dir.path().display()
        ));
        let mut loader = DataLoader::new(&cfg, tok.clone(), None).unwrap();
        let mut rows = 0;
        let mut trained = Vec::new();
        while let Some(b) = loader.next_batch().unwrap() {
            rows += b.rows;
            let ids: Vec<u32> = b
                .labels
                .iter()
                .zip(&b.loss_mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t)
                .collect();
            trained.push(tok.decode(&ids).unwrap());
        }
        let all = trained.concat();
        let eos = "<｜end▁of▁sentence｜>";
        assert_eq!(
            all,
            (0..5).map(|i| format!("A{i}.{eos}")).collect::<String>()
        );
        assert_eq!(rows, if packing { 2 } else { 5 }, "packing={packing}");
    }
}

#[test]
fn shards_see_disjoint_rows_that_cover_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..9)
        .map(|i| chat_line(&format!("Q{i}?"), &format!("A{i}.")))
        .collect();
    write_lines(&dir.path().join("c.jsonl"), &lines);
    let cfg = config(&format!(
        "[data]\nmode = \"sft\"\nseq_len = 32\nbatch_size = 1\nrepeat = false\n[[data.sources]]\npath = \"{}/c.jsonl\"\nfield = \"messages\"\n",
        dir.path().display()
    ));
    let tok = tokenizer();
    let mut seen = Vec::new();
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let mut loader = DataLoader::new(&cfg, tok.clone(), None)
            .unwrap()
            .with_shard(shard)
            .unwrap();
        let mut mine = Vec::new();
        while let Some(b) = loader.next_batch().unwrap() {
            let ids: Vec<u32> = b
                .labels
                .iter()
                .zip(&b.loss_mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t)
                .collect();
            mine.push(tok.decode(&ids).unwrap());
        }
        assert_eq!(mine.len(), 3, "shard {index}");
        seen.extend(mine);
    }
    seen.sort();
    let eos = "<｜end▁of▁sentence｜>";
    let all: Vec<String> = (0..9).map(|i| format!("A{i}.{eos}")).collect();
    assert_eq!(seen, all);
    let bad = DataLoader::new(&cfg, tok, None)
        .unwrap()
        .with_shard(Shard { index: 3, count: 3 });
    assert!(bad.is_err());
}

#[test]
fn per_source_chat_options_override_the_global_ones() {
    let dir = tempfile::tempdir().unwrap();
    let line = serde_json::json!({"messages": [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "reasoning_content": "R", "content": "A"}
    ]})
    .to_string();
    write_lines(&dir.path().join("t.jsonl"), &[line]);
    let cfg = config(&format!(
        "[data]\nmode = \"sft\"\nseq_len = 32\nbatch_size = 1\nrepeat = false\n[data.chat]\nthinking_mode = \"chat\"\n[[data.sources]]\npath = \"{}/t.jsonl\"\nfield = \"messages\"\nchat = {{ thinking_mode = \"thinking\" }}\n",
        dir.path().display()
    ));
    let tok = tokenizer();
    let b = DataLoader::new(&cfg, tok.clone(), None)
        .unwrap()
        .next_batch()
        .unwrap()
        .unwrap();
    let trained: Vec<u32> = b
        .labels
        .iter()
        .zip(&b.loss_mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t)
        .collect();
    assert_eq!(
        tok.decode(&trained).unwrap(),
        "R</think>A<｜end▁of▁sentence｜>"
    );
}

#[test]
fn bad_rows_are_counted_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    let long = "word ".repeat(200);
    write_lines(
        &path,
        &[
            chat_line("ok", "fine"),
            "{not json".into(),
            r#"{"other": 1}"#.into(),
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#.into(),
            chat_line("long", &long),
            r#"{"messages": [{"role": "user", "content": "no answer"}]}"#.into(),
            chat_line("ok2", "fine2"),
        ],
    );
    let text = |policy: &str| {
        format!(
            "[data]\nmode = \"sft\"\nseq_len = 64\nbatch_size = 4\nrepeat = false\nshuffle_block = 0\nbad_rows = \"{policy}\"\n[[data.sources]]\npath = \"{}\"\nfield = \"messages\"\n",
            path.display()
        )
    };
    let cfg = config(&text("skip"));
    assert_eq!(cfg.bad_rows, BadRowPolicy::Skip);
    let mut loader = DataLoader::new(&cfg, tokenizer(), None).unwrap();
    let b = loader.next_batch().unwrap().unwrap();
    assert_eq!(b.rows, 2);
    assert!(loader.next_batch().unwrap().is_none());
    let stats = loader.bad_rows();
    assert_eq!(stats.total, 5);
    assert_eq!(
        stats.to_string(),
        "5 bad rows skipped (malformed: 1, missing_field: 1, too_long: 1, unknown_role: 1, untrained: 1)"
    );
    for kind in [
        "malformed",
        "missing_field",
        "unknown_role",
        "too_long",
        "untrained",
    ] {
        assert_eq!(stats.by_kind.get(kind), Some(&1), "{kind}");
    }
    let p = path.display().to_string();
    assert!(stats.examples[0].starts_with(&format!("{p}:2: malformed")));
    assert_eq!(
        stats.examples[1],
        format!("{p}:3: missing field `messages`")
    );
    assert!(stats.examples[2].starts_with(&format!(
        "{p}:4: chat encoding: message 0: unknown role `wizard`"
    )));
    assert!(stats.examples[3].starts_with(&format!("{p}:5: ")));
    assert_eq!(
        stats.examples[4],
        format!("{p}:6: no assistant tokens to train on")
    );

    let mut strict = DataLoader::new(&config(&text("error")), tokenizer(), None).unwrap();
    match strict.next_batch() {
        Err(DataError::BadRow(row)) => assert_eq!(row.location.to_string(), format!("{p}:2")),
        other => panic!("expected a bad-row error, got {other:?}"),
    }
}

#[test]
fn config_rejects_unknown_keys_and_bad_values() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Recipe {
        data: DataConfig,
    }
    let err = toml::from_str::<Recipe>(
        "[data]\nseq_len = 8\nbatch_size = 1\nsequence = 3\n[[data.sources]]\npath = \"x\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("sequence"), "{err}");
    let mut cfg = config(
        "[data]\nseq_len = 8\nbatch_size = 1\n[[data.sources]]\npath = \"x\"\nweight = -1.0\n",
    );
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("data.sources[0].weight"), "{err}");
    cfg.sources[0].weight = 1.0;
    let err = DataLoader::new(&cfg, tokenizer(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("data.sources[0]") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn chat_encode_reproduces_the_fixture_end_to_end() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let input = root.join("tests/fixtures/chat/v4_chat_cases.jsonl");
    let mut out = Vec::new();
    let n =
        v4_data::encode_chat_jsonl(&tokenizer(), &input, &Default::default(), &mut out).unwrap();
    assert_eq!(n, 15);
    let expected: Vec<serde_json::Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g["text"], e["text"]);
        assert_eq!(g["ids"], e["ids"]);
        assert_eq!(
            g["loss_mask"].as_array().unwrap().len(),
            e["ids"].as_array().unwrap().len()
        );
    }
}

//! Text and chat sources (`[data]` as a `v4-data` [`DataConfig`]): finds the tokenizer, checks it
//! fits the model's vocabulary at startup, runs the `v4-data` prefetching loader and turns its
//! batches into [`MicroBatch`]es (labels outside the loss mask become `ignore_index`). The
//! loader's cursor is what a checkpoint saves; opening with it continues with the next unseen
//! sample.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use v4_data::{open_loader, DataConfig, DataCursor, Prefetcher, Shard, V4Tokenizer};

use super::batches::MicroBatch;
use crate::recipe::{ModelRecipe, ModelSource};

/// The tokenizer shipped in the repository, relative to its root.
pub const SHIPPED_TOKENIZER: &str = "data/tokenizer/deepseek-v4";

/// Where the tokenizer comes from: `[data] tokenizer`, else `[model] dir`, else the shipped
/// copy (looked up in the current directory, then in the source tree this binary was built
/// from). The string says which, for messages.
pub fn tokenizer_location(cfg: &DataConfig, model: &ModelRecipe) -> Result<(PathBuf, String)> {
    if let Some(p) = &cfg.tokenizer {
        return Ok((
            p.clone(),
            format!("[data] tokenizer = {:?}", p.display().to_string()),
        ));
    }
    if let ModelSource::Dir(d) = &model.source {
        return Ok((
            d.clone(),
            format!(
                "[model] dir = {:?} (set [data] tokenizer to use another)",
                d.display().to_string()
            ),
        ));
    }
    let candidates = [
        PathBuf::from(SHIPPED_TOKENIZER),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_TOKENIZER),
    ];
    match candidates
        .iter()
        .find(|d| d.join("tokenizer.json").is_file())
    {
        Some(d) => Ok((d.clone(), format!("the shipped tokenizer {}", d.display()))),
        None => bail!(
            "[data] tokenizer is not set and [model] has no `dir`, and the shipped tokenizer was \
             found neither at ./{SHIPPED_TOKENIZER} nor at {}; set [data] tokenizer = \"DIR\" \
             (a directory holding tokenizer.json)",
            candidates[1].display()
        ),
    }
}

/// Loads the tokenizer for `cfg` and checks that every id it can produce fits `vocab`.
pub fn load_tokenizer(cfg: &DataConfig, model: &ModelRecipe, vocab: usize) -> Result<V4Tokenizer> {
    let (dir, origin) = tokenizer_location(cfg, model)?;
    let tok = V4Tokenizer::from_dir(&dir)
        .map_err(|e| anyhow!("loading the tokenizer from {origin}: {e}"))?;
    if tok.vocab_size() > vocab {
        bail!(
            "[model] vocab_size = {vocab} is smaller than the tokenizer's vocabulary ({} ids, \
             {}); the model cannot embed its tokens — use a model with vocab_size ≥ {}",
            tok.vocab_size(),
            tok.path().display(),
            tok.vocab_size()
        );
    }
    Ok(tok)
}

/// Batches of a text / chat [`DataConfig`].
pub struct TextBatches {
    loader: Prefetcher,
    config: DataConfig,
    vocab: usize,
    ignore_index: i64,
}

impl TextBatches {
    /// Opens the sources (continuing from `cursor` when given); token ids must be below `vocab`.
    pub fn open(
        cfg: &DataConfig,
        tokenizer: V4Tokenizer,
        cursor: Option<&DataCursor>,
        vocab: usize,
        ignore_index: i64,
    ) -> Result<Self> {
        let loader = open_loader(cfg, Arc::new(tokenizer), cursor, Shard::default())
            .map_err(|e| anyhow!("[data]: {e}"))?;
        Ok(Self {
            loader,
            config: cfg.clone(),
            vocab,
            ignore_index,
        })
    }

    /// The next batch, with the window positions where each row's samples after the first (and
    /// its padding) start, and the number of samples; `step` / `micro` only name the place in
    /// errors.
    pub fn next(
        &mut self,
        step: u64,
        micro: usize,
    ) -> Result<(MicroBatch, Vec<Vec<usize>>, usize)> {
        let at = || format!("step {} (micro-batch {micro})", step + 1);
        let batch = self
            .loader
            .next_batch()
            .map_err(|e| anyhow!("[data] at {}: {e}", at()))?
            .ok_or_else(|| {
                anyhow!(
                    "[data]: the data ran out at {} (repeat = {}); add data, set [data] repeat = \
                     true or lower [train] steps",
                    at(),
                    self.config.repeat
                )
            })?;
        for (i, &id) in batch.input_ids.iter().chain(&batch.labels).enumerate() {
            if id as usize >= self.vocab {
                let row = (i % batch.input_ids.len()) / batch.seq_len;
                let sources: Vec<&str> = batch.segments[row]
                    .iter()
                    .filter_map(|s| self.config.sources.get(s.source))
                    .map(|s| s.path.as_str())
                    .collect();
                bail!(
                    "[data] at {}: token id {id} is outside the model's vocabulary 0..{} \
                     ([model] vocab_size); the row came from {sources:?}",
                    at(),
                    self.vocab
                );
            }
        }
        let labels = batch
            .labels
            .iter()
            .zip(&batch.loss_mask)
            .map(|(&l, &m)| {
                if m != 0 {
                    i64::from(l)
                } else {
                    self.ignore_index
                }
            })
            .collect();
        let window = batch.seq_len + 1;
        let starts = batch
            .segments
            .iter()
            .map(|row| {
                let mut p: Vec<usize> = row.iter().map(|s| s.start).filter(|&s| s > 0).collect();
                // Padding after the last sample is a separate (never trained) part of the row.
                let end = row.last().map_or(0, |s| s.start + s.len);
                if end > 0 && end < window {
                    p.push(end);
                }
                p
            })
            .collect();
        let samples = batch.segments.iter().map(Vec::len).sum();
        let micro = MicroBatch {
            starts: vec![Vec::new(); batch.rows],
            samples: batch.rows,
            masked: false,
            rows: batch.rows,
            seq_len: batch.seq_len,
            input_ids: batch.input_ids.iter().map(|&x| i64::from(x)).collect(),
            labels,
        };
        Ok((micro, starts, samples))
    }

    /// The loader's state after the last returned batch.
    pub fn cursor(&self) -> &DataCursor {
        self.loader.cursor()
    }

    /// `N bad rows skipped (kind: n, …)`, when any were.
    pub fn bad_rows(&self) -> Option<String> {
        let stats = self.loader.bad_rows();
        (stats.total > 0).then(|| stats.to_string())
    }

    /// Bad rows skipped so far.
    pub fn bad_row_count(&self) -> u64 {
        self.loader.bad_rows().total
    }
}

/// Reads a saved cursor.
pub fn read_cursor(path: &Path) -> Result<DataCursor> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    DataCursor::from_json(&text, &path.display().to_string()).map_err(|e| anyhow!("{e}"))
}

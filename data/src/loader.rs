//! The data loader: mixes the configured sources, tokenizes rows, applies the
//! bad-row policy, packs windows and assembles batches. Single-threaded and
//! deterministic; [`crate::prefetch`] runs it on a background thread.

use crate::bad_rows::{BadRow, BadRowKind, BadRowStats};
use crate::batch::Batch;
use crate::config::DataConfig;
use crate::cursor::DataCursor;
use crate::error::DataError;
use crate::mixture::Mixture;
use crate::packing::{PackMode, Packer};
use crate::rng::SplitMix64;
use crate::sample::{Sample, SampleBuilder};
use crate::shard::Shard;
use crate::source::Shuffle;
use crate::source::Source;
use crate::tokenizer::V4Tokenizer;
use std::sync::Arc;

/// Produces batches from a [`DataConfig`].
pub struct DataLoader {
    config: DataConfig,
    mixture: Mixture,
    builder: SampleBuilder,
    packer: Packer,
    batches: u64,
    finished: bool,
    bad_rows: BadRowStats,
    bad_streak: u64,
    rows_read: u64,
    shard: Shard,
}

/// Consecutive bad rows after which the data is declared unusable (a
/// repeating source of only bad rows would otherwise loop forever).
const MAX_BAD_STREAK: u64 = 100_000;

impl DataLoader {
    /// Opens the sources; with `cursor`, continues where it was taken.
    pub fn new(
        config: &DataConfig,
        tokenizer: Arc<V4Tokenizer>,
        cursor: Option<&DataCursor>,
    ) -> Result<Self, DataError> {
        config.validate()?;
        let fresh_packer = Packer::new(config.seq_len, tokenizer.eos_id());
        if let Some(c) = cursor {
            check_cursor(config, c, &fresh_packer)?;
        }
        let mut sources = Vec::with_capacity(config.sources.len());
        for (i, s) in config.sources.iter().enumerate() {
            let position = cursor.map(|c| c.sources[i].clone());
            let key = format!("data.sources[{i}]");
            let shuffle = Shuffle {
                block: config.shuffle_block(i),
                seed: config.seed,
                source: i,
            };
            sources.push(Source::open(
                &s.path,
                s.format,
                s.row_spec(),
                config.repeat,
                shuffle,
                position,
                &key,
            )?);
        }
        let weights = config.sources.iter().map(|s| s.weight).collect();
        let rng = cursor.map_or(SplitMix64(config.seed), |c| c.rng);
        Ok(DataLoader {
            config: config.clone(),
            mixture: Mixture::new(sources, weights, rng),
            builder: SampleBuilder::new(tokenizer, config.chat_options(), config.pack_modes()),
            packer: cursor.map_or(fresh_packer, |c| c.packer.clone()),
            batches: cursor.map_or(0, |c| c.batches),
            finished: cursor.is_some_and(|c| c.finished),
            bad_rows: cursor.map(|c| c.bad_rows.clone()).unwrap_or_default(),
            bad_streak: 0,
            rows_read: cursor.map_or(0, |c| c.rows_read),
            shard: cursor.map_or_else(Shard::default, |c| c.shard),
        })
    }

    /// Restricts this loader to `shard` (data-parallel rank). A loader resumed
    /// from a cursor must keep the cursor's shard.
    pub fn with_shard(mut self, shard: Shard) -> Result<Self, DataError> {
        if !shard.is_valid() {
            return Err(DataError::Config {
                key: "shard".into(),
                message: format!("index {} of {} shards", shard.index, shard.count),
            });
        }
        if self.rows_read > 0 && shard != self.shard {
            return Err(DataError::Cursor {
                key: "shard".into(),
                message: format!("cursor belongs to {:?}, not {shard:?}", self.shard),
            });
        }
        self.shard = shard;
        Ok(self)
    }

    /// The next batch; `None` when finite data is used up.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        let mut rows = Vec::with_capacity(self.config.batch_size);
        while rows.len() < self.config.batch_size {
            if let Some(row) = self.packer.pop() {
                rows.push(row);
                continue;
            }
            if self.finished {
                break;
            }
            match self.next_sample()? {
                None => {
                    self.finished = true;
                    self.packer.finish();
                }
                Some(Ok(sample)) => {
                    self.bad_streak = 0;
                    self.packer.push(&sample);
                }
                Some(Err(bad)) => self.skip(bad)?,
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let batch = Batch::from_rows(self.batches, self.config.seq_len, rows);
        self.batches += 1;
        Ok(Some(batch))
    }

    /// The next row, tokenized, or why it is unusable; `None` when the data is used up.
    fn next_sample(&mut self) -> Result<Option<Result<Sample, BadRow>>, DataError> {
        let (source, row) = loop {
            let Some((source, row)) = self.mixture.next_row()? else {
                return Ok(None);
            };
            self.rows_read += 1;
            if self.shard.owns(self.rows_read - 1) {
                break (source, row);
            }
        };
        Ok(Some(row.and_then(|raw| {
            let location = raw.location.clone();
            let sample = self.builder.build(source, raw)?;
            match self.reject(&sample) {
                Some(kind) => Err(BadRow { location, kind }),
                None => Ok(sample),
            }
        })))
    }

    /// Applies the bad-row policy; stops an endless run of bad rows.
    fn skip(&mut self, bad: BadRow) -> Result<(), DataError> {
        self.bad_streak += 1;
        if self.bad_streak >= MAX_BAD_STREAK {
            return Err(DataError::NoUsableRows {
                count: self.bad_streak,
                last: bad.to_string(),
            });
        }
        self.bad_rows.handle(self.config.bad_rows, bad)
    }

    /// Why `sample` cannot be packed: (SFT) too long for a window, or nothing to train.
    fn reject(&self, sample: &Sample) -> Option<BadRowKind> {
        if !self.packer.fits(sample) {
            return Some(BadRowKind::TooLong {
                tokens: sample.ids.len(),
                max: self.packer.window(),
            });
        }
        let sft = sample.mode != PackMode::Pretrain;
        (sft && !sample.loss_mask.contains(&1)).then_some(BadRowKind::Untrained)
    }

    /// State after the last returned batch.
    pub fn cursor(&self) -> DataCursor {
        DataCursor {
            version: DataCursor::VERSION,
            seed: self.config.seed,
            sources: self.mixture.positions(),
            rng: self.mixture.rng(),
            packer: self.packer.clone(),
            batches: self.batches,
            finished: self.finished,
            bad_rows: self.bad_rows.clone(),
            rows_read: self.rows_read,
            shard: self.shard,
        }
    }

    /// Bad rows skipped so far.
    pub fn bad_rows(&self) -> &BadRowStats {
        &self.bad_rows
    }

    /// The configuration.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }
}

fn check_cursor(config: &DataConfig, cursor: &DataCursor, fresh: &Packer) -> Result<(), DataError> {
    cursor.check_version("cursor")?;
    if cursor.seed != config.seed {
        return Err(DataError::Cursor {
            key: "seed".into(),
            message: format!(
                "the cursor was saved with [data] seed = {}, the config has {}; resume with the \
                 original seed (the shuffled order depends on it)",
                cursor.seed, config.seed
            ),
        });
    }
    if cursor.sources.len() != config.sources.len() {
        return Err(DataError::Cursor {
            key: "sources".into(),
            message: format!(
                "cursor has {} sources, config has {}",
                cursor.sources.len(),
                config.sources.len()
            ),
        });
    }
    if cursor.packer.window() != fresh.window() || !cursor.packer.is_consistent() {
        return Err(DataError::Cursor {
            key: "packer".into(),
            message: "seq_len differs from the config, or buffered windows are malformed".into(),
        });
    }
    Ok(())
}

//! Runs a [`DataLoader`] on a background thread that keeps up to `depth`
//! batches ready. Each batch travels with the cursor taken right after it, so
//! [`Prefetcher::cursor`] is exact for the batches actually consumed.

use crate::bad_rows::BadRowStats;
use crate::batch::Batch;
use crate::cursor::DataCursor;
use crate::error::DataError;
use crate::loader::DataLoader;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

type Item = Result<Option<(Batch, DataCursor)>, DataError>;

/// A loader running ahead on its own thread.
pub struct Prefetcher {
    rx: Option<Receiver<Item>>,
    handle: Option<JoinHandle<()>>,
    cursor: DataCursor,
    done: bool,
}

impl Prefetcher {
    /// Starts the thread; `depth` ≥ 1 batches are prepared ahead.
    pub fn spawn(mut loader: DataLoader, depth: usize) -> Result<Self, DataError> {
        let cursor = loader.cursor();
        let (tx, rx) = sync_channel::<Item>(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("v4-data-prefetch".into())
            .spawn(move || loop {
                let item = loader
                    .next_batch()
                    .map(|b| b.map(|batch| (batch, loader.cursor())));
                let stop = !matches!(item, Ok(Some(_)));
                if tx.send(item).is_err() || stop {
                    break;
                }
            })
            .map_err(|e| DataError::Prefetch(e.to_string()))?;
        Ok(Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
            cursor,
            done: false,
        })
    }

    /// The next batch; `None` at the end of finite data.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        if self.done {
            return Ok(None);
        }
        let Some(rx) = self.rx.as_ref() else {
            return Ok(None);
        };
        match rx.recv() {
            Ok(Ok(Some((batch, cursor)))) => {
                self.cursor = cursor;
                Ok(Some(batch))
            }
            Ok(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                self.done = true;
                Err(e)
            }
            Err(_) => {
                self.done = true;
                Err(DataError::Prefetch("the loader thread exited".into()))
            }
        }
    }

    /// Cursor after the last batch returned by [`next_batch`](Self::next_batch).
    pub fn cursor(&self) -> &DataCursor {
        &self.cursor
    }

    /// Bad rows skipped up to the last returned batch.
    pub fn bad_rows(&self) -> &BadRowStats {
        &self.cursor.bad_rows
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Dropping the receiver makes the thread's next `send` fail, ending it.
        self.rx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

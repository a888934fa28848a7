//! Weighted mixing of several sources: each row comes from a source drawn with
//! probability proportional to its weight among the sources not yet exhausted.
//! Deterministic for a seed; the generator state is part of the cursor.

use crate::error::DataError;
use crate::rng::SplitMix64;
use crate::row::RowResult;
use crate::source::{Source, SourcePosition};

/// Sources and their weights.
pub struct Mixture {
    sources: Vec<Source>,
    weights: Vec<f64>,
    rng: SplitMix64,
}

impl Mixture {
    /// Mixes `sources` by `weights` (same length, positive) from generator state `rng`.
    pub fn new(sources: Vec<Source>, weights: Vec<f64>, rng: SplitMix64) -> Self {
        Mixture {
            sources,
            weights,
            rng,
        }
    }

    /// Generator state.
    pub fn rng(&self) -> SplitMix64 {
        self.rng
    }

    /// Positions of all sources.
    pub fn positions(&self) -> Vec<SourcePosition> {
        self.sources.iter().map(Source::position).collect()
    }

    /// The next `(source index, row)`; `None` when every source is exhausted.
    pub fn next_row(&mut self) -> Result<Option<(usize, RowResult)>, DataError> {
        loop {
            let active: Vec<usize> = (0..self.sources.len())
                .filter(|&i| !self.sources[i].position().exhausted)
                .collect();
            let total: f64 = active.iter().map(|&i| self.weights[i]).sum();
            if active.is_empty() || total <= 0.0 {
                return Ok(None);
            }
            let mut target = self.rng.next_f64() * total;
            let mut pick = active[active.len() - 1];
            for &i in &active {
                if target < self.weights[i] {
                    pick = i;
                    break;
                }
                target -= self.weights[i];
            }
            if let Some(row) = self.sources[pick].next_row()? {
                return Ok(Some((pick, row)));
            }
        }
    }
}

//! Data-parallel sharding: rank `index` of `count` keeps every `count`-th row
//! of the mixed row stream (rows it does not own are read but not tokenized),
//! so ranks see disjoint samples and each row is counted by one rank only.

use serde::{Deserialize, Serialize};

/// This process's share of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based rank.
    pub index: usize,
    /// Number of ranks (≥ 1).
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Whether the row with 0-based stream position `row` belongs to this shard.
    pub fn owns(&self, row: u64) -> bool {
        self.count <= 1 || row % self.count as u64 == self.index as u64
    }

    /// Whether `index < count` and `count >= 1`.
    pub fn is_valid(&self) -> bool {
        self.count >= 1 && self.index < self.count
    }
}

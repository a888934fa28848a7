//! The merge report (`merge_report.json`, and a table on stderr): per tensor kind, how large
//! the merged update is next to the base weights, and for BF16 / FP8 output how much of it
//! survived the rounding to the stored dtype.

use super::rounding::Rounding;
use super::tensor::Sums;
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The report's file name in the output directory.
pub const REPORT_FILE: &str = "merge_report.json";

/// The kind of release tensor `name`: its projection with layer indices and expert ids dropped
/// (`layers.3.attn.wq_a.weight` → `attn.wq_a`, `mtp.0.ffn.experts.7.w1.weight` →
/// `mtp.ffn.experts.w1`).
pub fn kind_of(name: &str) -> String {
    let parts: Vec<&str> = name
        .split('.')
        .filter(|p| p.parse::<usize>().is_err())
        .collect();
    let parts = match parts.as_slice() {
        ["layers", rest @ ..] => rest,
        all => all,
    };
    let parts = match parts {
        [rest @ .., "weight"] => rest,
        all => all,
    };
    parts.join(".")
}

/// One tensor kind.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KindReport {
    /// Kind (see [`kind_of`]).
    pub kind: String,
    /// Release matrices merged.
    pub matrices: usize,
    /// How they are stored: `f32`, `bf16`, `fp8-block`, `fp4-group`.
    pub stored: String,
    /// ‖ΔW‖ / ‖W‖ over the kind (square roots of sums of squares).
    pub rel_delta: f64,
    /// ⟨Q(W+ΔW) − Q(W), ΔW⟩ / ‖ΔW‖²: the fraction of ΔW the stored weights moved along
    /// (1: all of it; `None` for F32 output).
    pub survived: Option<f64>,
    /// ‖Q(W+ΔW) − (W+ΔW)‖ / ‖ΔW‖: rounding error of the merged weights next to the update.
    pub requant_error: Option<f64>,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MergeReport {
    /// The base model directory.
    pub base: PathBuf,
    /// The adapter (LoRA checkpoint) directory.
    pub adapter: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// Output dtype (`fp8`, `bf16`, `f32`).
    pub dtype: String,
    /// Content hash of the base.
    pub base_hash: String,
    /// The base hash `adapter.json` records.
    pub adapter_base_hash: String,
    /// Release tensors merged (changed).
    pub merged: usize,
    /// Release tensors copied unchanged.
    pub copied: usize,
    /// Per kind, sorted by kind.
    pub kinds: Vec<KindReport>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Sums per kind while the merge runs.
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<String, (Rounding, usize, Sums)>);

impl Tally {
    /// Adds merged matrix `name`.
    pub fn add(&mut self, name: &str, rounding: Rounding, sums: Sums) {
        let e = self
            .0
            .entry(kind_of(name))
            .or_insert((rounding, 0, Sums::default()));
        e.1 += 1;
        e.2 = e.2 + sums;
    }

    /// The per-kind report.
    pub fn kinds(&self) -> Vec<KindReport> {
        self.0
            .iter()
            .map(|(kind, (r, n, s))| {
                let rounded = *r != Rounding::None;
                KindReport {
                    kind: kind.clone(),
                    matrices: *n,
                    stored: r.label().to_string(),
                    rel_delta: (s.d2 / s.w2).sqrt(),
                    survived: rounded.then(|| s.moved / s.d2),
                    requant_error: rounded.then(|| (s.err2 / s.d2).sqrt()),
                }
            })
            .collect()
    }
}

impl MergeReport {
    /// Writes `merge_report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let p = dir.join(REPORT_FILE);
        std::fs::write(&p, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", p.display()))
    }

    /// The per-kind table, one line per kind.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut t = format!(
            "{:<32} {:>8} {:>10} {:>11} {:>9} {:>13}\n",
            "kind", "matrices", "stored", "|dW|/|W|", "survived", "requant/|dW|"
        );
        for k in &self.kinds {
            let _ = writeln!(
                t,
                "{:<32} {:>8} {:>10} {:>11.3e} {:>9} {:>13}",
                k.kind,
                k.matrices,
                k.stored,
                k.rel_delta,
                opt(k.survived),
                opt(k.requant_error)
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::kind_of;

    #[test]
    fn kinds_drop_indices() {
        assert_eq!(kind_of("layers.3.attn.wq_a.weight"), "attn.wq_a");
        assert_eq!(
            kind_of("layers.0.ffn.experts.7.w1.weight"),
            "ffn.experts.w1"
        );
        assert_eq!(kind_of("mtp.0.attn.wq_b.weight"), "mtp.attn.wq_b");
        assert_eq!(kind_of("mtp.0.e_proj.weight"), "mtp.e_proj");
        assert_eq!(kind_of("layers.2.hc_attn_fn"), "hc_attn_fn");
        assert_eq!(kind_of("head.weight"), "head");
    }
}

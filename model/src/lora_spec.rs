//! Which projections a LoRA run adapts (the `[lora]` recipe section): target shorthands and
//! globs over release names, per-target ranks, the scale `α/r` (rsLoRA: `α/√r`), the seeded
//! Kaiming-uniform start of `A`, and the checkpoint names of adapter tensors.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Target shorthands: each expands to release-name patterns ([`LoraSpec::targets`]).
pub const TARGET_GROUPS: [(&str, &[&str]); 6] = [
    (
        "attention",
        &[
            "attn.wq_a",
            "attn.wq_b",
            "attn.wkv",
            "attn.wo_a",
            "attn.wo_b",
        ],
    ),
    (
        "compressor",
        &["attn.compressor.wkv", "attn.compressor.wgate"],
    ),
    (
        "indexer",
        &[
            "attn.indexer.wq_b",
            "attn.indexer.weights_proj",
            "attn.indexer.compressor.wkv",
            "attn.indexer.compressor.wgate",
        ],
    ),
    (
        "shared_experts",
        &[
            "ffn.shared_experts.w1",
            "ffn.shared_experts.w2",
            "ffn.shared_experts.w3",
        ],
    ),
    (
        "experts",
        &["ffn.experts.w1", "ffn.experts.w2", "ffn.experts.w3"],
    ),
    ("mtp", &["mtp.*.e_proj", "mtp.*.h_proj"]),
];

/// The default targets: attention, the shared expert and every routed expert.
pub const DEFAULT_TARGETS: [&str; 3] = ["attention", "shared_experts", "experts"];

/// Which projections get adapters, and how (the `[lora]` recipe section).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSpec {
    /// Rank `r`.
    pub rank: usize,
    /// `α`.
    pub alpha: f64,
    /// Dropout on the adapter's input (training only).
    pub dropout: f64,
    /// rsLoRA scaling `α / √r` instead of `α / r`.
    pub rslora: bool,
    /// Target patterns: shorthands of [`TARGET_GROUPS`], or globs over release names (`*` matches
    /// any run of characters) — a pattern matches a projection named `…x.weight` when it matches
    /// the whole name, the name without `.weight`, or a dot-separated tail of it. Routed experts
    /// match as one stack per layer, `layers.N.ffn.experts.w1` (`experts.*.w1` is accepted).
    pub targets: Vec<String>,
    /// Per-target rank overrides (target → rank, targets as in `targets`); the longest matching
    /// target wins.
    pub rank_pattern: Vec<(String, usize)>,
    /// Seed of the `A` initialisation.
    pub seed: u64,
}

impl Default for LoraSpec {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            rslora: false,
            targets: DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
            rank_pattern: Vec::new(),
            seed: 0,
        }
    }
}

/// `pattern` (with `*`) matches all of `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A target's patterns: a shorthand's, or the target itself.
fn expand(target: &str) -> Vec<String> {
    match TARGET_GROUPS.iter().find(|(g, _)| *g == target) {
        Some((_, pats)) => pats.iter().map(|p| p.to_string()).collect(),
        None => vec![target.to_string()],
    }
}

/// Whether `pattern` names the projection `name` (see [`LoraSpec::targets`]).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.replace("experts.*.", "experts.");
    let pattern = pattern.strip_suffix(".weight").unwrap_or(&pattern);
    let name = name.strip_suffix(".weight").unwrap_or(name);
    glob(pattern, name) || glob(&format!("*.{pattern}"), name)
}

impl LoraSpec {
    /// The target patterns with shorthands expanded.
    pub fn patterns(&self) -> Vec<String> {
        self.targets.iter().flat_map(|t| expand(t)).collect()
    }

    /// The rank of the adapter of projection `name` (release name, or a stack name), or `None`
    /// when no target names it.
    pub fn rank_for(&self, name: &str) -> Option<usize> {
        if !self.patterns().iter().any(|p| pattern_matches(p, name)) {
            return None;
        }
        let over = self
            .rank_pattern
            .iter()
            .filter(|(p, _)| expand(p).iter().any(|p| pattern_matches(p, name)))
            .max_by_key(|(p, _)| p.len());
        Some(over.map_or(self.rank, |(_, r)| *r))
    }

    /// The scale `s` of a rank-`r` adapter.
    pub fn scale(&self, r: usize) -> f64 {
        let r = r as f64;
        self.alpha / if self.rslora { r.sqrt() } else { r }
    }

    /// Checks the values a recipe gave.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("`rank` must be ≥ 1".into());
        }
        if let Some((p, _)) = self.rank_pattern.iter().find(|(_, r)| *r == 0) {
            return Err(format!("`rank_pattern.{p}` must be ≥ 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!(
                "`alpha` must be a finite number > 0, got {}",
                self.alpha
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("`dropout` must be in [0, 1), got {}", self.dropout));
        }
        if self.targets.is_empty() {
            return Err("`targets` is empty: name at least one projection".into());
        }
        Ok(())
    }

    /// Kaiming-uniform `A` values `[g, in, r]` (bound `1/√in`) for the adapter named `name`,
    /// seeded by the spec's seed and the name (the same adapter gets the same start in every run).
    pub fn init_a(&self, name: &str, g: usize, inp: usize, r: usize) -> Vec<f32> {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ self.seed;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let mut rng = StdRng::seed_from_u64(h);
        let bound = (inp.max(1) as f64).powf(-0.5) as f32;
        (0..g * inp * r)
            .map(|_| rng.random_range(-bound..=bound))
            .collect()
    }
}

/// The checkpoint names of the adapter of projection `name` (`….weight` or a stack name).
pub fn adapter_names(name: &str) -> [String; 2] {
    let stem = name.strip_suffix(".weight").unwrap_or(name);
    [
        format!("{stem}.lora_A.weight"),
        format!("{stem}.lora_B.weight"),
    ]
}

/// Whether `name` is an adapter tensor.
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_release_names() {
        let spec = LoraSpec::default();
        assert_eq!(spec.rank_for("layers.3.attn.wq_a.weight"), Some(16));
        assert_eq!(spec.rank_for("mtp.0.attn.wo_a.weight"), Some(16));
        assert_eq!(spec.rank_for("layers.3.ffn.experts.w2"), Some(16));
        assert_eq!(
            spec.rank_for("layers.3.ffn.shared_experts.w1.weight"),
            Some(16)
        );
        assert_eq!(spec.rank_for("layers.3.attn.compressor.wkv.weight"), None);
        assert_eq!(spec.rank_for("layers.3.attn.indexer.wq_b.weight"), None);
        assert_eq!(spec.rank_for("layers.3.ffn.gate.weight"), None);
        assert_eq!(spec.rank_for("head.weight"), None);
        let spec = LoraSpec {
            targets: vec!["layers.1.*.wq_b".into(), "experts.*.w1".into()],
            rank_pattern: vec![("experts".into(), 2), ("layers.*.ffn.experts.w1".into(), 4)],
            ..LoraSpec::default()
        };
        assert_eq!(spec.rank_for("layers.1.attn.wq_b.weight"), Some(16));
        assert_eq!(spec.rank_for("layers.1.attn.indexer.wq_b.weight"), Some(16));
        assert_eq!(spec.rank_for("layers.0.attn.wq_b.weight"), None);
        assert_eq!(spec.rank_for("layers.0.ffn.experts.w1"), Some(4));
        assert_eq!(spec.rank_for("layers.0.ffn.experts.w3"), None);
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b", "ab.c") && glob("*", ""));
    }

    #[test]
    fn scale_and_init() {
        let s = LoraSpec {
            rank: 4,
            alpha: 8.0,
            ..LoraSpec::default()
        };
        assert_eq!(s.scale(4), 2.0);
        assert_eq!(
            LoraSpec {
                rslora: true,
                ..s.clone()
            }
            .scale(4),
            4.0
        );
        let a = s.init_a("x.lora_A.weight", 1, 100, 4);
        assert!(a.iter().all(|v| v.abs() <= 0.1) && a.iter().any(|v| v.abs() > 0.05));
        assert_eq!(a, s.init_a("x.lora_A.weight", 1, 100, 4));
        assert_ne!(a, s.init_a("y.lora_A.weight", 1, 100, 4));
    }
}

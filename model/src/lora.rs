//! LoRA (Hu et al., 2021): a frozen projection `W` learns a low-rank update,
//! `y = W x + s · B(A x)` with `A` `[r, in]`, `B` `[out, r]` and `s = α / r` (rsLoRA, Kalajdzievski
//! 2023: `s = α / √r`). `A` starts Kaiming-uniform (bound `1/√in`, as PEFT), `B` at zero, so the
//! adapted model starts exactly at its base.
//!
//! [`LoraSpec`] says which projections get adapters and with what rank (the `[lora]` recipe
//! section); [`Lora`] adapts one projection, [`LoraStack`] a stack of them applied batch-wise: the
//! routed experts' `[E, in, out]` stacks (each expert its own `A`, `B`, used only by the tokens
//! routed to it) and `wo_a`'s groups. Adapters are stored Burn-style (`A` `[in, r]`, `B`
//! `[r, out]`; stacks `[G, in, r]`, `[G, r, out]`) and saved in checkpoint orientation by the
//! named walk ([`crate::named`]) under `{projection}.lora_A.weight` / `.lora_B.weight`.

use crate::error::ModelError;
use crate::precision;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};
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

/// Inverted dropout on the adapter input, only while autodiff records (training).
fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
    x * keep.div_scalar(1.0 - p)
}

/// The adapter of one projection.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `A` `[in, r]` (the checkpoint's `lora_A` `[r, in]`, transposed).
    pub a: Param<Tensor<B, 2>>,
    /// `B` `[r, out]` (the checkpoint's `lora_B` `[out, r]`, transposed).
    pub b: Param<Tensor<B, 2>>,
    /// `s`.
    pub scale: f64,
    /// Input dropout probability.
    pub dropout: f64,
}

impl<B: Backend> Lora<B> {
    /// From Burn-orientation values `a` `[in, r]` and `b` `[r, out]`.
    pub fn new(
        a: Vec<f32>,
        b: Vec<f32>,
        dims: [usize; 3],
        scale: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let [inp, r, out] = dims;
        let t =
            |v, s: [usize; 2]| Param::from_tensor(Tensor::from_data(TensorData::new(v, s), device));
        Self {
            a: t(a, [inp, r]),
            b: t(b, [r, out]),
            scale,
            dropout,
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// `s · B(A x)` over the rows of `x` `[rows, in]`, multiplied by `mm` (the projection's own
    /// matmul: at the compute precision, or f32).
    pub fn delta(
        &self,
        x: Tensor<B, 2>,
        mm: fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let h = mm(dropout(x, self.dropout), self.a.val());
        mm(h, self.b.val()).mul_scalar(self.scale)
    }

    /// The weight update `s · A B` in Burn orientation `[in, out]` (for merging).
    pub fn merged_delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

/// Adapters of a stack of projections (`[G, in, out]`), one per member, applied batch-wise.
#[derive(Module, Debug)]
pub struct LoraStack<B: Backend> {
    /// `A` `[G, in, r]` (the checkpoint's `lora_A` `[G, r, in]`).
    pub a: Param<Tensor<B, 3>>,
    /// `B` `[G, r, out]` (the checkpoint's `lora_B` `[G, out, r]`).
    pub b: Param<Tensor<B, 3>>,
    /// `s`.
    pub scale: f64,
    /// Input dropout probability.
    pub dropout: f64,
}

impl<B: Backend> LoraStack<B> {
    /// From Burn-orientation values `a` `[G, in, r]` and `b` `[G, r, out]`.
    pub fn new(
        a: Vec<f32>,
        b: Vec<f32>,
        dims: [usize; 4],
        scale: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let [g, inp, r, out] = dims;
        let t =
            |v, s: [usize; 3]| Param::from_tensor(Tensor::from_data(TensorData::new(v, s), device));
        Self {
            a: t(a, [g, inp, r]),
            b: t(b, [g, r, out]),
            scale,
            dropout,
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.a.dims()[2]
    }

    /// `s · B_g(A_g x)` for `x` `[G', rows, in]`, where member `members[i]` adapts batch `i`
    /// (`None`: all members in order).
    pub fn delta(&self, x: Tensor<B, 3>, members: Option<&[usize]>) -> Tensor<B, 3> {
        let (mut a, mut b) = (self.a.val(), self.b.val());
        if let Some(m) = members {
            let ids: Vec<i64> = m.iter().map(|&e| e as i64).collect();
            let ids = crate::util::int_tensor_from::<B, 1>(ids, [m.len()], &a.device());
            a = a.select(0, ids.clone());
            b = b.select(0, ids);
        }
        let h = precision::matmul(dropout(x, self.dropout), a);
        precision::matmul(h, b).mul_scalar(self.scale)
    }

    /// `s · A_g B_g` `[G, in, out]` (for merging).
    pub fn merged_delta(&self) -> Tensor<B, 3> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

/// Builds adapters while a model loads: new ones (`A` Kaiming-uniform, `B` zero) or, when
/// resuming, the values saved in a checkpoint.
pub struct LoraBuilder<'a> {
    /// Which projections, which ranks.
    pub spec: &'a LoraSpec,
    /// Saved adapters (checkpoint orientation, names `{projection}.lora_A.weight`), if resuming.
    pub saved: Option<&'a dyn crate::WeightSource>,
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

/// An adapter's `A` and `B` values (Burn orientation) and its rank.
type Factors = (Vec<f32>, Vec<f32>, usize);

impl LoraBuilder<'_> {
    /// The `[g, in, r]` / `[g, r, out]` values of the adapter of `name`, or `None` when not
    /// targeted.
    fn values(
        &self,
        name: &str,
        g: usize,
        inp: usize,
        out: usize,
    ) -> Result<Option<Factors>, ModelError> {
        let Some(r) = self.spec.rank_for(name) else {
            return Ok(None);
        };
        let [an, bn] = adapter_names(name);
        let Some(src) = self.saved else {
            return Ok(Some((
                self.spec.init_a(&an, g, inp, r),
                vec![0.0; g * r * out],
                r,
            )));
        };
        // Saved as [g, r, in] and [g, out, r] (g = 1: plain matrices).
        let shape = |a: usize, b: usize| if g == 1 { vec![a, b] } else { vec![g, a, b] };
        let a = src.tensor_f32(&an, &shape(r, inp))?;
        let b = src.tensor_f32(&bn, &shape(out, r))?;
        let t = |v: Vec<f32>, rows: usize, cols: usize| {
            v.chunks_exact((rows * cols).max(1))
                .flat_map(|m| crate::linear::transposed(m, rows, cols))
                .collect::<Vec<f32>>()
        };
        Ok(Some((t(a, r, inp), t(b, out, r), r)))
    }

    /// The adapter of the projection `name` (`[in] → [out]`), if targeted.
    pub fn linear<B: Backend>(
        &self,
        name: &str,
        inp: usize,
        out: usize,
        device: &B::Device,
    ) -> Result<Option<Lora<B>>, ModelError> {
        Ok(self.values(name, 1, inp, out)?.map(|(a, b, r)| {
            Lora::new(
                a,
                b,
                [inp, r, out],
                self.spec.scale(r),
                self.spec.dropout,
                device,
            )
        }))
    }

    /// The adapters of the stack `name` of `g` projections `[in] → [out]`, if targeted.
    pub fn stack<B: Backend>(
        &self,
        name: &str,
        g: usize,
        inp: usize,
        out: usize,
        device: &B::Device,
    ) -> Result<Option<LoraStack<B>>, ModelError> {
        Ok(self.values(name, g, inp, out)?.map(|(a, b, r)| {
            LoraStack::new(
                a,
                b,
                [g, inp, r, out],
                self.spec.scale(r),
                self.spec.dropout,
                device,
            )
        }))
    }
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

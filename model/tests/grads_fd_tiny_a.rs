//! Gradients through the model (Burn autodiff) against central finite differences, on the
//! `tiny_a` weights, everything in f64, fake quantization off, sparse (indexer top-k) attention.
//!
//! Unlike `grads_tiny_b` (which compares against an external reference), this checks the
//! backward pass against the forward pass itself: for a deterministic sample of entries of every
//! parameter kind (release name with the layer / expert index wildcarded), `(L(w+h) − L(w−h)) /
//! 2h` must equal the autodiff gradient. Two losses: the mean next-token cross-entropy (logits
//! 0..s−1 against ids 1..s) and the MTP cross-entropy (`mtp_logits[0]` 0..s−2 against ids 2..s).
//!
//! The sequence is the fixture's first 136 tokens: the ratio-4 (CSA) layers then have 34
//! compressed blocks of which the indexer keeps 8, the ratio-128 (HCA) layer has one complete
//! block (visible from position 127, which is inside the loss), and the 16-token window runs over
//! 9 chunks, the last one partial.
//!
//! Parameters whose only effect is a discrete choice (the lightning indexer — its selection runs
//! on detached inputs — and the router's `gate.bias`) must have no autodiff gradient and a finite
//! difference of exactly zero unless the ±h perturbation flips a top-k choice. Parameters that
//! cannot reach a loss (the MTP block for the main loss; the main `norm`/`hc_head` for the MTP
//! loss) must have no gradient either.

mod common;
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{fixture, read, use_f64};
use std::collections::BTreeMap;
use std::time::Instant;
use v4_model::named::NamedParam;
use v4_model::{AttentionMode, ForwardOptions, MapSource, ModelConfig, V4Model};

type AD = Autodiff<Flex>;

/// Tokens used (see the module docs for why 136).
const SEQ: usize = 136;
/// Entries sampled per kind at random (besides the largest-|grad| one).
const RANDOM_PER_KIND: usize = 2;
/// Relative finite-difference step: h = STEP · max(|w|, 1).
///
/// The central difference's error is h²·|L'''|/6 (truncation) plus δL/h (the f64 forward's own
/// rounding noise δL, measured at ~2–3 ulp of L ≈ 6, i.e. ~2.5e-15: the observed errors scale as
/// 1/h from h = 1e-6 to 1e-4, so rounding dominates throughout). h = 1e-4 would be 10× more
/// accurate but then ±h flips a few indexer/router top-k choices (5 of 130 entries); at 1e-5
/// none flip and the worst absolute error is ~2.5e-10.
const STEP: f64 = 1e-5;

/// Pass threshold for |fd − ad|: 1e-6 relative to the larger of |fd|, |ad| (a backward bug is
/// typically ≥ 1e-3 relative; the observed worst for entries with a non-negligible gradient is
/// ~1e-6 for small HCA-compressor gradients and ~1e-8 for the largest-|grad| picks), plus the
/// rounding floor 16·ε·|L| / h (16 ulps of loss noise over the step, ≈ 2e-9 here, ~8× the
/// largest absolute error seen). An entry with a zero gradient must therefore have |fd| ≲ 2e-9.
fn tolerance(fd: f64, ad: f64, loss: f64, h: f64) -> f64 {
    1e-6 * fd.abs().max(ad.abs()) + 16.0 * f64::EPSILON * loss.abs() / h
}

/// Fake quant off, indexer top-k on; everything else (expert FP4 QAT — straight-through, so not
/// the forward's derivative — and the auxiliary losses) at its default, off.
fn opts() -> ForwardOptions {
    ForwardOptions {
        fake_quant: false,
        attention: AttentionMode::Sparse,
        ..Default::default()
    }
}

fn f64s<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

fn ce<BB: Backend>(logits: Tensor<BB, 3>, targets: Tensor<BB, 2, Int>) -> Tensor<BB, 1> {
    let [b, s, v] = logits.dims();
    let lp = log_softmax(logits.reshape([b * s, v]), 1);
    lp.gather(1, targets.reshape([b * s, 1])).mean().neg()
}

fn ids<BB: Backend>(v: &[i64]) -> Tensor<BB, 2, Int> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), [1, v.len()]),
        &Default::default(),
    )
}

/// The loss from the main logits (`mtp` false) or the first MTP block's logits.
fn loss_of<BB: Backend>(lm: Tensor<BB, 3>, mtp: bool, ids: Tensor<BB, 2, Int>) -> Tensor<BB, 1> {
    let s = ids.dims()[1];
    if mtp {
        ce(lm.slice_dim(1, 0..s - 2), ids.slice([0..1, 2..s]))
    } else {
        ce(lm.slice_dim(1, 0..s - 1), ids.slice([0..1, 1..s]))
    }
}

/// Evaluates the loss of `m` re-running only blocks `start..` from the cached input streams of
/// block `start` (`cache[n]` = streams entering block n, `cache[L]` = final streams); `start` 0
/// re-embeds. A parameter of block n cannot change `cache[..=n]`, so this is the full forward.
fn staged_loss(
    m: &V4Model<Flex>,
    cache: &[Tensor<Flex, 4>],
    start: usize,
    ids: &Tensor<Flex, 2, Int>,
    mtp: bool,
) -> f64 {
    let mut x = if start == 0 {
        m.embed_streams(ids.clone())
    } else {
        cache[start].clone()
    };
    for layer in &m.layers[start..] {
        x = layer.forward(x, ids.clone(), opts());
    }
    let logits = if mtp {
        m.mtp_logits(0, x, ids.clone(), opts()).1
    } else {
        m.logits(x)
    };
    f64s(loss_of(logits, mtp, ids.clone()))[0]
}

/// Sets one entry (flat index in the stored layout) of one parameter.
struct SetEntry {
    id: ParamId,
    index: usize,
    value: f64,
}

impl ModuleMapper<Flex> for SetEntry {
    fn map_float<const D: usize>(
        &mut self,
        param: Param<Tensor<Flex, D>>,
    ) -> Param<Tensor<Flex, D>> {
        if param.id != self.id {
            return param;
        }
        let (id, t, mapper) = param.consume();
        let dims = t.dims();
        let mut v = f64s(t);
        v[self.index] = self.value;
        let t = Tensor::from_data(TensorData::new(v, dims), &Default::default());
        Param::from_mapped_value(id, t, mapper)
    }
}

struct ParamInfo {
    name: String,
    kind: String,
    id: ParamId,
    /// First block whose output the parameter can change (`L` = after the trunk).
    start: usize,
    values: Vec<f64>,
    /// Autodiff gradient (stored layout), `None` when the parameter got none.
    grad: Option<Vec<f64>>,
}

/// The kind of a parameter: its release name with `layers.N.` / the MTP block prefix and expert
/// indices wildcarded; compressors are split by ratio (CSA overlapping vs HCA).
fn kind_of(name: &str, ratio_of_block: &dyn Fn(&str) -> usize) -> String {
    const BLOCK_PARTS: [&str; 6] = [
        "attn.",
        "ffn.",
        "attn_norm",
        "ffn_norm",
        "hc_attn",
        "hc_ffn",
    ];
    let mut parts: Vec<&str> = name.split('.').collect();
    let block = match parts.first() {
        Some(&"layers") => true,
        Some(&"mtp") => {
            let rest = parts.get(2..).unwrap_or_default().join(".");
            BLOCK_PARTS.iter().any(|p| rest.starts_with(p))
        }
        _ => false,
    };
    let mut kind = if block {
        parts[1] = "*";
        parts[0] = "blk";
        parts.join(".")
    } else if parts[0] == "mtp" {
        parts[1] = "*";
        parts.join(".")
    } else {
        name.to_string()
    };
    let mut parts: Vec<String> = kind.split('.').map(str::to_string).collect();
    for i in 1..parts.len() {
        if parts[i - 1] == "experts" && parts[i].parse::<usize>().is_ok() {
            parts[i] = "*".into();
        }
    }
    kind = parts.join(".");
    if block && name.contains("attn.compressor.") {
        kind = format!("{kind} (ratio {})", ratio_of_block(name));
    }
    kind
}

/// Discrete-choice parameters: no gradient by construction.
fn no_grad_kind(kind: &str) -> bool {
    kind.contains(".indexer.") || kind.ends_with("gate.bias")
}

/// Parameters that can influence the loss at all.
fn reaches(name: &str, mtp: bool) -> bool {
    if mtp {
        name != "norm.weight" && !name.starts_with("hc_head_")
    } else {
        !name.starts_with("mtp.")
    }
}

/// splitmix64, for a deterministic sample.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct KindStats {
    checked: usize,
    skipped: usize,
    worst_rel: f64,
    worst_scaled: f64,
    worst_abs: f64,
}

fn check(mtp: bool) {
    use_f64();
    let t0 = Instant::now();
    let label = if mtp { "mtp loss" } else { "lm loss" };
    let cfg = ModelConfig::from_file(&fixture("tiny_a").join("config.json")).unwrap();
    let w = read(fixture("tiny_a").join("model.safetensors"));
    let src = MapSource {
        floats: w.floats,
        ints: w.ints,
    };
    let model = V4Model::<AD>::load(&cfg, &src, &Default::default()).unwrap();
    assert_eq!(model.embed.val().dtype(), DType::F64, "weights load as f64");
    let io = read(fixture("tiny_a").join("io.safetensors"));
    let (shape, all_ids) = &io.ints["input_ids"];
    assert!(shape[1] >= SEQ);
    let tokens = &all_ids[..SEQ];

    // Autodiff pass.
    let ids_ad = ids::<AD>(tokens);
    let out = model.forward(ids_ad.clone(), opts(), false, mtp);
    let lm = if mtp {
        out.mtp_logits[0].clone()
    } else {
        out.logits
    };
    let loss = loss_of(lm, mtp, ids_ad);
    assert_eq!(loss.dtype(), DType::F64);
    let loss0 = f64s(loss.clone().inner())[0];
    let grads = loss.backward();

    // Inner (no-autodiff) model and the cached streams entering each block.
    let inner = model.valid();
    let ids_in = ids::<Flex>(tokens);
    let n_layers = inner.layers.len();
    let mut cache = vec![inner.embed_streams(ids_in.clone())];
    for layer in &inner.layers {
        let x = layer.forward(cache.last().unwrap().clone(), ids_in.clone(), opts());
        cache.push(x);
    }
    let base = staged_loss(&inner, &cache, 0, &ids_in, mtp);
    assert!(
        (base - loss0).abs() <= 1e-12 * loss0.abs(),
        "staged forward {base} vs autodiff forward {loss0}"
    );
    let t_ad = t0.elapsed();

    // Parameters, their kinds and gradients.
    let ratio_of = |name: &str| -> usize {
        let id = if let Some(r) = name.strip_prefix("layers.") {
            r.split('.').next().unwrap().parse::<usize>().unwrap()
        } else {
            n_layers
        };
        cfg.compress_ratios[id]
    };
    let mut params = Vec::new();
    model.visit_named(&mut |name, p| {
        let (id, values, grad) = match p {
            NamedParam::Plain1(t) => (t.id, f64s(t.val()), t.val().grad(&grads).map(f64s)),
            NamedParam::Plain2(t) | NamedParam::Transposed(t) => {
                (t.id, f64s(t.val()), t.val().grad(&grads).map(f64s))
            }
            NamedParam::Grouped(t) | NamedParam::Experts(t) | NamedParam::Stacked(t) => {
                (t.id, f64s(t.val()), t.val().grad(&grads).map(f64s))
            }
            NamedParam::Int2(_) | NamedParam::Stored(_) => return,
        };
        let start = if name == "embed.weight" {
            0
        } else if let Some(r) = name.strip_prefix("layers.") {
            r.split('.').next().unwrap().parse().unwrap()
        } else {
            n_layers
        };
        params.push(ParamInfo {
            kind: kind_of(&name, &ratio_of),
            name,
            id,
            start,
            values,
            grad,
        });
    });

    // No gradient where none can flow.
    for p in &params {
        let max = p
            .grad
            .as_ref()
            .map(|g| g.iter().fold(0f64, |m, x| m.max(x.abs())))
            .unwrap_or(0.0);
        if no_grad_kind(&p.kind) || !reaches(&p.name, mtp) {
            assert!(
                max == 0.0,
                "{label}: {} should get no gradient, has max |g| {max:e}",
                p.name
            );
        }
    }

    // The sample: per kind, the largest-|grad| entry plus RANDOM_PER_KIND seeded ones, among
    // the parameters that reach the loss.
    let mut by_kind: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in params.iter().enumerate() {
        if reaches(&p.name, mtp) {
            by_kind.entry(p.kind.clone()).or_default().push(i);
        }
    }
    let mut rng = Rng(if mtp { 0x5eed_0002 } else { 0x5eed_0001 });
    let mut sample: Vec<(usize, usize)> = Vec::new();
    for members in by_kind.values() {
        let mut picks = Vec::new();
        let best = members
            .iter()
            .filter_map(|&i| {
                let g = params[i].grad.as_ref()?;
                let (j, v) = g
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
                Some((i, j, v.abs()))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2));
        if let Some((i, j, v)) = best {
            if v > 0.0 {
                picks.push((i, j));
            }
        }
        let entries: usize = members.iter().map(|&i| params[i].values.len()).sum();
        while picks.len() < (RANDOM_PER_KIND + 1).min(entries) {
            let i = members[rng.below(members.len())];
            let j = rng.below(params[i].values.len());
            if !picks.contains(&(i, j)) {
                picks.push((i, j));
            }
        }
        sample.extend(picks);
    }

    // Finite differences.
    let eval = |p: &ParamInfo, j: usize, value: f64| -> f64 {
        let mut set = SetEntry {
            id: p.id,
            index: j,
            value,
        };
        let m = inner.clone().map(&mut set);
        staged_loss(&m, &cache, p.start, &ids_in, mtp)
    };
    let central = |p: &ParamInfo, j: usize, h: f64| -> (f64, f64, f64) {
        let w0 = p.values[j];
        let (wp, wm) = (w0 + h, w0 - h);
        let (lp, lm) = (eval(p, j, wp), eval(p, j, wm));
        (
            (lp - lm) / (wp - wm),
            (lp - base) / (wp - w0),
            (base - lm) / (w0 - wm),
        )
    };
    let mut stats: BTreeMap<String, KindStats> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut worst_overall = (0f64, String::new());
    for &(i, j) in &sample {
        let p = &params[i];
        let gmax = p
            .grad
            .as_ref()
            .map(|g| g.iter().fold(0f64, |m, x| m.max(x.abs())))
            .unwrap_or(0.0);
        let ad = p.grad.as_ref().map(|g| g[j]).unwrap_or(0.0);
        let h = STEP * p.values[j].abs().max(1.0);
        let (fd, dp, dm) = central(p, j, h);
        let err = (fd - ad).abs();
        let tol = tolerance(fd, ad, base, h);
        let st = stats.entry(p.kind.clone()).or_default();
        if err <= tol {
            st.checked += 1;
            let rel = err / fd.abs().max(ad.abs()).max(1e-300);
            st.worst_rel = st.worst_rel.max(if err == 0.0 { 0.0 } else { rel });
            st.worst_scaled = st.worst_scaled.max(err / gmax.max(1e-300));
            st.worst_abs = st.worst_abs.max(err);
            if err / tol > worst_overall.0 {
                worst_overall = (err / tol, format!("{}[{j}]", p.name));
            }
            continue;
        }
        // Not within tolerance: is the forward smooth here? A backward bug leaves the forward
        // smooth: the central difference at h/4 agrees with the one at h (to h²·|L'''|), and the
        // one-sided asymmetry d+ − d− ≈ h·L'' shrinks 4× with the step. A top-k flip (a jump) or
        // a kink (ReLU, clamp) inside [w−h, w+h] breaks one or the other.
        let (fd4, dp4, dm4) = central(p, j, h / 4.0);
        let unstable = (fd4 - fd).abs() > tol.max(tolerance(fd4, ad, base, h / 4.0))
            || ((dp - dm) - 4.0 * (dp4 - dm4)).abs() > 4.0 * tolerance(fd4, ad, base, h / 4.0);
        eprintln!(
            "{label}: {}[{j}] w {:+.6e} ad {ad:+.9e} fd {fd:+.9e} fd(h/4) {fd4:+.9e} d+ {dp:+.6e} \
             d- {dm:+.6e} gmax {gmax:.3e}{}",
            p.name,
            p.values[j],
            if unstable {
                "  -> non-smooth, skipped"
            } else {
                "  -> MISMATCH"
            }
        );
        if unstable {
            st.skipped += 1;
        } else {
            failures.push(format!("{}[{j}]: ad {ad:e} fd {fd:e}", p.name));
        }
    }

    eprintln!(
        "\n{label}: L = {loss0:.12}, {} entries, {} kinds, {:.1}s (autodiff + cache {:.1}s)",
        sample.len(),
        stats.len(),
        t0.elapsed().as_secs_f64(),
        t_ad.as_secs_f64()
    );
    eprintln!(
        "{:<44} {:>7} {:>7} {:>11} {:>11} {:>11}",
        "kind", "checked", "skipped", "worst rel", "err/gmax", "abs err"
    );
    for (k, s) in &stats {
        eprintln!(
            "{k:<44} {:>7} {:>7} {:>11.2e} {:>11.2e} {:>11.2e}",
            s.checked, s.skipped, s.worst_rel, s.worst_scaled, s.worst_abs
        );
    }
    eprintln!(
        "worst err/tol {:.3} at {}",
        worst_overall.0, worst_overall.1
    );

    assert!(
        failures.is_empty(),
        "{label}: gradient mismatches:\n{}",
        failures.join("\n")
    );
    let skipped: usize = stats.values().map(|s| s.skipped).sum();
    assert!(
        skipped <= 3,
        "{label}: {skipped} entries skipped as non-smooth"
    );
    for (k, s) in &stats {
        assert!(s.checked >= 1, "{label}: no entry of {k} was checked");
    }
    assert_eq!(stats.len(), by_kind.len());
}

#[test]
fn lm_loss_gradients_match_finite_differences() {
    check(false);
}

#[test]
fn mtp_loss_gradients_match_finite_differences() {
    check(true);
}

//! The PEFT modules of a checkpoint's adapters: for each HF target its `lora_A` / `lora_B` in
//! PEFT's layout, its PEFT rank `R` and the α that keeps v4train's scale `s = spec.scale(r)`
//! (PEFT: `α / R`, rsLoRA `α / √R`).

use super::pack::{self, Half};
use super::targets::{hf_target, Kind};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use v4_model::lora::LoraSpec;

/// A row-major f32 tensor: (shape, values).
pub type Tensor = (Vec<usize>, Vec<f32>);

/// An adapter left out, and why: (stem, reason).
pub type Skipped = (String, &'static str);

/// One v4train adapter in checkpoint orientation.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// Its tensor names without `.lora_A.weight` / `.lora_B.weight`.
    pub stem: String,
    /// `lora_A` `[r, in]` (stacks `[G, r, in]`).
    pub a: Tensor,
    /// `lora_B` `[out, r]` (stacks `[G, out, r]`).
    pub b: Tensor,
}

/// An adapter with its HF kind and `(G, r, in, out)`.
type Part = (Kind, Adapter, [usize; 4]);

/// One PEFT LoRA module.
#[derive(Debug, Clone)]
pub struct PeftModule {
    /// Its entry of `target_modules` (a module path) or `target_parameters` (`module.param`).
    pub target: String,
    /// Listed in `target_parameters` (else `target_modules`).
    pub param: bool,
    /// Its tensors' key without `.lora_A.weight` (`base_model.model.…`).
    pub key: String,
    /// PEFT rank `R`.
    pub rank: usize,
    /// PEFT α.
    pub alpha: f64,
    /// `lora_A` `[R, in]` (3-D targets `[E·R, in]`).
    pub a: Tensor,
    /// `lora_B` `[out, R]` (3-D targets `[out, R·E]`).
    pub b: Tensor,
    /// The v4train adapters it carries (stems).
    pub sources: Vec<String>,
}

/// What a checkpoint's adapters become.
#[derive(Debug, Default)]
pub struct Plan {
    /// The PEFT modules, by target.
    pub modules: Vec<PeftModule>,
    /// Adapters with no HF home: (stem, reason).
    pub skipped: Vec<Skipped>,
}

/// The PEFT α for a v4train rank-`r` adapter exported at PEFT rank `rr`.
fn peft_alpha(spec: &LoraSpec, r: usize, rr: usize) -> f64 {
    let k = rr as f64 / r as f64;
    spec.alpha * if spec.rslora { k.sqrt() } else { k }
}

/// `(G, r, in, out)` of `ad` (`G = 1` for plain matrices), checked for consistency and against
/// the rank `spec` gives it.
fn dims(ad: &Adapter, spec: &LoraSpec) -> Result<[usize; 4]> {
    let (sa, sb) = (&ad.a.0, &ad.b.0);
    let d = match (sa.as_slice(), sb.as_slice()) {
        ([r, i], [o, rb]) if r == rb => [1, *r, *i, *o],
        ([g, r, i], [gb, o, rb]) if r == rb && g == gb => [*g, *r, *i, *o],
        _ => bail!(
            "{0}.lora_A.weight {sa:?} and {0}.lora_B.weight {sb:?} are not a LoRA pair \
             ([r, in] / [out, r], or stacked [G, r, in] / [G, out, r])",
            ad.stem
        ),
    };
    match spec.rank_for(&ad.stem) {
        Some(r) if r == d[1] => Ok(d),
        Some(r) => bail!(
            "{}.lora_A.weight has rank {}, but adapter.json's [lora] gives it rank {r}",
            ad.stem,
            d[1]
        ),
        None => bail!(
            "{}: adapter.json's [lora] targets do not name this projection",
            ad.stem
        ),
    }
}

/// Requires `ad` stacked (`stacked`) or plain.
fn want(ad: &Adapter, stacked: bool) -> Result<()> {
    if (ad.a.0.len() == 3) != stacked {
        let what = if stacked {
            "stacked [G, r, in]"
        } else {
            "[r, in]"
        };
        bail!("{}.lora_A.weight {:?}: expected {what}", ad.stem, ad.a.0);
    }
    Ok(())
}

/// Maps every adapter to its PEFT module (or to the skipped list).
pub fn plan(adapters: Vec<Adapter>, spec: &LoraSpec) -> Result<Plan> {
    let mut out = Plan::default();
    let mut by_target: BTreeMap<String, Vec<Part>> = BTreeMap::new();
    for ad in adapters {
        let d = dims(&ad, spec)?;
        match hf_target(&ad.stem) {
            Ok(t) => by_target.entry(t.path).or_default().push((t.kind, ad, d)),
            Err(why) => out.skipped.push((ad.stem, why)),
        }
    }
    let has = |p: &str| by_target.contains_key(p);
    for (path, parts) in &by_target {
        let (kind, ad, d) = &parts[0];
        let (module, _) = path.rsplit_once('.').unwrap_or(("", path));
        let m = match kind {
            Kind::Linear | Kind::Param => {
                want(ad, false)?;
                PeftModule {
                    target: path.clone(),
                    param: *kind == Kind::Param,
                    key: format!(
                        "base_model.model.{}",
                        if *kind == Kind::Linear { path } else { module }
                    ),
                    rank: d[1],
                    alpha: spec.alpha,
                    a: ad.a.clone(),
                    b: ad.b.clone(),
                    sources: vec![ad.stem.clone()],
                }
            }
            Kind::GroupedOut => grouped(path, module, ad, *d, spec)?,
            Kind::ExpertsDown => {
                want(ad, true)?;
                let [e, r, inp, o] = *d;
                PeftModule {
                    target: path.clone(),
                    param: true,
                    key: format!("base_model.model.{module}"),
                    rank: r,
                    alpha: spec.alpha,
                    a: (vec![e * r, inp], ad.a.1.clone()),
                    b: (vec![o, r * e], pack::experts_b(&ad.b.1, e, o, r)),
                    sources: vec![ad.stem.clone()],
                }
            }
            Kind::ExpertsGate | Kind::ExpertsUp => {
                let nested = has(&format!("{module}.down_proj"));
                gate_up(path, module, nested, parts, spec)?
            }
        };
        out.modules.push(m);
    }
    Ok(out)
}

/// `wo_a`'s `G` group adapters as one rank-`G·r` adapter of `o_a_proj.weight`.
fn grouped(
    path: &str,
    module: &str,
    ad: &Adapter,
    d: [usize; 4],
    spec: &LoraSpec,
) -> Result<PeftModule> {
    want(ad, true)?;
    let [g, r, inp, o] = d;
    Ok(PeftModule {
        target: path.to_string(),
        param: true,
        key: format!("base_model.model.{module}"),
        rank: g * r,
        alpha: peft_alpha(spec, r, g * r),
        a: (vec![g * r, inp], ad.a.1.clone()),
        b: (vec![g * o, g * r], pack::block_diag(&ad.b.1, g, o, r)),
        sources: vec![ad.stem.clone()],
    })
}

/// `p` as one half of the fused gate/up adapter whose scale is that of rank `r_ref`.
fn half<'a>(p: Option<&'a Part>, spec: &LoraSpec, r_ref: usize) -> Option<Half<'a>> {
    p.map(|(_, ad, d)| Half {
        a: &ad.a.1,
        b: &ad.b.1,
        r: d[1],
        factor: (spec.scale(d[1]) / spec.scale(r_ref)) as f32,
    })
}

/// The experts' `w1` / `w3` adapters as one adapter of `gate_up_proj` (key under `base_layer`
/// when `down_proj` is adapted too: PEFT nests the second wrapper outside the first).
fn gate_up(
    path: &str,
    module: &str,
    nested: bool,
    parts: &[Part],
    spec: &LoraSpec,
) -> Result<PeftModule> {
    let find = |k: Kind| parts.iter().find(|p| p.0 == k);
    let (gate, up) = (find(Kind::ExpertsGate), find(Kind::ExpertsUp));
    let mut shape = None;
    for (_, ad, d) in parts {
        want(ad, true)?;
        let s = (d[0], d[2], d[3]);
        if *shape.get_or_insert(s) != s {
            bail!(
                "{}: [E, in, out] {s:?} differs from its gate/up partner's",
                ad.stem
            );
        }
    }
    let Some((e, inp, i)) = shape else {
        bail!("{path}: no gate/up adapter");
    };
    // The fused adapter takes the gate's scale (else the up's); the other half's B is rescaled.
    let r_ref = gate.or(up).map_or(1, |p| p.2[1]);
    let half = |p| half(p, spec, r_ref);
    let (a, b, rr) = pack::fuse_gate_up(half(gate), half(up), e, i, inp);
    let base = if nested { ".base_layer" } else { "" };
    Ok(PeftModule {
        target: path.to_string(),
        param: true,
        key: format!("base_model.model.{module}{base}"),
        rank: rr,
        alpha: peft_alpha(spec, r_ref, rr),
        a: (vec![e * rr, inp], a),
        b: (vec![2 * i, rr * e], pack::experts_b(&b, e, 2 * i, rr)),
        sources: parts.iter().map(|p| p.1.stem.clone()).collect(),
    })
}

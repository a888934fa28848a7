//! The sampling policy of generation: greedy (temperature 0) or temperature sampling restricted
//! to the `top_k` most likely tokens and the smallest set holding `top_p` of the probability
//! mass, renormalised. Each prompt has its own seeded generator, so a completion depends on the
//! seed and the prompt's index only, never on how prompts were batched.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 is greedy (argmax).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    /// Seed of the per-prompt generators.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the values (`name` prefixes the messages, e.g. `--temperature`).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "temperature must be a finite number ≥ 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }
}

/// A sampled token and its log-probability under the sampling policy (greedy: under the plain
/// softmax of the logits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// Token id.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
}

/// One prompt's sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// The sampler of prompt number `index`.
    pub fn new(params: SamplingParams, index: u64) -> Self {
        let mix = params.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            params,
            rng: StdRng::seed_from_u64(mix),
        }
    }

    /// Chooses the next token from `logits` (one row, f32).
    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        let p = &self.params;
        if p.temperature == 0.0 {
            let (token, _) =
                logits
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                        if v > best.1 {
                            (i, v)
                        } else {
                            best
                        }
                    });
            let logprob = log_softmax_at(logits, token, 1.0);
            return Sampled {
                token: token as u32,
                logprob,
            };
        }
        // Candidates by descending logit, cut by top-k, then by top-p on the tempered softmax.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let t = p.temperature;
        let max = logits[order[0]] as f64;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut keep = weights.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (n, w) in weights.iter().enumerate() {
                acc += w / total;
                if acc >= p.top_p {
                    keep = n + 1;
                    break;
                }
            }
        }
        let kept: f64 = weights[..keep].iter().sum();
        let mut u = self.rng.random::<f64>() * kept;
        let mut pick = keep - 1;
        for (n, w) in weights[..keep].iter().enumerate() {
            if u < *w {
                pick = n;
                break;
            }
            u -= w;
        }
        Sampled {
            token: order[pick] as u32,
            logprob: (weights[pick] / kept).ln() as f32,
        }
    }
}

/// `log softmax(logits / temperature)[i]`, in f64.
pub fn log_softmax_at(logits: &[f32], i: usize, temperature: f64) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse: f64 = logits
        .iter()
        .map(|&v| ((v as f64 - max) / temperature).exp())
        .sum::<f64>()
        .ln();
    ((logits[i] as f64 - max) / temperature - lse) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_reproducibility() {
        let logits = [0.0f32, 3.0, 1.0, 2.9, -5.0];
        let mut g = Sampler::new(SamplingParams::default(), 0);
        let s = g.sample(&logits);
        assert_eq!(s.token, 1);
        assert!((s.logprob - log_softmax_at(&logits, 1, 1.0)).abs() < 1e-7);
        // top_k 2: only tokens 1 and 3, probabilities renormalised over them
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: 5,
            ..Default::default()
        };
        let mut a = Sampler::new(p, 3);
        let mut seen = [0usize; 5];
        let mut draws = Vec::new();
        for _ in 0..2000 {
            let s = a.sample(&logits);
            seen[s.token as usize] += 1;
            let want = if s.token == 1 {
                1.0 / (1.0 + (-0.1f64).exp())
            } else {
                1.0 / (1.0 + 0.1f64.exp())
            };
            assert!((s.logprob as f64 - want.ln()).abs() < 1e-6);
            draws.push(s.token);
        }
        assert_eq!(seen[0] + seen[2] + seen[4], 0);
        assert!(seen[1] > 900 && seen[3] > 800, "{seen:?}");
        let mut b = Sampler::new(p, 3);
        assert!(draws.iter().all(|&t| b.sample(&logits).token == t));
        // top_p 0.5: token 1 alone holds > 0.5 of the mass after tempering at 0.1
        let q = SamplingParams {
            temperature: 0.1,
            top_p: 0.5,
            ..Default::default()
        };
        let s = Sampler::new(q, 0).sample(&logits);
        assert_eq!((s.token, s.logprob), (1, 0.0));
        assert!(SamplingParams { top_p: 0.0, ..q }.validate().is_err());
        assert!(SamplingParams {
            temperature: -1.0,
            ..q
        }
        .validate()
        .is_err());
    }
}

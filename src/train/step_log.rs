//! What a logged step reports: the stderr line, the `metrics.jsonl` record and the TensorBoard
//! scalars — losses, LR, gradient norm, throughput, and per MoE layer the expert load
//! (max / mean and min / mean, 1.0 = balanced) and the range of its selection bias.

use super::step::StepResult;
use crate::metrics::StepMetrics;
use burn::tensor::backend::Backend;
use v4_model::V4Model;

/// One MoE block's balance figures.
struct LayerBalance {
    name: String,
    load_max: f64,
    load_min: f64,
    bias: Option<(f32, f32)>,
}

/// A logged step.
pub struct StepLog<'a> {
    r: &'a StepResult,
    lr: f64,
    tokens_per_s: f64,
    mtp_weight: f64,
    layers: Vec<LayerBalance>,
}

impl<'a> StepLog<'a> {
    /// Gathers the figures of step result `r` (the model supplies the selection biases).
    pub fn new<B: Backend>(
        r: &'a StepResult,
        model: &V4Model<B>,
        lr: f64,
        tokens_per_s: f64,
        mtp_weight: f64,
    ) -> Self {
        let main = model.layers.len();
        let biases = model.balance_bias_ranges();
        let layers = r
            .loads
            .ratios()
            .into_iter()
            .enumerate()
            .map(|(i, (load_max, load_min))| LayerBalance {
                name: if i < main {
                    format!("layer_{i:02}")
                } else {
                    format!("mtp_{}", i - main)
                },
                load_max,
                load_min,
                bias: biases.get(i).copied().flatten(),
            })
            .collect();
        Self {
            r,
            lr,
            tokens_per_s,
            mtp_weight,
            layers,
        }
    }

    /// The stderr progress line (without step and ETA).
    pub fn line(&self) -> String {
        let r = self.r;
        let mut s = format!("loss {:.4}", r.loss);
        if let Some(m) = r.mtp_loss {
            s += &format!(" mtp {m:.4}");
        }
        if let Some(k) = r.indexer_kl {
            s += &format!(" indexer-kl {k:.4}");
        }
        s += &format!(" lr {:.3e} grad-norm {:.3}", self.lr, r.grad_norm);
        if let Some(m) = r.loads.worst_biased_ratio() {
            s += &format!(" load-max {m:.2}");
        }
        if r.samples_per_row != 1.0 {
            s += &format!(" samples/row {:.1}", r.samples_per_row);
        }
        s + &format!(" {:.0} tok/s", self.tokens_per_s)
    }

    /// The `metrics.jsonl` record, with `extra` appended.
    pub fn metrics(&self, step: u64, mut extra: Vec<(String, f64)>) -> StepMetrics {
        let r = self.r;
        let mut more: Vec<(String, f64)> = Vec::new();
        if r.mtp_loss.is_some() {
            more.push(("mtp_weight".into(), self.mtp_weight));
        }
        more.extend(r.indexer_kl.map(|v| ("indexer_kl".into(), v)));
        more.extend(r.balance.map(|v| ("balance_loss".into(), v)));
        more.extend(
            r.loads
                .worst_biased_ratio()
                .map(|v| ("expert_load_max".into(), v)),
        );
        more.push(("samples_per_row".into(), r.samples_per_row));
        if !r.applied {
            more.push(("skipped".into(), 1.0));
        }
        more.append(&mut extra);
        StepMetrics {
            step,
            loss: r.loss,
            lr: self.lr,
            grad_norm: r.grad_norm,
            tokens_per_s: self.tokens_per_s,
            mtp_loss: r.mtp_loss,
            extra: more,
        }
    }

    /// TensorBoard scalars: the metrics, then `moe/<layer>/{load_max,load_min,bias_min,bias_max}`.
    pub fn scalars(&self) -> Vec<(String, f32)> {
        let r = self.r;
        let mut v: Vec<(String, f32)> = vec![
            ("loss".into(), r.loss as f32),
            ("lr".into(), self.lr as f32),
            ("grad_norm".into(), r.grad_norm as f32),
            ("tokens_per_s".into(), self.tokens_per_s as f32),
        ];
        v.extend(r.mtp_loss.map(|m| ("mtp_loss".into(), m as f32)));
        v.extend(r.indexer_kl.map(|m| ("indexer_kl".into(), m as f32)));
        v.extend(r.balance.map(|m| ("balance_loss".into(), m as f32)));
        v.push(("samples_per_row".into(), r.samples_per_row as f32));
        for l in &self.layers {
            v.push((format!("moe/{}/load_max", l.name), l.load_max as f32));
            v.push((format!("moe/{}/load_min", l.name), l.load_min as f32));
            if let Some((lo, hi)) = l.bias {
                v.push((format!("moe/{}/bias_min", l.name), lo));
                v.push((format!("moe/{}/bias_max", l.name), hi));
            }
        }
        v
    }
}

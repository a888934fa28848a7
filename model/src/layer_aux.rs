//! Side outputs of a training forward pass, per block: the expert load that drives V4's
//! auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2, V4 keeps it with γ = 0.001), the
//! sequence-wise balance loss Σᵢ fᵢ·Pᵢ (V3 form, α applied by the trainer), and the lightning
//! indexer's KL loss (V3.2 DSA, applied to V4's CSA blocks).

use burn::tensor::{backend::Backend, Tensor};

/// What one block reports besides its output streams.
#[derive(Debug, Clone)]
pub struct LayerAux<B: Backend> {
    /// (token, slot) pairs routed to each routed expert in this forward pass.
    pub expert_load: Vec<u64>,
    /// The layer routes by score + selection bias (false: hash routing, no bias).
    pub biased: bool,
    /// Σᵢ fᵢ·Pᵢ averaged over sequences (without α), when
    /// [`ForwardOptions::balance_loss`](crate::ForwardOptions) is on and the layer is biased.
    pub balance_loss: Option<Tensor<B, 1>>,
    /// The indexer's KL loss (CSA blocks), when
    /// [`ForwardOptions::indexer_loss`](crate::ForwardOptions) is on.
    pub indexer_loss: Option<Tensor<B, 1>>,
}

/// Load of one MoE layer plus its optional balance loss.
#[derive(Debug, Clone)]
pub struct MoeAux<B: Backend> {
    /// (token, slot) pairs per routed expert.
    pub expert_load: Vec<u64>,
    /// Score-routed (biased) layer.
    pub biased: bool,
    /// Σᵢ fᵢ·Pᵢ (without α), when requested.
    pub balance_loss: Option<Tensor<B, 1>>,
}

/// max / mean and min / mean of a load vector (1.0 / 1.0 when perfectly balanced; (0, 0) when
/// nothing was routed).
pub fn load_ratios(load: &[u64]) -> (f64, f64) {
    let total: u64 = load.iter().sum();
    if load.is_empty() || total == 0 {
        return (0.0, 0.0);
    }
    let mean = total as f64 / load.len() as f64;
    let max = load.iter().copied().max().unwrap_or(0) as f64;
    let min = load.iter().copied().min().unwrap_or(0) as f64;
    (max / mean, min / mean)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratios() {
        assert_eq!(super::load_ratios(&[2, 2, 2, 2]), (1.0, 1.0));
        assert_eq!(super::load_ratios(&[8, 0, 0, 0]), (4.0, 0.0));
        assert_eq!(super::load_ratios(&[]), (0.0, 0.0));
    }
}

//! Expert dispatch (spec §2.8) for grouped expert matmuls: the (token, slot) pairs of a batch are
//! sorted by expert once, on the host, and laid out as capacity-padded segments — `cap` rows per
//! expert — so every projection of every expert is one batched matmul `[E, cap, d] × [E, d, I]`.
//!
//! Why padded segments: Burn 0.21 has no grouped GEMM, and the alternatives cost more. A loop
//! over experts slicing a sorted input (and, with stacked weights, slicing the weights) makes
//! autodiff allocate a zero buffer of the *whole* sliced tensor per expert in backward —
//! `O(E·N·d)`, and `O(E²·d·I)` for stacked weights; gathering each pair's weight matrix is
//! `O(N·k·d·I)`. A padded batch costs the padding and nothing else; every buffer is
//! `O(rows·d)`.
//!
//! Padding is bounded by rounds. A round takes up to `cap` pairs of each expert it covers, with
//! `cap = min(most pairs left, ⌈CAPACITY_FACTOR · pairs left / experts left⌉)`, so its rows
//! are at most `CAPACITY_FACTOR ×` the pairs it has plus one row per expert. The first round is
//! usually the only one (balanced routing, bias-balanced or random at init); when a few experts
//! are overloaded (hash routing of frequent tokens) their overflow goes to further rounds over
//! just those experts. A round over at least half of the experts uses the stacked weights as
//! they are (idle experts get zero rows); a smaller round gathers its experts' weights instead.

/// Capacity per expert relative to the mean pairs per expert of a round.
pub const CAPACITY_FACTOR: f64 = 2.0;

/// One batched matmul over `experts` × `cap` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The experts, in batch order; `None`: all experts `0..E`, the stacked weights as they are.
    pub experts: Option<Vec<usize>>,
    /// Rows per expert.
    pub cap: usize,
    /// For each of the `experts × cap` rows, the flat pair `token·k + slot` it computes;
    /// `None`: a padding row.
    pub rows: Vec<Option<usize>>,
}

/// Pairs grouped by expert: for each expert, the flat pair positions (`token·k + slot`) routed
/// to it, in token order. Ids outside `0..n_experts` are dropped.
pub fn group_by_expert(idx: &[i64], n_experts: usize) -> Vec<Vec<usize>> {
    let mut groups = vec![Vec::new(); n_experts];
    for (p, e) in idx.iter().enumerate() {
        if let Some(g) = usize::try_from(*e).ok().and_then(|e| groups.get_mut(e)) {
            g.push(p);
        }
    }
    groups
}

/// The rounds computing every pair of `idx` (flat `[tokens·k]` expert ids) over `n_experts`.
pub fn plan_rounds(idx: &[i64], n_experts: usize) -> Vec<Round> {
    let groups = group_by_expert(idx, n_experts);
    let mut next = vec![0usize; n_experts]; // pairs of each expert already placed
    let mut rounds = Vec::new();
    loop {
        let left: Vec<usize> = (0..n_experts)
            .filter(|&e| next[e] < groups[e].len())
            .collect();
        if left.is_empty() {
            return rounds;
        }
        let pairs: usize = left.iter().map(|&e| groups[e].len() - next[e]).sum();
        let most = left.iter().map(|&e| groups[e].len() - next[e]).max();
        let fair = (CAPACITY_FACTOR * pairs as f64 / left.len() as f64).ceil() as usize;
        let cap = most.unwrap_or(0).min(fair.max(1));
        let all = 2 * left.len() >= n_experts;
        let members: Vec<usize> = if all { (0..n_experts).collect() } else { left };
        let mut rows = Vec::with_capacity(members.len() * cap);
        for &e in &members {
            let take = (groups[e].len() - next[e]).min(cap);
            rows.extend(groups[e][next[e]..next[e] + take].iter().map(|&p| Some(p)));
            rows.extend(std::iter::repeat_n(None, cap - take));
            next[e] += take;
        }
        rounds.push(Round {
            experts: (!all).then_some(members),
            cap,
            rows,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keeps_token_order_within_each_expert() {
        // 3 tokens × top-2
        let idx = [2, 0, 0, 1, 2, 1];
        let g = group_by_expert(&idx, 4);
        assert_eq!(g, vec![vec![1, 2], vec![3, 5], vec![0, 4], vec![]]);
    }

    /// Every pair is computed exactly once, by a row of its own expert.
    fn check_cover(idx: &[i64], e: usize, rounds: &[Round]) {
        let mut seen = vec![0; idx.len()];
        for r in rounds {
            let members: Vec<usize> = r.experts.clone().unwrap_or_else(|| (0..e).collect());
            assert_eq!(r.rows.len(), members.len() * r.cap);
            for (i, row) in r.rows.iter().enumerate() {
                if let Some(p) = row {
                    assert_eq!(idx[*p] as usize, members[i / r.cap]);
                    seen[*p] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{seen:?}");
    }

    #[test]
    fn balanced_routing_is_one_round_over_the_stacked_weights() {
        // 8 tokens × top-2 over 4 experts: 4 pairs each.
        let idx: Vec<i64> = (0..16).map(|p| (p % 4) as i64).collect();
        let rounds = plan_rounds(&idx, 4);
        assert_eq!(rounds.len(), 1);
        assert_eq!((rounds[0].experts.clone(), rounds[0].cap), (None, 4));
        check_cover(&idx, 4, &rounds);
    }

    #[test]
    fn an_overloaded_expert_spills_into_a_small_round() {
        // Expert 0 gets 12 pairs, experts 1..3 get 2 each, expert 4..7 none: 18 pairs.
        let mut idx = vec![0i64; 12];
        idx.extend([1, 1, 2, 2, 3, 3]);
        let rounds = plan_rounds(&idx, 8);
        // ⌈2·18/4⌉ = 9 rows per expert over all 8 experts (4 of 8 have pairs), then the 3 left
        // of expert 0 alone with its gathered weights.
        assert_eq!(rounds.len(), 2);
        assert_eq!((rounds[0].experts.clone(), rounds[0].cap), (None, 9));
        assert_eq!(
            (rounds[1].experts.clone(), rounds[1].cap),
            (Some(vec![0]), 3)
        );
        check_cover(&idx, 8, &rounds);
        let rows: usize = rounds.iter().map(|r| r.rows.len()).sum();
        assert_eq!(rows, 8 * 9 + 3);
    }

    #[test]
    fn padding_stays_bounded_when_one_expert_takes_everything() {
        // 256 experts, 4096 pairs all on expert 7: a plain `[E, max]` padding would be 1M rows.
        let idx = vec![7i64; 4096];
        let rounds = plan_rounds(&idx, 256);
        check_cover(&idx, 256, &rounds);
        let rows: usize = rounds.iter().map(|r| r.rows.len()).sum();
        assert_eq!(rows, 4096);
        assert_eq!(rounds[0].experts, Some(vec![7]));
    }

    #[test]
    fn no_pairs_no_rounds() {
        assert!(plan_rounds(&[], 4).is_empty());
        // Out-of-range ids (never produced by the router) are not computed.
        assert!(plan_rounds(&[9, -1], 4).is_empty());
    }
}

//! Name filters for selective loading with [`crate::ModelDir::load_filtered`].

use std::ops::Range;

/// The block index of `layers.N.*` names.
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A filter accepting `layers.N.*` tensors with `N` in `range` (top-level and MTP tensors are
/// rejected; combine filters for those).
pub fn layer_range(range: Range<usize>) -> impl Fn(&str) -> bool {
    move |name| layer_of(name).is_some_and(|n| range.contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers() {
        assert_eq!(layer_of("layers.12.attn.wq_a.weight"), Some(12));
        assert_eq!(layer_of("mtp.0.attn.wq_a.weight"), None);
        let f = layer_range(1..3);
        assert!(
            f("layers.2.ffn_norm.weight") && !f("layers.3.ffn_norm.weight") && !f("embed.weight")
        );
    }
}

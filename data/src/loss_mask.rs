//! Tokenizes a rendered conversation in one pass and derives the per-token loss
//! mask from the token byte offsets: a token is trained (1) when any of its
//! bytes lies in an assistant span. Tokenizing the whole text at once keeps the
//! ids identical to tokenizing the text alone, even where a token straddles a
//! span boundary (e.g. a latest-reminder directly followed by the reply).

use crate::chat_encoding::ChatEncoding;
use crate::error::DataError;
use crate::tokenizer::V4Tokenizer;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Token ids and their loss mask (same length).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizedChat {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 where the token is produced by the assistant, else 0.
    pub loss_mask: Vec<u8>,
}

/// Tokenizes `encoding.text` and marks the tokens overlapping its trained spans.
pub fn tokenize_chat(
    tokenizer: &V4Tokenizer,
    encoding: &ChatEncoding,
) -> Result<TokenizedChat, DataError> {
    let (ids, offsets) = tokenizer.encode_with_offsets(&encoding.text)?;
    let loss_mask = mask_from_offsets(&offsets, &encoding.trained_spans);
    Ok(TokenizedChat { ids, loss_mask })
}

/// 1 for each `[start, end)` offset overlapping a span of `spans` (sorted).
pub fn mask_from_offsets(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<u8> {
    let mut span = 0;
    offsets
        .iter()
        .map(|&(start, end)| {
            let end = end.max(start + 1);
            while span < spans.len() && spans[span].end <= start {
                span += 1;
            }
            u8::from(span < spans.len() && spans[span].start < end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_rule() {
        let offsets = [(0, 3), (3, 5), (5, 9), (9, 12), (12, 14)];
        let spans = [4..9, 12..14];
        assert_eq!(mask_from_offsets(&offsets, &spans), vec![0, 1, 1, 0, 1]);
    }
}

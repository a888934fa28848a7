//! Host-side range check of token ids, run before any id reaches a tensor: Burn's CPU backend
//! stores Int tensors as i32, so an id ≥ 2^31 must be rejected while it is still an i64.

use crate::error::ModelError;

/// Checks row-major `ids` of shape `[b, s]`: as many values as the shape holds, at least one
/// token, every id in `[0, vocab_size)`. The error names the first bad `[row, col]` and its value.
pub fn check_token_ids(
    ids: &[i64],
    shape: [usize; 2],
    vocab_size: usize,
) -> Result<(), ModelError> {
    let [b, s] = shape;
    if b == 0 || s == 0 {
        return Err(ModelError::Input(format!(
            "input_ids has shape [{b}, {s}]; need at least one token"
        )));
    }
    if b.checked_mul(s) != Some(ids.len()) {
        return Err(ModelError::Input(format!(
            "input_ids has shape [{b}, {s}] but holds {} values",
            ids.len()
        )));
    }
    let v = i64::try_from(vocab_size).unwrap_or(i64::MAX);
    if let Some(i) = ids.iter().position(|t| !(0..v).contains(t)) {
        return Err(ModelError::Input(format!(
            "input_ids[{}, {}] = {} is outside the vocabulary [0, {v})",
            i / s,
            i % s,
            ids[i]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(ids: &[i64], shape: [usize; 2]) -> String {
        check_token_ids(ids, shape, 256).unwrap_err().to_string()
    }

    #[test]
    fn accepts_ids_inside_the_vocabulary() {
        assert!(check_token_ids(&[0, 255, 7, 3], [2, 2], 256).is_ok());
    }

    #[test]
    fn names_position_value_and_range() {
        assert_eq!(
            err(&[3, 4, 5, 1 << 40], [2, 2]),
            "invalid input: input_ids[1, 1] = 1099511627776 is outside the vocabulary [0, 256)"
        );
        assert!(err(&[3, i64::MIN], [1, 2]).contains("input_ids[0, 1] = -9223372036854775808"));
        assert!(err(&[256], [1, 1]).contains("input_ids[0, 0] = 256"));
        assert!(err(&[-1, 0, 0], [3, 1]).contains("input_ids[0, 0] = -1"));
        assert!(err(&[0, 0, 0, i64::MAX], [2, 2]).contains("[1, 1] = 9223372036854775807"));
    }

    #[test]
    fn rejects_empty_and_mismatched_shapes() {
        assert!(err(&[], [0, 4]).contains("shape [0, 4]"));
        assert!(err(&[], [usize::MAX, 0]).contains("need at least one token"));
        assert!(err(&[1, 2, 3], [2, 2]).contains("but holds 3 values"));
        assert!(err(&[1], [usize::MAX, 2]).contains("but holds 1 values"));
    }
}

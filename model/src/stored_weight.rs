//! A frozen base weight kept as the release stores it (spec §3.1): FP8 e4m3 codes with one E8M0
//! scale per 128×128 block, or FP4 e2m1 codes (two per byte along the input dim) with one E8M0
//! scale per 32 inputs. It is dequantized where it is used — in the forward pass and again in
//! the backward pass — so a LoRA run holds the base at its stored size (the dequantized copy of
//! one weight lives only while its matmul runs).
//!
//! The product with it is [`crate::frozen_matmul`].

use burn::module::{Module, Param, ParamId};
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};

/// FP8 block edge (rows and columns).
pub const FP8_BLOCK: usize = 128;
/// FP4 group width (inputs per scale).
pub const FP4_GROUP: usize = 32;

/// The value of an e4m3 (FP8, no infinities, 0x7F/0xFF NaN) code.
pub fn e4m3(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (i32::from((code >> 3) & 0x0F), f32::from(code & 0x07));
    match (e, code & 0x7F) {
        (_, 0x7F) => f32::NAN,
        (0, _) => sign * m / 8.0 * 2f32.powi(-6),
        _ => sign * (1.0 + m / 8.0) * 2f32.powi(e - 7),
    }
}

/// The value of an e2m1 (FP4) code (low 4 bits).
pub fn e2m1(code: u8) -> f32 {
    const V: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    let v = V[usize::from(code & 0x07)];
    if code & 0x08 != 0 {
        -v
    } else {
        v
    }
}

/// The value of an E8M0 scale byte: 2^(byte − 127) (255: NaN).
pub fn e8m0(byte: u8) -> f32 {
    if byte == 255 {
        f32::NAN
    } else {
        2f32.powi(i32::from(byte) - 127)
    }
}

/// A quantized weight as read from a checkpoint, for [`StoredWeight::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// FP4 (else FP8).
    pub fp4: bool,
    /// Codes, row-major `[rows, cols]` bytes (FP4: `[rows, cols/2]`).
    pub codes: Vec<u8>,
    /// E8M0 scale bytes, row-major over the scale grid.
    pub scales: Vec<u8>,
}

/// One or more quantized matrices `[rows, cols]` (checkpoint orientation `[out, in]`), each with
/// its own scale grid: a projection (`members` 1) or a stack of routed experts.
#[derive(Module, Debug)]
pub struct StoredWeight<B: Backend> {
    /// Codes of every member, flat (u8).
    pub codes: Param<Tensor<B, 1, Int>>,
    /// E8M0 scales of every member, flat (u8).
    pub scales: Param<Tensor<B, 1, Int>>,
    /// Matrices.
    pub members: usize,
    /// Rows (outputs) per matrix.
    pub rows: usize,
    /// Columns (inputs) per matrix.
    pub cols: usize,
    /// FP4 codes (else FP8).
    pub fp4: bool,
    /// Row groups each matrix is used as (`wo_a`: `o_groups`; else 1).
    pub groups: usize,
}

/// Which members of a [`StoredWeight`] a product uses: `[G, rows/groups, cols]` of the chosen
/// members, each split into its row groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// Members in order (`None`: all).
    pub members: Option<Vec<usize>>,
}

impl<B: Backend> StoredWeight<B> {
    /// The stacked matrices `parts` (all FP8 or all FP4, each `[rows, cols]`), used as `groups`
    /// row groups each.
    pub fn new(
        parts: Vec<StoredTensor>,
        [rows, cols]: [usize; 2],
        groups: usize,
        device: &B::Device,
    ) -> Self {
        let fp4 = parts.first().is_some_and(|p| p.fp4);
        let members = parts.len();
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for p in parts {
            codes.extend(p.codes);
            scales.extend(p.scales);
        }
        let int = |v: Vec<u8>| {
            let n = v.len();
            let t = Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), (device, DType::U8));
            Param::initialized(ParamId::new(), t)
        };
        Self {
            codes: int(codes),
            scales: int(scales),
            members,
            rows,
            cols,
            fp4,
            groups: groups.max(1),
        }
    }

    /// Scale-grid shape of one matrix.
    pub fn scale_grid(&self) -> [usize; 2] {
        scale_grid(self.fp4, self.rows, self.cols)
    }

    /// Bytes held (codes and scales).
    pub fn stored_bytes(&self) -> usize {
        let [sr, sc] = self.scale_grid();
        let per = if self.fp4 {
            self.rows * self.cols / 2
        } else {
            self.rows * self.cols
        };
        self.members * (per + sr * sc)
    }

    /// The values `[G, rows/groups, cols]` of `view`, in `dtype` (e4m3 and e2m1 values times
    /// powers of two are exact in f32 and bf16).
    pub fn dequantize(&self, view: &View, dtype: DType) -> Tensor<B, 3> {
        dequantize(self.parts(), view, dtype)
    }

    /// The tensors and geometry, for the product ([`crate::frozen_matmul`]).
    pub(crate) fn parts(&self) -> Parts<B> {
        Parts {
            codes: self.codes.val(),
            scales: self.scales.val(),
            members: self.members,
            rows: self.rows,
            cols: self.cols,
            fp4: self.fp4,
            groups: self.groups,
        }
    }
}

/// The tensors and geometry of a stored weight, on any backend.
#[derive(Debug, Clone)]
pub(crate) struct Parts<B: Backend> {
    pub(crate) codes: Tensor<B, 1, Int>,
    pub(crate) scales: Tensor<B, 1, Int>,
    pub(crate) members: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) fp4: bool,
    pub(crate) groups: usize,
}

/// Scale-grid shape of one `[rows, cols]` matrix: one scale per 32 inputs (FP4) or per
/// 128×128 block (FP8).
fn scale_grid(fp4: bool, rows: usize, cols: usize) -> [usize; 2] {
    if fp4 {
        [rows, cols.div_ceil(FP4_GROUP)]
    } else {
        [rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)]
    }
}

/// A lookup table `[n, w]` in `dtype`.
fn table<B: Backend>(values: Vec<f32>, w: usize, dtype: DType, device: &B::Device) -> Tensor<B, 2> {
    let n = values.len() / w;
    Tensor::from_data(TensorData::new(values, [n, w]), (device, dtype))
}

pub(crate) fn dequantize<B: Backend>(p: Parts<B>, view: &View, dtype: DType) -> Tensor<B, 3> {
    let device = p.codes.device();
    let [r, c] = [p.rows, p.cols];
    let [sr, sc] = scale_grid(p.fp4, r, c);
    let (mut codes, mut scales) = (p.codes, p.scales);
    let mut g = p.members;
    if let Some(m) = &view.members {
        let ids = crate::util::index_tensor::<B>(m, &device);
        let per = codes.dims()[0] / g.max(1);
        let picked = codes.reshape([g, per]).select(0, ids.clone());
        let spicked = scales.reshape([g, sr * sc]).select(0, ids);
        g = m.len();
        codes = picked.reshape([g * per]);
        scales = spicked.reshape([g * sr * sc]);
    }
    let values = if p.fp4 {
        // One row per byte: (low nibble, high nibble).
        let lut: Vec<f32> = (0..=255u8).flat_map(|b| [e2m1(b), e2m1(b >> 4)]).collect();
        table::<B>(lut, 2, dtype, &device).select(0, codes)
    } else {
        table::<B>((0..=255u8).map(e4m3).collect(), 1, dtype, &device).select(0, codes)
    };
    let s = table::<B>((0..=255u8).map(e8m0).collect(), 1, dtype, &device).select(0, scales);
    let w = if p.fp4 && c % FP4_GROUP == 0 {
        // Whole groups: one scale per row of 32.
        (values.reshape([g * r * sc, FP4_GROUP]) * s.reshape([g * r * sc, 1])).reshape([g, r, c])
    } else {
        let [br, bc] = if p.fp4 {
            [1, FP4_GROUP]
        } else {
            [FP8_BLOCK; 2]
        };
        let full = s
            .reshape([g, sr, 1, sc, 1])
            .expand([g, sr, br, sc, bc])
            .reshape([g, sr * br, sc * bc])
            .slice([0..g, 0..r, 0..c]);
        values.reshape([g, r, c]) * full
    };
    let k = p.groups.max(1);
    w.reshape([g * k, r / k, c])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_tables() {
        assert_eq!(e4m3(0x7E), 448.0);
        assert_eq!(e4m3(0x01), 2f32.powi(-9));
        assert_eq!(e4m3(0x38), 1.0);
        assert_eq!(e4m3(0xB8), -1.0);
        assert!(e4m3(0x7F).is_nan() && e4m3(0xFF).is_nan());
        assert_eq!(e2m1(0x7), 6.0);
        assert_eq!(e2m1(0xA), -1.0);
        assert_eq!(e8m0(127), 1.0);
        assert_eq!(e8m0(120), 2f32.powi(-7));
    }
}

//! The sliding window of V4 attention (spec §2.5 step 3, §2.10: query t sees keys
//! `t − window < u ≤ t`, of its own sample when rows are packed) in the chunked layout of
//! [`WindowLayout`]: the key rows each chunk of `w` queries gathers and which of its `2w` keys
//! each query sees, as device tensors. A forward pass builds them once
//! ([`crate::SampleLayout::window`]) and every layer reuses them.

use crate::masks::WindowLayout;
use crate::util::{bool_tensor_from, int_tensor_from, Memo};
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use std::rc::Rc;

/// Gather rows and validity of the chunked window.
#[derive(Debug, Clone)]
pub struct WindowKeys<B: Backend> {
    /// `[chunks · 2w]` key rows gathered per chunk (out-of-range slots point at row 0).
    pub rows: Tensor<B, 1, Int>,
    /// `[1 or b, chunks, w, 1, 2w]`: query `i` of chunk `c` sees key slot `j` (one row for
    /// every batch row when rows are not packed).
    pub mask: Tensor<B, 5, Bool>,
    /// The excluded slots repeated to `[b, chunks, w, h, 2w]`, per `(b, h)`: a full-size
    /// contiguous mask, built once per forward pass and shared by every layer (a broadcast mask
    /// would be laid out anew by each fill, forward and backward, on CPU backends).
    excluded: Rc<Memo<(usize, usize), Tensor<B, 5, Bool>>>,
}

impl<B: Backend> WindowKeys<B> {
    /// The window of `window` keys (≤ `seq`) over unpacked rows of `seq` tokens.
    pub fn unpacked(seq: usize, window: usize, device: &B::Device) -> Self {
        let layout = WindowLayout::new(seq, window);
        let (nc, k) = (layout.chunks, layout.keys());
        Self::new(
            int_tensor_from(layout.key_rows(), [nc * k], device),
            bool_tensor_from(layout.mask(), [1, nc, window, 1, k], device),
        )
    }

    /// Keys with gather `rows` and validity `mask` (see the fields).
    pub fn new(rows: Tensor<B, 1, Int>, mask: Tensor<B, 5, Bool>) -> Self {
        Self {
            rows,
            mask,
            excluded: Rc::default(),
        }
    }

    /// The slots query rows do not see, as a contiguous `[b, chunks, w, h, 2w]` mask.
    pub fn excluded(&self, b: usize, h: usize) -> Tensor<B, 5, Bool> {
        self.excluded.get_or((b, h), || {
            let mut m = self.mask.clone().bool_not();
            if m.dims()[0] != b {
                m = m.repeat_dim(0, b);
            }
            m.repeat_dim(3, h)
        })
    }

    /// The window length these keys were built for.
    pub fn window(&self) -> usize {
        self.mask.dims()[2]
    }
}

/// The sliding window of one attention call: its length and, when already built, its keys.
#[derive(Debug, Clone)]
pub struct Window<B: Backend> {
    /// Keys per query (`sliding_window`).
    pub size: usize,
    /// The chunked layout for the call's sequence; `None`: built by the kernel (unpacked rows).
    pub keys: Option<WindowKeys<B>>,
}

impl<B: Backend> From<usize> for Window<B> {
    fn from(size: usize) -> Self {
        Self { size, keys: None }
    }
}

impl<B: Backend> Window<B> {
    /// The keys for `seq` tokens: the prepared ones, or those of unpacked rows with the
    /// window clamped to the sequence (a window at least as long as the sequence sees every
    /// earlier key; clamping keeps the layout O(seq²) rather than O(window²)).
    pub fn keys_for(self, seq: usize, device: &B::Device) -> WindowKeys<B> {
        match self.keys {
            Some(k) => k,
            None => WindowKeys::unpacked(seq, self.size.clamp(1, seq.max(1)), device),
        }
    }
}

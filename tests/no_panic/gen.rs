//! The seeded generator of the no-panic cases: a `SplitMix64` per case (derived from the suite
//! and the case index, so every run and every thread count sees the same cases) with helpers
//! for extreme values.

use v4_data::rng::SplitMix64;

/// Integers that break careless code: sign, 32-bit and 64-bit edges, vocabulary edges.
pub const EXTREME_INTS: [i64; 20] = [
    0,
    1,
    2,
    -1,
    255,
    256,
    257,
    129_280,
    i32::MAX as i64,
    1 << 31,
    i32::MIN as i64,
    (1 << 32) + 3,
    1 << 40,
    (1 << 53) + 1,
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    i64::MIN + 1,
    4096,
    1 << 20,
];

/// Floats that break careless code.
pub const EXTREME_FLOATS: [f64; 14] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e308,
    -1e308,
    1e-308,
    5e-324,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    1e20,
    -1e-7,
];

/// A case's random source.
pub struct Gen(SplitMix64);

impl Gen {
    /// The generator of case `index` of `suite` under `seed`.
    pub fn new(suite: &str, seed: u64, index: usize) -> Self {
        let tag = suite.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Gen(SplitMix64::derived(&[tag, seed, index as u64]))
    }

    /// Uniform in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n.max(1))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.next_f64() < p
    }

    /// A raw 64-bit value.
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An extreme integer, or a small one.
    pub fn int(&mut self) -> i64 {
        if self.chance(0.7) {
            *self.pick(&EXTREME_INTS)
        } else {
            self.below(300) as i64
        }
    }

    /// An extreme float, or a small one.
    pub fn float(&mut self) -> f64 {
        if self.chance(0.7) {
            *self.pick(&EXTREME_FLOATS)
        } else {
            self.0.next_f64() * 4.0 - 2.0
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }

    /// Up to `max` random bytes.
    pub fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        self.bytes(n)
    }

    /// A random string: printable ASCII, multi-byte characters, control characters.
    pub fn string(&mut self, max_len: usize) -> String {
        const ALPHABET: [&str; 14] = [
            "a", "Z", "0", " ", "\"", "\\", "\n", "\u{0}", "é", "｜", "<", "🦀", "\u{fffd}", "{",
        ];
        let n = self.below(max_len + 1);
        (0..n).map(|_| *self.pick(&ALPHABET)).collect()
    }

    /// `data` with a few bytes flipped, a range cut out, or truncated.
    pub fn corrupt(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        match self.below(4) {
            0 => out.truncate(self.below(data.len() + 1)),
            1 => {
                for _ in 0..1 + self.below(8) {
                    let i = self.below(out.len());
                    if let Some(b) = out.get_mut(i) {
                        *b ^= 1 << self.below(8);
                    }
                }
            }
            2 => {
                // Corrupt the header (the first bytes) only.
                let head = out.len().min(8 + self.below(400));
                for _ in 0..1 + self.below(4) {
                    let i = self.below(head);
                    if let Some(b) = out.get_mut(i) {
                        *b = self.u64() as u8;
                    }
                }
            }
            _ => {
                let a = self.below(out.len() + 1);
                let b = (a + self.below(64)).min(out.len());
                out.drain(a..b);
            }
        }
        out
    }
}

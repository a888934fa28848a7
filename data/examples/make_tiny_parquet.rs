//! Writes `recipes/data/tiny-text.parquet`, the plain-text source of `recipes/tiny-sft.toml`:
//! 240 short generated documents (columns `text` and `domain`), reproducible byte for byte.
//!
//! ```sh
//! cargo run -p v4-data --example make_tiny_parquet [-- OUT.parquet]
//! ```

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::Arc;
use v4_data::rng::SplitMix64;

/// The data crate's SplitMix64, drawn with plain modulo (the file's bytes depend on it).
struct Rng(SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: &[&str] = &[
    "Ada", "Bruno", "Chen", "Dara", "Elif", "Femi", "Greta", "Hugo",
];
const PLACES: &[&str] = &["market", "library", "harbor", "bakery", "station", "garden"];
const ITEMS: &[&str] = &["bread", "a map", "apples", "a lamp", "candles", "a kite"];
const ANIMALS: &[(&str, &str, &str)] = &[
    ("fox", "forest", "berries and mice"),
    ("otter", "river", "fish"),
    ("camel", "desert", "dry plants"),
    ("penguin", "ice", "krill"),
    ("owl", "barn", "mice"),
    ("goat", "mountains", "grass"),
];
const NUMBERS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

fn document(i: usize, rng: &mut Rng) -> (String, &'static str) {
    match i % 4 {
        0 => {
            let (name, place, item) = (rng.pick(NAMES), rng.pick(PLACES), rng.pick(ITEMS));
            let coins = 2 + rng.below(9);
            (
                format!(
                    "{name} went to the {place} to buy {item}. {name} paid {coins} coins and \
                     walked home before sunset."
                ),
                "story",
            )
        }
        1 => {
            let (animal, home, food) = ANIMALS[rng.below(ANIMALS.len() as u64) as usize];
            (
                format!("The {animal} lives in the {home}. A {animal} eats {food}."),
                "nature",
            )
        }
        2 => {
            let start = rng.below(6) as usize;
            let words: Vec<&str> = NUMBERS[start..start + 4].to_vec();
            (
                format!(
                    "Counting up: {}. Then counting down: {}.",
                    words.join(", "),
                    {
                        let mut w = words.clone();
                        w.reverse();
                        w.join(", ")
                    }
                ),
                "numbers",
            )
        }
        _ => {
            let (a, b) = (rng.below(50), rng.below(50));
            (
                format!(
                    "Arithmetic note {i}: {a} plus {b} is {}, and {a} times 2 is {}.",
                    a + b,
                    a * 2
                ),
                "math",
            )
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "recipes/data/tiny-text.parquet".into());
    let mut rng = Rng(SplitMix64(20_240_601));
    let (texts, domains): (Vec<String>, Vec<&str>) =
        (0..240).map(|i| document(i, &mut rng)).unzip();
    let text: ArrayRef = Arc::new(StringArray::from(texts));
    let domain: ArrayRef = Arc::new(StringArray::from(domains));
    let batch = RecordBatch::try_from_iter([("text", text), ("domain", domain)])?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(9)?))
        .set_max_row_group_row_count(Some(64))
        .set_created_by("v4-data make_tiny_parquet".into())
        .build();
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&out)?, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    println!("wrote {out} ({} documents)", batch.num_rows());
    Ok(())
}

//! Batched Newton–Schulz over a stack of expert matrices vs a loop of per-matrix calls, on the
//! CPU backend: `cargo run -p v4-optim --example ns_batched_vs_loop`.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use v4_optim::{newton_schulz, NsSchedule};

type B = burn::backend::Flex;

fn main() {
    let device = Default::default();
    let s = NsSchedule::v4_hybrid();
    for (e, n, m) in [(64usize, 128usize, 256usize), (16, 512, 1024)] {
        let u = Tensor::<B, 3>::random([e, n, m], Distribution::Normal(0.0, 1.0), &device);
        let _ = newton_schulz(u.clone(), &s).into_data();
        let t = Instant::now();
        let _ = newton_schulz(u.clone(), &s).into_data();
        let batched = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..e {
            let _ = newton_schulz(u.clone().narrow(0, i, 1), &s).into_data();
        }
        let looped = t.elapsed().as_secs_f64();
        let gflop = s.flops(e, n, m) / 1e9;
        println!(
            "[{e},{n},{m}] batched {:.1} ms ({:.1} GFLOP/s); loop of {e} calls {:.1} ms ({:.1} GFLOP/s)",
            batched * 1e3,
            gflop / batched,
            looped * 1e3,
            gflop / looped
        );
    }
}

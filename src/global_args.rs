//! Options every command accepts, before or after the subcommand or recipe path:
//! `--device` (compute backend) and `--threads` (CPU worker threads).

use anyhow::Context;

/// Most worker threads `--threads` accepts (a typo such as `--threads 40000` is an error, not
/// forty thousand threads).
pub const MAX_THREADS: usize = 4096;

/// Compute device.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// CPU (Burn's `flex` backend).
    Cpu,
    /// NVIDIA GPU (build with `--features cuda`).
    Cuda,
}

/// `--device` and `--threads`; unset when not given, so the values written after a recipe path
/// can override those written before it.
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalArgs {
    /// Compute device [default: cpu].
    #[arg(long, value_enum, global = true)]
    pub device: Option<DeviceKind>,
    /// CPU worker threads of the rayon pool: tokenization, data loading and, on the CPU, the
    /// model's large kernels (matmuls, sorts, reductions) and Muon's Newton–Schulz [default:
    /// one per core].
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_threads,
        allow_negative_numbers = true,
        global = true
    )]
    pub threads: Option<usize>,
}

impl GlobalArgs {
    /// `self` with the options set in `later` (written further right on the command line)
    /// taking precedence.
    pub fn then(self, later: GlobalArgs) -> GlobalArgs {
        GlobalArgs {
            device: later.device.or(self.device),
            threads: later.threads.or(self.threads),
        }
    }

    /// The chosen device (CPU unless `--device` says otherwise).
    pub fn device(&self) -> DeviceKind {
        self.device.unwrap_or(DeviceKind::Cpu)
    }

    /// Sizes the global rayon pool when `--threads` was given; call before any parallel work.
    pub fn apply(&self) -> anyhow::Result<()> {
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .with_context(|| format!("--threads {n}: cannot start the worker pool"))?;
        }
        Ok(())
    }
}

/// `--threads` values: a whole number in `1..=MAX_THREADS`.
fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number of threads (1 to {MAX_THREADS})"))?;
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(format!("must be between 1 and {MAX_THREADS}, got {n}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_a_bounded_positive_count() {
        assert_eq!(parse_threads("1"), Ok(1));
        assert_eq!(parse_threads(" 16 "), Ok(16));
        assert_eq!(parse_threads("4096"), Ok(4096));
        assert!(parse_threads("0").unwrap_err().contains("got 0"));
        assert!(parse_threads("4097").unwrap_err().contains("got 4097"));
        for bad in ["", "-1", "two", "1.5", "99999999999999999999999"] {
            assert!(
                parse_threads(bad).unwrap_err().contains("whole number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn later_options_win() {
        let before = GlobalArgs {
            device: Some(DeviceKind::Cuda),
            threads: Some(2),
        };
        let after = GlobalArgs {
            device: None,
            threads: Some(1),
        };
        let merged = before.then(after);
        assert_eq!(merged.device(), DeviceKind::Cuda);
        assert_eq!(merged.threads, Some(1));
        assert_eq!(GlobalArgs::default().device(), DeviceKind::Cpu);
    }
}

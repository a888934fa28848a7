//! `v4train`: train, fine-tune, run and export DeepSeek-V4 models.

mod bench_cmd;
mod bench_context_cmd;
mod bench_decode_cmd;
mod bench_moe_cmd;
mod bench_optim_cmd;
mod chat_encode_cmd;
mod eval_cmd;
mod export_adapter_cmd;
mod export_cmd;
mod forward_cmd;
mod generate_cmd;
mod global_args;
mod merge_cmd;
mod optim_plan_cmd;
mod train_cmd;
mod write_args;

use burn::backend::Autodiff;
use clap::{Parser, Subcommand};
use global_args::{DeviceKind, GlobalArgs};

/// mimalloc keeps freed tensor buffers for reuse instead of unmapping them every step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` = 15 in both the v2 and v3 `mimalloc.h`, right before
/// `use_numa_nodes` (which `libmimalloc-sys` names; it does not name this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Never return freed memory to the OS: a training step frees and reallocates the same large
/// buffers, and purging them cost ~20% of tiny-sft's wall time in page faults.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; no memory is touched.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[derive(Parser, Debug)]
#[command(
    name = "v4train",
    version,
    about = "Train, fine-tune, run and export DeepSeek-V4 models"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train with a recipe (`v4train RECIPE.toml` is the same).
    Train(train_cmd::TrainArgs),
    /// Next-token loss of a recipe's model (or a checkpoint of its run) on the recipe's data.
    Eval(eval_cmd::EvalArgs),
    /// Run the model on token ids and write logits (and MTP logits, hidden streams).
    Forward(forward_cmd::ForwardArgs),
    /// Generate completions (greedy or sampled) with the V4 KV cache.
    Generate(generate_cmd::GenerateArgs),
    /// Write a model directory in the official release layout (FP8/FP4 or BF16).
    Export(export_cmd::ExportArgs),
    /// Convert a LoRA checkpoint's adapters into a Hugging Face PEFT adapter directory.
    ExportAdapter(export_adapter_cmd::ExportAdapterArgs),
    /// Fold a LoRA checkpoint's adapters into its base and write a plain model directory.
    Merge(merge_cmd::MergeArgs),
    /// Encode chat conversations with the official V4 chat template (text, ids, loss mask).
    ChatEncode(chat_encode_cmd::ChatEncodeArgs),
    /// List every parameter with its optimizer (Muon / AdamW), shape and weight decay.
    OptimPlan(optim_plan_cmd::OptimPlanArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// `v4train RECIPE.toml [--set k=v] [--resume]`.
    #[command(external_subcommand)]
    Recipe(Vec<String>),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Newton–Schulz (Muon) timing on V4-Flash shapes.
    Optim(bench_optim_cmd::BenchOptimArgs),
    /// Time and peak memory of a CSA layer and of the model from 1K to 64K tokens.
    Context(bench_context_cmd::BenchContextArgs),
    /// Incremental decoding vs a full forward per token; cache bytes per token.
    Decode(bench_decode_cmd::BenchDecodeArgs),
    /// One MoE layer's forward + backward and the Muon step over its routed experts.
    Moe(bench_moe_cmd::BenchMoeArgs),
    /// `v4train bench RECIPE.toml [--steps N] [--json]`: a recipe's training step.
    #[command(external_subcommand)]
    Recipe(Vec<String>),
}

/// `v4train bench RECIPE.toml ...`.
#[derive(Parser, Debug)]
#[command(name = "v4train bench")]
struct BenchRecipeCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: bench_cmd::BenchRecipeArgs,
}

/// `v4train RECIPE.toml ...` parsed like `v4train train RECIPE.toml ...`.
#[derive(Parser, Debug)]
#[command(name = "v4train")]
struct RecipeCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: train_cmd::TrainArgs,
}

/// Runs `$body` with `B` bound to the backend chosen by `--device`.
macro_rules! with_backend {
    ($kind:expr, |$b:ident, $dev:ident| $body:expr) => {{
        match $kind {
            DeviceKind::Cpu => {
                type $b = burn::backend::Flex;
                let $dev = burn::backend::flex::FlexDevice;
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => {
                type $b = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice::default();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cuda => Err(anyhow::anyhow!(
                "--device cuda: this binary was built without CUDA; rebuild with `--features cuda`"
            )),
        }
    }};
}

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    let mut global = cli.global;
    // `v4train RECIPE.toml ...` is `v4train train RECIPE.toml ...`: what follows the path is
    // parsed again, global options included (those after the path win).
    if let Command::Recipe(argv) = &cli.command {
        let r = RecipeCli::try_parse_from(
            std::iter::once("v4train").chain(argv.iter().map(String::as_str)),
        )
        .unwrap_or_else(|e| e.exit());
        global = global.then(r.global);
        cli.command = Command::Train(r.args);
    }
    // `v4train bench RECIPE.toml ...`: any `bench` argument that is not a benchmark's name.
    let mut bench_recipe = None;
    if let Command::Bench(BenchCommand::Recipe(argv)) = &cli.command {
        let r = BenchRecipeCli::try_parse_from(
            std::iter::once("v4train bench").chain(argv.iter().map(String::as_str)),
        )
        .unwrap_or_else(|e| e.exit());
        global = global.then(r.global);
        bench_recipe = Some(r.args);
    }
    let result = global.apply().and_then(|()| match &bench_recipe {
        Some(a) => bench_recipe_run(a, global.device()),
        None => run(&cli.command, global),
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the parsed command on `device`.
fn run(command: &Command, global: GlobalArgs) -> anyhow::Result<()> {
    let device = global.device();
    match command {
        Command::Forward(a) => with_backend!(device, |B, dev| forward_cmd::run::<B>(a, &dev)),
        Command::Eval(a) => {
            with_backend!(device, |B, dev| eval_cmd::run::<Autodiff<B>>(a, &dev))
        }
        Command::Generate(a) => with_backend!(device, |B, dev| generate_cmd::run::<B>(a, &dev)),
        Command::Train(a) => {
            let gpu = device == DeviceKind::Cuda;
            with_backend!(device, |B, dev| train_cmd::run::<Autodiff<B>>(a, gpu, &dev))
        }
        Command::Recipe(argv) => Err(anyhow::anyhow!(
            "unrecognized command {:?}",
            argv.first().map_or("", String::as_str)
        )),
        Command::Export(a) => export_cmd::run(a),
        Command::ExportAdapter(a) => export_adapter_cmd::run(a),
        Command::Merge(a) => merge_cmd::run(a),
        Command::ChatEncode(a) => chat_encode_cmd::run(a),
        Command::OptimPlan(a) => optim_plan_cmd::run(a),
        Command::Bench(BenchCommand::Optim(a)) => {
            with_backend!(device, |B, dev| bench_optim_cmd::run::<B>(a, &dev))
        }
        Command::Bench(BenchCommand::Context(a)) => with_backend!(device, |B, dev| {
            bench_context_cmd::run::<B>(a, global.threads, &dev)
        }),
        Command::Bench(BenchCommand::Decode(a)) => {
            with_backend!(device, |B, dev| bench_decode_cmd::run::<B>(a, &dev))
        }
        Command::Bench(BenchCommand::Moe(a)) => {
            with_backend!(device, |B, dev| bench_moe_cmd::run::<B>(
                a,
                device == DeviceKind::Cpu,
                &dev
            ))
        }
        Command::Bench(BenchCommand::Recipe(argv)) => Err(anyhow::anyhow!(
            "unrecognized benchmark {:?}",
            argv.first().map_or("", String::as_str)
        )),
    }
}

/// `v4train bench RECIPE.toml` on `device`.
fn bench_recipe_run(a: &bench_cmd::BenchRecipeArgs, device: DeviceKind) -> anyhow::Result<()> {
    match device {
        DeviceKind::Cpu => {
            let rss = || {
                v4train::bench::peak_memory::host_peak_rss().map(|b| (b, "peak RSS".to_string()))
            };
            let dev = burn::backend::flex::FlexDevice;
            bench_cmd::run::<Autodiff<burn::backend::Flex>>(a, "cpu".into(), rss, &dev)
        }
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            use v4train::bench::peak_memory::{device_memory_in_use, device_name};
            let used = || device_memory_in_use().map(|b| (b, "device memory in use".to_string()));
            let name = device_name().unwrap_or_else(|| "cuda".into());
            let dev = burn::backend::cuda::CudaDevice::default();
            bench_cmd::run::<Autodiff<burn::backend::Cuda>>(a, name, used, &dev)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(anyhow::anyhow!(
            "--device cuda: this binary was built without CUDA; rebuild with `--features cuda`"
        )),
    }
}

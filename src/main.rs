//! The `dualnet` binary. See README.md.

use clap::{Parser, Subcommand};
use dualnet::cli;

#[derive(Parser)]
#[command(
    name = "dualnet",
    version,
    about = "Compile .net specs to networks and their dual networks; certify, attack and train provably robust models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, build and check spec files; print every diagnostic.
    Check(cli::check::Args),
    /// Print the checked primal graph, the emitted dual graph, or Graphviz DOT of both.
    Compile(cli::compile::Args),
    /// Write PyTorch-default initial weights for a spec.
    Init(cli::init::Args),
    /// Exact certified bounds for a batch of inputs (JSON).
    Bounds(cli::bounds::Args),
    /// Certify a data set: clean error, certified robust error (and PGD error with --attack).
    Certify(cli::certify::Args),
    /// PGD attack: the empirical robust error in the same perturbation set.
    Attack(cli::attack::Args),
    /// Speed and memory benchmarks (each configuration in its own process).
    Bench(cli::bench::Args),
    /// Train a network (robust by default) from a YAML config and/or flags; resumable.
    Train(cli::train::Args),
    /// Cascades: train stages on what earlier stages could not certify; certify with the cascade.
    #[command(subcommand)]
    Cascade(cli::cascade::Command),
    /// List the ops the compiler knows and which have dual rules.
    Ops,
    /// Import an ONNX model as a `.net` spec and safetensors weights.
    Import(cli::import::Args),
    /// VNN-COMP verification of ONNX networks against VNN-LIB properties (one instance or a benchmark).
    Verify(cli::verify::Args),
}

/// Large freed blocks are reused instead of going back to the system (see `dualnet::alloc`).
#[global_allocator]
static GLOBAL: dualnet::alloc::CachingAlloc = dualnet::alloc::CachingAlloc::new();

fn main() {
    // candle sizes its thread pools from RAYON_NUM_THREADS, else from a /proc/cpuinfo scan on every call; set it
    // once (to the cores this process may use) unless the user chose.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // dualnet runs one worker thread per core over the examples of a batch (certify, train); candle's own
    // elementwise thread pool would make those workers queue on its lock and spin at its barrier (a third of a
    // training step's time), so elementwise ops run on the calling thread unless the user chose otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    tune_allocator();
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Check(a) => cli::check::run(a),
        Command::Compile(a) => cli::compile::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Init(a) => cli::init::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Bounds(a) => cli::bounds::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Certify(a) => cli::certify::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Attack(a) => cli::attack::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Bench(a) => cli::bench::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Train(a) => cli::train::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Cascade(c) => cli::cascade::run(c).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Import(a) => cli::import::run(a).map(|_| 0).unwrap_or_else(|e| cli::report(&e)),
        Command::Verify(a) => cli::verify::run(a).unwrap_or_else(|e| cli::report(&e)),
        Command::Ops => {
            cli::ops::run();
            0
        }
    };
    std::process::exit(code);
}

/// glibc returns every block over its mmap threshold to the system when it is freed, and trims the heap top
/// beyond 128 KB; the bound passes allocate and free tensors of tens of MB many times per step, so each one paid a
/// page fault per 4 KB page (a fifth of a training step). Keep blocks up to 32 MB (glibc's largest threshold)
/// on the heap, never trim it, and grow it in 256 MB steps. Memory freed stays with the process for reuse.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

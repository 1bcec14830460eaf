//! `dualnet certify --spec S --weights W --data mnist --data-dir D [--split test] [--limit N] --eps E
//! [--norm linf|l2] [--bounded] [--dtype f32|f64] [--batch 50] [--attack] [--json OUT] [--proj K --delta D]
//! [--branching relu --timeout S]`.

use std::path::PathBuf;

use serde::Serialize;

use super::bounds::{ModelArgs, SetArgs};
use crate::data::{self, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};
use crate::run::attack::PgdConfig;
use crate::run::certify::{
    certify_dataset, default_safety_margin, BranchConfig, CertifyConfig, ExampleRecord, Summary,
};
use crate::run::search::SearchOptions;

/// The family `certify` uses without `--bound`.
pub const DEFAULT_FAMILY: crate::ops::Family = crate::ops::Family::Crown;

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Data set: `mnist` or `cifar10`.
    #[arg(long, default_value = "mnist")]
    pub data: String,
    /// Folder with the data files (the default holds the MNIST test split shipped with dualnet).
    #[arg(long, default_value = crate::data::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Use only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl DataArgs {
    pub fn load(&self) -> Result<data::Dataset> {
        let split: Split = self.split.parse()?;
        let d = data::load(&self.data, &self.data_dir, split)?;
        Ok(match self.limit {
            Some(n) => d.limit(n),
            None => d,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub set: SetArgs,
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// With `--bound crown` or `alpha`: bound every layer by CROWN's own backward passes (CROWN proper, as
    /// `verify` does) instead of the single-slope layer bounds; tighter, and slower on wide conv layers.
    #[arg(long)]
    pub crown_layers: bool,
    /// Count an example as certified only if every margin bound exceeds this extra margin (default 0: every
    /// bound already holds in real arithmetic, its rounding paid for).
    #[arg(long)]
    pub safety_margin: Option<f64>,
    /// Also run PGD and report the empirical robust error beside the certified one.
    #[arg(long)]
    pub attack: bool,
    #[arg(long, default_value_t = 40)]
    pub attack_steps: usize,
    /// Write the summary and per-example records as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Per-channel means if the network expects normalised inputs (e.g. `--mean 0.485,0.456,0.406`); ε stays
    /// in pixel units and is divided by each channel's std.
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Option<Vec<f64>>,
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Option<Vec<f64>>,
    /// Layer bounds from K random projections (linear cost, for models too large for exact bounds) with the
    /// high-probability estimator: needs `--delta`. Without it the bounds are exact.
    #[arg(long, requires = "delta")]
    pub proj: Option<usize>,
    /// With `--proj`: each projected layer bound holds with probability at least 1 − δ (0 < δ < 1).
    #[arg(long, requires = "proj")]
    pub delta: Option<f64>,
    /// Branch and bound on every example the bound leaves open (correct, not certified, not broken by PGD), for
    /// up to `--timeout` seconds each: `relu`, `input`, `auto` (as `verify`), or `none` (default).
    #[arg(long, value_enum, default_value = "none")]
    pub branching: super::verify::Branching,
    /// With `--branching`: seconds of branch and bound per open example.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// With `--branching relu`: which unit a split takes.
    #[arg(long, value_enum, default_value = "babsr")]
    pub heuristic: super::verify::HeuristicArg,
}

#[derive(Serialize)]
struct Output<'a> {
    summary: &'a Summary,
    examples: &'a [ExampleRecord],
}

pub fn run(args: &Args) -> Result<()> {
    args.set.validate()?;
    if args.batch == 0 {
        return Err(Error::Usage("`--batch` must be at least 1".into()));
    }
    if let Some(k) = args.proj {
        if k == 0 {
            return Err(Error::Usage("`--proj` must be at least 1".into()));
        }
    }
    if let Some(d) = args.delta {
        if !(d > 0.0 && d < 1.0) {
            return Err(Error::Usage(format!("`--delta` must lie in (0, 1), got {d}")));
        }
    }
    if let Some(m) = args.safety_margin {
        crate::finite::check_option("--safety-margin", m)?;
        if m < 0.0 {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("`--safety-margin` must be >= 0, got `{m}`"))
                    .help("the safety margin is an extra margin on top of sound bounds: an example counts as certified only if every margin bound exceeds it; a negative one would certify what the bounds do not prove"),
            ));
        }
    }
    // Branch and bound splits on the real network's values, which a deployed inference's may cross: with
    // `--branching` the certificates are for the network in real arithmetic.
    let branching = args.branching != super::verify::Branching::None;
    let deployed = match (branching, args.set.deployed) {
        (true, Some(d)) if d != super::DeployedArg::None => {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, "`--deployed` with `--branching` is not supported")
                    .help("branch and bound certifies the network in real arithmetic: drop `--deployed` (or pass `--deployed none`), or drop `--branching`"),
            ));
        }
        (true, _) => None,
        (false, d) => d.unwrap_or(super::DeployedArg::F32).dtype(),
    };
    let dtype = args.set.dtype.dtype();
    let model = args.model.load(dtype)?;
    let data = args.data.load()?;
    super::check_data_shape(&model, &data)?;
    let cfg = CertifyConfig {
        family: args.set.bound.unwrap_or(DEFAULT_FAMILY),
        alpha: (args.set.alpha_iters, args.set.alpha_lr),
        eps: args.set.eps,
        norm: args.set.norm,
        bounds: args.set.bounds(),
        batch: args.batch,
        safety_margin: args.safety_margin.unwrap_or_else(|| default_safety_margin(dtype)),
        attack: args.attack.then_some(PgdConfig { steps: args.attack_steps, ..PgdConfig::default() }),
        progress: !args.quiet,
        normalize: args.mean.clone().zip(args.std.clone()),
        proj: args.proj.zip(args.delta),
        crown_layers: args.crown_layers,
        deployed,
        branch: match args.branching {
            super::verify::Branching::None => None,
            b => {
                crate::finite::check_option("--timeout", args.timeout)?;
                if args.timeout < 0.0 || args.proj.is_some() {
                    return Err(Error::input(
                        Diagnostic::new(
                            Code::BadOption,
                            "`--branching` needs exact bounds (no `--proj`) and a `--timeout` >= 0",
                        )
                        .help("branch and bound prunes a part only on an exact, sound bound"),
                    ));
                }
                Some(BranchConfig {
                    options: SearchOptions {
                        family: args.set.bound.unwrap_or(DEFAULT_FAMILY),
                        branching: b.search(),
                        heuristic: args.heuristic.search(),
                        safety_margin: args.safety_margin.unwrap_or(0.0),
                        ..SearchOptions::default()
                    },
                    timeout: args.timeout,
                })
            }
        },
    };
    let (records, s) = certify_dataset(&model, &data, &cfg)?;
    println!(
        "{} on {} {} examples, {} eps {}{}, {} on {}:",
        model.graph.name,
        s.examples,
        args.data.data,
        s.norm,
        s.eps,
        if s.bounded { " (box)" } else { "" },
        s.dtype,
        s.device
    );
    println!("  clean error             {:>7.2}%", 100.0 * s.clean_err);
    println!(
        "  certified robust error  {:>7.2}%   (bounds: {} {}, safety margin {})",
        100.0 * s.certified_robust_err,
        s.bound,
        s.bounds,
        s.safety_margin
    );
    if s.nonfinite_bounds > 0 {
        eprintln!(
            "warning: {} example(s) had a bound that is not finite (NaN or ±inf); they count as not certified",
            s.nonfinite_bounds
        );
    }
    if let Some(p) = s.pgd_err {
        println!(
            "  PGD robust error        {:>7.2}%   ({} steps; certified >= PGD always)",
            100.0 * p,
            args.attack_steps
        );
    }
    if args.branching != super::verify::Branching::None {
        println!(
            "  certified by the bound {}, by branching {}; broken by PGD {}, by the search {}; unknown {} \
             (branch and bound {:.1} s in all, {} s per example at most)",
            s.certified_by_bound,
            s.certified_by_branching,
            s.broken_by_pgd,
            s.broken_by_search,
            s.unknown,
            s.search_seconds,
            args.timeout
        );
    }
    println!(
        "  time {:.2} s, {:.1} examples/s, peak memory {}",
        s.seconds,
        s.examples_per_second,
        s.peak_rss_mb.map(|m| format!("{m:.0} MB")).unwrap_or_else(|| "n/a".into())
    );
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&Output { summary: &s, examples: &records })
            .map_err(|e| Error::Usage(e.to_string()))?;
        crate::weights::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

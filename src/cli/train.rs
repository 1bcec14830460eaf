//! `dualnet train --spec S --data mnist --data-dir D --out RUN [--config C.yaml] [--epochs N] [--limit N]
//! [--eps E] [--proj K] [--seed N] [... every config field as a flag]` and `dualnet train --resume RUN`.
//!
//! The YAML config (see `specs/recipes/`) is read first, then each flag overrides its field; the resolved config
//! is saved as `RUN/config.yaml`. The final weights are `RUN/weights.safetensors`.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::run::train::config::{TrainConfig, TrainOverrides};
use crate::run::train::runfolder::RunFolder;
use crate::run::train::trainer::train;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// YAML config; flags override its fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder (created; must be empty or absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its `last` checkpoint (its config.yaml, then any flags).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: TrainOverrides,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let (out, resume) = match (&args.out, &args.resume) {
        (_, Some(r)) => (r.clone(), true),
        (Some(o), None) => (o.clone(), false),
        (None, None) => return Err(Error::Usage("give `--out RUN_DIR` (a new run) or `--resume RUN_DIR`".into())),
    };
    let mut cfg = match (&args.config, resume) {
        (Some(c), _) => TrainConfig::load(c)?,
        (None, true) => RunFolder::create(&out, true)?.read_config()?,
        (None, false) => TrainConfig::default(),
    };
    args.overrides.apply(&mut cfg);
    let spec = cfg
        .spec
        .clone()
        .ok_or_else(|| Error::Usage("no network given: pass `--spec FILE.net` or set `spec:` in the config".into()))?;
    let graph = super::load_graph(&spec)?;
    let summary = train(&cfg, graph, &out, resume, !args.quiet)?;
    if let Some(m) = &summary.last {
        println!(
            "trained {} epochs -> {}/weights.safetensors; last epoch: train robust err {:.2}%, test certified err {}, test clean err {}",
            summary.epochs,
            summary.out.display(),
            100.0 * m.train_robust_err,
            m.test_certified_err.map(|c| format!("{:.2}%", 100.0 * c)).unwrap_or_else(|| "n/a".into()),
            if m.test_clean_err.is_finite() { format!("{:.2}%", 100.0 * m.test_clean_err) } else { "n/a".into() }
        );
    }
    Ok(())
}

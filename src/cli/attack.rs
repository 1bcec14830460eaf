//! `dualnet attack --spec S --weights W --data mnist --data-dir D --eps E [--norm] [--bounded] [--steps 40]
//! [--step-size A] [--restarts 1] [--seed 0] [--json OUT]`: PGD inside the same input set the certificate uses.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::ProgressBar;
use serde::Serialize;

use super::bounds::{ModelArgs, SetArgs};
use super::certify::DataArgs;
use crate::dual::InputSet;
use crate::error::{Context, Error, Result};
use crate::run::attack::{pgd, Goal, PgdConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub set: SetArgs,
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Step size in input units (default 2.5 ε / steps).
    #[arg(long)]
    pub step_size: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Serialize)]
struct Record {
    index: usize,
    label: u32,
    clean_correct: bool,
    fooled: bool,
}

#[derive(Serialize)]
struct Output {
    examples: usize,
    clean_err: f64,
    pgd_err: f64,
    seconds: f64,
    records: Vec<Record>,
}

pub fn run(args: &Args) -> Result<()> {
    args.set.validate()?;
    if args.batch == 0 || args.restarts == 0 {
        return Err(Error::Usage("`--batch` and `--restarts` must be at least 1".into()));
    }
    let model = args.model.load(args.set.dtype.dtype())?;
    let data = args.data.load()?;
    super::check_data_shape(&model, &data)?;
    if let Some(st) = args.step_size {
        crate::finite::check_option("--step-size", st)?;
        if st <= 0.0 {
            return Err(crate::error::Error::input(
                crate::diagnostics::Diagnostic::new(
                    crate::diagnostics::Code::BadOption,
                    format!("`--step-size` must be positive, got `{st}`"),
                )
                .help("leave it out for 2.5 ε / steps"),
            ));
        }
    }
    let cfg = PgdConfig { steps: args.steps, step_size: args.step_size, restarts: args.restarts, seed: args.seed };
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(data.len() as u64) };
    let start = Instant::now();
    let mut records = Vec::new();
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(args.batch) {
        let (x, y) = data.batch(chunk, &model.device, model.dtype)?;
        let labels: Vec<u32> = y.to_vec1().context(|| "labels".to_string())?;
        let preds: Vec<u32> =
            model.forward(&x)?.argmax(1).and_then(|t| t.to_vec1()).context(|| "predictions".to_string())?;
        let set = InputSet::new(&x, &vec![args.set.eps; chunk.len()], args.set.norm, args.set.bounds())?;
        let (_, fooled) = pgd(&model, &set, &labels, args.set.eps, Goal::Untargeted, &cfg)?;
        for (k, &i) in chunk.iter().enumerate() {
            records.push(Record {
                index: i,
                label: labels[k],
                clean_correct: preds[k] == labels[k],
                fooled: fooled[k] || preds[k] != labels[k],
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let n = records.len().max(1) as f64;
    let out = Output {
        examples: records.len(),
        clean_err: records.iter().filter(|r| !r.clean_correct).count() as f64 / n,
        pgd_err: records.iter().filter(|r| r.fooled).count() as f64 / n,
        seconds: start.elapsed().as_secs_f64(),
        records,
    };
    println!(
        "{}: {} examples, {} eps {}{}: clean error {:.2}%, PGD robust error {:.2}% ({} steps x {} restarts, {:.1} s)",
        model.graph.name,
        out.examples,
        args.set.norm,
        args.set.eps,
        if args.set.bounded { " (box)" } else { "" },
        100.0 * out.clean_err,
        100.0 * out.pgd_err,
        args.steps,
        args.restarts,
        out.seconds
    );
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&out).map_err(|e| Error::Usage(e.to_string()))?;
        crate::weights::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

//! `dualnet cascade train --spec S --data mnist --data-dir D --out RUN --stages N [--config C] [train flags]`
//! and `dualnet cascade certify RUN --data mnist --data-dir D [--limit N] --eps E [--bounded] [--json OUT]`.

use std::path::PathBuf;

use serde::Serialize;

use super::bounds::SetArgs;
use super::certify::DataArgs;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::run::cascade::{cascade_certify, cascade_train, CascadeRecord, CascadeSummary};
use crate::run::train::config::{TrainConfig, TrainOverrides};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train stages 1..N, each on the examples the earlier stages could not certify (resumable).
    Train(TrainArgs),
    /// Certify a data set with a trained cascade.
    Certify(CertifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cascade folder (re-running on an existing cascade folder continues it).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub stages: usize,
    #[command(flatten)]
    pub overrides: TrainOverrides,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct CertifyArgs {
    /// The cascade folder written by `dualnet cascade train`.
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub set: SetArgs,
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Where to compute: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
    /// Also attack every certified example with PGD on the stage that certified it; an attack that succeeds
    /// contradicts the certificate and stops the run (E0900).
    #[arg(long)]
    pub attack: bool,
    #[arg(long, default_value_t = 40)]
    pub attack_steps: usize,
}

#[derive(Serialize)]
struct Output<'a> {
    summary: &'a CascadeSummary,
    examples: &'a [CascadeRecord],
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Train(a) => {
            let mut cfg = match &a.config {
                Some(c) => TrainConfig::load(c)?,
                None => TrainConfig::default(),
            };
            a.overrides.apply(&mut cfg);
            let spec = cfg.spec.clone().ok_or_else(|| {
                Error::Usage("no network given: pass `--spec FILE.net` or set `spec:` in the config".into())
            })?;
            let text = super::read_spec(&spec)?;
            let graph = super::load_graph(&spec)?;
            let s = cascade_train(&cfg, &graph, &text, &a.out, a.stages, !a.quiet)?;
            println!(
                "cascade in {}: {} stage(s) trained{}",
                a.out.display(),
                s.stages_done,
                if s.stopped_early { " (stopped early: nothing left to learn from)" } else { "" }
            );
            for st in &s.stages {
                println!(
                    "  stage {}: trained on {}, certified {} ({:.1}%); cascade train robust error {:.2}%",
                    st.stage,
                    st.trained_on,
                    st.certified_train,
                    100.0 * st.certified_train as f64 / st.trained_on.max(1) as f64,
                    100.0 * st.cascade_train_robust_err
                );
            }
            Ok(())
        }
        Command::Certify(a) => {
            a.set.validate()?;
            let device = a.device.open()?;
            let data = a.data.load()?;
            let (records, s) = cascade_certify(
                &a.run,
                &data,
                a.set.eps,
                a.set.norm,
                a.set.bounds(),
                a.set.dtype.dtype(),
                &device,
                a.batch,
                !a.quiet,
                a.attack
                    .then_some(crate::run::attack::PgdConfig { steps: a.attack_steps, ..Default::default() })
                    .as_ref(),
                a.set.bound.unwrap_or(super::certify::DEFAULT_FAMILY),
                a.set.deployed_or(super::DeployedArg::F32),
            )?;
            println!(
                "cascade {} ({} stages) on {} examples, {} eps {}{}:",
                a.run.display(),
                s.stages,
                s.examples,
                a.set.norm,
                a.set.eps,
                if a.set.bounded { " (box)" } else { "" }
            );
            println!("  clean error             {:>7.2}%", 100.0 * s.clean_err);
            println!("  certified robust error  {:>7.2}%   (bounds: {})", 100.0 * s.certified_robust_err, s.bound);
            for (k, (c, e)) in s.certified_per_stage.iter().zip(&s.robust_err_by_stages).enumerate() {
                println!(
                    "  stage {}: certified {c} examples; robust error of stages 1..{} = {:.2}%",
                    k + 1,
                    k + 1,
                    100.0 * e
                );
            }
            if s.nonfinite_bounds > 0 {
                eprintln!(
                    "warning: {} (stage, example) pair(s) had a bound that is not finite (NaN or ±inf); they count as not certified",
                    s.nonfinite_bounds
                );
            }
            if a.attack {
                println!("  PGD ({} steps) broke no certified example", a.attack_steps);
            }
            println!("  plot: {}", a.run.join("cascade.png").display());
            if let Some(p) = &a.json {
                let text = serde_json::to_string_pretty(&Output { summary: &s, examples: &records })
                    .map_err(|e| Error::Usage(e.to_string()))?;
                crate::weights::write_atomic(p, text.as_bytes())?;
            }
            Ok(())
        }
    }
}

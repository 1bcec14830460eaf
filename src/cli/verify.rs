//! `dualnet verify`: VNN-COMP verification.
//!
//! - one instance: `--onnx N.onnx --vnnlib P.vnnlib [--timeout S] [--bound B] [--branching none] [--result FILE]`;
//! - a benchmark: `--instances BENCH.csv --out results.csv --out-dir DIR [--shard K/N] [--timeout S]`;
//! - combining shards: `--merge A.csv B.csv ... --out all.csv`.
//!
//! The library side is [`crate::run::verify`].

use std::path::PathBuf;

use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};
use crate::run::verify::{format_results, merge, read_instances, run_batch, verify_files, Answer, VerifyConfig};

/// `--branching`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branching {
    /// One bound per box, no branch and bound.
    None,
    /// Branch and bound over ReLU splits.
    Relu,
    /// Branch and bound over bisections of the input box.
    Input,
    /// `input` for networks with at most 16 inputs, else `relu`.
    Auto,
}

impl Branching {
    pub fn search(self) -> crate::run::search::Branching {
        use crate::run::search::Branching as B;
        match self {
            Branching::None => B::None,
            Branching::Relu => B::Relu,
            Branching::Input => B::Input,
            Branching::Auto => B::Auto,
        }
    }
}

/// `--heuristic`: which unit a ReLU split takes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeuristicArg {
    /// BaBSR's intercept score from the bound's dual variables.
    Babsr,
    /// The widest unstable unit.
    Widest,
}

impl HeuristicArg {
    pub fn search(self) -> crate::run::search::Heuristic {
        match self {
            HeuristicArg::Babsr => crate::run::search::Heuristic::Babsr,
            HeuristicArg::Widest => crate::run::search::Heuristic::Widest,
        }
    }
}

/// `--max-memory` in bytes: a number with an optional unit, `8G`, `512M`, `2e9`.
pub fn parse_bytes(flag: &str, s: &str) -> Result<f64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1e3,
                'M' => 1e6,
                'G' => 1e9,
                'T' => 1e12,
                _ => 0.0,
            };
            (&t[..i], m)
        }
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && mult > 0.0 => Ok(v * mult),
        _ => Err(Error::input(
            Diagnostic::new(Code::BadOption, format!("`{flag} {s}` is not a positive size"))
                .help(format!("give bytes with an optional unit K, M, G or T, e.g. `{flag} 8G`")),
        )),
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network (ONNX).
    #[arg(long, conflicts_with_all = ["instances", "merge"], requires = "vnnlib")]
    pub onnx: Option<PathBuf>,
    /// The property (VNN-LIB).
    #[arg(long, requires = "onnx")]
    pub vnnlib: Option<PathBuf>,
    /// Write the result file (first line `unsat`/`sat`/`unknown`/`timeout`/`error`, then a counterexample).
    #[arg(long, requires = "onnx")]
    pub result: Option<PathBuf>,
    /// A benchmark's instances file: `onnx,vnnlib,timeout` per line, paths relative to its folder.
    #[arg(long, conflicts_with = "merge", requires_all = ["out", "out_dir"])]
    pub instances: Option<PathBuf>,
    /// Combine the results.csv files of shards into `--out`.
    #[arg(long, num_args = 1.., requires = "out")]
    pub merge: Option<Vec<PathBuf>>,
    /// With `--instances`: the results csv (`onnx,vnnlib,result,seconds`); with `--merge`: the combined csv.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With `--instances`: the folder of the result files `<onnx stem>__<vnnlib stem>.txt`.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// With `--instances`: run the instances `i` with `i % N == K` (0 <= K < N), e.g. `--shard 0/4`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Seconds per instance (default: the instances file's, or 300 for one instance).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// The bound family: `crown` (default), `alpha`, `wk` or `ibp`.
    #[arg(long, value_enum, default_value = "crown")]
    pub bound: crate::ops::Family,
    /// Branch and bound: `auto` (input splitting up to 16 inputs, else ReLU splitting), `relu`, `input`, or
    /// `none` (the bound alone).
    #[arg(long, value_enum, default_value = "auto")]
    pub branching: Branching,
    /// Which unit a ReLU split takes.
    #[arg(long, value_enum, default_value = "babsr")]
    pub heuristic: HeuristicArg,
    /// The most memory the queue of domains may take (bytes, or with a unit: `8G`).
    #[arg(long, default_value = "8G")]
    pub max_memory: String,
    /// Most domains per bound pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// After a ReLU split, keep every layer's bounds from the parent domain (only the margins are computed);
    /// by default the layers after the split are computed again.
    #[arg(long)]
    pub no_recompute: bool,
    /// ReLU splitting: bound the root with CROWN alone (by default its layers and margin slopes are optimised,
    /// α-CROWN, and every child's ascent starts from its parent's slopes and split multipliers).
    #[arg(long)]
    pub no_alpha_root: bool,
    /// Ascent steps on the split multipliers (β-CROWN) of each split domain; 0 turns them off.
    #[arg(long, default_value_t = crate::run::search::DEFAULT_BETA_ITERS)]
    pub beta_iters: usize,
    /// The compute dtype of the bounds and the attack (counterexamples are always checked in float64).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: super::DTypeArg,
    /// PGD steps of the attack.
    #[arg(long, default_value_t = 50)]
    pub attack_steps: usize,
    /// PGD restarts per output disjunct.
    #[arg(long, default_value_t = 5)]
    pub attack_restarts: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::input(
            Diagnostic::new(Code::BadOption, format!("`--shard {s}` is not `K/N` with 0 <= K < N"))
                .help("shards count from 0: `--shard 0/4` … `--shard 3/4` split a benchmark in four"),
        )
    };
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

fn config(args: &Args) -> Result<VerifyConfig> {
    if let Some(t) = args.timeout {
        crate::finite::check_option("--timeout", t)?;
        if t <= 0.0 {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("`--timeout` must be positive, got `{t}`"))
                    .help("give the seconds per instance, e.g. `--timeout 120`"),
            ));
        }
    }
    let dtype = args.dtype.dtype();
    Ok(VerifyConfig {
        family: args.bound,
        timeout: args.timeout.unwrap_or(300.0),
        dtype,
        safety_margin: crate::run::certify::default_safety_margin(dtype),
        attack: crate::run::falsify::AttackConfig {
            steps: args.attack_steps.max(1),
            restarts: args.attack_restarts.max(1),
            seed: args.seed,
            ..Default::default()
        },
        branching: args.branching.search(),
        heuristic: args.heuristic.search(),
        max_memory: parse_bytes("--max-memory", &args.max_memory)?,
        batch: args.batch.max(1),
        recompute: !args.no_recompute,
        alpha_root: !args.no_alpha_root,
        beta_iters: args.beta_iters,
        ..VerifyConfig::default()
    })
}

/// Returns the exit status: 0 for an answer, 1 when the instance is an `error`.
pub fn run(args: &Args) -> Result<i32> {
    let cfg = config(args)?;
    if let Some(inputs) = &args.merge {
        let out = args.out.as_ref().ok_or_else(|| Error::Usage("`--merge` needs `--out`".into()))?;
        let (rows, warnings) = merge(inputs)?;
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        crate::weights::write_atomic(out, format_results(&rows).as_bytes())?;
        println!("merged {} files: {} instances -> {}", inputs.len(), rows.len(), out.display());
        return Ok(0);
    }
    if let Some(csv) = &args.instances {
        let (Some(out), Some(dir)) = (&args.out, &args.out_dir) else {
            return Err(Error::Usage("`--instances` needs `--out` and `--out-dir`".into()));
        };
        let shard = match &args.shard {
            Some(s) => parse_shard(s)?,
            None => (0, 1),
        };
        let instances = read_instances(csv)?;
        let (_, summary) = run_batch(&instances, shard, out, dir, &cfg, !args.quiet, args.timeout)?;
        println!(
            "{} (bound {}, branching {}{}) -> {} and {}",
            summary,
            cfg.family,
            format!("{:?}", args.branching).to_lowercase(),
            if shard.1 > 1 { format!(", shard {}/{}", shard.0, shard.1) } else { String::new() },
            out.display(),
            dir.display()
        );
        return Ok(0);
    }
    let (Some(onnx), Some(vnnlib)) = (&args.onnx, &args.vnnlib) else {
        return Err(Error::Usage(
            "give `--onnx N.onnx --vnnlib P.vnnlib`, `--instances BENCH.csv --out results.csv --out-dir DIR`, or `--merge A.csv ... --out all.csv`"
                .into(),
        ));
    };
    if args.shard.is_some() || args.out_dir.is_some() {
        return Err(Error::Usage("`--shard` and `--out-dir` go with `--instances`".into()));
    }
    let mut nets = std::collections::HashMap::new();
    let (answer, details) = verify_files(&mut nets, onnx, vnnlib, &cfg);
    if let Some(p) = &args.result {
        crate::weights::write_atomic(p, answer.result_text().as_bytes())?;
    }
    if let Answer::Error(m) = &answer {
        eprintln!("{m}");
    }
    println!("{}", answer.word());
    if !args.quiet {
        eprintln!(
            "{} in {:.2} s (bound {}, {} domains{})",
            answer.word(),
            details.seconds,
            cfg.family,
            details.domains,
            details.worst_margin.map(|m| format!(", worst margin {m:.4}")).unwrap_or_default()
        );
    }
    Ok(if matches!(answer, Answer::Error(_)) { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards() {
        assert_eq!(parse_shard("0/4").ok(), Some((0, 4)));
        assert_eq!(parse_shard("3/4").ok(), Some((3, 4)));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("1").is_err());
        assert!(parse_shard("a/b").is_err());
        assert!(parse_shard("0/0").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("--max-memory", "8G").ok(), Some(8e9));
        assert_eq!(parse_bytes("--max-memory", "512M").ok(), Some(512e6));
        assert_eq!(parse_bytes("--max-memory", "2e9").ok(), Some(2e9));
        assert!(parse_bytes("--max-memory", "0").is_err());
        assert!(parse_bytes("--max-memory", "8X").is_err());
        assert!(parse_bytes("--max-memory", "-1G").is_err());
    }
}

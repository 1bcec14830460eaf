//! `dualnet verify`: VNN-COMP semantics for an ONNX network and a VNN-LIB property, one instance or a benchmark.
//!
//! An instance is `sat` (the property is violated) when some input of one of its boxes satisfies one of the
//! box's output disjuncts, and `unsat` when none does. The answer is
//! - `unsat` only when the bound family proves, for every box and every disjunct, that some constraint of the
//!   disjunct is negative everywhere on the box (its lower bound, computed with [`lower_bounds_with`], clears
//!   the safety margin);
//! - `sat` only for a counterexample found by the attack ([`super::falsify`]) and confirmed by a float64 forward
//!   pass of the network;
//! - otherwise `unknown`, or `timeout` when the time ran out first, or `error` when the inputs are unusable.
//!
//! The result file is the competition's: a first line with the answer, and for `sat` the assignment
//! `((X_0 v) ... (Y_0 v) ...)`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use super::falsify::{candidates, AttackConfig};
pub use super::search::Branching;
use super::search::{confirm, search, Heuristic, Problem, SearchOptions, Verdict};
use crate::diagnostics::{Code, Diagnostic};
use crate::dual::Model;
use crate::error::{Context, Error, Result};
use crate::ops::Family;
use crate::vnnlib::{Property, Region};

/// How an instance is answered.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub family: Family,
    /// Seconds for the instance (bounds and attacks stop when it is spent).
    pub timeout: f64,
    /// The compute dtype of the bounds and the attack (the counterexample check is always float64).
    pub dtype: DType,
    /// An extra margin a bound must clear to count (default 0: the bounds pay for their own rounding).
    pub safety_margin: f64,
    pub attack: AttackConfig,
    pub alpha: (usize, f64),
    /// What branch and bound splits ([`Branching::None`]: the bound alone).
    pub branching: Branching,
    pub heuristic: Heuristic,
    /// Most domains per bound pass.
    pub batch: usize,
    /// Bytes the queue of domains may take.
    pub max_memory: f64,
    /// Recompute the layers after a ReLU split (else they keep the parent's bounds).
    pub recompute: bool,
    /// ReLU splitting: α-CROWN at the root, its slopes warm-starting the children.
    pub alpha_root: bool,
    /// Ascent steps on the split multipliers (β-CROWN) per split domain; 0 turns them off.
    pub beta_iters: usize,
    /// A spinner for the search's state (domains left, done, worst bound).
    pub progress: Option<indicatif::ProgressBar>,
}

impl VerifyConfig {
    pub fn search_options(&self) -> SearchOptions {
        SearchOptions {
            family: self.family,
            alpha: self.alpha,
            branching: self.branching,
            heuristic: self.heuristic,
            batch: self.batch,
            max_memory: self.max_memory,
            safety_margin: self.safety_margin,
            attack: self.attack,
            recompute: self.recompute,
            alpha_root: self.alpha_root,
            beta_iters: self.beta_iters,
            beta_lr: super::search::DEFAULT_BETA_LR,
        }
    }
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            family: Family::Crown,
            timeout: 300.0,
            dtype: DType::F32,
            safety_margin: super::certify::default_safety_margin(DType::F32),
            attack: AttackConfig::default(),
            alpha: (crate::dual::bounds::DEFAULT_ALPHA_ITERS, crate::dual::bounds::DEFAULT_ALPHA_LR),
            branching: Branching::Auto,
            heuristic: Heuristic::Babsr,
            batch: SearchOptions::default().batch,
            max_memory: super::search::DEFAULT_MAX_MEMORY,
            recompute: true,
            alpha_root: true,
            beta_iters: super::search::DEFAULT_BETA_ITERS,
            progress: None,
        }
    }
}

/// The answer to one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Unsat,
    /// A confirmed counterexample: the inputs and the float64 outputs there.
    Sat {
        x: Vec<f64>,
        y: Vec<f64>,
    },
    Unknown,
    Timeout,
    /// The message says what went wrong.
    Error(String),
}

impl Answer {
    pub fn word(&self) -> &'static str {
        match self {
            Answer::Unsat => "unsat",
            Answer::Sat { .. } => "sat",
            Answer::Unknown => "unknown",
            Answer::Timeout => "timeout",
            Answer::Error(_) => "error",
        }
    }

    /// The result file's text (VNN-COMP format).
    pub fn result_text(&self) -> String {
        match self {
            Answer::Sat { x, y } => {
                let mut s = String::from("sat\n(");
                let mut first = true;
                for (name, vals) in [("X", x), ("Y", y)] {
                    for (i, v) in vals.iter().enumerate() {
                        if !first {
                            s.push_str("\n ");
                        }
                        first = false;
                        // `-0` is written `0`; `{:e}` is the shortest text that reads back as the same f64.
                        let v = if *v == 0.0 { 0.0 } else { *v };
                        s.push_str(&format!("({name}_{i} {v:e})"));
                    }
                }
                s.push_str(")\n");
                s
            }
            other => format!("{}\n", other.word()),
        }
    }
}

/// A network ready for verification: the model in the compute dtype and in float64 (for the checks).
pub struct Network {
    pub model: Model,
    pub exact: Model,
    pub inputs: usize,
    pub outputs: usize,
}

/// Import an ONNX file into a model of `dtype` on `device` (weights fixed). Weights that float32 does not hold
/// exactly (float64 initializers, or normalisation constants folded in float64) are computed in float64: the
/// network certified is the one in the file, never a rounded copy.
pub fn load_onnx_model(path: &Path, dtype: DType, device: &Device) -> Result<Model> {
    let imported = crate::onnx::import_file(path)?;
    let dtype = if imported.f32_weights { dtype } else { DType::F64 };
    let (g, w) = imported.graph_and_weights(dtype, device)?;
    Ok(Model::new(g, w, dtype, device.clone()).with_fixed_weights())
}

impl Network {
    pub fn load(path: &Path, dtype: DType) -> Result<Self> {
        let imported = crate::onnx::import_file(path)?;
        // As in [`load_onnx_model`]: weights float32 cannot hold are computed in float64.
        let dtype = if imported.f32_weights { dtype } else { DType::F64 };
        let dev = Device::Cpu;
        let (g, w) = imported.graph_and_weights(dtype, &dev)?;
        let model = Model::new(g, w, dtype, dev.clone()).with_fixed_weights();
        let (g, w) = imported.graph_and_weights(DType::F64, &dev)?;
        let exact = Model::new(g, w, DType::F64, dev).with_fixed_weights();
        let inputs = model.graph.input_shape().iter().product();
        let outputs = model.graph.num_classes();
        Ok(Network { model, exact, inputs, outputs })
    }

    /// Float64 outputs at inputs `x` (flattened rows).
    pub fn eval_f64(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
        let mut shape = vec![rows.len()];
        shape.extend_from_slice(self.exact.graph.input_shape());
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, shape, &self.exact.device).context(|| "the float64 check".to_string())?;
        let y = self.exact.forward(&x)?;
        y.to_vec2::<f64>().context(|| "the float64 check".to_string())
    }
}

/// What happened on an instance, beside the answer.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// Per box: whether the bound proved it.
    pub proved_boxes: Vec<bool>,
    /// The smallest margin by which a disjunct was refuted (over the boxes), or the largest miss.
    pub worst_margin: Option<f64>,
    pub seconds: f64,
    /// Domains bounded (1 per box without branching).
    pub domains: usize,
}

/// Answer one instance.
pub fn verify(net: &Network, prop: &Property, cfg: &VerifyConfig) -> Result<(Answer, Details)> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(cfg.timeout.max(0.0));
    prop.check_sizes(net.inputs, net.outputs)?;
    let mut details = Details { proved_boxes: vec![false; prop.regions.len()], ..Default::default() };
    let done = |a: Answer, mut d: Details| {
        d.seconds = start.elapsed().as_secs_f64();
        Ok((a, d))
    };
    let check = |r: &Region, cands: Vec<Vec<f64>>| confirm(&net.exact, &r.lo, &r.hi, &r.disjuncts, cands);
    // 1. A quick attack on every box: most violated properties fall here, before any bound is computed.
    let quick = AttackConfig { steps: cfg.attack.steps.min(20), restarts: 1, samples: 8, ..cfg.attack };
    for r in &prop.regions {
        let ds: Vec<&[crate::vnnlib::Constraint]> = r.disjuncts.iter().map(|d| d.as_slice()).collect();
        if let Some((x, y)) = check(r, candidates(&net.model, &r.lo, &r.hi, &ds, &quick, deadline)?)? {
            return done(Answer::Sat { x, y }, details);
        }
    }
    // 2. The search on every box: the bound alone (`--branching none`), or branch and bound.
    let opts = cfg.search_options();
    let mut worst = f64::INFINITY;
    let mut timed_out = false;
    for (i, r) in prop.regions.iter().enumerate() {
        if Instant::now() > deadline {
            return done(Answer::Timeout, details);
        }
        let p = Problem { model: &net.model, exact: &net.exact, lo: &r.lo, hi: &r.hi, disjuncts: &r.disjuncts };
        let (verdict, stats) = search(&p, &opts, deadline, cfg.progress.as_ref())?;
        details.domains += stats.domains;
        match verdict {
            Verdict::Proved => details.proved_boxes[i] = true,
            Verdict::Counterexample { x, y } => return done(Answer::Sat { x, y }, details),
            Verdict::Unknown { worst: w } => worst = worst.min(w),
            Verdict::Timeout { worst: w } => {
                worst = worst.min(w);
                timed_out = true;
            }
        }
    }
    details.worst_margin = worst.is_finite().then_some(worst);
    if details.proved_boxes.iter().all(|p| *p) {
        return done(Answer::Unsat, details);
    }
    if timed_out {
        return done(Answer::Timeout, details);
    }
    // 3. The full attack on the boxes the bound left open, with new seeds until the time is spent (at most a few
    //    rounds: more restarts of the same attack rarely find what the first ones missed). Branch and bound ran
    //    its own attacks already.
    let rounds = if cfg.branching == Branching::None { 4u64 } else { 0 };
    for round in 0..rounds {
        for (i, r) in prop.regions.iter().enumerate() {
            if details.proved_boxes[i] {
                continue;
            }
            if Instant::now() > deadline {
                return done(Answer::Timeout, details);
            }
            let ds: Vec<&[crate::vnnlib::Constraint]> = r.disjuncts.iter().map(|d| d.as_slice()).collect();
            let a = AttackConfig { seed: cfg.attack.seed.wrapping_add(1 + round * 7919 + i as u64), ..cfg.attack };
            if let Some((x, y)) = check(r, candidates(&net.model, &r.lo, &r.hi, &ds, &a, deadline)?)? {
                return done(Answer::Sat { x, y }, details);
            }
        }
    }
    done(Answer::Unknown, details)
}

/// One line of a benchmark's instances file.
#[derive(Debug, Clone)]
pub struct Instance {
    /// As written in the csv (relative to its folder).
    pub onnx: String,
    pub vnnlib: String,
    pub timeout: f64,
    pub onnx_path: PathBuf,
    pub vnnlib_path: PathBuf,
}

impl Instance {
    /// `<onnx stem>__<vnnlib stem>.txt`.
    pub fn result_name(&self) -> String {
        // `net.onnx` and `net.onnx.gz` both give `net`.
        let stem = |p: &Path| {
            let name = p.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            let name = name.strip_suffix(".gz").unwrap_or(&name).to_string();
            Path::new(&name).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
        };
        format!("{}__{}.txt", stem(&self.onnx_path), stem(&self.vnnlib_path))
    }
}

fn csv_error(path: &Path, line: usize, msg: String, help: &str) -> Error {
    Error::input(
        Diagnostic::new(Code::BadOption, format!("`{}` line {line}: {msg}", path.display())).help(help.to_string()),
    )
}

/// Read `onnx,vnnlib,timeout` lines (no header, paths relative to the csv's folder; a header line is skipped).
pub fn read_instances(path: &Path) -> Result<Vec<Instance>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read instances", path, e))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if n == 0 && f.first().is_some_and(|s| *s == "onnx") {
            continue;
        }
        let [onnx, vnnlib, rest @ ..] = f.as_slice() else {
            return Err(csv_error(
                path,
                n + 1,
                format!("`{line}` has fewer than 2 fields"),
                "each line is `onnx,vnnlib,timeout`",
            ));
        };
        let timeout = match rest.first() {
            None | Some(&"") => 300.0,
            Some(t) => match t.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => v,
                _ => {
                    return Err(csv_error(
                        path,
                        n + 1,
                        format!("timeout `{t}` is not a positive number"),
                        "the third field is the timeout in seconds",
                    ))
                }
            },
        };
        out.push(Instance {
            onnx: onnx.to_string(),
            vnnlib: vnnlib.to_string(),
            timeout,
            onnx_path: dir.join(onnx),
            vnnlib_path: dir.join(vnnlib),
        });
    }
    Ok(out)
}

/// One row of `results.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub onnx: String,
    pub vnnlib: String,
    pub result: String,
    pub seconds: f64,
}

pub const RESULTS_HEADER: &str = "onnx,vnnlib,result,seconds";

pub fn format_results(rows: &[ResultRow]) -> String {
    let mut s = format!("{RESULTS_HEADER}\n");
    for r in rows {
        s.push_str(&format!("{},{},{},{:.3}\n", r.onnx, r.vnnlib, r.result, r.seconds));
    }
    s
}

pub fn read_results(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read results", path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line == RESULTS_HEADER {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let [onnx, vnnlib, result, seconds] = f.as_slice() else {
            return Err(csv_error(
                path,
                n + 1,
                format!("`{line}` is not `{RESULTS_HEADER}`"),
                "merge results.csv files written by `dualnet verify --instances`",
            ));
        };
        let seconds = seconds.parse::<f64>().map_err(|_| {
            csv_error(
                path,
                n + 1,
                format!("`{seconds}` is not a number of seconds"),
                "merge results.csv files written by `dualnet verify --instances`",
            )
        })?;
        out.push(ResultRow { onnx: onnx.to_string(), vnnlib: vnnlib.to_string(), result: result.to_string(), seconds });
    }
    Ok(out)
}

/// Combine shard outputs: every instance once (the first file that has it wins; a later different answer is
/// reported as a warning line in the returned list).
pub fn merge(inputs: &[PathBuf]) -> Result<(Vec<ResultRow>, Vec<String>)> {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut rows: Vec<ResultRow> = Vec::new();
    let mut warnings = Vec::new();
    for p in inputs {
        for r in read_results(p)? {
            let key = (r.onnx.clone(), r.vnnlib.clone());
            match seen.get(&key) {
                Some(&i) => {
                    if rows[i].result != r.result {
                        warnings.push(format!(
                            "{},{}: `{}` in one file, `{}` in `{}` (kept the first)",
                            r.onnx,
                            r.vnnlib,
                            rows[i].result,
                            r.result,
                            p.display()
                        ));
                    }
                }
                None => {
                    seen.insert(key, rows.len());
                    rows.push(r);
                }
            }
        }
    }
    Ok((rows, warnings))
}

/// Counts of answers and the time, for the closing summary.
#[derive(Debug, Clone, Default)]
pub struct BatchSummary {
    /// Seconds of each instance, per answer (their number is the answer's count).
    pub times: std::collections::BTreeMap<String, Vec<f64>>,
    pub instances: usize,
    pub seconds: f64,
}

impl BatchSummary {
    /// The median seconds of the instances with this answer (the mean of the middle two for an even count).
    pub fn median(&self, answer: &str) -> Option<f64> {
        let mut t = self.times.get(answer)?.clone();
        if t.is_empty() {
            return None;
        }
        t.sort_by(f64::total_cmp);
        let n = t.len();
        Some(if n % 2 == 1 { t[n / 2] } else { 0.5 * (t[n / 2 - 1] + t[n / 2]) })
    }

    /// How many instances got this answer.
    pub fn count(&self, answer: &str) -> usize {
        self.times.get(answer).map(Vec::len).unwrap_or(0)
    }

    fn add(&mut self, answer: &str, seconds: f64) {
        self.times.entry(answer.to_string()).or_default().push(seconds);
        self.instances += 1;
    }
}

impl std::fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = ["unsat", "sat", "unknown", "timeout", "error"]
            .iter()
            .map(|w| {
                let n = self.count(w);
                match self.median(w) {
                    Some(m) if n > 0 => format!("{n} {w} (median {m:.2} s)"),
                    _ => format!("{n} {w}"),
                }
            })
            .collect();
        write!(
            f,
            "{} instances: {}; {:.1} s in all, {:.2} s per instance",
            self.instances,
            parts.join(", "),
            self.seconds,
            self.seconds / self.instances.max(1) as f64
        )
    }
}

/// Answer one instance from files; errors of the inputs become the answer `error` (with the diagnostics
/// rendered in the message).
pub fn verify_files(
    nets: &mut HashMap<PathBuf, std::result::Result<std::sync::Arc<Network>, String>>,
    onnx: &Path,
    vnnlib: &Path,
    cfg: &VerifyConfig,
) -> (Answer, Details) {
    let start = Instant::now();
    let render = |e: &Error| match e {
        Error::Input(d) => d.iter().map(|d| d.render(false)).collect::<Vec<_>>().join("\n"),
        other => other.to_string(),
    };
    let net = nets
        .entry(onnx.to_path_buf())
        .or_insert_with(|| Network::load(onnx, cfg.dtype).map(std::sync::Arc::new).map_err(|e| render(&e)))
        .clone();
    let result = net.and_then(|net| {
        let prop = crate::vnnlib::parse_file(vnnlib).map_err(|e| render(&e))?;
        verify(&net, &prop, cfg).map_err(|e| render(&e))
    });
    match result {
        Ok(r) => r,
        Err(m) => (Answer::Error(m), Details { seconds: start.elapsed().as_secs_f64(), ..Default::default() }),
    }
}

/// Run a benchmark (the instances with index `i % n == k`): writes each result file into `out_dir` and
/// `results.csv` (rewritten after every instance, atomically); returns the rows and the summary.
pub fn run_batch(
    instances: &[Instance],
    shard: (usize, usize),
    out_csv: &Path,
    out_dir: &Path,
    cfg: &VerifyConfig,
    progress: bool,
    timeout_override: Option<f64>,
) -> Result<(Vec<ResultRow>, BatchSummary)> {
    let (k, n) = shard;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io("cannot create", out_dir, e))?;
    let mine: Vec<&Instance> = instances.iter().enumerate().filter(|(i, _)| i % n == k).map(|(_, x)| x).collect();
    let bar = if progress { indicatif::ProgressBar::new(mine.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} verifying [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut nets = HashMap::new();
    let mut rows = Vec::new();
    let mut summary = BatchSummary::default();
    for inst in mine {
        let icfg = VerifyConfig {
            timeout: timeout_override.unwrap_or(inst.timeout),
            progress: progress.then(|| bar.clone()),
            ..cfg.clone()
        };
        let (answer, d) = verify_files(&mut nets, &inst.onnx_path, &inst.vnnlib_path, &icfg);
        if let Answer::Error(m) = &answer {
            bar.suspend(|| eprintln!("{} {}: error\n{m}", inst.onnx, inst.vnnlib));
        }
        crate::weights::write_atomic(&out_dir.join(inst.result_name()), answer.result_text().as_bytes())?;
        rows.push(ResultRow {
            onnx: inst.onnx.clone(),
            vnnlib: inst.vnnlib.clone(),
            result: answer.word().into(),
            seconds: d.seconds,
        });
        summary.add(answer.word(), d.seconds);
        crate::weights::write_atomic(out_csv, format_results(&rows).as_bytes())?;
        bar.set_message(format!("{} unsat, {} sat", summary.count("unsat"), summary.count("sat")));
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.seconds = start.elapsed().as_secs_f64();
    crate::weights::write_atomic(out_csv, format_results(&rows).as_bytes())?;
    Ok((rows, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_gives_the_median_time_per_answer() {
        let mut s = BatchSummary::default();
        // unsat: 3.0, 1.0, 2.0 -> sorted 1, 2, 3, median 2; sat: 0.5, 1.5 -> the mean of the two, 1.0.
        for (a, t) in [("unsat", 3.0), ("sat", 0.5), ("unsat", 1.0), ("sat", 1.5), ("unsat", 2.0)] {
            s.add(a, t);
        }
        s.seconds = 8.0;
        assert_eq!(s.median("unsat"), Some(2.0));
        assert_eq!(s.median("sat"), Some(1.0));
        assert_eq!(s.median("timeout"), None);
        assert_eq!(
            s.to_string(),
            "5 instances: 3 unsat (median 2.00 s), 2 sat (median 1.00 s), 0 unknown, 0 timeout, 0 error; 8.0 s in all, 1.60 s per instance"
        );
    }

    #[test]
    fn result_file_format() {
        let a = Answer::Sat { x: vec![0.5, 1.0], y: vec![-1.0] };
        assert_eq!(a.result_text(), "sat\n((X_0 5e-1)\n (X_1 1e0)\n (Y_0 -1e0))\n");
        assert_eq!(Answer::Unsat.result_text(), "unsat\n");
        assert_eq!(Answer::Error("x".into()).result_text(), "error\n");
    }
}

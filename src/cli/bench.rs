//! `dualnet bench [--json OUT] [--only NAME] [--data-dir D] [--reference-dir R] [--device cpu|cuda[:N]]`: the
//! speed and memory figures of the bounds issue, each measured in its own process so that peak memory is per
//! configuration.
//!
//! - `cert1000`: exact certification of the first 1000 MNIST test images, `mnist_small_trained` weights,
//!   ℓ∞ ε = 0.1 with the [0, 1] box, batch 50, f32 (reference: 45.4 s, 2.1 GB; target ≤ 20 s, ≤ 1 GB).
//! - `crown1000`: the same with `--bound crown` (auto_LiRPA CROWN: 26.9 s, 1.6 GB, 45.9%; target ≤ 5.4 s).
//! - `alpha200`: `--bound alpha` (20 iterations) on the first 200 images (auto_LiRPA α-CROWN: 408 s, 9.2 GB,
//!   43.5%; target ≤ 41 s, ≤ 1 GB).
//! - `step_exact`: one exact robust-loss forward + backward on the first 50 test images without the box, f32
//!   (reference: 24.7 s, 6.9 GB; target ≤ 12 s, ≤ 3 GB).
//!
//! - `step_proj50`: one robust-loss step with 50 projections, box, `mnist_small_trained`, batch 50 (reference
//!   1.15 s / 0.92 s quiet, 1.3 GB; target ≤ 0.5 s, ≤ 1 GB).
//! - `train1000`: 20 Adam steps (proj 50, box, ε 0.1) over the first 1000 training images (reference 36.6 s,
//!   23.3 s quiet; target ≤ 18 s).
//! - `step_large_proj50`: the same step on `mnist_large` (default init; reference 30.5 s, 5.9 GB; target ≤ 10 s).
//! - `scaling`: step time with 50 projections vs exact bounds for widths x1, x2, x4 of a conv net (batch 10).
//! - `methods`: the cost of each training method (`train --method`), as the median time of one training step
//!   (loss, gradients) on a batch of 100 (the recipes' batch; the first 100 test images, `mnist_small_trained`,
//!   ε 0.1, box) and its multiple of a plain cross-entropy step: `plain`, `dual` with 50 projections, `ibp`,
//!   `crown-ibp` with β = 1 (its most expensive setting; β = 0 costs what `ibp` costs). Seconds per epoch of
//!   the 60,000 training images are 600 steps.
//!
//! JSON keys: `{"cert1000": {"seconds", "peak_rss_mb", "examples", "certified_robust_err", "clean_err"},
//! "step_exact": {"seconds", "peak_rss_mb", "robust_ce", "robust_err"}, "step_proj50": {"seconds", "peak_rss_mb",
//! "robust_ce"}, "train1000": {"seconds", "peak_rss_mb", "steps"}, "step_large_proj50": {...},
//! "scaling": {"batch", "rows": [{"width", "proj50_seconds", "exact_seconds"}]}, "methods": {"batch", "rows":
//! [{"method", "step_seconds", "epoch_seconds", "vs_plain"}]}, "threads", "dtype", "device"}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use serde_json::{json, Value};

use super::bounds::load_model;
use crate::data::{self, Split};
use crate::device::DeviceSpec;
use crate::dual::{InputSet, Model, Norm};
use crate::error::{Context, Error, Result};
use crate::run::certify::{certify_dataset, CertifyConfig};
use crate::run::memory::peak_rss_mb;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run one configuration in this process (used internally; prints its JSON).
    #[arg(long)]
    pub only: Option<String>,
    /// Folder with the MNIST idx files; `train1000` needs the training split, which `data/mnist` lacks.
    #[arg(long, default_value = crate::data::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Folder holding `mnist_small_trained/` (model.net and weights.safetensors).
    #[arg(long, default_value = "tests/fixtures/reference")]
    pub reference_dir: PathBuf,
    /// Number of test images for `cert1000`.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run only these configurations (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub configs: Option<Vec<String>>,
    /// Where to compute: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

const CONFIGS: &[&str] = &[
    "cert1000",
    "crown1000",
    "alpha200",
    "step_exact",
    "step_proj50",
    "train1000",
    "step_large_proj50",
    "scaling",
    "methods",
];

/// Seconds for one robust-loss forward + backward on `x` (median of `runs` after `warmup` unmeasured steps),
/// through the same batch-parallel step the trainer uses.
fn step_seconds(
    model: &mut Model,
    x: &candle_core::Tensor,
    labels: &[u32],
    proj: Option<usize>,
    bounded: bool,
    warmup: usize,
    runs: usize,
) -> Result<(f64, f64)> {
    use crate::dual::bounds::Options;
    // Training-like steps: no matrix cache (the weights are variables).
    model.matrix_cache = None;
    let vars = crate::run::train::trainer::make_vars(model)?;
    let mut times = Vec::new();
    let mut loss = f64::NAN;
    for r in 0..warmup + runs {
        let start = Instant::now();
        let set = InputSet::new(x, &vec![0.1; labels.len()], Norm::Linf, bounded.then_some((0.0, 1.0)))?;
        let (lv, grads, _) = crate::run::train::trainer::robust_grads(
            model,
            &set,
            labels,
            &Options { proj, seed: r as u64, ..Default::default() },
            &vars,
        )?;
        if vars.iter().any(|(_, v)| grads.get(v.as_tensor()).is_none()) {
            return Err(Error::Usage("internal: a parameter got no gradient".into()));
        }
        loss = lv;
        if r >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times.get(times.len() / 2).copied().unwrap_or(f64::NAN), loss))
}

/// Median time of a plain (non-robust) cross-entropy step: forward, loss, backward.
fn plain_step_seconds(model: &mut Model, x: &candle_core::Tensor, labels: &[u32], runs: usize) -> Result<f64> {
    model.matrix_cache = None;
    let _vars = crate::run::train::trainer::make_vars(model)?;
    let y = candle_core::Tensor::new(labels, x.device()).context(|| "labels".to_string())?;
    let mut times = Vec::new();
    for _ in 0..runs + 1 {
        let start = Instant::now();
        let logits = model.forward(x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y).context(|| "cross-entropy".to_string())?;
        loss.backward().context(|| "backward pass".to_string())?;
        times.push(start.elapsed().as_secs_f64());
    }
    let mut t = times[1..].to_vec();
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t.get(t.len() / 2).copied().unwrap_or(f64::NAN))
}

fn spec_model(text: &str, seed: u64, device: &Device) -> Result<Model> {
    let checked = crate::check::check_source("bench.net", text);
    let g = checked.graph.ok_or_else(|| Error::Input(checked.diagnostics))?;
    let w = crate::weights::Weights::init(&g, seed, DType::F32, device)?;
    Ok(Model::new(g, w, DType::F32, device.clone()))
}

fn first(data: &crate::data::Dataset, n: usize, device: &Device) -> Result<(candle_core::Tensor, Vec<u32>)> {
    let idx: Vec<usize> = (0..n.min(data.len())).collect();
    let (x, y) = data.batch(&idx, device, DType::F32)?;
    Ok((x, y.to_vec1().context(|| "labels".to_string())?))
}

fn small_model(args: &Args, device: &Device) -> Result<Model> {
    let dir = args.reference_dir.join("mnist_small_trained");
    load_model(&dir.join("model.net"), &dir.join("weights.safetensors"), DType::F32, device)
}

fn run_one(name: &str, args: &Args) -> Result<Value> {
    let device = args.device.open_seeded(0)?;
    let device = &device;
    match name {
        "cert1000" | "crown1000" | "alpha200" => {
            use crate::ops::Family;
            let model = small_model(args, device)?;
            let (family, limit) = match name {
                "crown1000" => (Family::Crown, args.limit),
                "alpha200" => (Family::Alpha, 200.min(args.limit)),
                _ => (Family::Wk, args.limit),
            };
            let data = data::load("mnist", &args.data_dir, Split::Test)?.limit(limit);
            let cfg = CertifyConfig {
                family,
                alpha: (crate::dual::bounds::DEFAULT_ALPHA_ITERS, crate::dual::bounds::DEFAULT_ALPHA_LR),
                eps: 0.1,
                norm: Norm::Linf,
                bounds: Some((0.0, 1.0)),
                batch: 50,
                safety_margin: 0.0,
                attack: None,
                progress: false,
                normalize: None,
                proj: None,
                crown_layers: false,
                branch: None,
                // What `certify` does by default: the certificate covers an f32 inference too.
                deployed: Some(candle_core::DType::F32),
            };
            let (_, s) = certify_dataset(&model, &data, &cfg)?;
            Ok(json!({"seconds": s.seconds, "peak_rss_mb": peak_rss_mb(), "examples": s.examples,
                      "certified_robust_err": s.certified_robust_err, "clean_err": s.clean_err}))
        }
        "step_exact" => {
            let mut model = small_model(args, device)?;
            let test = data::load("mnist", &args.data_dir, Split::Test)?;
            let (x, labels) = first(&test, 50, device)?;
            let (secs, loss) = step_seconds(&mut model, &x, &labels, None, false, 0, 1)?;
            Ok(json!({"seconds": secs, "peak_rss_mb": peak_rss_mb(), "robust_ce": loss}))
        }
        "step_proj50" => {
            let mut model = small_model(args, device)?;
            let test = data::load("mnist", &args.data_dir, Split::Test)?;
            let (x, labels) = first(&test, 50, device)?;
            let (secs, loss) = step_seconds(&mut model, &x, &labels, Some(50), true, 1, 5)?;
            Ok(json!({"seconds": secs, "peak_rss_mb": peak_rss_mb(), "robust_ce": loss}))
        }
        "step_large_proj50" => {
            let text = std::fs::read_to_string("specs/mnist_large.net")
                .map_err(|e| Error::io("cannot read", "specs/mnist_large.net", e))?;
            let mut model = spec_model(&text, 0, device)?;
            let test = data::load("mnist", &args.data_dir, Split::Test)?;
            let (x, labels) = first(&test, 50, device)?;
            let (secs, loss) = step_seconds(&mut model, &x, &labels, Some(50), true, 1, 2)?;
            Ok(json!({"seconds": secs, "peak_rss_mb": peak_rss_mb(), "robust_ce": loss}))
        }
        "methods" => {
            use crate::dual::bounds::Options;
            use crate::run::train::config::Method;
            use crate::run::train::trainer::{robust_grads_with, RobustLoss};
            let mut model = small_model(args, device)?;
            model.matrix_cache = None;
            let vars = crate::run::train::trainer::make_vars(&mut model)?;
            let test = data::load("mnist", &args.data_dir, Split::Test)?;
            let (x, labels) = first(&test, 100, device)?;
            let plain = plain_step_seconds(&mut model, &x, &labels, 5)?;
            let mut rows = vec![json!({"method": "plain", "step_seconds": plain, "epoch_seconds": 600.0 * plain,
                                       "vs_plain": 1.0})];
            let cases: [(&str, Method, crate::ops::Family, Option<usize>, f64); 3] = [
                ("dual (proj 50)", Method::Dual, crate::ops::Family::Wk, Some(50), 0.0),
                ("ibp", Method::Ibp, crate::ops::Family::Ibp, None, 0.0),
                ("crown-ibp (beta 1)", Method::CrownIbp, crate::ops::Family::Ibp, None, 1.0),
            ];
            for (label, method, family, proj, beta) in cases {
                let mut times = Vec::new();
                for r in 0..6 {
                    let start = Instant::now();
                    let set = InputSet::new(&x, &vec![0.1; labels.len()], Norm::Linf, Some((0.0, 1.0)))?;
                    let spec = RobustLoss {
                        opts: Options { family, proj, seed: r as u64, ..Default::default() },
                        method,
                        beta,
                        reg_weight: 0.0,
                        reg_tol: 0.5,
                        kappa: 0.0,
                    };
                    robust_grads_with(&model, &set, &labels, &spec, &vars, None)?;
                    if r > 0 {
                        times.push(start.elapsed().as_secs_f64());
                    }
                }
                times.sort_by(|a, b| a.total_cmp(b));
                let t = times[times.len() / 2];
                rows.push(json!({"method": label, "step_seconds": t, "epoch_seconds": 600.0 * t,
                                 "vs_plain": t / plain}));
            }
            Ok(json!({"batch": 100, "rows": rows, "peak_rss_mb": peak_rss_mb()}))
        }
        "train1000" => {
            use crate::run::train::optim::Adam;
            let mut model = small_model(args, device)?;
            model.matrix_cache = None;
            let vars = crate::run::train::trainer::make_vars(&mut model)?;
            let mut opt = Adam::new(vars, 0.0);
            let train = data::load("mnist", &args.data_dir, Split::Train)?;
            let step = |model: &Model, opt: &mut Adam, idx: &[usize], seed: u64| -> Result<()> {
                use crate::dual::bounds::Options;
                let (x, y) = train.batch(idx, device, DType::F32)?;
                let labels: Vec<u32> = y.to_vec1().context(|| "labels".to_string())?;
                let set = InputSet::new(&x, &vec![0.1; labels.len()], Norm::Linf, Some((0.0, 1.0)))?;
                let vars = opt.params().clone();
                let (_, grads, _) = crate::run::train::trainer::robust_grads(
                    model,
                    &set,
                    &labels,
                    &Options { proj: Some(50), seed, ..Default::default() },
                    &vars,
                )?;
                opt.step(&grads, 1e-3)
            };
            let warm: Vec<usize> = (1000..1050).collect();
            step(&model, &mut opt, &warm, 999)?;
            let start = Instant::now();
            for (s, chunk) in (0..1000).collect::<Vec<usize>>().chunks(50).enumerate() {
                step(&model, &mut opt, chunk, s as u64)?;
            }
            Ok(json!({"seconds": start.elapsed().as_secs_f64(), "peak_rss_mb": peak_rss_mb(), "steps": 20}))
        }
        "scaling" => {
            // The paper's scaling claim: with projections the step time grows about linearly with the width,
            // exact bounds about quadratically. Conv nets like mnist_small with channels and hidden units x w.
            let test = data::load("mnist", &args.data_dir, Split::Test)?;
            let (x, labels) = first(&test, 10, device)?;
            let mut rows = Vec::new();
            for w in [1usize, 2, 4] {
                let text = format!(
                    "network w{w} {{ input x: [1, 28, 28]  c1 = conv2d(x, out={}, kernel=4, stride=2, padding=1)  r1 = relu(c1)  c2 = conv2d(r1, out={}, kernel=4, stride=2, padding=1)  r2 = relu(c2)  f = flatten(r2)  l1 = linear(f, out={})  r3 = relu(l1)  l2 = linear(r3, out=10)  output l2 }}",
                    16 * w, 32 * w, 100 * w
                );
                let plain = plain_step_seconds(&mut spec_model(&text, 0, device)?, &x, &labels, 5)?;
                let (proj, _) = step_seconds(&mut spec_model(&text, 0, device)?, &x, &labels, Some(50), true, 1, 2)?;
                let (exact, _) = step_seconds(&mut spec_model(&text, 0, device)?, &x, &labels, None, true, 0, 1)?;
                rows.push(json!({"width": w, "plain_seconds": plain, "proj50_seconds": proj, "exact_seconds": exact}));
            }
            Ok(json!({"batch": 10, "rows": rows, "peak_rss_mb": peak_rss_mb()}))
        }
        other => Err(Error::Usage(format!("unknown bench configuration `{other}` (known: {})", CONFIGS.join(", ")))),
    }
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(name) = &args.only {
        let v = run_one(name, args)?;
        println!("{v}");
        return Ok(());
    }
    if let Some(d) = args.device.not_built() {
        return Err(Error::input(d));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the dualnet binary", "dualnet", e))?;
    let mut results = BTreeMap::new();
    let chosen: Vec<&str> = match &args.configs {
        Some(list) => list.iter().map(|s| s.as_str()).collect(),
        None => CONFIGS.to_vec(),
    };
    for name in chosen {
        eprintln!("bench {name} ...");
        let out = std::process::Command::new(&exe)
            .arg("bench")
            .args(["--only", name, "--limit", &args.limit.to_string()])
            .arg("--data-dir")
            .arg(&args.data_dir)
            .arg("--reference-dir")
            .arg(&args.reference_dir)
            .args(["--device", &args.device.to_string()])
            .output()
            .map_err(|e| Error::io("cannot run", &exe, e))?;
        if !out.status.success() {
            return Err(Error::Usage(format!("bench {name} failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| Error::Usage(format!("bench {name}: {e}")))?;
        results.insert(name.to_string(), v);
    }
    let targets = [
        ("cert1000", 20.0, 1024.0, 45.4, 2100.0),
        // Peers: auto_LiRPA 0.7.1 CROWN (1000 images) and α-CROWN, 20 iterations (200 images), same machine.
        ("crown1000", 5.4, f64::NAN, 26.9, 1600.0),
        ("alpha200", 41.0, 1024.0, 408.0, 9200.0),
        ("step_exact", 12.0, 3072.0, 24.7, 6900.0),
        ("step_proj50", 0.5, 1024.0, 1.15, 1300.0),
        ("train1000", 18.0, 1024.0, 23.3, f64::NAN),
        ("step_large_proj50", 10.0, f64::NAN, 30.5, 5900.0),
    ];
    println!(
        "{:<17} {:>9} {:>11} {:>12} {:>14} {:>11}",
        "config", "seconds", "peak MB", "target s/MB", "peer s/MB", "certified"
    );
    for (name, ts, tm, rs, rm) in targets {
        let Some(v) = results.get(name) else { continue };
        let cert = v["certified_robust_err"].as_f64().map(|e| format!("{:.1}% err", 100.0 * e)).unwrap_or_default();
        println!(
            "{:<17} {:>9.2} {:>11.0} {:>12} {:>14} {:>11}",
            name,
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            format!("{ts}/{tm}"),
            format!("{rs}/{rm}"),
            cert
        );
    }
    if let Some(rows) = results.get("scaling").and_then(|v| v["rows"].as_array()) {
        println!("\nscaling (batch 10, box, eps 0.1; s/step, and in units of a plain cross-entropy step)");
        println!("  width  plain s   proj50 s  (x plain)   exact s  (x plain)");
        for r in rows {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "  x{:<5} {:>7.3} {:>10.3} {:>10.1} {:>9.3} {:>10.1}",
                r["width"],
                f("plain_seconds"),
                f("proj50_seconds"),
                f("proj50_seconds") / f("plain_seconds"),
                f("exact_seconds"),
                f("exact_seconds") / f("plain_seconds")
            );
        }
    }
    if let Some(rows) = results.get("methods").and_then(|v| v["rows"].as_array()) {
        println!("\ntraining methods (batch 100, box, eps 0.1, mnist_small; one step, and an epoch of 600 steps)");
        println!("  method                 s/step   s/epoch   x plain");
        for r in rows {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {:<20} {:>8.4} {:>9.1} {:>9.1}",
                r["method"].as_str().unwrap_or("?"),
                f("step_seconds"),
                f("epoch_seconds"),
                f("vs_plain")
            );
        }
    }
    let mut all = serde_json::Map::new();
    for (k, v) in results {
        all.insert(k, v);
    }
    all.insert("threads".into(), json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));
    all.insert("dtype".into(), json!("f32"));
    all.insert("device".into(), json!(args.device.to_string()));
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&Value::Object(all)).map_err(|e| Error::Usage(e.to_string()))?;
        crate::weights::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

//! `dualnet bench [--json OUT] [--only NAME] [--data-dir D] [--reference-dir R]`: the speed and memory figures
//! of the bounds issue, each measured in its own process so that peak memory is per configuration.
//!
//! - `cert1000`: exact certification of the first 1000 MNIST test images, `mnist_small_trained` weights,
//!   ℓ∞ ε = 0.1 with the [0, 1] box, batch 50, f32 (reference: 45.4 s, 2.1 GB; target ≤ 20 s, ≤ 1 GB).
//! - `step_exact`: one exact robust-loss forward + backward on the first 50 test images without the box, f32
//!   (reference: 24.7 s, 6.9 GB; target ≤ 12 s, ≤ 3 GB).
//!
//! JSON keys: `{"cert1000": {"seconds", "peak_rss_mb", "examples", "certified_robust_err", "clean_err"},
//! "step_exact": {"seconds", "peak_rss_mb", "robust_ce", "robust_err"}, "threads", "dtype"}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Var};
use serde_json::{json, Value};

use super::bounds::load_model;
use crate::data::{self, Split};
use crate::dual::robust::{certify_batch, robust_ce_per_example};
use crate::dual::{InputSet, Model, Norm};
use crate::error::{Context, Error, Result};
use crate::run::certify::{certify_dataset, CertifyConfig};
use crate::run::memory::peak_rss_mb;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run one configuration in this process (used internally; prints its JSON).
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long, default_value = "../shared/data/mnist")]
    pub data_dir: PathBuf,
    /// Folder holding `mnist_small_trained/` (model.net and weights.safetensors).
    #[arg(long, default_value = "../shared/reference")]
    pub reference_dir: PathBuf,
    /// Number of test images for `cert1000`.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const CONFIGS: &[&str] = &["cert1000", "step_exact"];

fn small_model(args: &Args) -> Result<Model> {
    let dir = args.reference_dir.join("mnist_small_trained");
    load_model(&dir.join("model.net"), &dir.join("weights.safetensors"), DType::F32, &Device::Cpu)
}

fn run_one(name: &str, args: &Args) -> Result<Value> {
    match name {
        "cert1000" => {
            let model = small_model(args)?;
            let data = data::load("mnist", &args.data_dir, Split::Test)?.limit(args.limit);
            let cfg = CertifyConfig {
                eps: 0.1,
                norm: Norm::Linf,
                bounds: Some((0.0, 1.0)),
                batch: 50,
                safety_margin: 0.0,
                attack: None,
                progress: false,
                normalize: None,
            };
            let (_, s) = certify_dataset(&model, &data, &cfg)?;
            Ok(json!({"seconds": s.seconds, "peak_rss_mb": peak_rss_mb(), "examples": s.examples,
                      "certified_robust_err": s.certified_robust_err, "clean_err": s.clean_err}))
        }
        "step_exact" => {
            let mut model = small_model(args)?;
            let data = data::load("mnist", &args.data_dir, Split::Test)?.limit(50);
            let idx: Vec<usize> = (0..data.len()).collect();
            let (x, y) = data.batch(&idx, &model.device, model.dtype)?;
            let labels: Vec<u32> = y.to_vec1().context(|| "labels".to_string())?;
            // Parameters as variables, so the backward pass reaches them.
            let mut vars = Vec::new();
            for node in model.weights.per_node.iter_mut() {
                for t in node.values_mut() {
                    let v = Var::from_tensor(t).context(|| "weights".to_string())?;
                    *t = v.as_tensor().clone();
                    vars.push(v);
                }
            }
            let start = Instant::now();
            let set = InputSet::new(&x, &vec![0.1; labels.len()], Norm::Linf, None)?;
            let cert = certify_batch(&model, &set, &labels)?;
            let ce = robust_ce_per_example(&cert.margin_lb)?.mean_all().context(|| "loss".to_string())?;
            let grads = ce.backward().context(|| "backward pass".to_string())?;
            let secs = start.elapsed().as_secs_f64();
            let reached = vars.iter().filter(|v| grads.get(v.as_tensor()).is_some()).count();
            if reached != vars.len() {
                return Err(Error::Usage(format!("internal: gradients reached {reached} of {} parameters", vars.len())));
            }
            let lb: Vec<Vec<f64>> = super::bounds::rows(&cert.margin_lb)?;
            let err = crate::dual::robust::certified(&lb, &labels).iter().filter(|c| !**c).count() as f64 / labels.len() as f64;
            Ok(json!({"seconds": secs, "peak_rss_mb": peak_rss_mb(),
                      "robust_ce": ce.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).context(|| "loss".to_string())?,
                      "robust_err": err}))
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
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the dualnet binary", "dualnet", e))?;
    let mut results = BTreeMap::new();
    for name in CONFIGS {
        eprintln!("bench {name} ...");
        let out = std::process::Command::new(&exe)
            .arg("bench")
            .args(["--only", name, "--limit", &args.limit.to_string()])
            .arg("--data-dir")
            .arg(&args.data_dir)
            .arg("--reference-dir")
            .arg(&args.reference_dir)
            .output()
            .map_err(|e| Error::io("cannot run", &exe, e))?;
        if !out.status.success() {
            return Err(Error::Usage(format!("bench {name} failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| Error::Usage(format!("bench {name}: {e}")))?;
        results.insert(name.to_string(), v);
    }
    let targets = [("cert1000", 20.0, 1024.0, 45.4, 2100.0), ("step_exact", 12.0, 3072.0, 24.7, 6900.0)];
    println!("{:<12} {:>9} {:>11} {:>12} {:>14}", "config", "seconds", "peak MB", "target s/MB", "reference s/MB");
    for (name, ts, tm, rs, rm) in targets {
        let v = &results[name];
        println!(
            "{:<12} {:>9.2} {:>11.0} {:>12} {:>14}",
            name,
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            format!("{ts}/{tm}"),
            format!("{rs}/{rm}")
        );
    }
    let mut all = serde_json::Map::new();
    for (k, v) in results {
        all.insert(k, v);
    }
    all.insert("threads".into(), json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));
    all.insert("dtype".into(), json!("f32"));
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&Value::Object(all)).map_err(|e| Error::Usage(e.to_string()))?;
        crate::weights::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

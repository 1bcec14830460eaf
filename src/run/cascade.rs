//! Cascades (paper Section 3.3, Algorithm 2): stage `k+1` trains only on the training examples that stages
//! `1..k` could not certify; at test time an example goes to the first stage that certifies it.
//!
//! A stage certifies an example against **its own prediction** `p = argmax f(x)`: every `margin_lb` with
//! `c = e_p − e_j` is positive, so no point of the set changes that stage's answer. The cascade's answer is that
//! stage's prediction; examples no stage certifies get the last stage's prediction, uncertified. The cascade is
//! robust on an example when some stage certifies it and that stage's prediction is the label.
//!
//! Layout of a cascade folder: `spec.net` (the network, copied), `cascade.json` (the state: stages done, the
//! training examples still uncertified, per-stage counts), and `stage1/`, `stage2/`, … — each a full training
//! run folder. Training resumes at stage boundaries (and inside a stage from its `last` checkpoint).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::train::config::TrainConfig;
use super::train::plot::{plot_series, Series, SeriesChart};
use super::train::trainer::{load_data, train_on};
use crate::data::Dataset;
use crate::diagnostics::{Code, Diagnostic};
use crate::dual::{InputSet, Model, Norm};
use crate::error::{Context, Error, Result};
use crate::ir::Graph;
use crate::weights::{write_atomic, Weights};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: usize,
    /// Training examples the stage was trained on.
    pub trained_on: usize,
    /// Of those, how many it certified (against its own prediction).
    pub certified_train: usize,
    /// Cumulative robust error of the cascade of stages 1..=stage on the training subset.
    pub cascade_train_robust_err: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CascadeState {
    pub stages_requested: usize,
    pub stages_done: usize,
    /// Indices (into the training subset) still uncertified after the stages done.
    pub remaining: Vec<usize>,
    pub train_examples: usize,
    pub stages: Vec<StageRecord>,
    /// Robust (certified and correct) flags of the training examples so far.
    pub robust_train: Vec<bool>,
    pub stopped_early: bool,
}

/// Per-example outcome of one stage: its prediction, whether it certifies that prediction, and whether every
/// bound was finite (an example with a non-finite bound is never certified).
pub fn stage_outcomes(
    model: &Model,
    data: &Dataset,
    eps: f64,
    norm: Norm,
    bounds: Option<(f64, f64)>,
    normalize: Option<&(Vec<f64>, Vec<f64>)>,
    batch: usize,
    bar: &ProgressBar,
    family: crate::ops::Family,
    deployed: Option<DType>,
) -> Result<Vec<(u32, bool, bool)>> {
    let mut out = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = data.batch(chunk, &model.device, model.dtype)?;
        let set = InputSet::new(&x, &vec![eps; chunk.len()], norm, bounds)?;
        // A network trained on normalised inputs sees normalised inputs and the mapped set (ε in pixel units).
        let (x, set) = match normalize {
            Some((m, s)) => (crate::dual::input_set::normalize(&x, m, s)?, set.normalized(m, s)?),
            None => (x, set),
        };
        let preds: Vec<u32> =
            model.forward(&x)?.argmax(1).and_then(|t| t.to_vec1()).context(|| "predictions".to_string())?;
        let opts = crate::dual::bounds::Options { family, deployed, ..Default::default() };
        let cert = crate::dual::robust::certify_batch_with(model, &set, &preds, &opts)?;
        let lb = cert.margin_rows()?;
        let ok = cert.certified(&lb, &preds, crate::run::certify::default_safety_margin(model.dtype));
        let finite = cert.finite(&lb);
        out.extend(preds.iter().zip(ok).zip(finite).map(|((p, c), f)| (*p, c, f)));
        bar.inc(chunk.len() as u64);
    }
    Ok(out)
}

/// PGD against each example `idx` that stage `k` certified, aimed at that stage's prediction `pred[i]`: an
/// attack that changes it contradicts the certificate (E0900, see [`crate::run::certify::contradiction`]).
#[allow(clippy::too_many_arguments)]
fn attack_certified(
    model: &Model,
    data: &Dataset,
    idx: &[usize],
    pred: &[u32],
    k: usize,
    eps: f64,
    norm: Norm,
    bounds: Option<(f64, f64)>,
    normalize: Option<&(Vec<f64>, Vec<f64>)>,
    batch: usize,
    pc: &crate::run::attack::PgdConfig,
) -> Result<()> {
    use crate::run::attack::{pgd, Goal};
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = data.batch(chunk, &model.device, model.dtype)?;
        let set = InputSet::new(&x, &vec![eps; chunk.len()], norm, bounds)?;
        let set = match normalize {
            Some((m, s)) => set.normalized(m, s)?,
            None => set,
        };
        let target: Vec<u32> = chunk.iter().map(|&i| pred[i]).collect();
        let (_, fooled) = pgd(model, &set, &target, eps, Goal::Untargeted, pc)?;
        if let Some(j) = fooled.iter().position(|f| *f) {
            let i = chunk[j];
            return Err(crate::run::certify::contradiction(i, &format!("by stage {k}"), pred[i], "PGD"));
        }
    }
    Ok(())
}

fn load_stage(graph: &Graph, dir: &Path, dtype: DType, device: &Device) -> Result<Model> {
    let w = Weights::load(graph, &dir.join("weights.safetensors"), dtype, device)?;
    Ok(Model::new(graph.clone(), w, dtype, device.clone()).with_fixed_weights())
}

fn state_path(out: &Path) -> PathBuf {
    out.join("cascade.json")
}

fn save_state(out: &Path, s: &CascadeState) -> Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(|e| Error::Usage(e.to_string()))?;
    write_atomic(&state_path(out), text.as_bytes())
}

fn read_state(out: &Path) -> Result<CascadeState> {
    let p = state_path(out);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io("cannot read cascade state", &p, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::input(
            Diagnostic::new(Code::DataInvalid, format!("`{}` is not a valid cascade state: {e}", p.display()))
                .help("was this folder written by `dualnet cascade train`?"),
        )
    })
}

/// Train a cascade of `stages` stages into `out` (continuing if `out/cascade.json` exists).
pub fn cascade_train(
    cfg: &TrainConfig,
    graph: &Graph,
    spec_text: &str,
    out: &Path,
    stages: usize,
    progress: bool,
) -> Result<CascadeState> {
    cfg.validate()?;
    if stages == 0 {
        return Err(Error::Usage("`--stages` must be at least 1".into()));
    }
    let (train_set, test_set) = load_data(cfg)?;
    let device = cfg.device.open()?;
    let mut state = if state_path(out).is_file() {
        let mut s = read_state(out)?;
        s.stages_requested = stages;
        if s.train_examples != train_set.len() {
            return Err(Error::input(
                Diagnostic::new(
                    Code::BadOption,
                    format!(
                        "the cascade in `{}` was trained on {} examples, now {}",
                        out.display(),
                        s.train_examples,
                        train_set.len()
                    ),
                )
                .help("resume with the same `--limit` and data"),
            ));
        }
        s
    } else {
        if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("`{}` exists and is not a cascade folder", out.display()))
                    .help("choose a new `--out`"),
            ));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io("cannot create", out, e))?;
        CascadeState {
            stages_requested: stages,
            stages_done: 0,
            remaining: (0..train_set.len()).collect(),
            train_examples: train_set.len(),
            stages: Vec::new(),
            robust_train: vec![false; train_set.len()],
            stopped_early: false,
        }
    };
    write_atomic(&out.join("spec.net"), spec_text.as_bytes())?;
    save_state(out, &state)?;
    while state.stages_done < stages {
        if state.remaining.is_empty() {
            state.stopped_early = true;
            save_state(out, &state)?;
            if progress {
                eprintln!(
                    "cascade: every training example is certified after {} stage(s); stopping early",
                    state.stages_done
                );
            }
            break;
        }
        let k = state.stages_done + 1;
        let dir = out.join(format!("stage{k}"));
        let subset = train_set.select(&state.remaining);
        if progress {
            eprintln!("cascade stage {k}/{stages}: training on {} uncertified examples", subset.len());
        }
        let resume = dir.join("last.state.json").is_file() && !dir.join("weights.safetensors").is_file();
        if !dir.join("weights.safetensors").is_file() {
            train_on(cfg, graph.clone(), &dir, resume, progress, &subset, &test_set)?;
        }
        let model = load_stage(graph, &dir, DType::F32, &device)?;
        let bar = if progress { ProgressBar::new(subset.len() as u64) } else { ProgressBar::hidden() };
        let normalize = cfg.mean.clone().zip(cfg.std.clone());
        let outcomes = stage_outcomes(
            &model,
            &subset,
            cfg.eps,
            cfg.norm,
            cfg.input_box(),
            normalize.as_ref(),
            cfg.batch,
            &bar,
            crate::ops::Family::Wk,
            // Training splits the data by what each stage certifies; the network in real arithmetic.
            None,
        )?;
        bar.finish_and_clear();
        let mut still = Vec::new();
        let mut certified = 0;
        for (&i, (pred, cert, _)) in state.remaining.iter().zip(&outcomes) {
            if *cert {
                certified += 1;
                state.robust_train[i] = *pred as u8 == train_set.labels[i];
            } else {
                still.push(i);
            }
        }
        let robust = state.robust_train.iter().filter(|r| **r).count();
        state.stages.push(StageRecord {
            stage: k,
            trained_on: subset.len(),
            certified_train: certified,
            cascade_train_robust_err: 1.0 - robust as f64 / train_set.len().max(1) as f64,
        });
        state.remaining = still;
        state.stages_done = k;
        save_state(out, &state)?;
        if progress {
            eprintln!(
                "cascade stage {k}: certified {certified} of {} training examples; {} remain",
                subset.len(),
                state.remaining.len()
            );
        }
    }
    Ok(state)
}

#[derive(Debug, Clone, Serialize)]
pub struct CascadeRecord {
    pub index: usize,
    pub label: u32,
    /// The first stage (1-based) that certifies the example, if any.
    pub stage: Option<usize>,
    pub prediction: u32,
    pub certified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CascadeSummary {
    pub examples: usize,
    pub stages: usize,
    /// The relaxation family of the stages' bounds.
    pub bound: crate::ops::Family,
    pub clean_err: f64,
    pub certified_robust_err: f64,
    /// Examples each stage certified (first-certifying stage).
    pub certified_per_stage: Vec<usize>,
    /// Robust error of the cascade truncated after stage k (k = 1..stages): the paper's Figure 3 curve.
    pub robust_err_by_stages: Vec<f64>,
    /// The same on the training subset, from `cascade.json`.
    pub train_robust_err_by_stages: Vec<f64>,
    /// (stage, example) pairs whose bounds were not finite (counted as not certified by that stage).
    pub nonfinite_bounds: usize,
}

/// Certify a data set with the cascade in `run`, on `device`, with the bounds of `family` (covering an inference
/// in `deployed` too, where given); with `attack`, PGD
/// against every certified example on the stage that certified it: a success contradicts the certificate and
/// stops with E0900.
#[allow(clippy::too_many_arguments)]
pub fn cascade_certify(
    run: &Path,
    data: &Dataset,
    eps: f64,
    norm: Norm,
    bounds: Option<(f64, f64)>,
    dtype: DType,
    device: &Device,
    batch: usize,
    progress: bool,
    attack: Option<&crate::run::attack::PgdConfig>,
    family: crate::ops::Family,
    deployed: Option<DType>,
) -> Result<(Vec<CascadeRecord>, CascadeSummary)> {
    let state = read_state(run)?;
    let spec = run.join("spec.net");
    let graph = crate::check::load_graph(&spec)?;
    // The stages' normalisation comes from their saved config.
    let stage_cfg = super::train::runfolder::RunFolder::create(&run.join("stage1"), true)?.read_config()?;
    let normalize = stage_cfg.mean.clone().zip(stage_cfg.std.clone());
    let n = data.len();
    let mut stage_of: Vec<Option<usize>> = vec![None; n];
    let mut pred: Vec<u32> = vec![0; n];
    let mut per_stage = Vec::new();
    let mut robust_by = Vec::new();
    let mut nonfinite = 0usize;
    for k in 1..=state.stages_done {
        let model = load_stage(&graph, &run.join(format!("stage{k}")), dtype, device)?;
        let todo: Vec<usize> = (0..n).filter(|&i| stage_of[i].is_none()).collect();
        let subset = data.select(&todo);
        let bar = if progress { ProgressBar::new(todo.len() as u64) } else { ProgressBar::hidden() };
        bar.set_message(format!("stage {k}"));
        let outcomes =
            stage_outcomes(&model, &subset, eps, norm, bounds, normalize.as_ref(), batch, &bar, family, deployed)?;
        bar.finish_and_clear();
        let mut count = 0;
        for (&i, (p, c, f)) in todo.iter().zip(&outcomes) {
            nonfinite += !*f as usize;
            pred[i] = *p;
            if *c {
                stage_of[i] = Some(k);
                count += 1;
            }
        }
        if let Some(pc) = attack {
            let mine: Vec<usize> = todo.iter().copied().filter(|&i| stage_of[i] == Some(k)).collect();
            attack_certified(&model, data, &mine, &pred, k, eps, norm, bounds, normalize.as_ref(), batch, pc)?;
        }
        per_stage.push(count);
        let robust = (0..n).filter(|&i| stage_of[i].is_some() && pred[i] as u8 == data.labels[i]).count();
        robust_by.push(1.0 - robust as f64 / n.max(1) as f64);
    }
    let records: Vec<CascadeRecord> = (0..n)
        .map(|i| CascadeRecord {
            index: i,
            label: data.labels[i] as u32,
            stage: stage_of[i],
            prediction: pred[i],
            certified: stage_of[i].is_some(),
        })
        .collect();
    let nf = n.max(1) as f64;
    let summary = CascadeSummary {
        examples: n,
        stages: state.stages_done,
        bound: family,
        clean_err: records.iter().filter(|r| r.prediction != r.label).count() as f64 / nf,
        certified_robust_err: records.iter().filter(|r| !(r.certified && r.prediction == r.label)).count() as f64 / nf,
        certified_per_stage: per_stage,
        robust_err_by_stages: robust_by.clone(),
        train_robust_err_by_stages: state.stages.iter().map(|s| s.cascade_train_robust_err).collect(),
        nonfinite_bounds: nonfinite,
    };
    let chart = SeriesChart::new(
        "cascade robust error by number of stages",
        (1..=state.stages_done).map(|k| format!("{k}")).collect(),
        vec![Series::new("test", robust_by), Series::new("train", summary.train_robust_err_by_stages.clone()).dashed()],
    );
    let mut chart = chart;
    chart.percent = true;
    chart.x_label = "stages".into();
    chart.y_label = "robust error (%)".into();
    plot_series(&chart, &run.join("cascade.png"))?;
    Ok((records, summary))
}

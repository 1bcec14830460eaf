//! Certification over a data set: exact bounds batch by batch, per-example records and a summary
//! (clean error, certified robust error, optionally PGD error, time, throughput, peak memory).
//!
//! With [`CertifyConfig::branch`], an example that the bound leaves open (correctly classified, not certified,
//! not broken by PGD) gets branch and bound ([`crate::run::search`]) on its ℓ∞ box for a limited time: the box is
//! the one the bound used (`x ± ε` rounded outward, clipped, normalised outward), the specification the rows
//! `f_j − f_y ≥ 0` for `j ≠ y` (any of them true is a violation), and the search's answer is the example's:
//! proved (certified by branching), a counterexample confirmed in float64 (broken by the search), or open.

use std::time::Instant;

use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::attack::{pgd, Goal, PgdConfig};
use super::search::{search, Problem, SearchOptions, Verdict};
use crate::data::Dataset;
use crate::diagnostics::{Code, Diagnostic};
use crate::dual::bounds::Options;
use crate::dual::robust::{certify_batch_with, min_margin};
use crate::dual::{InputSet, Model, Norm};
use crate::error::{Context, Error, Result};

#[derive(Debug, Clone)]
pub struct CertifyConfig {
    pub eps: f64,
    pub norm: Norm,
    pub bounds: Option<(f64, f64)>,
    pub batch: usize,
    /// An example counts as certified only if every margin lower bound exceeds this (guards f32 rounding).
    pub safety_margin: f64,
    pub attack: Option<PgdConfig>,
    pub progress: bool,
    /// Per-channel `(mean, std)` when the network expects normalised inputs (ε stays in pixel units).
    pub normalize: Option<(Vec<f64>, Vec<f64>)>,
    /// The relaxation family of the bounds.
    pub family: crate::ops::Family,
    /// `alpha`: gradient steps and step size of the lower slopes.
    pub alpha: (usize, f64),
    /// `Some((k, δ))`: layer bounds from `k` random projections with the high-probability estimator (each
    /// layer bound holds with probability ≥ 1 − δ; paper Appendix E.1) instead of exact bounds.
    pub proj: Option<(usize, f64)>,
    /// `crown`/`alpha`: every layer bounded by CROWN's own backward passes ([`Options::crown_layers`]), tighter
    /// than the default single-slope layer bounds at the cost of two backward passes per layer.
    pub crown_layers: bool,
    /// Branch and bound on the examples the bound leaves open (ℓ∞ only); `None`: the bound alone.
    pub branch: Option<BranchConfig>,
    /// `Some(dt)`: the certificates also cover an inference in `dt` ([`crate::dual::deployed`]).
    pub deployed: Option<DType>,
}

/// Branch and bound in `certify`: the search's options and the seconds per example.
#[derive(Debug, Clone)]
pub struct BranchConfig {
    pub options: SearchOptions,
    pub timeout: f64,
}

/// How an example was settled (the `how` of the JSON records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// The clean prediction is wrong.
    Misclassified,
    /// Every margin bound is above the safety margin.
    Bound,
    /// Branch and bound proved every margin positive on the box.
    Branching,
    /// PGD found a point of the set with another prediction.
    Pgd,
    /// Branch and bound found a counterexample, confirmed by a float64 forward pass.
    Search,
    /// None of the above (within the time given).
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExampleRecord {
    pub index: usize,
    pub label: u32,
    pub prediction: u32,
    pub certified: bool,
    /// Smallest `margin_lb[j]` over `j != label`; `null` when a bound is not finite.
    pub min_margin_lb: Option<f64>,
    /// Every layer and margin bound of the example is finite (an example with a non-finite bound is never
    /// certified).
    pub bounds_finite: bool,
    /// PGD broke the example, its point confirmed in real arithmetic by a float64 enclosure (or the clean input
    /// is misclassified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgd_fooled: Option<bool>,
    /// The attack found a point of the set where the f32 prediction differs from the label, confirmed or not
    /// (for the contradiction check).
    #[serde(skip)]
    pub attack_fooled: bool,
    pub how: Settled,
    /// With branching: the seconds the search took, and its domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub examples: usize,
    pub eps: f64,
    pub norm: Norm,
    pub bounded: bool,
    pub dtype: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub safety_margin: f64,
    /// `exact`, or `projected (k = K, δ = D per layer bound)`.
    pub bounds: String,
    /// The relaxation family: `wk`, `crown` or `ibp`.
    pub bound: crate::ops::Family,
    pub clean_err: f64,
    pub certified_robust_err: f64,
    /// Examples with a non-finite layer or margin bound (counted as not certified).
    pub nonfinite_bounds: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgd_err: Option<f64>,
    pub seconds: f64,
    pub examples_per_second: f64,
    pub peak_rss_mb: Option<f64>,
    /// Counts by [`Settled`]: certified by the bound, by branching; broken by PGD, by the search; unknown.
    pub certified_by_bound: usize,
    pub certified_by_branching: usize,
    pub broken_by_pgd: usize,
    pub broken_by_search: usize,
    pub unknown: usize,
    /// Seconds spent in branch and bound (all examples together).
    pub search_seconds: f64,
}

/// The default safety margin: none. Soundness does not rest on it: every bound already pays for its rounding
/// ([`crate::dual::rounding`]); `--safety-margin` adds an extra margin a user may ask for.
pub fn default_safety_margin(_dtype: DType) -> f64 {
    0.0
}

pub fn certify_dataset(model: &Model, data: &Dataset, cfg: &CertifyConfig) -> Result<(Vec<ExampleRecord>, Summary)> {
    let start = Instant::now();
    let n = data.len();
    let bar = if cfg.progress { ProgressBar::new(n as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} certifying [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut records = Vec::with_capacity(n);
    let (mut cert_count, mut wrong, mut fooled, mut nonfinite) = (0usize, 0usize, 0usize, 0usize);
    let idx: Vec<usize> = (0..n).collect();
    // On the CPU each batch is split across worker threads (one per core): candle's kernels parallelise poorly at
    // these sizes, while independent examples parallelise perfectly (exact bounds are per example). On a GPU the
    // whole batch runs in one thread.
    let workers = crate::device::workers(&model.device);
    // Exact bounds of wide conv nets need about a GB per example (mnist_large): each worker certifies its share
    // in passes small enough that all workers together stay within half the available memory.
    // Refuse up front what cannot fit even one example per worker (an allocation failure would abort).
    let one = match cfg.proj {
        None => crate::dual::bounds::exact_bytes_per_example(model) as f64,
        Some((k, _)) => crate::dual::bounds::projected_bytes_per_example(model, k) / 2.0,
    };
    if model.device.is_cpu() {
        crate::memory::ensure_fits(
            one * workers as f64,
            &format!("the bounds of `{}` ({} worker(s), one example each)", model.graph.name, workers),
            "use `--proj K --delta D` (random projections, linear cost), a smaller network, or set RAYON_NUM_THREADS=1 for one worker",
        )?;
    }
    let per_pass = match (cfg.proj, model.device.is_cpu(), crate::run::memory::available_bytes()) {
        (None, true, Some(avail)) => {
            let need = crate::dual::bounds::exact_bytes_per_example(model).max(1);
            (avail / 2 / workers / need).max(1)
        }
        _ => usize::MAX,
    };
    if cfg.branch.is_some() && cfg.norm != Norm::Linf {
        return Err(Error::input(
            Diagnostic::new(Code::BadOption, "branch and bound in `certify` needs the ℓ∞ norm (a box)")
                .help("drop `--branching`, or use `--norm linf`"),
        ));
    }
    // The float64 copy of the network that confirms the search's counterexamples.
    // The float64 copy also confirms PGD's counterexamples in real arithmetic.
    let exact = match cfg.branch.is_some() || cfg.attack.is_some() {
        true => Some(exact_copy(model)?),
        false => None,
    };
    let exact_ref = exact.as_ref();
    let mut search_seconds = 0.0;
    for chunk in idx.chunks(cfg.batch.max(1)) {
        let part = chunk.len().div_ceil(workers).max(1);
        let results: Vec<Result<Vec<ExampleRecord>>> = std::thread::scope(|sc| {
            let handles: Vec<_> = chunk
                .chunks(part)
                .map(|sub| {
                    sc.spawn(move || -> Result<Vec<ExampleRecord>> {
                        let mut out = Vec::with_capacity(sub.len());
                        for pass in sub.chunks(per_pass.min(sub.len()).max(1)) {
                            out.extend(certify_chunk(model, exact_ref, data, pass, cfg)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(crate::error::Error::Usage("internal: a certification worker panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            for mut rec in r? {
                if let (Some(bc), Some(exact), Settled::Unknown) = (&cfg.branch, &exact, rec.how) {
                    bar.set_message(format!("branch and bound on example {}", rec.index));
                    let t = Instant::now();
                    let (verdict, domains) = branch_example(model, exact, data, rec.index, cfg, bc)?;
                    search_seconds += t.elapsed().as_secs_f64();
                    rec.search_seconds = Some(t.elapsed().as_secs_f64());
                    rec.search_domains = Some(domains);
                    match verdict {
                        Verdict::Proved => {
                            rec.certified = true;
                            rec.how = Settled::Branching;
                        }
                        Verdict::Counterexample { .. } => rec.how = Settled::Search,
                        Verdict::Unknown { .. } | Verdict::Timeout { .. } => {}
                    }
                }
                if rec.certified && rec.attack_fooled {
                    bar.abandon();
                    let m = rec.min_margin_lb.map(|m| format!("{m:.6}")).unwrap_or_else(|| "not finite".into());
                    return Err(contradiction(rec.index, &format!("smallest margin bound {m}"), rec.label, "PGD"));
                }
                cert_count += rec.certified as usize;
                nonfinite += !rec.bounds_finite as usize;
                wrong += (rec.prediction != rec.label) as usize;
                fooled += rec.pgd_fooled.unwrap_or(false) as usize;
                records.push(rec);
            }
        }
        bar.inc(chunk.len() as u64);
        let done = records.len() as f64;
        bar.set_message(format!(
            "clean err {:.2}%, certified err {:.2}%",
            100.0 * wrong as f64 / done,
            100.0 * (done - cert_count as f64) / done
        ));
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let nf = n.max(1) as f64;
    let count = |w: Settled| records.iter().filter(|r| r.how == w).count();
    let summary = Summary {
        examples: n,
        eps: cfg.eps,
        norm: cfg.norm,
        bounded: cfg.bounds.is_some(),
        dtype: format!("{:?}", model.dtype).to_lowercase(),
        device: crate::device::name(&model.device),
        safety_margin: cfg.safety_margin,
        bound: cfg.family,
        bounds: match cfg.proj {
            None => "exact".into(),
            Some((k, d)) => format!("projected, k = {k}, each layer bound w.p. >= 1 - {d}"),
        },
        clean_err: wrong as f64 / nf,
        certified_robust_err: (n - cert_count) as f64 / nf,
        nonfinite_bounds: nonfinite,
        pgd_err: cfg.attack.map(|_| fooled as f64 / nf),
        seconds: secs,
        examples_per_second: n as f64 / secs.max(1e-9),
        peak_rss_mb: super::memory::peak_rss_mb(),
        certified_by_bound: count(Settled::Bound),
        certified_by_branching: count(Settled::Branching),
        broken_by_pgd: count(Settled::Pgd),
        broken_by_search: count(Settled::Search),
        unknown: count(Settled::Unknown),
        search_seconds,
    };
    Ok((records, summary))
}

/// `model` in float64 (every f32 value is exact in f64: the same network).
fn exact_copy(model: &Model) -> Result<Model> {
    let map: std::collections::HashMap<String, candle_core::Tensor> = model
        .weights
        .to_map(&model.graph)
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F64).and_then(|t| t.to_device(&candle_core::Device::Cpu))?)))
        .collect::<candle_core::Result<_>>()
        .context(|| "the float64 copy of the network".to_string())?;
    let w = crate::weights::Weights::from_map(&model.graph, map, "the network", DType::F64)?;
    Ok(Model::new(model.graph.clone(), w, DType::F64, candle_core::Device::Cpu).with_fixed_weights())
}

/// Branch and bound on example `index`: its box as the bound saw it, the rows `f_j − f_y >= 0` (`j != y`).
fn branch_example(
    model: &Model,
    exact: &Model,
    data: &Dataset,
    index: usize,
    cfg: &CertifyConfig,
    bc: &BranchConfig,
) -> Result<(Verdict, usize)> {
    let (_, labels, set) = example_sets(model, data, &[index], cfg)?;
    let InputSet::Box { center, radius } = &set else {
        return Err(Error::Usage("internal: branch and bound on a set that is not a box".into()));
    };
    let c = crate::finite::host_values(center, "the box's centre")?;
    let r = crate::finite::host_values(radius, "the box's radius")?;
    // The box the bound used, as f64 ends rounded outward (the search moves them out by one more ulp).
    let lo: Vec<f64> = c.iter().zip(&r).map(|(c, r)| (c - r).next_down()).collect();
    let hi: Vec<f64> = c.iter().zip(&r).map(|(c, r)| (c + r).next_up()).collect();
    let y = labels[0] as usize;
    let k = model.graph.num_classes();
    let disjuncts: Vec<Vec<crate::vnnlib::Constraint>> = (0..k)
        .filter(|&j| j != y)
        .map(|j| vec![crate::vnnlib::Constraint { coef: vec![(j, 1.0), (y, -1.0)], offset: 0.0, strict: false }])
        .collect();
    let p = Problem { model, exact, lo: &lo, hi: &hi, disjuncts: &disjuncts };
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(bc.timeout.max(0.0));
    let (v, stats) = search(&p, &bc.options, deadline, None)?;
    Ok((v, stats.domains))
}

/// The inputs (normalised where asked), labels and input set of the examples `chunk`.
fn example_sets(
    model: &Model,
    data: &Dataset,
    chunk: &[usize],
    cfg: &CertifyConfig,
) -> Result<(candle_core::Tensor, Vec<u32>, InputSet)> {
    let (x, y) = data.batch(chunk, &model.device, model.dtype)?;
    let labels: Vec<u32> = y.to_vec1().context(|| "reading labels".to_string())?;
    let set = InputSet::new(&x, &vec![cfg.eps; chunk.len()], cfg.norm, cfg.bounds)?;
    let (x, set) = match &cfg.normalize {
        Some((m, s)) => (crate::dual::input_set::normalize(&x, m, s)?, set.normalized(m, s)?),
        None => (x, set),
    };
    Ok((x, labels, set))
}

/// Certify (and optionally attack) the examples `chunk` of `data`.
fn certify_chunk(
    model: &Model,
    exact: Option<&Model>,
    data: &Dataset,
    chunk: &[usize],
    cfg: &CertifyConfig,
) -> Result<Vec<ExampleRecord>> {
    let (x, labels, set) = example_sets(model, data, chunk, cfg)?;
    let logits = model.forward(&x)?;
    let preds: Vec<u32> = logits.argmax(1).and_then(|t| t.to_vec1()).context(|| "predictions".to_string())?;
    let cert = match cfg.proj {
        None => {
            let opts = Options {
                family: cfg.family,
                alpha_iters: cfg.alpha.0,
                alpha_lr: cfg.alpha.1,
                crown_layers: cfg.crown_layers,
                deployed: cfg.deployed,
                ..Default::default()
            };
            certify_batch_with(model, &set, &labels, &opts)?
        }
        Some((k, delta)) => {
            // A seed per batch, fixed by the examples it holds, so a run is repeatable.
            let seed = chunk.first().map(|&i| i as u64).unwrap_or(0);
            let opts = Options {
                proj: Some(k),
                seed,
                high_prob: Some(delta),
                family: cfg.family,
                alpha_iters: cfg.alpha.0,
                alpha_lr: cfg.alpha.1,
                deployed: cfg.deployed,
                ..Default::default()
            };
            certify_batch_with(model, &set, &labels, &opts)?
        }
    };
    let margins = cert.margin_rows()?;
    let finite = cert.finite(&margins);
    let certified = cert.certified(&margins, &labels, cfg.safety_margin);
    // PGD's counterexamples count only once a float64 check confirms them in real arithmetic
    // ([`confirm_pgd`]); `raw` keeps what the f32 attack saw, which must never contradict a certificate.
    let (attacked, raw) = match (&cfg.attack, exact) {
        (Some(pc), Some(exact)) => {
            let (adv, fooled) = pgd(model, &set, &labels, cfg.eps, Goal::Untargeted, pc)?;
            let ctx = || "reading the attack's points".to_string();
            let adv: Vec<Vec<f64>> =
                adv.to_dtype(DType::F64).and_then(|t| t.flatten_from(1)).and_then(|t| t.to_vec2()).context(ctx)?;
            let (pix, _) = data.batch(chunk, &candle_core::Device::Cpu, model.dtype)?;
            let pix: Vec<Vec<f64>> =
                pix.to_dtype(DType::F64).and_then(|t| t.flatten_from(1)).and_then(|t| t.to_vec2()).context(ctx)?;
            let mut ok = Vec::with_capacity(chunk.len());
            for k in 0..chunk.len() {
                let conf = fooled[k]
                    && !certified[k]
                    && preds[k] == labels[k]
                    && confirm_pgd(exact, &pix[k], &adv[k], labels[k] as usize, cfg)?;
                ok.push(conf);
            }
            (Some(ok), Some(fooled))
        }
        _ => (None, None),
    };
    Ok(chunk
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let y = labels[k];
            let min_m = min_margin(&margins[k], y);
            let attack_fooled = attacked.as_ref().map(|a| a[k]).unwrap_or(false);
            let raw_fooled = raw.as_ref().map(|a| a[k]).unwrap_or(false);
            let is_certified = certified[k] && preds[k] == y;
            let how = if preds[k] != y {
                Settled::Misclassified
            } else if is_certified {
                Settled::Bound
            } else if attack_fooled {
                Settled::Pgd
            } else {
                Settled::Unknown
            };
            ExampleRecord {
                index: i,
                label: y,
                prediction: preds[k],
                certified: certified[k] && preds[k] == y,
                min_margin_lb: (finite[k] && min_m.is_finite()).then_some(min_m),
                bounds_finite: finite[k],
                pgd_fooled: attacked.as_ref().map(|_| attack_fooled || preds[k] != y),
                attack_fooled: raw_fooled,
                how,
                search_seconds: None,
                search_domains: None,
            }
        })
        .collect())
}

/// Whether PGD's point `cand` (network input space, `[n]`) for example `x` (pixels, `[n]`, label `y`) breaks it in
/// real arithmetic: the point is moved into the user's set (`x ± ε` clipped to the box, computed in f64 and
/// shrunk by two ulps, so that it holds for the decimals given; ℓ2: scaled into the ball), mapped through the
/// normalisation with an enclosure of its rounding, and some other class must beat `y` for every output of the
/// float64 network's sound interval enclosure on that (tiny) box.
pub fn confirm_pgd(exact: &Model, x: &[f64], cand: &[f64], y: usize, cfg: &CertifyConfig) -> Result<bool> {
    let n = x.len();
    if cand.len() != n || n == 0 {
        return Ok(false);
    }
    // Per-channel normalisation of images `[C, H, W]`: channel of entry `i`.
    let chan = |i: usize, c: usize| if c == 0 { 0 } else { i / n.div_ceil(c).max(1) };
    let mut p: Vec<f64> = match &cfg.normalize {
        Some((m, s)) => cand.iter().enumerate().map(|(i, v)| v * s[chan(i, s.len())] + m[chan(i, m.len())]).collect(),
        None => cand.to_vec(),
    };
    let eps = cfg.eps.next_down().next_down();
    let (blo, bhi) =
        cfg.bounds.map(|(a, b)| (a.next_up().next_up(), b.next_down().next_down())).unwrap_or((f64::MIN, f64::MAX));
    match cfg.norm {
        Norm::Linf => {
            for (pi, xi) in p.iter_mut().zip(x) {
                let lo = (xi - eps).next_up().next_up().max(blo);
                let hi = (xi + eps).next_down().next_down().min(bhi);
                if !(lo <= hi) {
                    return Ok(false);
                }
                *pi = pi.max(lo).min(hi);
            }
        }
        Norm::L2 => {
            let d: f64 = p.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            let r = eps * (1.0 - 1e-9);
            if d > r {
                p.iter_mut().zip(x).for_each(|(a, b)| *a = b + (*a - b) * (r / d));
            }
            // Clipping into a box that holds `x` only shortens each coordinate's distance.
            p.iter_mut().for_each(|a| *a = a.max(blo).min(bhi));
        }
    }
    let (zl, zh): (Vec<f64>, Vec<f64>) = match &cfg.normalize {
        Some((m, s)) => p
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let z = (v - m[chan(i, m.len())]) / s[chan(i, s.len())];
                let w = 4.0 * f64::EPSILON * z.abs() + f64::MIN_POSITIVE;
                (z - w, z + w)
            })
            .unzip(),
        None => (p.clone(), p),
    };
    let mut shape = vec![1];
    shape.extend_from_slice(exact.graph.input_shape());
    let set = InputSet::from_host_box(&zl, &zh, &shape, DType::F64, &exact.device, false)?;
    let (ylo, yhi) = super::search::output_interval(exact, &set)?;
    let (ylo, yhi) = (&ylo[0], &yhi[0]);
    Ok(yhi.get(y).is_some_and(|hy| {
        hy.is_finite() && ylo.iter().enumerate().any(|(j, lj)| j != y && lj.is_finite() && *lj > *hy)
    }))
}

/// E0900: an example is both certified and broken by an attack. One of the two is wrong, and a wrong
/// certificate is the worst bug this tool can have, so the run stops instead of reporting both.
/// `what` says what certified it (`smallest margin bound 0.031`, `stage 2`).
pub fn contradiction(index: usize, what: &str, class: u32, attack: &str) -> Error {
    Error::Internal(Box::new(
        Diagnostic::new(
            Code::Contradiction,
            format!("example {index} is certified ({what}) but {attack} changes its prediction from {class}"),
        )
        .help("this is a bug in dualnet; please report it with the command, the spec, the weights and the data (certify in f64 or with a larger `--safety-margin` meanwhile)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contradiction_is_an_internal_error_with_its_code_and_exit_status() {
        let e = contradiction(17, "smallest margin bound 0.031200", 4, "PGD");
        assert_eq!(e.exit_code(), 3);
        match e {
            Error::Internal(d) => {
                assert_eq!(d.code, Code::Contradiction);
                assert_eq!(
                    d.message,
                    "example 17 is certified (smallest margin bound 0.031200) but PGD changes its prediction from 4"
                );
                assert!(d.help.as_deref().unwrap_or("").contains("bug"));
            }
            other => panic!("{other}"),
        }
    }
}

//! The training loop (paper Section 4 and the reference's `train_robust`): per batch, the robust cross-entropy of
//! the margin lower bounds of the config's `method` — the paper's dual network (random projections by default,
//! `proj: 50`), interval bounds (`ibp`) or CROWN-IBP — mixed with the clean cross-entropy by κ, plus Shi et al.'s
//! warm-up regularisers; or plain / PGD-adversarial training for comparison. ε, κ, β, the regularisers' weight
//! and the learning rate follow the config's schedules; a step with ε = 0 (warm-up) is a plain cross-entropy
//! step. Every `step_metrics_every` steps a step record goes to `metrics.jsonl`; each epoch (every `eval_every`)
//! ends with a certified error on a test subset at `eps_eval` with `eval_bound`, an epoch record, a plot, and
//! atomic checkpoints (`last`, `best`). The `last` checkpoint is also written every `checkpoint_minutes` and on
//! Ctrl-C, resumable mid-epoch; a non-finite loss stops the run keeping the last good checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};

use super::config::{BatchNorm, Init, Method, Mode, TrainConfig};
use super::optim::{clip_grad_norm, Optim};
use super::runfolder::{epoch_seed, EpochMetrics, Record, RunFolder, StepMetrics, TrainState};
use super::{interrupt, plot};
use crate::data::{self, Dataset, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::dual::bounds::Options;
use crate::dual::input_set::normalize;
use crate::dual::robust::{certify_batch_with, crown_ibp_batch, packed_certificate, robust_ce_per_example};
use crate::dual::{InputSet, Model};
use crate::error::{Context, Error, Result};
use crate::ir::Graph;
use crate::run::attack::{pgd, Goal, PgdConfig};
use crate::run::certify::{certify_dataset, CertifyConfig};
use crate::weights::Weights;
use rand::{Rng, SeedableRng};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub epochs: usize,
    pub last: Option<EpochMetrics>,
    pub best_metric: Option<f64>,
}

fn need<T: Clone>(v: &Option<T>, what: &str, flag: &str) -> Result<T> {
    v.clone().ok_or_else(|| {
        Error::input(
            Diagnostic::new(Code::BadOption, format!("no {what} given"))
                .help(format!("pass `{flag}` or set it in the YAML config")),
        )
    })
}

/// Named trainable parameters as variables, in node order; the model's tensors are replaced by the variables'.
pub fn make_vars(model: &mut Model) -> Result<Vec<(String, Var)>> {
    let mut vars = Vec::new();
    let names: Vec<(usize, String, Vec<(&'static str, bool)>)> = model
        .graph
        .order()
        .map(|i| {
            let n = model.graph.node(i);
            (i.index(), n.name.clone(), n.weights.iter().map(|w| (w.suffix, w.trainable)).collect())
        })
        .collect();
    for (idx, name, specs) in names {
        for (suffix, trainable) in specs {
            if !trainable {
                continue;
            }
            if let Some(t) = model.weights.per_node[idx].get_mut(suffix) {
                let v = Var::from_tensor(t).context(|| format!("parameter `{name}.{suffix}`"))?;
                *t = v.as_tensor().clone();
                vars.push((format!("{name}.{suffix}"), v));
            }
        }
    }
    Ok(vars)
}

/// A copy of the model whose weights are detached (no autograd graph is built when evaluating it).
fn detached(model: &Model) -> Model {
    let per_node =
        model.weights.per_node.iter().map(|m| m.iter().map(|(k, t)| (k.clone(), t.detach())).collect()).collect();
    Model::new(model.graph.clone(), Weights { per_node }, model.dtype, model.device.clone()).with_fixed_weights()
}

fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, y).context(|| "cross-entropy".to_string())
}

pub fn load_data(cfg: &TrainConfig) -> Result<(Dataset, Dataset)> {
    let dir = need(&cfg.data_dir, "data folder", "--data-dir")?;
    let train = data::load(&cfg.data, &dir, Split::Train)?;
    let train = match cfg.limit {
        Some(n) => train.limit(n),
        None => train,
    };
    let test = data::load(&cfg.data, &dir, Split::Test)?.limit(cfg.test_limit);
    Ok((train, test))
}

/// Train according to `cfg` into the run folder `out` (resuming from its `last` checkpoint if `resume`).
pub fn train(cfg: &TrainConfig, graph: Graph, out: &Path, resume: bool, progress: bool) -> Result<TrainSummary> {
    cfg.validate()?;
    let (train_set, test_set) = load_data(cfg)?;
    train_on(cfg, graph, out, resume, progress, &train_set, &test_set)
}

/// Train on the given data (a cascade stage trains on the examples earlier stages left uncertified).
pub fn train_on(
    cfg: &TrainConfig,
    graph: Graph,
    out: &Path,
    resume: bool,
    progress: bool,
    train_set: &Dataset,
    test_set: &Dataset,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let folder = RunFolder::create(out, resume)?;
    if train_set.shape.as_slice() != graph.input_shape().as_slice() {
        return Err(Error::input(
            Diagnostic::new(
                Code::DataInvalid,
                format!(
                    "`{}` images are {:?} but the spec's input is {:?}",
                    train_set.name,
                    train_set.shape,
                    graph.input_shape()
                ),
            )
            .help("use a spec whose `input` matches the data set"),
        ));
    }
    let device = cfg.device.open_seeded(cfg.seed)?;
    let dtype = DType::F32;
    if device.is_cpu() {
        // Weights, gradients and two optimiser buffers, plus one step's bound values for the whole batch.
        let probe = Model::new(
            graph.clone(),
            Weights { per_node: vec![Default::default(); graph.dag.node_count()] },
            dtype,
            device.clone(),
        );
        let per_example = match (cfg.mode, cfg.method, cfg.projections()) {
            (Mode::Robust, Method::Dual, Some(k)) => crate::dual::bounds::projected_bytes_per_example(&probe, k),
            (Mode::Robust, Method::Dual, None) => crate::dual::bounds::exact_bytes_per_example(&probe) as f64,
            _ => 0.0,
        };
        crate::memory::ensure_fits(
            4.0 * 4.0 * graph.parameter_count() as f64 + cfg.batch as f64 * per_example,
            &format!("training `{}` (weights, optimiser state and a batch of {}'s bounds)", graph.name, cfg.batch),
            "lower `batch`, use projections (`proj: K`), or a smaller network",
        )?;
    }
    let mut cfg = cfg.clone();
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch);
    cfg.fill_ramp_steps(steps_per_epoch);

    let (weights, optim_state, mut state) = if resume && folder.has_checkpoint("last") {
        let (w, o, s) = folder.load_checkpoint("last")?;
        let ofile = folder.file("last.optim.safetensors").display().to_string();
        let mut bad: Vec<Diagnostic> = Vec::new();
        let mut keys: Vec<&String> = o.keys().collect();
        keys.sort();
        for k in keys {
            bad.extend(crate::finite::weight_diagnostic(k, &ofile, &o[k])?);
        }
        if !bad.is_empty() {
            return Err(Error::Input(bad));
        }
        let w = Weights::from_map(&graph, w, &folder.file("last.safetensors").display().to_string(), dtype)?
            .to_device(&device)?;
        (w, Some(o), s)
    } else {
        let w = match cfg.init {
            Init::Default => Weights::init(&graph, cfg.seed, dtype, &device)?,
            Init::Ibp => Weights::init_ibp(&graph, cfg.seed, dtype, &device)?,
        };
        (w, None, TrainState { seed: cfg.seed, ..TrainState::default() })
    };
    folder.write_config(&cfg)?;
    let mut records = if resume { folder.truncate_metrics(state.epoch, state.step)? } else { Vec::new() };

    let mut model = Model::new(graph, weights, dtype, device.clone());
    let vars = make_vars(&mut model)?;
    let mut opt = Optim::from_config(&cfg, vars.clone());
    if let Some(o) = &optim_state {
        opt.load_state(o)?;
    }
    interrupt::install()?;

    let save = |name: &str, model: &Model, opt: &Optim, state: &TrainState| -> Result<()> {
        folder.save_checkpoint(name, &model.weights.to_map(&model.graph), &opt.state_tensors()?, state)
    };

    let bn_nodes = super::batchnorm::nodes(&model);
    let mut window = StepWindow::default();
    let mut last_save = Instant::now();
    for epoch in state.epoch..cfg.epochs {
        let t0 = Instant::now();
        let lr = cfg.lr_at(epoch);
        let order = train_set.shuffled_indices(epoch_seed(cfg.seed, epoch), 0);
        let batches: Vec<&[usize]> = order.chunks(cfg.batch).collect();
        let bar = if progress { ProgressBar::new(batches.len() as u64) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let skip = state.batch_in_epoch;
        let mut aug_rng = rand::rngs::StdRng::seed_from_u64(epoch_seed(cfg.seed ^ 0xa06, epoch));
        // Skipped batches (resume) still draw their augmentation, so the stream matches an uninterrupted run.
        if cfg.augment {
            for idx in batches.iter().take(skip) {
                let (x, _) = train_set.batch(idx, &device, dtype)?;
                augment(&x, &mut aug_rng)?;
            }
        }
        bar.inc(skip as u64);
        let (mut loss_sum, mut robust_wrong, mut clean_wrong, mut seen) = (0f64, 0usize, 0usize, 0usize);
        for (bi, idx) in batches.iter().enumerate().skip(skip) {
            let at = state.step as usize;
            let eps = cfg.eps_at(epoch, at);
            let (kappa, beta, reg_weight) =
                (cfg.kappa_at(epoch, at), cfg.beta_at(epoch, at), cfg.reg_weight_at(epoch, at));
            let (x, y) = train_set.batch(idx, &device, dtype)?;
            let x = if cfg.augment { augment(&x, &mut aug_rng)? } else { x };
            let labels: Vec<u32> = y.to_vec1().context(|| "labels".to_string())?;
            let set = InputSet::new(&x, &vec![eps; labels.len()], cfg.norm, cfg.input_box())?;
            let (x, set) = match (&cfg.mean, &cfg.std) {
                (Some(m), Some(sd)) => (normalize(&x, m, sd)?, set.normalized(m, sd)?),
                _ => (x, set),
            };
            // `batchnorm: batch`: this step normalises with the clean batch's statistics.
            let bn_saved = match cfg.batchnorm {
                BatchNorm::Batch if !bn_nodes.is_empty() => {
                    Some(super::batchnorm::use_batch_stats(&mut model, &x, &bn_nodes)?)
                }
                _ => None,
            };
            // `ibp` and `crown-ibp` over a box push the clean inputs through the network in the robust step's
            // own pass (one fused op per node); every other step runs the clean forward pass here.
            let fused = cfg.mode == Mode::Robust && eps > 0.0 && packed_step(cfg.method, &set);
            let logits = match fused {
                true => None,
                false => Some(model.forward(&x)?),
            };
            let forward =
                || logits.as_ref().ok_or_else(|| Error::Usage("internal: the clean forward pass was skipped".into()));
            let mut batch_clean_wrong = match &logits {
                Some(logits) => {
                    let preds: Vec<u32> =
                        logits.argmax(1).and_then(|t| t.to_vec1()).context(|| "predictions".to_string())?;
                    preds.iter().zip(&labels).filter(|(p, l)| p != l).count()
                }
                None => 0,
            };
            let mut batch_robust_wrong = batch_clean_wrong;
            let mut reg_value = 0.0;
            let loss = match cfg.mode {
                // ε = 0 (warm-up): the robust loss is the clean one; a plain step.
                Mode::Robust if eps <= 0.0 => Step::Loss(cross_entropy(forward()?, &y)?),
                Mode::Robust => {
                    let spec = RobustLoss {
                        opts: Options {
                            family: cfg.method.family(),
                            proj: if cfg.method == Method::Dual { cfg.projections() } else { None },
                            seed: epoch_seed(cfg.seed ^ 0xb0b, state.step as usize),
                            ..Default::default()
                        },
                        method: cfg.method,
                        beta,
                        reg_weight,
                        reg_tol: cfg.reg_tol,
                        kappa,
                    };
                    let step = robust_grads_with(&model, &set, &labels, &spec, &vars, fused.then_some(&x))?;
                    batch_robust_wrong = step.robust_wrong;
                    reg_value = step.reg;
                    if let Some(cw) = step.clean_wrong {
                        // The mix κ · clean + (1 − κ) · robust is already in the step's loss.
                        batch_clean_wrong = cw;
                        Step::Done(step.loss, step.grads)
                    } else if kappa > 0.0 {
                        let (lv, grads) = (step.loss, step.grads);
                        // κ · clean cross-entropy + (1 − κ) · robust loss (Gowal et al.'s mix).
                        let clean = (cross_entropy(forward()?, &y)? * kappa).context(|| "clean loss".to_string())?;
                        let cv: f64 =
                            clean.to_dtype(DType::F64).and_then(|t| t.to_scalar()).context(|| "loss".to_string())?;
                        let mut g = clean.backward().context(|| "backward pass".to_string())?;
                        for (_, v) in &vars {
                            let t = v.as_tensor();
                            let r = grads
                                .get(t)
                                .map(|r| r * (1.0 - kappa))
                                .transpose()
                                .context(|| "mixing gradients".to_string())?;
                            let sum = match (g.get(t), r) {
                                (Some(a), Some(b)) => Some((a + b).context(|| "mixing gradients".to_string())?),
                                (None, Some(b)) => Some(b),
                                (a, None) => a.cloned(),
                            };
                            if let Some(s) = sum {
                                g.insert(t, s);
                            }
                        }
                        Step::Done(cv + (1.0 - kappa) * lv, g)
                    } else {
                        Step::Done(step.loss, step.grads)
                    }
                }
                Mode::Plain => Step::Loss(cross_entropy(forward()?, &y)?),
                Mode::Pgd => {
                    let pc = PgdConfig { steps: cfg.pgd_steps, step_size: None, restarts: 1, seed: state.step };
                    let (xa, fooled) = pgd(&detached(&model), &set, &labels, eps, Goal::Untargeted, &pc)?;
                    batch_robust_wrong = fooled.iter().filter(|f| **f).count();
                    Step::Loss(cross_entropy(&model.forward(&xa.detach())?, &y)?)
                }
            };
            robust_wrong += batch_robust_wrong;
            clean_wrong += batch_clean_wrong;
            let (lv, mut grads) = match loss {
                Step::Done(lv, g) => (lv, g),
                Step::Loss(l) => {
                    let lv: f64 = l.to_dtype(DType::F64).and_then(|t| t.to_scalar()).context(|| "loss".to_string())?;
                    (lv, l.backward().context(|| "backward pass".to_string())?)
                }
            };
            if !lv.is_finite() {
                bar.abandon();
                return Err(Error::Stopped(format!(
                    "the loss became {lv} at epoch {} step {}; stopped without saving these weights — the last good checkpoint is `{}` (lower `--lr` or resume from it)",
                    epoch + 1,
                    state.step,
                    folder.file("last.safetensors").display()
                )));
            }
            if let Some(c) = cfg.grad_clip {
                clip_grad_norm(&mut grads, &vars, c)?;
            }
            opt.step(&grads, lr)?;
            if let Some(saved) = bn_saved {
                super::batchnorm::update_running(&mut model, &bn_nodes, saved, cfg.bn_momentum)?;
            }
            if !crate::weights::all_finite(&model.weights)? {
                bar.abandon();
                return Err(Error::Stopped(format!(
                    "the weights became non-finite (NaN or ±inf) at epoch {} step {}; stopped without saving them — the last good checkpoint is `{}` (lower `--lr`, set `grad_clip`, or resume from it)",
                    epoch + 1,
                    state.step,
                    folder.file("last.safetensors").display()
                )));
            }
            state.step += 1;
            state.eps = eps;
            state.lr = lr;
            loss_sum += lv * labels.len() as f64;
            seen += labels.len();
            window.add(lv, labels.len(), batch_robust_wrong, batch_clean_wrong, reg_value);
            if cfg.step_metrics_every > 0 && state.step % cfg.step_metrics_every as u64 == 0 {
                let m = window.take(
                    state.step,
                    epoch,
                    epoch as f64 + (bi + 1) as f64 / batches.len().max(1) as f64,
                    [eps, kappa, if cfg.method == Method::CrownIbp { beta } else { f64::NAN }, lr],
                );
                folder.append_step(&m)?;
                records.push(Record::Step(m));
            }
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} {}clean err {:.1}% eps {eps:.3}",
                loss_sum / seen as f64,
                match cfg.mode {
                    Mode::Plain => String::new(),
                    _ => format!("robust err {:.1}% ", 100.0 * robust_wrong as f64 / seen as f64),
                },
                100.0 * clean_wrong as f64 / seen as f64
            ));
            let timed = cfg.checkpoint_minutes > 0.0
                && last_save.elapsed().as_secs_f64() >= 60.0 * cfg.checkpoint_minutes
                && bi + 1 < batches.len();
            if interrupt::requested() || timed {
                state.epoch = epoch;
                state.batch_in_epoch = bi + 1;
                save("last", &model, &opt, &state)?;
                last_save = Instant::now();
                if timed {
                    continue;
                }
                bar.abandon();
                return Err(Error::Stopped(format!(
                    "interrupted at epoch {} batch {}; saved `{}` — continue with `dualnet train --resume {}`",
                    epoch + 1,
                    bi + 1,
                    folder.file("last.safetensors").display(),
                    out.display()
                )));
            }
        }
        bar.finish_and_clear();
        // Evaluation: certified error at `eps_eval` with `eval_bound` on the test subset, every `eval_every`
        // epochs and after the last.
        let evaluate = (epoch + 1) % cfg.eval_every.max(1) == 0 || epoch + 1 == cfg.epochs;
        let ccfg = CertifyConfig {
            family: cfg.eval_bound,
            alpha: (crate::dual::bounds::DEFAULT_ALPHA_ITERS, crate::dual::bounds::DEFAULT_ALPHA_LR),
            eps: cfg.eval_eps(),
            norm: cfg.norm,
            bounds: cfg.input_box(),
            batch: cfg.batch.max(100),
            safety_margin: 0.0,
            attack: None,
            progress,
            normalize: cfg.mean.clone().zip(cfg.std.clone()),
            proj: None,
            crown_layers: false,
            branch: None,
            // What `certify` does by default: the certificate covers an f32 inference too.
            deployed: Some(candle_core::DType::F32),
        };
        let (test_clean, test_cert) = if test_set.is_empty() || !evaluate {
            (f64::NAN, None)
        } else {
            let (_, s) = certify_dataset(&detached(&model), test_set, &ccfg)?;
            (s.clean_err, Some(s.certified_robust_err))
        };
        let seen_f = seen.max(1) as f64;
        let m = EpochMetrics {
            epoch,
            eps: state.eps,
            lr,
            train_robust_loss: loss_sum / seen_f,
            train_robust_err: if cfg.mode == Mode::Plain { f64::NAN } else { robust_wrong as f64 / seen_f },
            train_clean_err: clean_wrong as f64 / seen_f,
            test_clean_err: test_clean,
            test_certified_err: test_cert,
            seconds: t0.elapsed().as_secs_f64(),
            examples: seen,
            eval_bound: test_cert.map(|_| cfg.eval_bound.to_string()),
            eval_eps: test_cert.map(|_| cfg.eval_eps()),
        };
        state.epoch = epoch + 1;
        state.batch_in_epoch = 0;
        let metric = test_cert.unwrap_or(test_clean);
        folder.append_metrics(&m)?;
        records.push(Record::Epoch(m.clone()));
        save("last", &model, &opt, &state)?;
        last_save = Instant::now();
        if state.best_metric.map(|b| metric < b).unwrap_or(true) && metric.is_finite() {
            state.best_metric = Some(metric);
            state.best_epoch = Some(epoch);
            save("best", &model, &opt, &state)?;
            save("last", &model, &opt, &state)?;
        }
        plot::plot_metrics(&records, &folder.file("metrics.png"))?;
        if progress {
            eprintln!(
                "epoch {}/{}: eps {:.3} lr {:.2e} loss {:.4} train robust err {} clean err {:.2}% | test certified err {} clean err {} ({:.1} s)",
                epoch + 1,
                cfg.epochs,
                m.eps,
                lr,
                m.train_robust_loss,
                if m.train_robust_err.is_finite() { format!("{:.2}%", 100.0 * m.train_robust_err) } else { "n/a".into() },
                100.0 * m.train_clean_err,
                m.test_certified_err
                    .map(|c| format!("{:.2}% ({} at eps {})", 100.0 * c, cfg.eval_bound, cfg.eval_eps()))
                    .unwrap_or_else(|| "n/a".into()),
                if m.test_clean_err.is_finite() { format!("{:.2}%", 100.0 * m.test_clean_err) } else { "n/a".into() },
                m.seconds
            );
        }
    }
    model.weights.save(&model.graph, &folder.file("weights.safetensors"))?;
    Ok(TrainSummary {
        out: out.to_path_buf(),
        epochs: cfg.epochs,
        last: records.iter().rev().find_map(Record::epoch).cloned(),
        best_metric: state.best_metric,
    })
}

/// Random crop of the original size from the image zero-padded by 4, and a horizontal flip with probability 1/2
/// (the reference's CIFAR augmentation). `x: [B, C, H, W]`.
pub fn augment(x: &Tensor, rng: &mut rand::rngs::StdRng) -> Result<Tensor> {
    let ctx = || "augmenting a batch".to_string();
    let (b, c, h, w) = x.dims4().context(ctx)?;
    let src: Vec<f32> = x.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).context(ctx)?;
    let pad = 4i64;
    let mut out = vec![0f32; src.len()];
    for n in 0..b {
        let dy = rng.random_range(-pad..=pad);
        let dx = rng.random_range(-pad..=pad);
        let flip = rng.random_bool(0.5);
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let si = i as i64 + dy;
                    let jj = if flip { w - 1 - j } else { j };
                    let sj = jj as i64 + dx;
                    if si >= 0 && si < h as i64 && sj >= 0 && sj < w as i64 {
                        out[((n * c + ch) * h + i) * w + j] = src[((n * c + ch) * h + si as usize) * w + sj as usize];
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, c, h, w), x.device()).and_then(|t| t.to_dtype(x.dtype())).context(ctx)
}

/// A training step's loss: a tensor still to differentiate, or already differentiated (value and gradients).
enum Step {
    Loss(Tensor),
    Done(f64, candle_core::backprop::GradStore),
}

/// Running sums of the steps since the last step record.
#[derive(Default)]
struct StepWindow {
    loss: f64,
    reg: f64,
    examples: usize,
    robust_wrong: usize,
    clean_wrong: usize,
    steps: usize,
}

impl StepWindow {
    fn add(&mut self, loss: f64, n: usize, robust_wrong: usize, clean_wrong: usize, reg: f64) {
        self.loss += loss * n as f64;
        self.reg += reg;
        self.examples += n;
        self.robust_wrong += robust_wrong;
        self.clean_wrong += clean_wrong;
        self.steps += 1;
    }

    /// The record of the window (`[eps, kappa, beta, lr]` at its last step), and a fresh window.
    fn take(&mut self, step: u64, epoch: usize, at: f64, [eps, kappa, beta, lr]: [f64; 4]) -> StepMetrics {
        let n = self.examples.max(1) as f64;
        let m = StepMetrics {
            kind: "step".into(),
            step,
            epoch,
            at,
            eps,
            kappa,
            beta,
            lr,
            loss: self.loss / n,
            batch_robust_err: self.robust_wrong as f64 / n,
            batch_clean_err: self.clean_wrong as f64 / n,
            reg: self.reg / self.steps.max(1) as f64,
        };
        *self = StepWindow::default();
        m
    }
}

/// What a robust training step computes: the bound (`opts` for the dual network and `ibp`; `method`), the
/// CROWN-IBP mix β, the warm-up regulariser's weight and tolerance, and the weight κ of the clean cross-entropy
/// (used when the clean inputs come with the step, see [`robust_grads_with`]).
#[derive(Debug, Clone, Copy)]
pub struct RobustLoss {
    pub opts: Options,
    pub method: Method,
    pub beta: f64,
    pub reg_weight: f64,
    pub reg_tol: f64,
    pub kappa: f64,
}

/// One robust step's results (see [`robust_grads_with`]).
pub struct RobustStep {
    /// The loss (mean over the batch).
    pub loss: f64,
    pub grads: candle_core::backprop::GradStore,
    /// Examples the step's bound does not certify.
    pub robust_wrong: usize,
    /// The warm-up regulariser's (unweighted) value.
    pub reg: f64,
    /// Examples the clean forward pass gets wrong, when the step included the clean loss.
    pub clean_wrong: Option<usize>,
}

/// The robust cross-entropy of the dual network's or the interval bounds (`opts.family`), mean over the batch,
/// and its gradients; see [`robust_grads_with`].
pub fn robust_grads(
    model: &Model,
    set: &InputSet,
    labels: &[u32],
    opts: &Options,
    vars: &[(String, Var)],
) -> Result<(f64, candle_core::backprop::GradStore, usize)> {
    let spec = RobustLoss { opts: *opts, method: Method::Dual, beta: 0.0, reg_weight: 0.0, reg_tol: 0.5, kappa: 0.0 };
    let s = robust_grads_with(model, set, labels, &spec, vars, None)?;
    Ok((s.loss, s.grads, s.robust_wrong))
}

/// Whether a step of `method` over `set` takes the packed interval path ([`packed_certificate`]), which also
/// carries the clean inputs: `ibp` and `crown-ibp` over a box.
pub fn packed_step(method: Method, set: &InputSet) -> bool {
    matches!(method, Method::Ibp | Method::CrownIbp) && matches!(set, InputSet::Box { .. })
}

/// The robust cross-entropy (mean over the batch) of `spec`'s bound, plus the weighted warm-up regulariser, and
/// its gradients, with the batch split across worker threads, one per core: each part's loss is its share of the
/// mean, and the parts' gradients are summed. Each part draws its own projections (seed + part).
///
/// With `clean` inputs (`[B, *in]`, only where [`packed_step`] holds) the loss is Gowal et al.'s mix
/// `κ · CE(clean) + (1 − κ) · (robust + reg_weight · reg)`, computed in the same pass (the clean inputs ride
/// along with the interval bounds), and the step also counts the clean errors.
pub fn robust_grads_with(
    model: &Model,
    set: &InputSet,
    labels: &[u32],
    spec: &RobustLoss,
    vars: &[(String, Var)],
    clean: Option<&Tensor>,
) -> Result<RobustStep> {
    let opts = &spec.opts;
    let b = labels.len();
    let packed = packed_step(spec.method, set);
    if clean.is_some() && !packed {
        return Err(Error::Usage("internal: clean inputs passed to a step without the packed interval path".into()));
    }
    let workers = crate::device::workers(&model.device).clamp(1, b.max(1));
    let part = b.div_ceil(workers).max(1);
    let ranges: Vec<(usize, usize)> = (0..b).step_by(part).map(|s| (s, part.min(b - s))).collect();
    type Part = (f64, candle_core::backprop::GradStore, usize, f64, Option<usize>);
    let one = |k: usize, s: usize, n: usize| -> Result<Part> {
        let sub = set.narrow(s, n)?;
        let ys = &labels[s..s + n];
        let o = Options { seed: opts.seed.wrapping_add(0x9E37_79B9 * k as u64), ..*opts };
        let xs = clean.map(|x| x.narrow(0, s, n)).transpose().context(|| "splitting the batch".to_string())?;
        let (cert, logits, boxes) = match packed {
            true => {
                let beta = if spec.method == Method::CrownIbp { spec.beta } else { 0.0 };
                let p = packed_certificate(model, &sub, ys, xs.as_ref(), beta, spec.reg_weight > 0.0)?
                    .ok_or_else(|| Error::Usage("internal: the packed path needs a box".into()))?;
                (p.cert, p.logits, Some((p.boxes, p.points)))
            }
            false => match spec.method {
                Method::CrownIbp => (crown_ibp_batch(model, &sub, ys, spec.beta)?, None, None),
                Method::Dual | Method::Ibp => (certify_batch_with(model, &sub, ys, &o)?, None, None),
            },
        };
        let lb = cert.margin_rows()?;
        let wrong = cert.certified(&lb, ys, 0.0).iter().filter(|c| !**c).count();
        let mut loss = robust_ce_per_example(&cert.margin_lb)?
            .sum_all()
            .and_then(|t| t / b as f64)
            .context(|| "robust loss".to_string())?;
        let mut reg_value = 0.0;
        let reg = match (spec.reg_weight > 0.0, &boxes) {
            (false, _) => None,
            (true, Some((boxes, points))) => {
                super::regularise::warmup_regulariser_packed(boxes, *points, sub.mean_radius()?, spec.reg_tol)?
            }
            (true, None) => {
                super::regularise::warmup_regulariser(&cert.bounds.layers, sub.mean_radius()?, spec.reg_tol)?
            }
        };
        if let Some(reg) = reg {
            let reg = reg.to_dtype(loss.dtype()).context(|| "warm-up regulariser".to_string())?;
            reg_value =
                reg.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).context(|| "regulariser".to_string())?
                    * n as f64
                    / b as f64;
            // The part's share of the batch's regulariser.
            loss = (loss + (reg * (spec.reg_weight * n as f64 / b as f64)).context(|| "regulariser".to_string())?)
                .context(|| "regulariser".to_string())?;
        }
        // A non-finite layer bound can leave the loss finite (a NaN bound reads as an inactive ReLU); report it
        // as a NaN loss so the run stops on it like on any diverged loss.
        let finite = cert.finite(&lb).iter().all(|f| *f);
        let mut clean_wrong = None;
        if let Some(logits) = &logits {
            let ctx = || "clean loss".to_string();
            let y = Tensor::from_slice(ys, n, logits.device()).context(ctx)?;
            let preds: Vec<u32> = logits.argmax(1).and_then(|t| t.to_vec1()).context(ctx)?;
            clean_wrong = Some(preds.iter().zip(ys).filter(|(p, l)| p != l).count());
            // The part's share of the batch mean: its sum over `b`.
            let ce = (cross_entropy(logits, &y)? * (spec.kappa * n as f64 / b as f64)).context(ctx)?;
            loss = ((loss * (1.0 - spec.kappa)).context(ctx)? + ce).context(ctx)?;
        }
        let lv: f64 = loss.to_dtype(DType::F64).and_then(|t| t.to_scalar()).context(|| "loss".to_string())?;
        let lv = if finite { lv } else { f64::NAN };
        let grads = loss.backward().context(|| "backward pass".to_string())?;
        Ok((lv, grads, wrong, reg_value, clean_wrong))
    };
    let results: Vec<Result<Part>> = std::thread::scope(|sc| {
        let handles: Vec<_> = ranges.iter().enumerate().map(|(k, &(s, n))| sc.spawn(move || one(k, s, n))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Usage("internal: a training worker panicked".into()))))
            .collect()
    });
    let mut it = results.into_iter();
    let (mut lv, mut grads, mut wrong, mut reg, mut clean_wrong) = match it.next() {
        Some(r) => r?,
        None => return Err(Error::Usage("internal: empty batch".into())),
    };
    for r in it {
        let (l, g, w, rg, cw) = r?;
        lv += l;
        wrong += w;
        reg += rg;
        clean_wrong = clean_wrong.zip(cw).map(|(a, b)| a + b);
        for (_, v) in vars {
            let t = v.as_tensor();
            let sum = match (grads.get(t), g.get(t)) {
                (Some(a), Some(b)) => Some((a + b).context(|| "summing gradients".to_string())?),
                (None, Some(b)) => Some(b.clone()),
                _ => None,
            };
            if let Some(sum) = sum {
                grads.insert(t, sum);
            }
        }
    }
    Ok(RobustStep { loss: lv, grads, robust_wrong: wrong, reg, clean_wrong })
}

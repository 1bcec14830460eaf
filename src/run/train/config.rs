//! The training configuration: one YAML file (`dualnet train --config run.yaml`), command-line overrides
//! ([`TrainOverrides`], one flag per field), validation with a diagnostic per problem, and the ε and learning-rate
//! schedules.
//!
//! Defaults follow the MNIST recipe of Wong, Schmidt, Metzen, Kolter (2018): Adam at lr 1e-3, batch 50, 20 epochs,
//! ε ramped linearly from 0.01 to 0.1 over the first 10 epochs, then the learning rate halved every 10 epochs,
//! 50 random projections (Cauchy / median estimates) during training, inputs boxed to [0, 1].
//!
//! ```yaml
//! spec: specs/mnist_small.net
//! data: mnist
//! data_dir: /path/to/mnist   # a folder with all four MNIST idx files (default `data/mnist`: the test split only)
//! epochs: 20
//! eps: 0.1
//! proj: 50        # null (or 0) for exact bounds
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;
use crate::diagnostics::{did_you_mean, Code, Diagnostic, SourceFile};
use crate::dual::input_set::Norm;
use crate::error::{Error, Result};
use crate::syntax::ast::Span;

/// Which optimizer updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam (betas 0.9 / 0.999, eps 1e-8; `weight_decay` is added to the gradient, as in PyTorch's `Adam`).
    Adam,
    /// Stochastic gradient descent with `momentum` and `weight_decay` (PyTorch semantics).
    Sgd,
}

/// How ε grows from `eps_start` to `eps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EpsRamp {
    /// One ε per epoch: `linspace(eps_start, eps, eps_schedule_epochs)`, then `eps` (the paper's schedule).
    Epoch,
    /// A new ε every optimizer step: linear from `eps_start` to `eps` over the first `ramp_steps` steps.
    Step,
    /// Shi et al. 2021's smoothed ramp, a new ε every step over `ramp_steps` steps: polynomial growth
    /// (`p^4`) over the first quarter, then linear, with value and slope continuous where they meet.
    Smooth,
}

/// Which bound the robust loss is computed from (`method:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Method {
    /// The paper's dual network (the `wk` relaxation), exact or with random projections (`proj`).
    #[serde(rename = "dual")]
    Dual,
    /// Interval bound propagation (Gowal et al. 2018): two forward passes, the last layer folded into the margin.
    #[serde(rename = "ibp")]
    Ibp,
    /// CROWN-IBP (Zhang et al. 2020): interval bounds for every layer, then one CROWN pass back from the margins;
    /// the loss bound is `β · crown + (1 − β) · ibp`, with β following `beta_start → beta` over the ε ramp.
    #[serde(rename = "crown-ibp")]
    #[value(name = "crown-ibp")]
    CrownIbp,
}

impl Method {
    /// The relaxation family of the method's bound: `wk` for the dual network, `ibp` for the interval bounds
    /// (which CROWN-IBP's layer bounds also are).
    pub fn family(self) -> crate::ops::Family {
        match self {
            Method::Dual => crate::ops::Family::Wk,
            Method::Ibp | Method::CrownIbp => crate::ops::Family::Ibp,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Dual => "dual",
            Method::Ibp => "ibp",
            Method::CrownIbp => "crown-ibp",
        })
    }
}

/// How the weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The reference's: PyTorch's default uniform initialisation of each layer.
    Default,
    /// Shi et al. 2021's IBP initialisation: every affine layer but the last drawn from `N(0, 2π / fan_in²)`, so
    /// that interval widths neither grow nor shrink from layer to layer at initialisation.
    Ibp,
}

/// How `batchnorm2d` layers normalise during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BatchNorm {
    /// With the statistics of each clean training batch (per channel, over the batch and the image), used as
    /// constants by the forward pass and by the bounds of that step; the running statistics follow them with
    /// `bn_momentum`, and certification uses the running statistics (frozen).
    Batch,
    /// With the stored running statistics throughout (a fixed affine map; only `weight` and `bias` train).
    Frozen,
}

/// What the training loss is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The robust cross-entropy of the dual network's margin bound (provable training).
    Robust,
    /// Ordinary cross-entropy on clean inputs (a baseline, no robustness).
    Plain,
    /// Cross-entropy on PGD adversarial examples (`pgd_steps` steps; empirical robustness only).
    Pgd,
}

/// Every setting of a training run. Written to `config.yaml` in the run folder, so a run can be repeated or
/// resumed exactly. Unknown keys are errors; missing keys take the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The network to train: a `.net` file. Required (here or as `--spec`).
    pub spec: Option<PathBuf>,
    /// Data set: `mnist` or `cifar10` (default `mnist`).
    pub data: String,
    /// Folder with the data files (default `data/mnist`, which holds only the MNIST test split).
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training examples only (default: all).
    pub limit: Option<usize>,
    /// Certified error is evaluated each epoch on the first N test images (default 1000; 0 skips it).
    pub test_limit: usize,
    /// Number of passes over the training set (default 20).
    pub epochs: usize,
    /// Examples per optimizer step (default 50).
    pub batch: usize,
    /// `adam` or `sgd` (default `adam`).
    pub optimizer: Optimizer,
    /// Initial learning rate (default 1e-3).
    pub lr: f64,
    /// SGD momentum (default 0.9; ignored by Adam).
    pub momentum: f64,
    /// L2 weight decay, added to the gradient (default 0).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value before each step (default: no clipping).
    pub grad_clip: Option<f64>,
    /// After the ε schedule ends, halve the learning rate every N epochs (default 10; 0 never halves).
    pub lr_halve_every: usize,
    /// Final training radius ε, in input units (pixels in [0, 1]) (default 0.1).
    pub eps: f64,
    /// First training radius of the ε schedule (default 0.01).
    pub eps_start: f64,
    /// Length in epochs of the ε schedule: ε = linspace(eps_start, eps, N) per epoch, then `eps` (default 10).
    pub eps_schedule_epochs: usize,
    /// `epoch` (one ε per epoch, default) or `step` (a new ε every step over `ramp_steps` steps).
    pub eps_ramp: EpsRamp,
    /// Steps of the per-step ramp (`eps_ramp: step`); default: `eps_schedule_epochs` epochs' worth of steps.
    pub ramp_steps: Option<usize>,
    /// Intersect the ℓ∞ ball with the box [0, 1] of valid pixels (default true; `false` for `norm: l2`).
    pub bounded: bool,
    /// Perturbation norm: `linf` or `l2` (default `linf`).
    pub norm: Norm,
    /// Random projections for the training bounds (default 50); `null` or 0 computes exact bounds.
    pub proj: Option<usize>,
    /// `robust` (provable training, default), `plain` (clean cross-entropy) or `pgd` (adversarial training).
    pub mode: Mode,
    /// The bound of the robust loss: `dual` (the paper's, default), `ibp` or `crown-ibp`.
    pub method: Method,
    /// Weight κ of the clean cross-entropy in the robust loss, `κ · CE + (1 − κ) · robust`, at the end of the
    /// ε ramp (default 0: the robust loss alone, as in the paper; interval training wants e.g. 0.5).
    pub kappa: f64,
    /// κ at the start of the ε ramp; κ moves linearly from it to `kappa` as ε ramps up (default: `kappa`, a
    /// fixed mix; Gowal et al. start at 1).
    pub kappa_start: Option<f64>,
    /// `crown-ibp`: the weight β of the CROWN bound at the start of the ε ramp (default 1).
    pub beta_start: f64,
    /// `crown-ibp`: β at the end of the ε ramp (default 0: pure interval bounds at the final ε, as Zhang et al.).
    pub beta: f64,
    /// Epochs of plain cross-entropy (ε = 0) before the ε ramp starts (default 0).
    pub eps_ramp_start: usize,
    /// The ε of the per-epoch certified evaluation (default: `eps`). Training at a larger ε than the one to
    /// certify (`eps: 0.4`, `eps_eval: 0.3`) is common with interval bounds.
    pub eps_eval: Option<f64>,
    /// Weight initialisation: `default` or `ibp` (Shi et al. 2021).
    pub init: Init,
    /// Shi et al.'s warm-up regularisers (interval tightness and ReLU balance) with weight
    /// `reg_lambda · (1 − ramp progress)`: strongest at the start of the ε ramp, gone at its end (default 0: off).
    pub reg_lambda: f64,
    /// The tolerance τ of the warm-up regularisers (default 0.5).
    pub reg_tol: f64,
    /// Multiply the learning rate by `lr_decay_factor` at each of these epochs (0-based, e.g. `[25, 35]`);
    /// when given, `lr_halve_every` is not used (default: none).
    pub lr_decay_epochs: Vec<usize>,
    /// The factor of each `lr_decay_epochs` step (default 0.2).
    pub lr_decay_factor: f64,
    /// Write a per-step record (loss, ε, κ, β, batch errors) to `metrics.jsonl` every N steps (default 50;
    /// 0: none).
    pub step_metrics_every: usize,
    /// Also write the resumable `last` checkpoint every this many minutes of training (default 5; 0: only at
    /// epoch ends and on Ctrl-C).
    pub checkpoint_minutes: f64,
    /// The bound of the per-epoch certified evaluation (default `crown`, which is never looser than `ibp`).
    pub eval_bound: crate::ops::Family,
    /// Evaluate every N epochs, and always after the last one (default 1).
    pub eval_every: usize,
    /// `batchnorm2d` in training: `batch` (batch statistics, running statistics updated) or `frozen` (default
    /// `batch`).
    pub batchnorm: BatchNorm,
    /// The running statistics' update `running = (1 − m) · running + m · batch` (default 0.1, PyTorch's).
    pub bn_momentum: f64,
    /// Steps per epoch, filled in by the trainer (not a setting).
    #[serde(skip)]
    pub steps_per_epoch: usize,
    /// PGD steps for `mode: pgd` (default 40).
    pub pgd_steps: usize,
    /// Seed for initialisation, shuffling, projections and augmentation (default 0).
    pub seed: u64,
    /// Random crop (padding 4) and horizontal flip of training images, for CIFAR-10 (default false).
    pub augment: bool,
    /// Per-channel mean subtracted from inputs, e.g. `[0.485, 0.456, 0.406]` (default: none). ε stays in
    /// pixel units: it is divided by `std` inside the input set.
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation inputs are divided by (default: none; given together with `mean`).
    pub std: Option<Vec<f64>>,
    /// Where to train: `cpu` (default), `cuda` or `cuda:N` (needs a build with the `cuda` feature).
    pub device: DeviceSpec,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            spec: None,
            data: "mnist".into(),
            data_dir: Some(PathBuf::from(crate::data::DEFAULT_DATA_DIR)),
            limit: None,
            test_limit: 1000,
            epochs: 20,
            batch: 50,
            optimizer: Optimizer::Adam,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            grad_clip: None,
            lr_halve_every: 10,
            eps: 0.1,
            eps_start: 0.01,
            eps_schedule_epochs: 10,
            eps_ramp: EpsRamp::Epoch,
            ramp_steps: None,
            bounded: true,
            norm: Norm::Linf,
            proj: Some(50),
            mode: Mode::Robust,
            method: Method::Dual,
            kappa: 0.0,
            kappa_start: None,
            beta_start: 1.0,
            beta: 0.0,
            eps_ramp_start: 0,
            eps_eval: None,
            init: Init::Default,
            reg_lambda: 0.0,
            reg_tol: 0.5,
            lr_decay_epochs: Vec::new(),
            lr_decay_factor: 0.2,
            step_metrics_every: 50,
            checkpoint_minutes: 5.0,
            eval_bound: crate::ops::Family::Crown,
            eval_every: 1,
            batchnorm: BatchNorm::Batch,
            bn_momentum: 0.1,
            steps_per_epoch: 0,
            pgd_steps: 40,
            seed: 0,
            augment: false,
            mean: None,
            std: None,
            device: DeviceSpec::Cpu,
        }
    }
}

/// The keys a config file may have (for did-you-mean help).
pub const FIELDS: &[&str] = &[
    "spec",
    "data",
    "data_dir",
    "limit",
    "test_limit",
    "epochs",
    "batch",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "grad_clip",
    "lr_halve_every",
    "eps",
    "eps_start",
    "eps_schedule_epochs",
    "eps_ramp",
    "ramp_steps",
    "bounded",
    "norm",
    "proj",
    "mode",
    "method",
    "kappa",
    "kappa_start",
    "beta_start",
    "beta",
    "eps_ramp_start",
    "eps_eval",
    "init",
    "reg_lambda",
    "reg_tol",
    "lr_decay_epochs",
    "lr_decay_factor",
    "step_metrics_every",
    "checkpoint_minutes",
    "eval_bound",
    "eval_every",
    "batchnorm",
    "bn_momentum",
    "pgd_steps",
    "seed",
    "augment",
    "mean",
    "std",
    "device",
];

impl TrainConfig {
    /// Read a YAML config file. Syntax errors, unknown keys and values of the wrong type become one
    /// [`Code::BadOption`] diagnostic that names the file, line, column and key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read config", path, e))?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parse YAML text; `name` is the file name used in diagnostics. An empty file gives the defaults.
    pub fn from_yaml(text: &str, name: &str) -> Result<Self> {
        let blank = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        });
        if blank {
            return Ok(TrainConfig::default());
        }
        serde_yaml::from_str::<TrainConfig>(text).map_err(|e| Error::input(yaml_diagnostic(&e, text, name)))
    }

    /// The config as YAML (what `config.yaml` in a run folder holds); [`TrainConfig::from_yaml`] reads it back.
    pub fn to_yaml(&self) -> String {
        let body = serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot write the config: {e}\n"));
        format!("# dualnet training config (every key: `dualnet train --help`)\n{body}")
    }

    /// Number of random projections, or `None` for exact bounds (`proj: null` or `proj: 0`).
    pub fn projections(&self) -> Option<usize> {
        self.proj.filter(|&k| k > 0)
    }

    /// The box that inputs are clipped to, if `bounded`.
    pub fn input_box(&self) -> Option<(f64, f64)> {
        self.bounded.then_some((0.0, 1.0))
    }

    /// Record the epoch length, and for a per-step ramp (`step`, `smooth`) without `ramp_steps`: ramp over
    /// `eps_schedule_epochs` epochs of `steps_per_epoch`.
    pub fn fill_ramp_steps(&mut self, steps_per_epoch: usize) {
        self.steps_per_epoch = steps_per_epoch;
        if self.eps_ramp != EpsRamp::Epoch && self.ramp_steps.is_none() {
            self.ramp_steps = Some(self.eps_schedule_epochs.saturating_mul(steps_per_epoch));
        }
    }

    /// The ε of the per-epoch certified evaluation.
    pub fn eval_eps(&self) -> f64 {
        self.eps_eval.unwrap_or(self.eps)
    }

    /// Whether `epoch` is a warm-up epoch of plain cross-entropy (before `eps_ramp_start`).
    pub fn warmup(&self, epoch: usize) -> bool {
        epoch < self.eps_ramp_start
    }

    /// How far the ε ramp has gone at this point, in [0, 1]: `(ε − eps_start) / (eps − eps_start)` (1 when the
    /// two are equal). κ, β and the regularisers' weight follow it.
    pub fn progress(&self, epoch: usize, step_in_run: usize) -> f64 {
        if self.warmup(epoch) {
            return 0.0;
        }
        let span = self.eps - self.eps_start;
        if span <= 0.0 {
            return 1.0;
        }
        ((self.eps_at(epoch, step_in_run) - self.eps_start) / span).clamp(0.0, 1.0)
    }

    /// κ at this point: linear from `kappa_start` to `kappa` with the ramp's progress.
    pub fn kappa_at(&self, epoch: usize, step_in_run: usize) -> f64 {
        let k0 = self.kappa_start.unwrap_or(self.kappa);
        k0 + (self.kappa - k0) * self.progress(epoch, step_in_run)
    }

    /// `crown-ibp`'s β at this point: linear from `beta_start` to `beta` with the ramp's progress.
    pub fn beta_at(&self, epoch: usize, step_in_run: usize) -> f64 {
        self.beta_start + (self.beta - self.beta_start) * self.progress(epoch, step_in_run)
    }

    /// The warm-up regularisers' weight at this point: `reg_lambda · (1 − progress)`.
    pub fn reg_weight_at(&self, epoch: usize, step_in_run: usize) -> f64 {
        self.reg_lambda * (1.0 - self.progress(epoch, step_in_run))
    }

    /// Check every setting; all problems are reported together, one diagnostic each.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String, help: String| {
            problems.push(
                Diagnostic::new(Code::BadOption, message)
                    .help(format!("{help} (`{field}:` in the config or `--{}`)", field.replace('_', "-"))),
            );
        };
        if self.spec.is_none() {
            bad("spec", "no network to train".into(), "give the `.net` file".into());
        }
        if self.data.trim().is_empty() {
            bad("data", "no data set named".into(), "name the data set, e.g. `mnist` or `cifar10`".into());
        }
        if self.epochs == 0 {
            bad("epochs", "`epochs` must be at least 1, got `0`".into(), "train for one or more epochs".into());
        }
        if self.batch == 0 {
            bad("batch", "`batch` must be at least 1, got `0`".into(), "use a batch size such as 50".into());
        }
        if self.limit == Some(0) {
            bad("limit", "`limit` must be at least 1, got `0`".into(), "leave it out to train on the whole set".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bad(
                "lr",
                format!("`lr` must be a positive number, got `{}`", self.lr),
                "use a learning rate such as 1e-3".into(),
            );
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            bad(
                "momentum",
                format!("`momentum` must be in [0, 1), got `{}`", self.momentum),
                "use e.g. 0.9, or 0 for none".into(),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bad(
                "weight_decay",
                format!("`weight_decay` must be a number >= 0, got `{}`", self.weight_decay),
                "use e.g. 5e-4, or 0 for none".into(),
            );
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                bad(
                    "grad_clip",
                    format!("`grad_clip` must be a positive number, got `{c}`"),
                    "give the largest allowed gradient norm, or leave it out".into(),
                );
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bad(
                "eps",
                format!("`eps` must be a finite number >= 0, got `{}`", self.eps),
                "ε is in input units (pixels in [0, 1]), e.g. 0.1".into(),
            );
        }
        if !(self.eps_start.is_finite() && self.eps_start >= 0.0) {
            bad(
                "eps_start",
                format!("`eps_start` must be a finite number >= 0, got `{}`", self.eps_start),
                "the schedule starts here, e.g. 0.01".into(),
            );
        } else if self.eps.is_finite() && self.eps_start > self.eps {
            bad(
                "eps_start",
                format!("`eps_start` ({}) is larger than `eps` ({})", self.eps_start, self.eps),
                "the schedule ramps ε up from `eps_start` to `eps`; lower `eps_start`".into(),
            );
        }
        if self.bounded && self.norm == Norm::L2 {
            bad(
                "bounded",
                "the ℓ2 ball cannot be box-constrained".into(),
                "set `bounded: false` with `norm: l2`".into(),
            );
        }
        if !(self.kappa.is_finite() && (0.0..1.0).contains(&self.kappa)) {
            bad(
                "kappa",
                format!("`kappa` must be in [0, 1), got `{}`", self.kappa),
                "the weight of the clean loss: 0 for the robust loss alone, e.g. 0.5 for interval training".into(),
            );
        }
        if let Some(k) = self.kappa_start {
            if !(k.is_finite() && (0.0..=1.0).contains(&k)) {
                bad(
                    "kappa_start",
                    format!("`kappa_start` must be in [0, 1], got `{k}`"),
                    "κ at the start of the ε ramp, e.g. 1 (clean loss only) moving to `kappa`".into(),
                );
            }
        }
        for (field, v) in [("beta_start", self.beta_start), ("beta", self.beta)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                bad(
                    field,
                    format!("`{field}` must be in [0, 1], got `{v}`"),
                    "the weight of the CROWN bound in `crown-ibp`: 1 at the start, 0 at the end in Zhang et al.".into(),
                );
            }
        }
        if let Some(e) = self.eps_eval {
            if !(e.is_finite() && e >= 0.0) {
                bad(
                    "eps_eval",
                    format!("`eps_eval` must be a finite number >= 0, got `{e}`"),
                    "the ε to certify at, in input units, e.g. 0.3 while training at `eps: 0.4`".into(),
                );
            }
        }
        if !(self.reg_lambda.is_finite() && self.reg_lambda >= 0.0) {
            bad(
                "reg_lambda",
                format!("`reg_lambda` must be a number >= 0, got `{}`", self.reg_lambda),
                "the warm-up regularisers' weight, e.g. 0.5 (Shi et al.), or 0 for none".into(),
            );
        }
        if !(self.reg_tol.is_finite() && self.reg_tol > 0.0 && self.reg_tol <= 1.0) {
            bad(
                "reg_tol",
                format!("`reg_tol` must be in (0, 1], got `{}`", self.reg_tol),
                "the regularisers' tolerance τ, e.g. 0.5".into(),
            );
        }
        if !(self.lr_decay_factor.is_finite() && self.lr_decay_factor > 0.0 && self.lr_decay_factor <= 1.0) {
            bad(
                "lr_decay_factor",
                format!("`lr_decay_factor` must be in (0, 1], got `{}`", self.lr_decay_factor),
                "the learning rate is multiplied by it at each `lr_decay_epochs` entry, e.g. 0.2".into(),
            );
        }
        if !(self.checkpoint_minutes.is_finite() && self.checkpoint_minutes >= 0.0) {
            bad(
                "checkpoint_minutes",
                format!("`checkpoint_minutes` must be a number >= 0, got `{}`", self.checkpoint_minutes),
                "minutes between checkpoints within an epoch, e.g. 5, or 0 for epoch ends only".into(),
            );
        }
        if !(self.bn_momentum.is_finite() && self.bn_momentum > 0.0 && self.bn_momentum <= 1.0) {
            bad(
                "bn_momentum",
                format!("`bn_momentum` must be in (0, 1], got `{}`", self.bn_momentum),
                "the running statistics' update weight, e.g. 0.1".into(),
            );
        }
        if self.eval_every == 0 {
            bad("eval_every", "`eval_every` must be at least 1".into(), "evaluate every N epochs, e.g. 1".into());
        }
        if self.mode == Mode::Pgd && self.pgd_steps == 0 {
            bad("pgd_steps", "`pgd_steps` must be at least 1 with `mode: pgd`".into(), "use e.g. 40".into());
        }
        match (&self.mean, &self.std) {
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => bad(
                "std",
                "`mean` and `std` must be given together".into(),
                "give both per-channel lists, or neither".into(),
            ),
            (Some(m), Some(s)) => {
                if m.len() != s.len() || m.is_empty() {
                    bad(
                        "std",
                        format!("`mean` has {} values but `std` has {}", m.len(), s.len()),
                        "give one value per input channel in each".into(),
                    );
                }
                if let Some(v) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                    bad(
                        "std",
                        format!("every `std` value must be positive, got `{v}`"),
                        "give per-channel standard deviations".into(),
                    );
                }
                if let Some(v) = m.iter().find(|v| !v.is_finite()) {
                    bad(
                        "mean",
                        format!("every `mean` value must be finite, got `{v}`"),
                        "give per-channel means".into(),
                    );
                }
            }
        }
        problems.extend(self.device.not_built());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Input(problems))
        }
    }

    /// ε of the per-epoch schedule: `linspace(eps_start, eps, eps_schedule_epochs)[epoch]`, then `eps`.
    fn eps_of_epoch(&self, epoch: usize) -> f64 {
        let n = self.eps_schedule_epochs;
        if epoch + 1 >= n {
            // Past the schedule, or its last entry (exactly `eps`, as numpy's linspace). `n == 1` gives `eps_start`
            // for epoch 0 (numpy: linspace(a, b, 1) == [a]).
            if n == 1 && epoch == 0 {
                return self.eps_start;
            }
            return self.eps;
        }
        self.eps_start + (self.eps - self.eps_start) * epoch as f64 / (n - 1) as f64
    }

    /// The training ε for `epoch` (0-based) at optimizer step `step_in_run` (0-based, counted over the whole
    /// run): 0 in the warm-up epochs, then the ramp, which starts at epoch `eps_ramp_start`. With a per-step
    /// ramp and no `ramp_steps` (see [`TrainConfig::fill_ramp_steps`]) the per-epoch schedule is used.
    pub fn eps_at(&self, epoch: usize, step_in_run: usize) -> f64 {
        if self.warmup(epoch) {
            return 0.0;
        }
        let start = self.eps_ramp_start.saturating_mul(self.steps_per_epoch);
        match (self.eps_ramp, self.ramp_steps) {
            (EpsRamp::Step | EpsRamp::Smooth, Some(n)) => {
                let t = step_in_run.saturating_sub(start);
                if t >= n {
                    return self.eps;
                }
                let p = t as f64 / n as f64;
                let p = if self.eps_ramp == EpsRamp::Smooth { smooth_ramp(p) } else { p };
                self.eps_start + (self.eps - self.eps_start) * p
            }
            _ => self.eps_of_epoch(epoch - self.eps_ramp_start),
        }
    }

    /// The learning rate for `epoch` (0-based). With `lr_decay_epochs`: `lr · lr_decay_factor^k`, `k` the number
    /// of entries `<= epoch`. Otherwise `lr · 0.5^⌊max(epoch − ramp end, 0) / lr_halve_every⌋`, the ramp ending at
    /// epoch `eps_ramp_start + eps_schedule_epochs` (the reference's `StepLR(step_size=10, gamma=0.5)` stepped at
    /// `max(t − schedule_length, 0)`).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        if !self.lr_decay_epochs.is_empty() {
            let k = self.lr_decay_epochs.iter().filter(|&&m| m <= epoch).count();
            return self.lr * self.lr_decay_factor.powi(k.min(i32::MAX as usize) as i32);
        }
        if self.lr_halve_every == 0 {
            return self.lr;
        }
        let halvings = epoch.saturating_sub(self.eps_ramp_start + self.eps_schedule_epochs) / self.lr_halve_every;
        self.lr * 0.5f64.powi(halvings.min(i32::MAX as usize) as i32)
    }
}

/// Shi et al.'s smoothed ramp on progress `p ∈ [0, 1]`: `c · p^4` up to `p = 1/4`, then the line to `(1, 1)`
/// whose value and slope meet the polynomial's there. With `m = 1/4`, `β = 4`: the slope of the line is
/// `b = 1 / (1 − m + m/β)`, and `c · m^β = b m / β`, `c β m^(β−1) = b` (both hold for this `c`).
pub fn smooth_ramp(p: f64) -> f64 {
    let (m, beta) = (0.25f64, 4.0f64);
    let b = 1.0 / (1.0 - m + m / beta);
    let at_m = b * m / beta;
    let p = p.clamp(0.0, 1.0);
    if p < m {
        at_m * (p / m).powf(beta)
    } else {
        (at_m + b * (p - m)).min(1.0)
    }
}

/// Turn a serde_yaml error into a diagnostic with the file, line, column and offending key.
fn yaml_diagnostic(e: &serde_yaml::Error, text: &str, name: &str) -> Diagnostic {
    let full = e.to_string();
    // serde_yaml appends " at line L column C"; the location goes into the label and the message prefix instead.
    let msg = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    let source = Arc::new(SourceFile { name: name.to_string(), text: text.to_string() });
    let (offset, line, col) = match e.location() {
        Some(loc) => {
            let (l, c) = source.line_col(loc.index());
            (Some(loc.index()), l, c)
        }
        None => (None, 0, 0),
    };
    let place = if offset.is_some() { format!("`{name}` line {line}, column {col}") } else { format!("`{name}`") };
    let (message, help, label) = if let Some(field) = between(&msg, "unknown field `", "`") {
        let help = match did_you_mean(field, FIELDS.iter().copied()) {
            Some(c) => format!("did you mean `{c}`? the keys are: {}", FIELDS.join(", ")),
            None => format!("the keys are: {}", FIELDS.join(", ")),
        };
        (format!("{place}: unknown config key `{field}`"), help, "unknown key".to_string())
    } else if let Some(variant) = between(&msg, "unknown variant `", "`") {
        let expected = msg.split_once("expected ").map(|(_, x)| x.to_string()).unwrap_or_default();
        let key = msg.split_once(": unknown variant").map(|(k, _)| format!("`{k}`: ")).unwrap_or_default();
        (
            format!("{place}: {key}unknown value `{variant}`"),
            format!("expected {expected}"),
            "unknown value".to_string(),
        )
    } else {
        (
            format!("{place}: {msg}"),
            "see `dualnet train --help` for every key and its type".to_string(),
            "here".to_string(),
        )
    };
    let mut d = Diagnostic::new(Code::BadOption, message).help(help).with_source(source);
    if let Some(o) = offset {
        let end = text[o.min(text.len())..].find([':', '\n']).map(|k| o + k.max(1)).unwrap_or(text.len());
        d = d.label(Span::new(o, end.max(o)), label);
    }
    d
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

/// Command-line overrides of [`TrainConfig`]: every flag is optional and, when given, replaces the value from
/// the config file (or the default). Flatten it into the `train` command's arguments.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct TrainOverrides {
    /// The network to train (a `.net` file).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Data set: `mnist` or `cifar10` [config default: mnist].
    #[arg(long)]
    pub data: Option<String>,
    /// Folder with the data files [config default: data/mnist, which holds only the MNIST test split].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training examples only (0: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate certified error on the first N test images each epoch (0 skips it) [default: 1000].
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Number of epochs [default: 20].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size [default: 50].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Optimizer [default: adam].
    #[arg(long, value_enum)]
    pub optimizer: Option<Optimizer>,
    /// Initial learning rate [default: 1e-3].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// L2 weight decay [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this value (0: no clipping) [default: none].
    #[arg(long, allow_negative_numbers = true)]
    pub grad_clip: Option<f64>,
    /// After the ε schedule, halve the learning rate every N epochs (0: never) [default: 10].
    #[arg(long)]
    pub lr_halve_every: Option<usize>,
    /// Final training radius ε in input units [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub eps: Option<f64>,
    /// First ε of the schedule [default: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    pub eps_start: Option<f64>,
    /// Epochs of the linear ε schedule [default: 10].
    #[arg(long)]
    pub eps_schedule_epochs: Option<usize>,
    /// Ramp ε per epoch or per step [default: epoch].
    #[arg(long, value_enum)]
    pub eps_ramp: Option<EpsRamp>,
    /// Steps of the per-step ε ramp [default: the schedule's epochs in steps].
    #[arg(long)]
    pub ramp_steps: Option<usize>,
    /// Clip the ℓ∞ ball to the pixel box [0, 1] [default: true].
    #[arg(long, value_name = "true|false")]
    pub bounded: Option<bool>,
    /// Perturbation norm [default: linf].
    #[arg(long, value_enum)]
    pub norm: Option<Norm>,
    /// Random projections for training bounds (0: exact) [default: 50].
    #[arg(long)]
    pub proj: Option<usize>,
    /// Training loss [default: robust].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// The bound of the robust loss [default: dual].
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// κ at the start of the ε ramp, in [0, 1] [default: `kappa`].
    #[arg(long)]
    pub kappa_start: Option<f64>,
    /// `crown-ibp`: β at the start of the ε ramp [default: 1].
    #[arg(long)]
    pub beta_start: Option<f64>,
    /// `crown-ibp`: β at the end of the ε ramp [default: 0].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Epochs of plain cross-entropy before the ε ramp [default: 0].
    #[arg(long)]
    pub eps_ramp_start: Option<usize>,
    /// The ε of the certified evaluation [default: `eps`].
    #[arg(long)]
    pub eps_eval: Option<f64>,
    /// Weight initialisation [default: default].
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Weight of the warm-up regularisers [default: 0].
    #[arg(long)]
    pub reg_lambda: Option<f64>,
    /// Multiply the learning rate by `--lr-decay-factor` at these epochs, comma separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub lr_decay_epochs: Option<Vec<usize>>,
    /// Factor of each learning-rate decay step [default: 0.2].
    #[arg(long)]
    pub lr_decay_factor: Option<f64>,
    /// Minutes between mid-epoch checkpoints (0: epoch ends only) [default: 5].
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
    /// The bound of the certified evaluation [default: crown].
    #[arg(long, value_enum)]
    pub eval_bound: Option<crate::ops::Family>,
    /// Evaluate every N epochs [default: 1].
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// `batchnorm2d` in training: batch statistics or frozen running statistics [default: batch].
    #[arg(long, value_enum)]
    pub batchnorm: Option<BatchNorm>,
    /// Momentum of the running statistics [default: 0.1].
    #[arg(long)]
    pub bn_momentum: Option<f64>,
    /// Weight of the clean cross-entropy in the robust loss, in [0, 1) [default: 0].
    #[arg(long)]
    pub kappa: Option<f64>,
    /// PGD steps for `--mode pgd` [default: 40].
    #[arg(long)]
    pub pgd_steps: Option<usize>,
    /// Random seed [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Random crop and flip of training images [default: false].
    #[arg(long, value_name = "true|false")]
    pub augment: Option<bool>,
    /// Per-channel input mean, comma separated (e.g. `0.485,0.456,0.406`).
    #[arg(long, value_delimiter = ',', num_args = 1.., allow_negative_numbers = true)]
    pub mean: Option<Vec<f64>>,
    /// Per-channel input standard deviation, comma separated.
    #[arg(long, value_delimiter = ',', num_args = 1.., allow_negative_numbers = true)]
    pub std: Option<Vec<f64>>,
    /// Where to train: `cpu`, `cuda` or `cuda:N` [default: cpu].
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

impl TrainOverrides {
    /// Replace the settings of `cfg` that were given on the command line. `--limit 0` and `--grad-clip 0` mean
    /// "none"; `--proj 0` means exact bounds.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        if let Some(s) = &self.spec {
            cfg.spec = Some(s.clone());
        }
        set(&mut cfg.data, &self.data);
        if let Some(d) = &self.data_dir {
            cfg.data_dir = Some(d.clone());
        }
        if let Some(n) = self.limit {
            cfg.limit = (n > 0).then_some(n);
        }
        set(&mut cfg.test_limit, &self.test_limit);
        set(&mut cfg.epochs, &self.epochs);
        set(&mut cfg.batch, &self.batch);
        set(&mut cfg.optimizer, &self.optimizer);
        set(&mut cfg.lr, &self.lr);
        set(&mut cfg.momentum, &self.momentum);
        set(&mut cfg.weight_decay, &self.weight_decay);
        if let Some(c) = self.grad_clip {
            cfg.grad_clip = (c != 0.0).then_some(c);
        }
        set(&mut cfg.lr_halve_every, &self.lr_halve_every);
        set(&mut cfg.eps, &self.eps);
        set(&mut cfg.eps_start, &self.eps_start);
        set(&mut cfg.eps_schedule_epochs, &self.eps_schedule_epochs);
        set(&mut cfg.eps_ramp, &self.eps_ramp);
        if let Some(n) = self.ramp_steps {
            cfg.ramp_steps = Some(n);
        }
        set(&mut cfg.bounded, &self.bounded);
        set(&mut cfg.norm, &self.norm);
        if let Some(k) = self.proj {
            cfg.proj = (k > 0).then_some(k);
        }
        set(&mut cfg.mode, &self.mode);
        set(&mut cfg.method, &self.method);
        if let Some(k) = self.kappa_start {
            cfg.kappa_start = Some(k);
        }
        set(&mut cfg.beta_start, &self.beta_start);
        set(&mut cfg.beta, &self.beta);
        set(&mut cfg.eps_ramp_start, &self.eps_ramp_start);
        if let Some(e) = self.eps_eval {
            cfg.eps_eval = Some(e);
        }
        set(&mut cfg.init, &self.init);
        set(&mut cfg.reg_lambda, &self.reg_lambda);
        set(&mut cfg.lr_decay_epochs, &self.lr_decay_epochs);
        set(&mut cfg.lr_decay_factor, &self.lr_decay_factor);
        set(&mut cfg.checkpoint_minutes, &self.checkpoint_minutes);
        set(&mut cfg.eval_bound, &self.eval_bound);
        set(&mut cfg.eval_every, &self.eval_every);
        set(&mut cfg.batchnorm, &self.batchnorm);
        set(&mut cfg.bn_momentum, &self.bn_momentum);
        set(&mut cfg.kappa, &self.kappa);
        set(&mut cfg.pgd_steps, &self.pgd_steps);
        set(&mut cfg.seed, &self.seed);
        set(&mut cfg.augment, &self.augment);
        if let Some(m) = &self.mean {
            cfg.mean = Some(m.clone());
        }
        if let Some(s) = &self.std {
            cfg.std = Some(s.clone());
        }
        set(&mut cfg.device, &self.device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(e: &Error) -> Vec<(Code, String)> {
        match e {
            Error::Input(ds) => ds.iter().map(|d| (d.code, d.message.clone())).collect(),
            other => vec![(Code::Syntax, other.to_string())],
        }
    }

    #[test]
    fn defaults_are_the_reference_recipe() {
        let c = TrainConfig::default();
        assert_eq!((c.epochs, c.batch, c.test_limit, c.eps_schedule_epochs, c.lr_halve_every), (20, 50, 1000, 10, 10));
        assert_eq!((c.lr, c.eps, c.eps_start, c.momentum, c.weight_decay), (1e-3, 0.1, 0.01, 0.9, 0.0));
        assert_eq!(
            (c.optimizer, c.mode, c.norm, c.eps_ramp),
            (Optimizer::Adam, Mode::Robust, Norm::Linf, EpsRamp::Epoch)
        );
        assert_eq!((c.proj, c.bounded, c.augment, c.seed, c.pgd_steps), (Some(50), true, false, 0, 40));
        assert_eq!(c.data, "mnist");
        assert!(c.spec.is_none() && c.mean.is_none() && c.std.is_none() && c.grad_clip.is_none());
        assert_eq!(c.device, DeviceSpec::Cpu);
        assert_eq!(FIELDS.len(), 46);
    }

    #[test]
    fn yaml_round_trip() {
        let mut c = TrainConfig { spec: Some("specs/a.net".into()), data_dir: Some("d".into()), ..Default::default() };
        c.optimizer = Optimizer::Sgd;
        c.mode = Mode::Pgd;
        c.norm = Norm::L2;
        c.bounded = false;
        c.proj = None;
        c.mean = Some(vec![0.5, 0.25, 0.125]);
        c.std = Some(vec![0.2, 0.3, 0.4]);
        c.grad_clip = Some(5.0);
        c.eps_ramp = EpsRamp::Step;
        c.ramp_steps = Some(1234);
        c.lr = 3.5e-4;
        c.device = DeviceSpec::Cuda(1);
        let y = c.to_yaml();
        assert!(y.contains("optimizer: sgd") && y.contains("norm: l2") && y.contains("device: cuda:1"), "{y}");
        let back = TrainConfig::from_yaml(&y, "config.yaml").unwrap();
        assert_eq!(back, c);
        // Every field is in the YAML and in FIELDS.
        for f in FIELDS {
            assert!(y.contains(&format!("\n{f}:")), "{f} missing from {y}");
        }
    }

    #[test]
    fn empty_and_partial_files() {
        assert_eq!(TrainConfig::from_yaml("", "c.yaml").unwrap(), TrainConfig::default());
        assert_eq!(TrainConfig::from_yaml("# nothing\n", "c.yaml").unwrap(), TrainConfig::default());
        let c = TrainConfig::from_yaml("epochs: 3\nproj: null\nmode: plain\n", "c.yaml").unwrap();
        assert_eq!((c.epochs, c.proj, c.mode, c.batch), (3, None, Mode::Plain, 50));
        assert_eq!(TrainConfig::from_yaml("proj: 0\n", "c.yaml").unwrap().projections(), None);
    }

    #[test]
    fn unknown_field_names_file_line_column_and_suggests() {
        let e = TrainConfig::from_yaml("epochs: 3\nepoch: 5\n", "run.yaml").unwrap_err();
        let Error::Input(ds) = &e else { panic!("{e}") };
        let d = &ds[0];
        assert_eq!(d.code, Code::BadOption);
        assert_eq!(d.message, "`run.yaml` line 2, column 1: unknown config key `epoch`");
        assert!(d.help.as_deref().unwrap_or("").starts_with("did you mean `epochs`?"), "{:?}", d.help);
        assert_eq!(d.location(), (Some("run.yaml".into()), Some(2), Some(1)));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = TrainConfig::from_yaml("batch: many\n", "run.yaml").unwrap_err();
        let m = &codes(&e)[0];
        assert_eq!(m.0, Code::BadOption);
        assert!(m.1.contains("line 1") && m.1.contains("batch"), "{}", m.1);
        let e = TrainConfig::from_yaml("optimizer: adamw\n", "run.yaml").unwrap_err();
        let Error::Input(ds) = &e else { panic!() };
        assert!(
            ds[0].message.contains("unknown value `adamw`") && ds[0].message.contains("`optimizer`"),
            "{}",
            ds[0].message
        );
        assert!(ds[0].help.as_deref().unwrap_or("").contains("`adam`"), "{:?}", ds[0].help);
        let e = TrainConfig::from_yaml("epochs: [3\n", "run.yaml").unwrap_err();
        assert!(codes(&e)[0].1.starts_with("`run.yaml`"));
    }

    #[test]
    fn validation_reports_every_problem() {
        let c = TrainConfig { spec: Some("a.net".into()), ..Default::default() };
        assert!(c.validate().is_ok());
        let bad = TrainConfig {
            spec: None,
            epochs: 0,
            batch: 0,
            lr: -1.0,
            eps: 0.1,
            eps_start: 0.2,
            norm: Norm::L2,
            bounded: true,
            mean: Some(vec![0.5]),
            std: None,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        let msgs: Vec<String> = codes(&e)
            .into_iter()
            .map(|(c, m)| {
                assert_eq!(c, Code::BadOption);
                m
            })
            .collect();
        assert_eq!(msgs.len(), 7, "{msgs:#?}");
        assert!(msgs.iter().any(|m| m == "`epochs` must be at least 1, got `0`"));
        assert!(msgs.iter().any(|m| m.contains("`eps_start` (0.2) is larger than `eps` (0.1)")));
        let Error::Input(ds) = e else { panic!() };
        assert!(ds.iter().all(|d| d.help.as_deref().unwrap_or("").contains("in the config or `--")));
    }

    #[test]
    fn eps_schedule_per_epoch() {
        let c = TrainConfig::default();
        let got: Vec<f64> = (0..13).map(|e| c.eps_at(e, 0)).collect();
        let want = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.1, 0.1, 0.1];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(c.eps_at(9, 0), 0.1);
        let one = TrainConfig { eps_schedule_epochs: 1, ..Default::default() };
        assert_eq!((one.eps_at(0, 0), one.eps_at(1, 0)), (0.01, 0.1));
        let none = TrainConfig { eps_schedule_epochs: 0, ..Default::default() };
        assert_eq!(none.eps_at(0, 0), 0.1);
    }

    #[test]
    fn eps_schedule_per_step() {
        let mut c = TrainConfig { eps_ramp: EpsRamp::Step, eps_start: 0.0, eps: 0.1, ..Default::default() };
        // Without ramp_steps: falls back to the epoch schedule until filled in.
        assert_eq!(c.eps_at(0, 5), 0.0);
        c.fill_ramp_steps(100);
        assert_eq!(c.ramp_steps, Some(1000));
        assert_eq!(c.eps_at(0, 0), 0.0);
        assert!((c.eps_at(0, 250) - 0.025).abs() < 1e-15);
        assert_eq!(c.eps_at(12, 1000), 0.1);
        assert_eq!(c.eps_at(12, 5000), 0.1);
        c.fill_ramp_steps(7);
        assert_eq!(c.ramp_steps, Some(1000));
    }

    #[test]
    fn warm_up_ramp_start_and_smooth_ramp() {
        // 2 warm-up epochs (ε = 0), then a smooth ramp 0 -> 0.4 over 10 steps of an epoch of 5 steps.
        let mut c = TrainConfig {
            eps_ramp: EpsRamp::Smooth,
            eps_start: 0.0,
            eps: 0.4,
            eps_ramp_start: 2,
            ramp_steps: Some(10),
            kappa_start: Some(1.0),
            kappa: 0.5,
            beta_start: 1.0,
            beta: 0.0,
            reg_lambda: 0.5,
            ..Default::default()
        };
        c.fill_ramp_steps(5);
        assert_eq!(c.steps_per_epoch, 5);
        assert!(c.warmup(1) && !c.warmup(2));
        assert_eq!((c.eps_at(0, 0), c.eps_at(1, 9)), (0.0, 0.0));
        assert_eq!((c.kappa_at(1, 9), c.beta_at(1, 9), c.reg_weight_at(1, 9)), (1.0, 1.0, 0.5));
        // The ramp starts at step 10 (epoch 2): p = 0 there, 1 from step 20 on.
        assert_eq!(c.eps_at(2, 10), 0.0);
        assert_eq!(c.eps_at(4, 20), 0.4);
        assert_eq!((c.kappa_at(4, 20), c.beta_at(4, 20), c.reg_weight_at(4, 20)), (0.5, 0.0, 0.0));
        // Half-way through the ramp (p = 1/2): smooth_ramp(1/2) = b m/β + b (1/2 − m) with m = 1/4, β = 4,
        // b = 1 / (1 − 1/4 + 1/16) = 16/13: 16/13 · (1/16 + 1/4) = 5/13.
        assert!((smooth_ramp(0.5) - 5.0 / 13.0).abs() < 1e-12);
        assert!((c.eps_at(3, 15) - 0.4 * 5.0 / 13.0).abs() < 1e-12);
        assert!((c.kappa_at(3, 15) - (1.0 - 0.5 * 5.0 / 13.0)).abs() < 1e-12);
        // The smooth ramp is continuous and monotone, with value 1/13 at m = 1/4 from both sides.
        assert!((smooth_ramp(0.25) - 1.0 / 13.0).abs() < 1e-12);
        assert!((smooth_ramp(0.25 - 1e-9) - 1.0 / 13.0).abs() < 1e-8);
        let v: Vec<f64> = (0..=100).map(|i| smooth_ramp(i as f64 / 100.0)).collect();
        assert!(v.windows(2).all(|w| w[1] >= w[0]) && v[0] == 0.0 && (v[100] - 1.0).abs() < 1e-12);
        // The linear per-step ramp with a ramp start.
        let mut s = TrainConfig { eps_ramp: EpsRamp::Step, eps_start: 0.0, eps: 0.1, eps_ramp_start: 1, ..c };
        s.ramp_steps = Some(10);
        assert!(s.eps_at(1, 5).abs() < 1e-15 && (s.eps_at(1, 7) - 0.02).abs() < 1e-15);
        // A fixed κ when `kappa_start` is not given.
        let fixed = TrainConfig { kappa: 0.3, ..Default::default() };
        assert_eq!((fixed.kappa_at(0, 0), fixed.kappa_at(50, 0)), (0.3, 0.3));
    }

    #[test]
    fn lr_decay_steps_and_bad_schedule_values() {
        let c = TrainConfig { lr: 1e-3, lr_decay_epochs: vec![25, 35], lr_decay_factor: 0.2, ..Default::default() };
        assert_eq!(c.lr_at(24), 1e-3);
        assert!((c.lr_at(25) - 2e-4).abs() < 1e-18 && (c.lr_at(40) - 4e-5).abs() < 1e-18);
        let bad = TrainConfig {
            spec: Some("a.net".into()),
            kappa_start: Some(1.5),
            beta: -0.1,
            eps_eval: Some(f64::NAN),
            reg_lambda: -1.0,
            reg_tol: 0.0,
            lr_decay_factor: 0.0,
            checkpoint_minutes: -1.0,
            eval_every: 0,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        let msgs: Vec<String> = codes(&e).into_iter().map(|(_, m)| m).collect();
        assert_eq!(msgs.len(), 8, "{msgs:#?}");
        for key in ["kappa_start", "beta", "eps_eval", "reg_lambda", "reg_tol", "lr_decay_factor", "checkpoint_minutes"]
        {
            assert!(msgs.iter().any(|m| m.contains(&format!("`{key}`"))), "{key}: {msgs:#?}");
        }
        let y = TrainConfig::from_yaml("method: crown-ibp\ninit: ibp\neps_ramp: smooth\n", "c.yaml").unwrap();
        assert_eq!((y.method, y.init, y.eps_ramp), (Method::CrownIbp, Init::Ibp, EpsRamp::Smooth));
        assert!(y.to_yaml().contains("method: crown-ibp"));
        let e = TrainConfig::from_yaml("method: crown\n", "c.yaml").unwrap_err();
        assert!(codes(&e)[0].1.contains("unknown value `crown`"), "{:?}", codes(&e));
    }

    #[test]
    fn lr_halves_after_the_schedule() {
        let c = TrainConfig::default();
        let got: Vec<f64> = (0..41).map(|e| c.lr_at(e)).collect();
        assert!(got[..20].iter().all(|&l| l == 1e-3));
        assert!(got[20..30].iter().all(|&l| l == 5e-4));
        assert!(got[30..40].iter().all(|&l| l == 2.5e-4));
        assert_eq!(got[40], 1.25e-4);
        let never = TrainConfig { lr_halve_every: 0, ..Default::default() };
        assert_eq!(never.lr_at(1000), 1e-3);
        let fast = TrainConfig { lr_halve_every: 1, eps_schedule_epochs: 0, ..Default::default() };
        assert_eq!(fast.lr_at(3), 1.25e-4);
    }

    #[test]
    fn overrides_replace_only_given_fields() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            o: TrainOverrides,
        }
        let cli = Cli::try_parse_from([
            "t",
            "--epochs",
            "3",
            "--proj",
            "0",
            "--bounded",
            "false",
            "--optimizer",
            "sgd",
            "--eps-start",
            "0",
            "--mean",
            "0.5,0.4,0.3",
            "--limit",
            "0",
            "--lr",
            "-1",
            "--norm",
            "l2",
            "--device",
            "cuda:2",
        ])
        .unwrap();
        let mut c = TrainConfig { limit: Some(10), ..Default::default() };
        cli.o.apply(&mut c);
        assert_eq!((c.epochs, c.proj, c.bounded, c.optimizer, c.eps_start), (3, None, false, Optimizer::Sgd, 0.0));
        assert_eq!((c.limit, c.lr, c.norm, c.batch), (None, -1.0, Norm::L2, 50));
        assert_eq!(c.mean, Some(vec![0.5, 0.4, 0.3]));
        assert_eq!(c.device, DeviceSpec::Cuda(2));
        assert!(Cli::try_parse_from(["t", "--bounded", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["t", "--device", "tpu"]).is_err());
        let mut d = TrainConfig::default();
        TrainOverrides::default().apply(&mut d);
        assert_eq!(d, TrainConfig::default());
    }
}

//! `dualnet bounds --spec S --weights W --inputs I --eps E [--norm linf|l2] [--bounded] [--dtype f32|f64]
//! --json OUT`: exact certified bounds for a batch, in the JSON layout of docs/commands.md (and of the reference's
//! `expected.json` settings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::device::DeviceSpec;
use crate::diagnostics::{Code, Diagnostic};
use crate::dual::robust::robust_ce_per_example;
use crate::dual::{InputSet, Model, Norm};
use crate::error::{Context, Error, Result};
use crate::weights::Weights;

#[derive(clap::Args, Debug, Clone)]
pub struct SetArgs {
    /// Perturbation radius ε in input units (pixels in [0, 1]).
    #[arg(long, allow_negative_numbers = true)]
    pub eps: f64,
    #[arg(long, value_enum, default_value = "linf")]
    pub norm: Norm,
    /// Intersect the ℓ∞ ball with the box `--box-lo..--box-hi` (default [0, 1]).
    #[arg(long)]
    pub bounded: bool,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub box_lo: f64,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub box_hi: f64,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: super::DTypeArg,
    /// Relaxation family: `wk` (the paper's; default of `bounds`), `crown` (per-unit lower slopes, intersected
    /// with interval bounds; default of `certify`) or `ibp` (interval bounds).
    #[arg(long, value_enum)]
    pub bound: Option<crate::ops::Family>,
    /// `--bound alpha`: gradient steps on the lower slopes.
    #[arg(long, default_value_t = crate::dual::bounds::DEFAULT_ALPHA_ITERS)]
    pub alpha_iters: usize,
    /// `--bound alpha`: the Adam step of the slopes (they live in [0, 1]).
    #[arg(long, default_value_t = crate::dual::bounds::DEFAULT_ALPHA_LR)]
    pub alpha_lr: f64,
    /// `bounds`, `certify`, `cascade certify`: the margins also hold for a floating-point inference of the
    /// network: `f32` (an f32 forward pass in any
    /// order, with or without FMA, as PyTorch or ONNX Runtime run it; the default of `certify` and `cascade
    /// certify`), `f64`, or `none` (the network in real arithmetic; the default of `bounds`).
    #[arg(long, value_enum)]
    pub deployed: Option<super::DeployedArg>,
}

impl SetArgs {
    /// The inference the bounds cover, `default` where `--deployed` is not given.
    pub fn deployed_or(&self, default: super::DeployedArg) -> Option<DType> {
        self.deployed.unwrap_or(default).dtype()
    }
    /// The margin an example's bounds must clear in `bounds`: [`default_safety_margin`] (none: the bounds pay
    /// for their own rounding).
    ///
    /// [`default_safety_margin`]: crate::run::certify::default_safety_margin
    pub fn safety_margin(&self, dtype: DType) -> f64 {
        crate::run::certify::default_safety_margin(dtype)
    }
    pub fn bounds(&self) -> Option<(f64, f64)> {
        self.bounded.then_some((self.box_lo, self.box_hi))
    }
    pub fn validate(&self) -> Result<()> {
        if !self.eps.is_finite() || self.eps < 0.0 {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("`--eps` must be a finite number >= 0, got `{}`", self.eps))
                    .help("ε is in input units (pixels in [0, 1]), e.g. `--eps 0.1`"),
            ));
        }
        crate::finite::check_option("--alpha-lr", self.alpha_lr)?;
        if self.alpha_lr <= 0.0 {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("`--alpha-lr` must be positive, got `{}`", self.alpha_lr))
                    .help("the slopes live in [0, 1]; steps such as 0.1 work"),
            ));
        }
        crate::finite::check_option("--box-lo", self.box_lo)?;
        crate::finite::check_option("--box-hi", self.box_hi)?;
        if self.bounded && !(self.box_lo < self.box_hi) {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("empty box [{}, {}]", self.box_lo, self.box_hi))
                    .help("`--box-lo` must be below `--box-hi`"),
            ));
        }
        if self.bounded && self.norm == Norm::L2 {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, "`--bounded` applies to the ℓ∞ ball only")
                    .help("drop `--bounded` with `--norm l2`"),
            ));
        }
        Ok(())
    }
}

/// `--spec S --weights W`: the network and its weights.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The network (`.net`).
    #[arg(long, required_unless_present = "onnx", requires = "weights")]
    pub spec: Option<PathBuf>,
    /// Its weights (safetensors, keys `NODE.weight`, `NODE.bias`, ...).
    #[arg(long, required_unless_present = "onnx", requires = "spec")]
    pub weights: Option<PathBuf>,
    /// An ONNX model instead of `--spec`/`--weights` (imported in memory, as `dualnet import` writes it).
    #[arg(long, conflicts_with_all = ["spec", "weights"])]
    pub onnx: Option<PathBuf>,
    /// Where to compute: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

impl ModelArgs {
    /// Open `--device` and load the model onto it.
    pub fn load(&self, dtype: DType) -> Result<Model> {
        let device = self.device.open()?;
        match (&self.onnx, &self.spec, &self.weights) {
            (Some(onnx), _, _) => crate::run::verify::load_onnx_model(onnx, dtype, &device),
            (None, Some(spec), Some(weights)) => load_model(spec, weights, dtype, &device),
            _ => Err(Error::Usage("give `--spec S --weights W`, or `--onnx MODEL.onnx`".into())),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// safetensors with `x` [B, C, H, W] and `y` [B].
    #[arg(long)]
    pub inputs: PathBuf,
    #[command(flatten)]
    pub set: SetArgs,
    /// Where to write the JSON results (`-` for standard output).
    #[arg(long)]
    pub json: PathBuf,
}

#[derive(Serialize)]
pub struct LayerBoundsJson {
    pub lower: Vec<Vec<f64>>,
    pub upper: Vec<Vec<f64>>,
}

#[derive(Serialize)]
pub struct BoundsJson {
    pub network: String,
    pub norm: Norm,
    pub epsilon: f64,
    pub bounded_input: bool,
    /// The relaxation family the bounds come from.
    pub bound: crate::ops::Family,
    pub dtype: String,
    pub clean_logits: Vec<Vec<f64>>,
    pub margin_lb: Vec<Vec<f64>>,
    pub layer_bounds: BTreeMap<String, LayerBoundsJson>,
    pub robust_ce: f64,
    pub robust_ce_per_example: Vec<f64>,
    pub robust_err: f64,
    pub uncertified: Vec<bool>,
    /// Examples with a non-finite layer or margin bound (never certified).
    pub nonfinite_bounds: usize,
}

pub use crate::dual::robust::rows;

/// Load a model: check the spec, load and check the weights.
pub fn load_model(spec: &Path, weights: &Path, dtype: DType, device: &Device) -> Result<Model> {
    let g = super::load_graph(spec)?;
    let w = Weights::load(&g, weights, dtype, device)?;
    Ok(Model::new(g, w, dtype, device.clone()).with_fixed_weights())
}

/// Load `x` and `y` from an inputs file and check them against the model.
pub fn load_inputs(model: &Model, path: &Path) -> Result<(Tensor, Vec<u32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read inputs", path, e))?;
    let bad = |msg: String, help: &str| Error::input(Diagnostic::new(Code::InputsInvalid, msg).help(help.to_string()));
    let map = candle_core::safetensors::load_buffer(&bytes, &model.device).map_err(|e| {
        bad(format!("`{}` is not a valid safetensors file: {e}", path.display()), "write `x` and `y` with safetensors")
    })?;
    let file = path.display();
    let x = map
        .get("x")
        .ok_or_else(|| bad(format!("`{file}` has no tensor `x`"), "store the images as `x` [B, C, H, W]"))?;
    let y = map
        .get("y")
        .ok_or_else(|| bad(format!("`{file}` has no tensor `y`"), "store the labels as `y` [B] (integers)"))?;
    let in_shape = model.graph.input_shape();
    let b = x.dims().first().copied().unwrap_or(0);
    if x.dims().len() != in_shape.len() + 1 || &x.dims()[1..] != in_shape.as_slice() || b == 0 {
        return Err(bad(
            format!(
                "`x` in `{file}` has shape {:?}, expected [B, {}]",
                x.dims(),
                in_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ),
            "the spec's `input` declares the shape of one example",
        ));
    }
    if y.dims() != [b] {
        return Err(bad(format!("`y` in `{file}` has shape {:?}, expected [{b}]", y.dims()), "one label per image"));
    }
    if !y.dtype().is_int() {
        return Err(bad(
            format!("`y` in `{file}` has dtype {:?}, expected integers", y.dtype()),
            "store labels as int64",
        ));
    }
    let labels: Vec<i64> = y.to_dtype(DType::I64).and_then(|t| t.to_vec1()).context(|| "reading labels".to_string())?;
    let k = model.graph.num_classes() as i64;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= k) {
        return Err(bad(
            format!("label {l} of example {i} is out of range for {k} classes"),
            "labels are class indices 0..K-1",
        ));
    }
    if !x.dtype().is_float() {
        return Err(bad(
            format!("`x` in `{file}` has dtype {:?}, expected floats", x.dtype()),
            "store images as float32 in [0, 1]",
        ));
    }
    crate::finite::check_inputs(x, &format!("`x` in `{file}`"))?;
    let x = x.to_dtype(model.dtype).context(|| "reading inputs".to_string())?;
    Ok((x, labels.into_iter().map(|l| l as u32).collect()))
}

/// Compute the JSON result for a batch.
pub fn compute(model: &Model, x: &Tensor, labels: &[u32], set: &SetArgs) -> Result<BoundsJson> {
    let b = labels.len();
    if model.device.is_cpu() {
        crate::memory::ensure_fits(
            b as f64 * crate::dual::bounds::exact_bytes_per_example(model) as f64,
            &format!("exact bounds of `{}` for {b} examples", model.graph.name),
            "pass fewer examples per inputs file, or certify with `dualnet certify`, which works in memory-sized passes",
        )?;
    }
    let input_set = InputSet::new(x, &vec![set.eps; b], set.norm, set.bounds())?;
    let logits = model.forward(x)?;
    let family = set.bound.unwrap_or(crate::ops::Family::Wk);
    let opts = crate::dual::bounds::Options {
        family,
        alpha_iters: set.alpha_iters,
        alpha_lr: set.alpha_lr,
        deployed: set.deployed_or(super::DeployedArg::None),
        ..Default::default()
    };
    let cert = crate::dual::robust::certify_batch_with(model, &input_set, labels, &opts)?;
    let margin_lb = rows(&cert.margin_lb)?;
    let ce = rows(&robust_ce_per_example(&cert.margin_lb)?.unsqueeze(1).context(|| "robust loss".to_string())?)?;
    let ce: Vec<f64> = ce.into_iter().map(|r| r[0]).collect();
    let finite = cert.finite(&margin_lb);
    let cert_flags = cert.certified(&margin_lb, labels, set.safety_margin(model.dtype));
    let mut layer_bounds = BTreeMap::new();
    for (z, l, u) in &cert.bounds.layers {
        layer_bounds.insert(model.graph.node(*z).name.clone(), LayerBoundsJson { lower: rows(l)?, upper: rows(u)? });
    }
    Ok(BoundsJson {
        network: model.graph.name.clone(),
        norm: set.norm,
        epsilon: set.eps,
        bounded_input: set.bounded,
        bound: family,
        dtype: format!("{:?}", model.dtype).to_lowercase(),
        clean_logits: rows(&logits)?,
        margin_lb,
        layer_bounds,
        robust_ce: ce.iter().sum::<f64>() / b as f64,
        robust_ce_per_example: ce,
        robust_err: cert_flags.iter().filter(|c| !**c).count() as f64 / b as f64,
        uncertified: cert_flags.iter().map(|c| !c).collect(),
        nonfinite_bounds: finite.iter().filter(|f| !**f).count(),
    })
}

pub fn run(args: &Args) -> Result<()> {
    args.set.validate()?;
    let model = args.model.load(args.set.dtype.dtype())?;
    let (x, labels) = load_inputs(&model, &args.inputs)?;
    let out = compute(&model, &x, &labels, &args.set)?;
    if out.nonfinite_bounds > 0 {
        eprintln!(
            "warning: {} example(s) had a bound that is not finite (NaN or ±inf); they count as not certified",
            out.nonfinite_bounds
        );
    }
    let text = serde_json::to_string(&out).map_err(|e| Error::Usage(format!("serialising results: {e}")))?;
    if args.json.as_os_str() == "-" {
        println!("{text}");
    } else {
        crate::weights::write_atomic(&args.json, text.as_bytes())?;
        eprintln!(
            "{}: robust_ce {:.6}, robust_err {:.4} ({} of {} certified) -> {}",
            model.graph.name,
            out.robust_ce,
            out.robust_err,
            out.uncertified.iter().filter(|u| !**u).count(),
            labels.len(),
            args.json.display()
        );
    }
    Ok(())
}

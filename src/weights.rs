//! Weights: safetensors files keyed `NODE.weight`, `NODE.bias` (batchnorm also `NODE.running_mean`,
//! `NODE.running_var`), PyTorch layouts (docs/language.md). Loading checks every key, shape and dtype against the
//! graph and reports all problems at once; saving is atomic (temp file + rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Context, Error, Result};
use crate::ir::Graph;
use crate::ops::{shape::fmt as fmt_shape, Init};
use petgraph::graph::NodeIndex;

/// Per node: suffix -> tensor, in the compute dtype.
pub type NodeWeights = BTreeMap<String, Tensor>;

/// All weights of a graph, indexed by node index.
#[derive(Clone)]
pub struct Weights {
    pub per_node: Vec<NodeWeights>,
}

impl Weights {
    pub fn node(&self, i: petgraph::graph::NodeIndex) -> &NodeWeights {
        &self.per_node[i.index()]
    }

    /// Flat `NODE.suffix -> tensor` map (for saving).
    pub fn to_map(&self, g: &Graph) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        for i in g.order() {
            for (k, t) in &self.per_node[i.index()] {
                m.insert(format!("{}.{}", g.node(i).name, k), t.clone());
            }
        }
        m
    }

    /// Build from a flat map, checking names and shapes against the graph.
    pub fn from_map(g: &Graph, mut map: HashMap<String, Tensor>, file: &str, dtype: DType) -> Result<Self> {
        let mut problems = Vec::new();
        let mut per_node = vec![NodeWeights::new(); g.dag.node_count()];
        for i in g.order() {
            let node = g.node(i);
            for spec in &node.weights {
                let key = format!("{}.{}", node.name, spec.suffix);
                match map.remove(&key) {
                    None => {
                        problems.push(
                            Diagnostic::new(Code::WeightMissing, format!("`{file}` has no tensor `{key}`")).help(
                                format!("node `{}` needs `{key}` of shape {}", node.name, fmt_shape(&spec.shape)),
                            ),
                        )
                    }
                    Some(t) => {
                        if t.dims() != spec.shape.as_slice() {
                            problems.push(
                                Diagnostic::new(
                                    Code::WeightShape,
                                    format!("`{key}` in `{file}` has shape {}, expected {}", fmt_shape(&t.dims().to_vec()), fmt_shape(&spec.shape)),
                                )
                                .help(format!("the spec gives node `{}` the shape {}; PyTorch layouts: conv [out, in, k, k], linear [out, in]", node.name, fmt_shape(&spec.shape))),
                            );
                            continue;
                        }
                        if !matches!(t.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                            problems.push(
                                Diagnostic::new(
                                    Code::WeightShape,
                                    format!("`{key}` in `{file}` has dtype {:?}, expected a float", t.dtype()),
                                )
                                .help("save the weights as float32 or float64"),
                            );
                            continue;
                        }
                        match crate::finite::weight_diagnostic(&key, file, &t)? {
                            Some(d) => {
                                problems.push(d);
                                continue;
                            }
                            None if spec.nonneg => {
                                if let Some(d) = negative_diagnostic(&key, file, &t)? {
                                    problems.push(d);
                                    continue;
                                }
                            }
                            None => {}
                        }
                        // Weights as stored: a float64 value that float32 does not hold is never rounded silently.
                        if dtype == DType::F32 && t.dtype() == DType::F64 {
                            let v: Vec<f64> = t
                                .flatten_all()
                                .and_then(|t| t.to_vec1())
                                .map_err(|e| Error::Tensor { context: format!("reading `{key}`"), source: e })?;
                            if let Some((j, x)) = v.iter().enumerate().find(|(_, x)| (**x as f32) as f64 != **x) {
                                problems.push(
                                    Diagnostic::new(
                                        Code::WeightShape,
                                        format!("`{key}` in `{file}` holds float64 values that float32 does not (element {j} is {x:?}); computing in float32 would certify a rounded copy of the network"),
                                    )
                                    .help("run with `--dtype f64` (the weights as stored), or save the weights as float32"),
                                );
                                continue;
                            }
                        }
                        match t.to_dtype(dtype) {
                            Ok(t) => {
                                per_node[i.index()].insert(spec.suffix.to_string(), t);
                            }
                            Err(e) => problems.push(Diagnostic::new(Code::WeightShape, format!("`{key}`: {e}"))),
                        }
                    }
                }
            }
        }
        let mut extra: Vec<String> = map.into_keys().collect();
        extra.sort();
        for k in extra {
            let node = k.rsplit_once('.').map(|(n, _)| n.to_string()).unwrap_or_else(|| k.clone());
            let help = match g.find(&node) {
                Some(_) => format!("node `{node}` has no parameter like this; remove the key"),
                None => {
                    let names: Vec<&str> = g.order().map(|i| g.node(i).name.as_str()).collect();
                    match crate::diagnostics::did_you_mean(&node, names) {
                        Some(c) => format!(
                            "the spec has no node `{node}` — did you mean `{c}`? (keys are `NODE.weight`, `NODE.bias`)"
                        ),
                        None => format!(
                            "the spec has no node `{node}`; remove the key or rename it to `NODE.weight`/`NODE.bias`"
                        ),
                    }
                }
            };
            problems.push(Diagnostic::new(Code::WeightExtra, format!("`{file}` has an extra tensor `{k}`")).help(help));
        }
        if problems.is_empty() {
            Ok(Weights { per_node })
        } else {
            Err(Error::Input(problems))
        }
    }

    /// Load a safetensors file and check it against the graph.
    pub fn load(g: &Graph, path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        // The file's bytes, the tensors read from it and their copies in the compute dtype.
        let file_len = std::fs::metadata(path).map(|m| m.len() as f64).unwrap_or(0.0);
        crate::memory::ensure_fits(
            file_len + 2.0 * g.parameter_count() as f64 * dtype.size_in_bytes() as f64,
            &format!("the weights of `{}` (`{}`)", g.name, path.display()),
            "use a smaller network, or a machine with more memory",
        )?;
        let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read weights", path, e))?;
        let map = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
            Error::input(
                Diagnostic::new(Code::WeightFile, format!("`{}` is not a valid safetensors file", path.display()))
                    .help(format!(
                        "{e}; save weights with safetensors (e.g. `safetensors.torch.save_file(state_dict, ...)`)"
                    )),
            )
        })?;
        Weights::from_map(g, map, &path.display().to_string(), dtype)
    }

    /// PyTorch-default initialisation: kaiming-uniform weights and uniform biases, `U(-1/sqrt(fan_in), ..)`;
    /// batchnorm weight 1, bias 0, running mean 0, running variance 1.
    pub fn init(g: &Graph, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        // Each tensor is drawn in f64 and converted; all of them are kept.
        crate::memory::ensure_fits(
            g.parameter_count() as f64 * (8.0 + dtype.size_in_bytes() as f64),
            &format!("the weights of `{}` ({} parameters)", g.name, g.parameter_count()),
            "make the layers narrower or fewer, or use a machine with more memory",
        )?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut per_node = vec![NodeWeights::new(); g.dag.node_count()];
        for i in g.order() {
            for spec in &g.node(i).weights {
                let n: usize = spec.shape.iter().product();
                let data: Vec<f64> = match spec.init {
                    Init::FanIn(f) => {
                        let b = 1.0 / (f.max(1) as f64).sqrt();
                        (0..n).map(|_| rng.random_range(-b..b)).collect()
                    }
                    Init::Ones => vec![1.0; n],
                    Init::Zeros => vec![0.0; n],
                };
                let t = Tensor::from_vec(data, spec.shape.as_slice(), device)
                    .and_then(|t| t.to_dtype(dtype))
                    .context(|| format!("initialising `{}.{}`", g.node(i).name, spec.suffix))?;
                per_node[i.index()].insert(spec.suffix.to_string(), t);
            }
        }
        Ok(Weights { per_node })
    }

    /// [`Weights::init`], then Shi et al. 2021's IBP initialisation: every weight matrix or kernel (a fan-in
    /// initialised tensor of rank ≥ 2) but the last in node order is redrawn from `N(0, σ²)`, `σ = √(2π) / fan_in`.
    /// Then `E|w| = σ √(2/π) = 2 / fan_in`: a layer maps input radii `r` to `|W| r`, of mean `2 · mean(r)`, which
    /// the ReLU after it halves on average, so interval widths stay about constant with depth.
    pub fn init_ibp(g: &Graph, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        use rand_distr::Distribution;
        let mut w = Self::init(g, seed, dtype, device)?;
        let mats: Vec<(NodeIndex, &'static str, Vec<usize>, usize)> = g
            .order()
            .flat_map(|i| {
                g.node(i).weights.iter().filter_map(move |spec| match spec.init {
                    Init::FanIn(f) if spec.shape.len() >= 2 => Some((i, spec.suffix, spec.shape.clone(), f.max(1))),
                    _ => None,
                })
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1b9_1417);
        for (i, suffix, shape, fan_in) in mats.iter().take(mats.len().saturating_sub(1)) {
            let sigma = (2.0 * std::f64::consts::PI).sqrt() / *fan_in as f64;
            let normal = rand_distr::Normal::new(0.0, sigma).map_err(|e| Error::Usage(format!("internal: {e}")))?;
            let n: usize = shape.iter().product();
            let data: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            let t = Tensor::from_vec(data, shape.as_slice(), device)
                .and_then(|t| t.to_dtype(dtype))
                .context(|| format!("initialising `{}.{}`", g.node(*i).name, suffix))?;
            w.per_node[i.index()].insert(suffix.to_string(), t);
        }
        Ok(w)
    }

    /// The same weights on `device` (a checkpoint is read on the CPU, then moved).
    pub fn to_device(self, device: &Device) -> Result<Self> {
        let per_node = self
            .per_node
            .into_iter()
            .map(|m| {
                m.into_iter()
                    .map(|(k, t)| t.to_device(device).map(|t| (k, t)))
                    .collect::<candle_core::Result<NodeWeights>>()
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .context(|| "moving the weights to the device".to_string())?;
        Ok(Weights { per_node })
    }

    /// Save atomically as safetensors.
    pub fn save(&self, g: &Graph, path: &Path) -> Result<()> {
        save_tensors(&self.to_map(g), path)
    }
}

/// E0102 for a tensor that must be `>= 0` (batchnorm's running variance) and is not: `sqrt(var + eps)` would be NaN.
fn negative_diagnostic(key: &str, file: &str, t: &Tensor) -> Result<Option<Diagnostic>> {
    let v: Vec<f64> = t
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .context(|| format!("reading `{key}`"))?;
    Ok(v.iter().position(|x| *x < 0.0).map(|i| {
        Diagnostic::new(Code::WeightShape, format!("`{key}` in `{file}` is negative ({}) at index [{i}]", v[i]))
            .help("a variance is never negative; the file is damaged or the key belongs to another tensor")
    }))
}

/// Whether every weight is finite (a training step checks this before the weights are kept).
pub fn all_finite(w: &Weights) -> Result<bool> {
    for node in &w.per_node {
        for (k, t) in node {
            // The sum is non-finite when an element is (or, conservatively, when it overflows).
            let s: f64 = t
                .to_dtype(DType::F64)
                .and_then(|t| t.sum_all())
                .and_then(|t| t.to_scalar())
                .context(|| format!("checking `{k}`"))?;
            if !s.is_finite() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Write tensors to `path` atomically (a temp file beside it, then rename).
pub fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = tmp_path(path);
    candle_core::safetensors::save(map, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("cannot write", path, std::io::Error::other(e.to_string()))
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))
}

/// Write bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))
}

fn tmp_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

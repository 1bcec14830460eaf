//! ONNX import: an ONNX model (protobuf, decoded by the `onnx-protobuf` crate) becomes a readable `.net` spec
//! and its weights in the project's layout (`NODE.weight`, `NODE.bias`, PyTorch layouts). The spec then goes
//! through the ordinary checker ([`crate::check::check_source`]), so an imported network is exactly what
//! `dualnet import` writes to disk.
//!
//! The import is a small symbolic interpreter over the ONNX graph: every ONNX value is either a constant (an
//! initializer, a `Constant` node, or arithmetic on them) or a computed tensor, which is a node of the `.net`
//! network with its per-example shape. See [`translate`](self) for the supported nodes; everything else is
//! collected and reported at once (E0121).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use onnx_protobuf::{AttributeProto, GraphProto, Message, ModelProto, NodeProto, TensorProto};

use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};

mod translate;

/// A dense constant in row-major order, f64 (exact for f32 sources).
#[derive(Debug, Clone, PartialEq)]
pub struct Arr {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

impl Arr {
    pub fn scalar(v: f64) -> Self {
        Arr { dims: vec![], data: vec![v] }
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// An imported network: the `.net` text, the tensors of its weights file, and facts about the source.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The network's name in the spec.
    pub name: String,
    /// The `.net` text (with a header naming the source and its hash).
    pub text: String,
    /// `NODE.suffix -> tensor`.
    pub tensors: BTreeMap<String, Arr>,
    /// Whether every weight came from float32 data (the weights file is then float32, else float64).
    pub f32_weights: bool,
    /// The ONNX input's dimensions, batch included (e.g. `[1, 784, 1]`).
    pub onnx_input: Vec<usize>,
    /// The network's per-example input shape (`[N]` or `[C, H, W]`).
    pub input_shape: Vec<usize>,
    /// The number of outputs.
    pub outputs: usize,
    /// Display name of the source file.
    pub source: String,
    /// CRC-32 of the source bytes.
    pub crc32: u32,
}

fn invalid(file: &str, msg: impl Into<String>, help: impl Into<String>) -> Error {
    Error::input(Diagnostic::new(Code::OnnxInvalid, format!("`{file}`: {}", msg.into())).help(help.into()))
}

/// Read and import an ONNX file.
pub fn import_file(path: &Path) -> Result<Imported> {
    let bytes = crate::gz::read(path, "cannot read onnx model")?;
    import_bytes(&path.display().to_string(), &bytes)
}

/// Import an ONNX model given as bytes; `file` names it in diagnostics and in the spec's header.
pub fn import_bytes(file: &str, bytes: &[u8]) -> Result<Imported> {
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| {
        invalid(
            file,
            format!("the protobuf does not decode ({e})"),
            "the file is truncated or not an ONNX model; export it again (e.g. `torch.onnx.export`)",
        )
    })?;
    let Some(graph) = model.graph.as_ref() else {
        return Err(invalid(file, "the model has no graph", "export the model again; an ONNX model holds one graph"));
    };
    if graph.node.is_empty() {
        return Err(invalid(file, "the graph has no nodes", "the file is truncated or empty; export the model again"));
    }
    let crc32 = crc32fast::hash(bytes);
    let stem = Path::new(file).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let net_name = sanitize(&stem).unwrap_or_else(|| "imported".into());
    let mut imp = translate::Translator::new(file, graph)?;
    imp.run()?;
    imp.finish(file, &net_name, crc32, &model)
}

/// `name` as a `.net` identifier: kept if it is one, else with every other character replaced by `_`; `None` when
/// nothing usable is left.
pub fn sanitize(name: &str) -> Option<String> {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.is_empty() || s.chars().all(|c| c == '_') {
        return None;
    }
    if s.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if is_keyword(&s) {
        s.push('_');
    }
    Some(s)
}

/// Whether `name` is already a valid `.net` identifier.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !is_keyword(name)
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "network" | "block" | "input" | "output")
}

/// The values of a tensor initializer as f64, with whether they were float32.
pub fn tensor_values(file: &str, t: &TensorProto) -> Result<(Arr, bool)> {
    let dims: Vec<usize> =
        t.dims.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<_, _>>().map_err(|_| {
            invalid(
                file,
                format!("tensor `{}` has a negative dimension {:?}", t.name, t.dims),
                "export the model again",
            )
        })?;
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|n| *n <= 1 << 31).ok_or_else(|| {
        invalid(
            file,
            format!("tensor `{}` is too large ({:?})", t.name, t.dims),
            "the file is damaged; export it again",
        )
    })?;
    if !t.external_data.is_empty() {
        return Err(invalid(
            file,
            format!("tensor `{}` keeps its data in an external file", t.name),
            "save the model with its weights inside (`onnx.save_model(m, path, save_as_external_data=False)`)",
        ));
    }
    let raw = &t.raw_data;
    let (data, is_f32): (Vec<f64>, bool) = match t.data_type {
        1 => {
            if raw.is_empty() {
                (t.float_data.iter().map(|&v| v as f64).collect(), true)
            } else {
                (raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(), true)
            }
        }
        11 => {
            if raw.is_empty() {
                (t.double_data.clone(), false)
            } else {
                (
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                        .collect(),
                    false,
                )
            }
        }
        7 => {
            if raw.is_empty() {
                (t.int64_data.iter().map(|&v| v as f64).collect(), true)
            } else {
                (
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64)
                        .collect(),
                    true,
                )
            }
        }
        6 => {
            if raw.is_empty() {
                (t.int32_data.iter().map(|&v| v as f64).collect(), true)
            } else {
                (raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(), true)
            }
        }
        other => {
            return Err(invalid(
                file,
                format!("tensor `{}` has data type {other}, not float32, float64, int32 or int64", t.name),
                "convert the model to float32 (e.g. `model.float()` before export)",
            ))
        }
    };
    if data.len() != n {
        return Err(invalid(
            file,
            format!("tensor `{}` has {} values for its shape {:?} ({n} values)", t.name, data.len(), dims),
            "the file is truncated or damaged; export the model again",
        ));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(
            Diagnostic::new(
                Code::NonFinite,
                format!("`{file}`: tensor `{}` holds {} at index {i}", t.name, crate::finite::fmt_value(data[i])),
            )
            .help("every weight must be a finite number; the model's training diverged or the file is damaged"),
        ));
    }
    Ok((Arr { dims, data }, is_f32))
}

/// Attribute lookup on a node.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The dimensions of a graph input (`None` for a symbolic or missing dimension).
pub fn input_dims(graph: &GraphProto, name: &str) -> Option<Vec<Option<usize>>> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as D;
    use onnx_protobuf::type_proto::Value as T;
    let vi = graph.input.iter().find(|i| i.name == name)?;
    let tp = vi.type_.as_ref()?;
    let Some(T::TensorType(tt)) = tp.value.as_ref() else { return None };
    let shape = tt.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(D::DimValue(v)) if *v > 0 => Some(*v as usize),
                _ => None,
            })
            .collect(),
    )
}

impl Imported {
    /// The tensors as candle tensors of `dtype` on `device`.
    pub fn tensor_map(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> Result<HashMap<String, candle_core::Tensor>> {
        let mut m = HashMap::new();
        for (k, a) in &self.tensors {
            let t = candle_core::Tensor::from_vec(a.data.clone(), a.dims.as_slice(), device)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|e| Error::Tensor { context: format!("building `{k}`"), source: e })?;
            m.insert(k.clone(), t);
        }
        Ok(m)
    }

    /// Check the spec text and return its graph (an import error is a bug of the importer or an op that the
    /// checker refuses, e.g. one without a dual rule: its diagnostics point into the generated text).
    pub fn graph(&self) -> Result<crate::ir::Graph> {
        let checked = crate::check::check_source(&format!("{} (imported)", self.source), &self.text);
        let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
            checked.diagnostics.into_iter().partition(|d| d.is_error());
        for w in warnings.iter().filter(|w| w.code != Code::UnusedNode) {
            eprintln!("{}", w.render(crate::diagnostics::stderr_color()));
        }
        match checked.graph {
            Some(g) if errors.is_empty() => Ok(g),
            _ => Err(Error::Input(errors)),
        }
    }

    /// The graph and its checked weights in `dtype`.
    pub fn graph_and_weights(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> Result<(crate::ir::Graph, crate::weights::Weights)> {
        let g = self.graph()?;
        let w = crate::weights::Weights::from_map(&g, self.tensor_map(dtype, device)?, &self.source, dtype)?;
        Ok((g, w))
    }

    /// Write `DIR/<name>.net` and `DIR/<name>.safetensors` (atomically); returns both paths.
    pub fn write(&self, dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        let spec = dir.join(format!("{}.net", self.name));
        let weights = dir.join(format!("{}.safetensors", self.name));
        crate::weights::write_atomic(&spec, self.text.as_bytes())?;
        let dtype = if self.f32_weights { candle_core::DType::F32 } else { candle_core::DType::F64 };
        let map = self.tensor_map(dtype, &candle_core::Device::Cpu)?;
        crate::weights::save_tensors(&map, &weights)?;
        Ok((spec, weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("fc_1"));
        assert!(!is_identifier("1fc"));
        assert!(!is_identifier("input"));
        assert_eq!(sanitize("layers.0").as_deref(), Some("layers_0"));
        assert_eq!(sanitize("12").as_deref(), Some("_12"));
        assert_eq!(sanitize("/").as_deref(), None);
        assert_eq!(sanitize("output").as_deref(), Some("output_"));
    }

    #[test]
    fn garbage_is_a_diagnostic() {
        for bytes in [&b"not an onnx file at all"[..], &[0xff, 0xff, 0xff][..], &[][..]] {
            match import_bytes("bad.onnx", bytes) {
                Err(Error::Input(d)) => assert_eq!(d[0].code, Code::OnnxInvalid),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("garbage imported"),
            }
        }
    }
}

//! The translation of ONNX nodes into `.net` statements.
//!
//! | ONNX | `.net` |
//! | --- | --- |
//! | `Gemm` (`transA = 0`; `transB`, `alpha`, `beta` folded into the weights) | `linear` |
//! | `MatMul` by a constant, and a following `Add` of a constant | `linear` (the `Add` becomes its bias) |
//! | `Conv` (group 1, square kernel, equal strides, no dilation) | `conv2d` (pads that differ by side: a `pad2d` before it) |
//! | `Relu`, `Sigmoid`, `Tanh`, `LeakyRelu` | `relu`, `sigmoid`, `tanh`, `leaky_relu` |
//! | `MaxPool`, `AveragePool` (square windows, symmetric padding; `AveragePool` with `count_include_pad`: any) | `maxpool2d`, `avgpool2d` |
//! | `BatchNormalization` (inference) | `batchnorm2d` (on a vector: `scale_shift`) |
//! | `Flatten` (axis 1), `Reshape` to `[1, -1]` or to the same shape | `flatten`, or nothing |
//! | `Add` of two computed tensors | a sum `a + b` |
//! | `Add`, `Sub`, `Mul`, `Div` of a computed tensor and a constant | `scale_shift` (exact; folded into the bias of a preceding `linear`/`conv2d` for `Add`/`Sub`) |
//! | `Transpose` (the batch axis stays first) | `transpose` (nothing for the identity; on a constant matrix: folded) |
//! | `Pad` (constant mode, value 0, spatial axes; pads as attribute or input) | `pad2d` (nothing when every pad is 0) |
//! | `Identity`, `Dropout`, `Constant`, and `Shape`/`Gather`/`Unsqueeze`/`Concat`/`Cast` on constants | nothing (folded) |

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{GraphProto, ModelProto, NodeProto};

use super::{attr, input_dims, invalid, sanitize, tensor_values, Arr, Imported};
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};

/// The op types the translator knows (some only on constants or with some attributes).
const KNOWN: &[&str] = &[
    "Identity",
    "Dropout",
    "Cast",
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Gemm",
    "MatMul",
    "Conv",
    "Relu",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "Flatten",
    "Reshape",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "AveragePool",
    "MaxPool",
    "Transpose",
    "Pad",
];

/// A computed tensor: a node of the network.
#[derive(Debug, Clone)]
struct NodeRef {
    name: String,
    /// Per-example shape in the network (`[N]` or `[C, H, W]`).
    shape: Vec<usize>,
    /// The ONNX shape, batch included; its row-major order is the network's.
    onnx: Vec<usize>,
    /// Index of the statement that computes it (`None` for the input).
    emit: Option<usize>,
}

#[derive(Debug, Clone)]
enum Val {
    Const(Arr),
    Node(NodeRef),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Linear,
    Conv,
    ScaleShift,
    Other,
}

/// One statement of the spec.
struct Emit {
    name: String,
    rhs: String,
    /// `(suffix, tensor)` weights of the node.
    params: Vec<(&'static str, Arr)>,
    kind: Kind,
    comment: String,
}

pub(super) struct Translator<'a> {
    file: &'a str,
    graph: &'a GraphProto,
    vals: HashMap<String, Val>,
    uses: HashMap<String, usize>,
    emits: Vec<Emit>,
    names: HashSet<String>,
    counters: HashMap<String, usize>,
    /// Values whose producer failed: their consumers stay quiet.
    poisoned: HashSet<String>,
    unsupported: Vec<String>,
    invalid: Vec<Diagnostic>,
    all_f32: bool,
    input: NodeRef,
    input_onnx_name: String,
}

/// What went wrong with one node.
enum Fail {
    Unsupported(String),
    Invalid(String),
}

type R<T> = std::result::Result<T, Fail>;

fn unsup<T>(msg: impl Into<String>) -> R<T> {
    Err(Fail::Unsupported(msg.into()))
}
fn bad<T>(msg: impl Into<String>) -> R<T> {
    Err(Fail::Invalid(msg.into()))
}

impl<'a> Translator<'a> {
    pub(super) fn new(file: &'a str, graph: &'a GraphProto) -> Result<Self> {
        let mut vals = HashMap::new();
        let mut all_f32 = true;
        for t in &graph.initializer {
            let (a, f32) = tensor_values(file, t)?;
            all_f32 &= f32;
            vals.insert(t.name.clone(), Val::Const(a));
        }
        let inputs: Vec<&str> =
            graph.input.iter().map(|i| i.name.as_str()).filter(|n| !vals.contains_key(*n)).collect();
        let [input_name] = inputs.as_slice() else {
            return Err(invalid(
                file,
                format!("the graph has {} inputs ({:?}); dualnet takes networks with one input", inputs.len(), inputs),
                "export the network with a single input tensor",
            ));
        };
        let dims = input_dims(graph, input_name).unwrap_or_default();
        if dims.is_empty() || dims.iter().skip(1).any(|d| d.is_none()) {
            return Err(invalid(
                file,
                format!("the input `{input_name}` has no fixed shape ({dims:?})"),
                "export with a fixed input shape (a dummy input of the real size); only the batch dimension may be symbolic",
            ));
        }
        let batch = dims.len() >= 2 && matches!(dims[0], None | Some(1));
        let onnx: Vec<usize> = dims.iter().map(|d| d.unwrap_or(1)).collect();
        let per: Vec<usize> = if batch { onnx[1..].to_vec() } else { onnx.clone() };
        // At most 2^28 values per example (the checker's own limit is lower and says so).
        let total = per.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|n| *n <= 1 << 28);
        let Some(total) = total else {
            return Err(invalid(
                file,
                format!("the input `{input_name}` is too large ({onnx:?})"),
                "export a smaller network",
            ));
        };
        let shape = if per.len() == 3 { per.clone() } else { vec![total] };
        if shape.contains(&0) {
            return Err(invalid(file, format!("the input `{input_name}` has an empty shape {onnx:?}"), "export again"));
        }
        let name =
            if super::is_identifier(input_name) && input_name.len() < 40 { input_name.to_string() } else { "x".into() };
        let input = NodeRef {
            name: name.clone(),
            shape,
            onnx: if batch { onnx } else { [vec![1], onnx].concat() },
            emit: None,
        };
        let mut uses = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                *uses.entry(i.clone()).or_insert(0) += 1;
            }
        }
        for o in &graph.output {
            *uses.entry(o.name.clone()).or_insert(0) += 1;
        }
        let mut names = HashSet::new();
        names.insert(name);
        vals.insert(input_name.to_string(), Val::Node(input.clone()));
        Ok(Translator {
            file,
            graph,
            vals,
            uses,
            emits: Vec::new(),
            names,
            counters: HashMap::new(),
            poisoned: HashSet::new(),
            unsupported: Vec::new(),
            invalid: Vec::new(),
            all_f32,
            input,
            input_onnx_name: input_name.to_string(),
        })
    }

    pub(super) fn run(&mut self) -> Result<()> {
        let graph = self.graph;
        for (idx, node) in graph.node.iter().enumerate() {
            let label = if node.name.is_empty() {
                format!("#{idx} (output `{}`)", node.output.first().map(String::as_str).unwrap_or(""))
            } else {
                format!("`{}`", node.name)
            };
            if node.input.iter().any(|i| self.poisoned.contains(i)) {
                // Downstream of a failed node: quiet, unless the node could not be imported anyway.
                if !KNOWN.contains(&node.op_type.as_str()) {
                    self.unsupported
                        .push(format!("node {label} ({0}): `{0}` has no counterpart in dualnet", node.op_type));
                }
                self.poison(node);
                continue;
            }
            if !node.domain.is_empty() && node.domain != "ai.onnx" {
                self.unsupported.push(format!(
                    "node {label} ({}, domain `{}`): custom domains are not supported",
                    node.op_type, node.domain
                ));
                self.poison(node);
                continue;
            }
            match self.node(node) {
                Ok(out) => {
                    for (name, v) in node.output.iter().zip(out) {
                        if !name.is_empty() {
                            self.vals.insert(name.clone(), v);
                        }
                    }
                }
                Err(Fail::Unsupported(msg)) => {
                    self.unsupported.push(format!("node {label} ({}{}): {msg}", node.op_type, attrs_text(node)));
                    self.poison(node);
                }
                Err(Fail::Invalid(msg)) => {
                    self.invalid.push(
                        Diagnostic::new(
                            Code::OnnxInvalid,
                            format!("`{}`: node {label} ({}): {msg}", self.file, node.op_type),
                        )
                        .help("the model is malformed; check it with `onnx.checker.check_model` and export it again"),
                    );
                    self.poison(node);
                }
            }
        }
        Ok(())
    }

    fn poison(&mut self, node: &NodeProto) {
        for o in &node.output {
            self.poisoned.insert(o.clone());
        }
    }

    fn get(&self, node: &NodeProto, i: usize) -> R<Val> {
        let Some(name) = node.input.get(i) else { return bad(format!("input {i} is missing")) };
        if name.is_empty() {
            return bad(format!("input {i} is missing"));
        }
        match self.vals.get(name) {
            Some(v) => Ok(v.clone()),
            None => bad(format!("input `{name}` is not computed by any earlier node, initializer or graph input")),
        }
    }

    fn get_opt(&self, node: &NodeProto, i: usize) -> R<Option<Val>> {
        match node.input.get(i) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(_) => self.get(node, i).map(Some),
        }
    }

    fn konst(&self, node: &NodeProto, i: usize, what: &str) -> R<Arr> {
        match self.get(node, i)? {
            Val::Const(a) => Ok(a),
            Val::Node(_) => {
                unsup(format!("its {what} is computed from the input; only constant {what}s are supported"))
            }
        }
    }

    fn computed(&self, node: &NodeProto, i: usize) -> R<NodeRef> {
        match self.get(node, i)? {
            Val::Node(n) => Ok(n),
            Val::Const(_) => unsup("it applies to a constant tensor, not to one computed from the input"),
        }
    }

    fn int_attr(node: &NodeProto, name: &str, default: i64) -> i64 {
        attr(node, name).map(|a| a.i).unwrap_or(default)
    }
    fn float_attr(node: &NodeProto, name: &str, default: f64) -> f64 {
        attr(node, name).map(|a| a.f as f64).unwrap_or(default)
    }
    fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
        attr(node, name).map(|a| a.ints.clone())
    }

    /// A fresh node name: the ONNX node's name if it is a valid one, else derived from its weight's name or op.
    fn fresh(&mut self, node: &NodeProto, hint: &str) -> String {
        let mut candidates = Vec::new();
        if let Some(s) = sanitize(&node.name) {
            candidates.push(s);
        }
        if let Some(w) = node.input.get(1) {
            if let Some(prefix) = w.strip_suffix(".weight") {
                if let Some(s) = sanitize(prefix) {
                    candidates.push(s);
                }
            }
        }
        for c in candidates {
            if c.len() <= 60 && !self.names.contains(&c) {
                self.names.insert(c.clone());
                return c;
            }
        }
        self.counted(hint)
    }

    /// `{hint}{n}` for the first counter `n` whose name is still free (and now taken).
    fn counted(&mut self, hint: &str) -> String {
        loop {
            let n = self.counters.entry(hint.to_string()).or_insert(0);
            *n += 1;
            let c = format!("{hint}{n}");
            if self.names.insert(c.clone()) {
                return c;
            }
        }
    }

    fn emit(
        &mut self,
        node: &NodeProto,
        hint: &str,
        rhs: String,
        params: Vec<(&'static str, Arr)>,
        kind: Kind,
    ) -> usize {
        let name = self.fresh(node, hint);
        let comment = match (node.name.is_empty(), node.output.first()) {
            (false, _) => format!("{} `{}`", node.op_type, node.name),
            (true, Some(o)) => format!("{} -> `{o}`", node.op_type),
            (true, None) => node.op_type.clone(),
        };
        self.emits.push(Emit { name, rhs, params, kind, comment });
        self.emits.len() - 1
    }

    fn node_out(&self, i: usize, shape: Vec<usize>, onnx: Vec<usize>) -> Val {
        Val::Node(NodeRef { name: self.emits[i].name.clone(), shape, onnx, emit: Some(i) })
    }

    /// Whether the value named by input `i` of `node` is used only there (so its statement may be changed).
    fn single_use(&self, node: &NodeProto, i: usize) -> bool {
        node.input.get(i).and_then(|n| self.uses.get(n)).copied() == Some(1)
    }

    fn node(&mut self, node: &NodeProto) -> R<Vec<Val>> {
        let op = node.op_type.as_str();
        match op {
            "Identity" | "Dropout" => Ok(vec![self.get(node, 0)?]),
            "Cast" => match self.get(node, 0)? {
                v @ Val::Const(_) => Ok(vec![v]),
                Val::Node(_) => unsup("casts of computed tensors are not supported"),
            },
            "Constant" => Ok(vec![Val::Const(self.constant(node)?)]),
            "Shape" => {
                let n = self.computed(node, 0)?;
                Ok(vec![Val::Const(Arr { dims: vec![n.onnx.len()], data: n.onnx.iter().map(|&d| d as f64).collect() })])
            }
            "Gather" => {
                let data = self.konst(node, 0, "data")?;
                let idx = self.konst(node, 1, "index")?;
                if data.dims.len() != 1 || Self::int_attr(node, "axis", 0) != 0 {
                    return unsup("only gathers from a constant vector are supported");
                }
                let n = data.data.len() as i64;
                let mut out = Vec::new();
                for &i in &idx.data {
                    let i = i as i64;
                    let j = if i < 0 { i + n } else { i };
                    if j < 0 || j >= n {
                        return bad(format!("index {i} is out of range for {n} values"));
                    }
                    out.push(data.data[j as usize]);
                }
                Ok(vec![Val::Const(Arr { dims: idx.dims.clone(), data: out })])
            }
            "Unsqueeze" | "Squeeze" => {
                let a = self.konst(node, 0, "data")?;
                // Only the element order matters for a constant used as a shape or a broadcast operand.
                let dims = if op == "Unsqueeze" {
                    let mut d = a.dims.clone();
                    let axes = Self::ints_attr(node, "axes").unwrap_or_default();
                    for _ in 0..axes.len().max(1) {
                        d.insert(0, 1);
                    }
                    d
                } else {
                    a.dims.iter().copied().filter(|&d| d != 1).collect()
                };
                Ok(vec![Val::Const(Arr { dims, data: a.data })])
            }
            "Concat" => {
                let mut data = Vec::new();
                for i in 0..node.input.len() {
                    let a = self.konst(node, i, "part")?;
                    if a.dims.len() > 1 {
                        return unsup("only concatenations of constant vectors (shapes) are supported");
                    }
                    data.extend(a.data);
                }
                Ok(vec![Val::Const(Arr { dims: vec![data.len()], data })])
            }
            "Gemm" => self.gemm(node).map(|v| vec![v]),
            "MatMul" => self.matmul(node).map(|v| vec![v]),
            "Conv" => self.conv(node).map(|v| vec![v]),
            "Relu" | "Sigmoid" | "Tanh" | "LeakyRelu" => {
                let a = self.computed(node, 0)?;
                let (hint, call) = match op {
                    "Relu" => ("relu", format!("relu({})", a.name)),
                    "Sigmoid" => ("sigmoid", format!("sigmoid({})", a.name)),
                    "Tanh" => ("tanh", format!("tanh({})", a.name)),
                    _ => (
                        "lrelu",
                        format!("leaky_relu({}, slope={})", a.name, fmt_f32(Self::float_attr(node, "alpha", 0.01))),
                    ),
                };
                let i = self.emit(node, hint, call, vec![], Kind::Other);
                Ok(vec![self.node_out(i, a.shape.clone(), a.onnx.clone())])
            }
            "Flatten" => {
                let a = self.computed(node, 0)?;
                let axis = Self::int_attr(node, "axis", 1);
                if axis != 1 && !(axis == -1 && a.onnx.len() == 2) {
                    return unsup(format!(
                        "`axis={axis}`: only a flatten of everything after the batch (axis 1) is supported"
                    ));
                }
                self.flatten(node, a).map(|v| vec![v])
            }
            "Reshape" => {
                let a = self.computed(node, 0)?;
                let target = self.konst(node, 1, "shape")?;
                let mut t: Vec<i64> = target.data.iter().map(|&v| v as i64).collect();
                for (k, d) in t.iter_mut().enumerate() {
                    if *d == 0 {
                        *d = a.onnx.get(k).copied().unwrap_or(1) as i64;
                    }
                }
                let total: usize = a.onnx.iter().product();
                let known: i64 = t.iter().filter(|&&d| d != -1).product();
                if t.iter().filter(|&&d| d == -1).count() > 1 || known <= 0 {
                    return bad(format!("invalid target shape {t:?}"));
                }
                let dims: Vec<usize> =
                    t.iter().map(|&d| if d == -1 { total / known.max(1) as usize } else { d as usize }).collect();
                if dims.iter().product::<usize>() != total {
                    return bad(format!("cannot reshape {:?} to {t:?}", a.onnx));
                }
                if dims == a.onnx {
                    return Ok(vec![Val::Node(a)]);
                }
                let flat = dims.iter().filter(|&&d| d != 1).count() <= 1 && dims.first() == Some(&1);
                if flat || dims == [total] {
                    return self.flatten(node, a).map(|v| vec![v]);
                }
                unsup(format!("reshape of {:?} to {dims:?}: only reshapes to a flat vector are supported", a.onnx))
            }
            "Add" | "Sub" | "Mul" | "Div" => self.arith(node).map(|v| vec![v]),
            "BatchNormalization" => self.batchnorm(node).map(|v| vec![v]),
            "AveragePool" | "MaxPool" => self.pool(node).map(|v| vec![v]),
            "Transpose" => self.transpose(node).map(|v| vec![v]),
            "Pad" => self.pad(node).map(|v| vec![v]),
            other => unsup(format!("`{other}` has no counterpart in dualnet")),
        }
    }

    fn constant(&mut self, node: &NodeProto) -> R<Arr> {
        if let Some(a) = attr(node, "value") {
            if let Some(t) = a.t.as_ref() {
                return match tensor_values(self.file, t) {
                    Ok((arr, f32)) => {
                        self.all_f32 &= f32;
                        Ok(arr)
                    }
                    Err(Error::Input(d)) => bad(d.first().map(|d| d.message.clone()).unwrap_or_default()),
                    Err(e) => bad(e.to_string()),
                };
            }
        }
        if let Some(a) = attr(node, "value_float") {
            return Ok(Arr::scalar(a.f as f64));
        }
        if let Some(a) = attr(node, "value_floats") {
            return Ok(Arr { dims: vec![a.floats.len()], data: a.floats.iter().map(|&v| v as f64).collect() });
        }
        if let Some(a) = attr(node, "value_int") {
            return Ok(Arr::scalar(a.i as f64));
        }
        if let Some(a) = attr(node, "value_ints") {
            return Ok(Arr { dims: vec![a.ints.len()], data: a.ints.iter().map(|&v| v as f64).collect() });
        }
        unsup("only tensor, float and int constants are supported")
    }

    fn flatten(&mut self, node: &NodeProto, a: NodeRef) -> R<Val> {
        let n: usize = a.shape.iter().product();
        if a.shape.len() == 1 {
            return Ok(Val::Node(NodeRef { onnx: vec![1, n], ..a }));
        }
        let i = self.emit(node, "flat", format!("flatten({})", a.name), vec![], Kind::Other);
        Ok(self.node_out(i, vec![n], vec![1, n]))
    }

    fn vector_input(&self, node: &NodeProto) -> R<(NodeRef, usize)> {
        let a = self.computed(node, 0)?;
        if a.shape.len() != 1 || a.onnx.len() != 2 {
            return unsup(format!(
                "its input has shape {:?}; only vectors `[1, n]` are supported (flatten images first)",
                a.onnx
            ));
        }
        let n = a.shape[0];
        Ok((a, n))
    }

    fn linear(&mut self, node: &NodeProto, a: &NodeRef, w: Arr, b: Arr) -> Val {
        let out = w.dims[0];
        let i = self.emit(
            node,
            "fc",
            format!("linear({}, out={out})", a.name),
            vec![("weight", w), ("bias", b)],
            Kind::Linear,
        );
        self.node_out(i, vec![out], vec![1, out])
    }

    fn gemm(&mut self, node: &NodeProto) -> R<Val> {
        let (a, n) = self.vector_input(node)?;
        if Self::int_attr(node, "transA", 0) != 0 {
            return unsup("`transA=1` is not supported (the input must be the left operand)");
        }
        let b = self.konst(node, 1, "weight")?;
        let alpha = Self::float_attr(node, "alpha", 1.0);
        let beta = Self::float_attr(node, "beta", 1.0);
        if b.dims.len() != 2 {
            return bad(format!("weight has shape {:?}, expected a matrix", b.dims));
        }
        let trans_b = Self::int_attr(node, "transB", 0) != 0;
        let w = if trans_b { b } else { transpose2(&b) };
        if w.dims[1] != n {
            return bad(format!(
                "weight {:?}{} does not fit an input of size {n}",
                w.dims,
                if trans_b { "" } else { "ᵀ" }
            ));
        }
        let out = w.dims[0];
        let w = Arr { dims: w.dims, data: w.data.iter().map(|v| v * alpha).collect() };
        let bias = match self.get_opt(node, 2)? {
            None => Arr { dims: vec![out], data: vec![0.0; out] },
            Some(Val::Const(c)) => {
                let c = broadcast(&c, &[1, out])
                    .ok_or(Fail::Invalid(format!("bias {:?} does not broadcast to [{out}]", c.dims)))?;
                Arr { dims: vec![out], data: c.data.iter().map(|v| v * beta).collect() }
            }
            Some(Val::Node(_)) => return unsup("a bias computed from the input is not supported"),
        };
        Ok(self.linear(node, &a, w, bias))
    }

    fn matmul(&mut self, node: &NodeProto) -> R<Val> {
        if let (Ok(Val::Const(x)), Ok(Val::Const(y))) = (self.get(node, 0), self.get(node, 1)) {
            if x.dims.len() == 2 && y.dims.len() == 2 && x.dims[1] == y.dims[0] {
                let (m, k, n) = (x.dims[0], x.dims[1], y.dims[1]);
                let mut d = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        d[i * n + j] = (0..k).map(|l| x.data[i * k + l] * y.data[l * n + j]).sum();
                    }
                }
                return Ok(Val::Const(Arr { dims: vec![m, n], data: d }));
            }
        }
        let (a, n) = self.vector_input(node)?;
        let b = self.konst(node, 1, "weight")?;
        if b.dims.len() != 2 || b.dims[0] != n {
            return bad(format!("weight has shape {:?}, expected [{n}, k]", b.dims));
        }
        let w = transpose2(&b);
        let out = w.dims[0];
        Ok(self.linear(node, &a, w, Arr { dims: vec![out], data: vec![0.0; out] }))
    }

    /// `(kernel, stride, padding, extra)`: `extra` is `Some([top, left, bottom, right])` for pads that differ by
    /// side where `zero_pads` allows them (a zero-padding node then goes before the op, whose padding is 0).
    fn window(
        &self,
        node: &NodeProto,
        kh: usize,
        kw: usize,
        zero_pads: bool,
    ) -> R<(usize, usize, usize, Option<[usize; 4]>)> {
        if kh != kw {
            return unsup(format!("kernel {kh}x{kw}: only square kernels are supported"));
        }
        let auto = attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).to_string()).unwrap_or_default();
        if !auto.is_empty() && auto != "NOTSET" && auto != "VALID" {
            return unsup(format!("`auto_pad={auto}` is not supported; export with explicit pads"));
        }
        let strides = Self::ints_attr(node, "strides").unwrap_or_else(|| vec![1, 1]);
        if strides.len() != 2 || strides[0] != strides[1] || strides[0] < 1 {
            return unsup(format!("strides {strides:?}: only equal strides are supported"));
        }
        let pads = Self::ints_attr(node, "pads").unwrap_or_else(|| vec![0; 4]);
        if pads.len() != 4 || pads.iter().any(|&p| p < 0) {
            return bad(format!("pads {pads:?}: expected 4 nonnegative values"));
        }
        let extra = pads.iter().any(|&p| p != pads[0]);
        if extra && !zero_pads {
            return unsup(format!("pads {pads:?}: only the same padding on every side is supported"));
        }
        let dil = Self::ints_attr(node, "dilations").unwrap_or_else(|| vec![1, 1]);
        if dil.iter().any(|&d| d != 1) {
            return unsup(format!("dilations {dil:?} are not supported"));
        }
        if Self::int_attr(node, "ceil_mode", 0) != 0 {
            return unsup("`ceil_mode=1` is not supported");
        }
        if extra {
            let p = [pads[0] as usize, pads[1] as usize, pads[2] as usize, pads[3] as usize];
            return Ok((kh, strides[0] as usize, 0, Some(p)));
        }
        Ok((kh, strides[0] as usize, pads[0] as usize, None))
    }

    /// Pads that differ by side, as a `pad2d` node before the op that has them: the padded input.
    fn pad_before(&mut self, node: &NodeProto, a: NodeRef, pads: Option<[usize; 4]>) -> NodeRef {
        let Some([top, left, bottom, right]) = pads else { return a };
        let name = self.counted("pad");
        let rhs = format!("pad2d({}, top={top}, bottom={bottom}, left={left}, right={right})", a.name);
        let comment = format!("the pads of {} `{}`", node.op_type, node.name);
        self.emits.push(Emit { name, rhs, params: vec![], kind: Kind::Other, comment });
        let shape = vec![a.shape[0], a.shape[1] + top + bottom, a.shape[2] + left + right];
        let onnx = [vec![1], shape.clone()].concat();
        match self.node_out(self.emits.len() - 1, shape, onnx) {
            Val::Node(n) => n,
            Val::Const(_) => a,
        }
    }

    fn image_input(&self, node: &NodeProto) -> R<NodeRef> {
        let a = self.computed(node, 0)?;
        if a.shape.len() != 3 {
            return unsup(format!("its input has shape {:?}; it needs an image [1, C, H, W]", a.onnx));
        }
        Ok(a)
    }

    fn conv(&mut self, node: &NodeProto) -> R<Val> {
        let a = self.image_input(node)?;
        let w = self.konst(node, 1, "weight")?;
        if w.dims.len() != 4 {
            return unsup(format!("weight {:?}: only 2-d convolutions are supported", w.dims));
        }
        if Self::int_attr(node, "group", 1) != 1 {
            return unsup("grouped convolutions (`group` > 1) are not supported");
        }
        let (out, cin, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
        if cin != a.shape[0] {
            return bad(format!("weight {:?} expects {cin} input channels, the input has {}", w.dims, a.shape[0]));
        }
        let (k, s, p, extra) = self.window(node, kh, kw, true)?;
        let a = self.pad_before(node, a, extra);
        let (h, wd) = (a.shape[1], a.shape[2]);
        if k > h + 2 * p || k > wd + 2 * p {
            return bad(format!("kernel {k} is larger than the padded input {h}x{wd}"));
        }
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
        let bias = match self.get_opt(node, 2)? {
            None => Arr { dims: vec![out], data: vec![0.0; out] },
            Some(Val::Const(c)) if c.len() == out => Arr { dims: vec![out], data: c.data },
            Some(Val::Const(c)) => return bad(format!("bias {:?} does not match {out} output channels", c.dims)),
            Some(Val::Node(_)) => return unsup("a bias computed from the input is not supported"),
        };
        let i = self.emit(
            node,
            "conv",
            format!("conv2d({}, out={out}, kernel={k}, stride={s}, padding={p})", a.name),
            vec![("weight", w), ("bias", bias)],
            Kind::Conv,
        );
        Ok(self.node_out(i, vec![out, ho, wo], vec![1, out, ho, wo]))
    }

    fn pool(&mut self, node: &NodeProto) -> R<Val> {
        let a = self.image_input(node)?;
        let ks = Self::ints_attr(node, "kernel_shape").unwrap_or_default();
        if ks.len() != 2 || ks.iter().any(|&k| k < 1) {
            return unsup(format!("kernel_shape {ks:?}: only 2-d pooling is supported"));
        }
        let avg = node.op_type == "AveragePool";
        let include_pad = Self::int_attr(node, "count_include_pad", 0) != 0;
        let (k, s, p, extra) = self.window(node, ks[0] as usize, ks[1] as usize, avg && include_pad)?;
        let a = self.pad_before(node, a, extra);
        if avg && p > 0 && Self::int_attr(node, "count_include_pad", 0) == 0 {
            return unsup("average pooling with padding that is left out of the average (`count_include_pad=0`) is not supported; export with `count_include_pad=True`");
        }
        let (c, h, w) = (a.shape[0], a.shape[1], a.shape[2]);
        if k > h + 2 * p || k > w + 2 * p {
            return bad(format!("window {k} is larger than the padded input {h}x{w}"));
        }
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let op = if avg { "avgpool2d" } else { "maxpool2d" };
        let i = self.emit(
            node,
            if avg { "avgpool" } else { "maxpool" },
            format!("{op}({}, kernel={k}, stride={s}, padding={p})", a.name),
            vec![],
            Kind::Other,
        );
        Ok(self.node_out(i, vec![c, ho, wo], vec![1, c, ho, wo]))
    }

    fn transpose(&mut self, node: &NodeProto) -> R<Val> {
        let v = self.get(node, 0)?;
        let rank = match &v {
            Val::Const(c) => c.dims.len(),
            Val::Node(n) => n.onnx.len(),
        };
        // ONNX's default is the reversal of the axes.
        let perm: Vec<i64> = Self::ints_attr(node, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
        let mut seen = vec![false; rank];
        for &p in &perm {
            if p < 0 || p as usize >= rank || std::mem::replace(&mut seen[p as usize], true) {
                return bad(format!("perm {perm:?} is not a permutation of the {rank} axes"));
            }
        }
        if perm.len() != rank {
            return bad(format!("perm {perm:?} does not have one entry per axis ({rank})"));
        }
        let a = match v {
            Val::Const(c) if rank == 2 && perm == [1, 0] => return Ok(Val::Const(transpose2(&c))),
            Val::Const(_) if perm.iter().enumerate().all(|(i, &p)| p as usize == i) => return Ok(v),
            Val::Const(_) => return unsup(format!("a transpose of a constant of rank {rank} by {perm:?}")),
            Val::Node(a) => a,
        };
        if perm.iter().enumerate().all(|(i, &p)| p as usize == i) {
            return Ok(Val::Node(a));
        }
        if perm[0] != 0 {
            return unsup(format!(
                "perm {perm:?} moves the batch axis; only permutations of an example's axes are supported"
            ));
        }
        if rank != 4 || a.shape.len() != 3 {
            return unsup(format!(
                "perm {perm:?} on a tensor of shape {:?}: only the axes of an image `[1, A, B, C]` can be permuted",
                a.onnx
            ));
        }
        let d: Vec<usize> = perm[1..].iter().map(|&p| p as usize - 1).collect();
        let shape: Vec<usize> = d.iter().map(|&k| a.shape[k]).collect();
        let i = self.emit(
            node,
            "transpose",
            format!("transpose({}, d0={}, d1={}, d2={})", a.name, d[0], d[1], d[2]),
            vec![],
            Kind::Other,
        );
        let onnx = [vec![1], shape.clone()].concat();
        Ok(self.node_out(i, shape, onnx))
    }

    fn pad(&mut self, node: &NodeProto) -> R<Val> {
        let a = self.computed(node, 0)?;
        let mode = attr(node, "mode").map(|m| String::from_utf8_lossy(&m.s).to_string()).unwrap_or_default();
        if !mode.is_empty() && mode != "constant" {
            return unsup(format!("`mode={mode}`: only constant padding (with 0) is supported"));
        }
        // Opset < 11: `pads` and `value` are attributes; from 11: inputs 1 and 2 (and from 18 `axes`, input 3).
        let pads: Vec<i64> = match Self::ints_attr(node, "pads") {
            Some(p) => p,
            None => self.konst(node, 1, "pads")?.data.iter().map(|&v| v as i64).collect(),
        };
        let value = match self.get_opt(node, 2)? {
            Some(Val::Const(c)) => c.data.first().copied().unwrap_or(0.0),
            Some(Val::Node(_)) => return unsup("a padding value computed from the input is not supported"),
            None => Self::float_attr(node, "value", 0.0),
        };
        if self.get_opt(node, 3)?.is_some() {
            return unsup("pads on selected axes (the `axes` input) are not supported; give pads for every axis");
        }
        let rank = a.onnx.len();
        if pads.len() != 2 * rank {
            return bad(format!("pads {pads:?} should have 2 × {rank} entries"));
        }
        if pads.iter().any(|&p| p < 0) {
            return unsup(format!("pads {pads:?}: negative pads (crops) are not supported"));
        }
        if pads.iter().all(|&p| p == 0) {
            return Ok(Val::Node(a));
        }
        if value != 0.0 {
            return unsup(format!("constant padding with the value {value}: only 0 is supported"));
        }
        if rank != 4 || a.shape.len() != 3 || [0, 1, 4, 5].iter().any(|&k| pads[k] != 0) {
            return unsup(format!(
                "pads {pads:?} on shape {:?}: only pads of the height and width of an image `[1, C, H, W]` are supported",
                a.onnx
            ));
        }
        let (top, left, bottom, right) = (pads[2] as usize, pads[3] as usize, pads[6] as usize, pads[7] as usize);
        let shape = vec![a.shape[0], a.shape[1] + top + bottom, a.shape[2] + left + right];
        let i = self.emit(
            node,
            "pad",
            format!("pad2d({}, top={top}, bottom={bottom}, left={left}, right={right})", a.name),
            vec![],
            Kind::Other,
        );
        let onnx = [vec![1], shape.clone()].concat();
        Ok(self.node_out(i, shape, onnx))
    }

    fn batchnorm(&mut self, node: &NodeProto) -> R<Val> {
        let a = self.computed(node, 0)?;
        let c = a.shape[0];
        let mut p = Vec::new();
        for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
            let t = self.konst(node, i, what)?;
            if t.len() != c {
                return bad(format!("{what} has {} values for {c} channels", t.len()));
            }
            p.push(t.data);
        }
        let eps = Self::float_attr(node, "epsilon", 1e-5);
        if !(eps > 0.0) {
            return bad(format!("epsilon {eps} must be positive"));
        }
        if p[3].iter().any(|v| *v < 0.0) {
            return bad("a running variance is negative");
        }
        if a.shape.len() == 3 {
            let arr = |d: &Vec<f64>| Arr { dims: vec![c], data: d.clone() };
            let params = vec![
                ("weight", arr(&p[0])),
                ("bias", arr(&p[1])),
                ("running_mean", arr(&p[2])),
                ("running_var", arr(&p[3])),
            ];
            let i =
                self.emit(node, "bn", format!("batchnorm2d({}, eps={})", a.name, fmt_f32(eps)), params, Kind::Other);
            return Ok(self.node_out(i, a.shape.clone(), a.onnx.clone()));
        }
        // On a vector: the per-feature affine map, as `scale_shift`.
        let s: Vec<f64> = (0..c).map(|j| p[0][j] / (p[3][j] + eps).sqrt()).collect();
        let t: Vec<f64> = (0..c).map(|j| p[1][j] - p[2][j] * s[j]).collect();
        let i = self.emit(
            node,
            "bn",
            format!("scale_shift({})", a.name),
            vec![("weight", Arr { dims: vec![c], data: s }), ("bias", Arr { dims: vec![c], data: t })],
            Kind::ScaleShift,
        );
        Ok(self.node_out(i, a.shape.clone(), a.onnx.clone()))
    }

    /// `Add`, `Sub`, `Mul`, `Div`: constants fold; two computed tensors add; a computed tensor and a constant
    /// become an exact elementwise affine map.
    fn arith(&mut self, node: &NodeProto) -> R<Val> {
        let op = node.op_type.as_str();
        let x = self.get(node, 0)?;
        let y = self.get(node, 1)?;
        match (x, y) {
            (Val::Const(a), Val::Const(b)) => {
                let f = |p: f64, q: f64| match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ => p / q,
                };
                elementwise(&a, &b, f)
                    .map(Val::Const)
                    .ok_or(Fail::Unsupported("constants whose shapes do not broadcast".into()))
            }
            (Val::Node(a), Val::Node(b)) => {
                if op != "Add" {
                    return unsup(format!("`{op}` of two computed tensors is not supported (only their sum)"));
                }
                if a.onnx != b.onnx {
                    return unsup(format!(
                        "sum of tensors of shapes {:?} and {:?} (broadcasting) is not supported",
                        a.onnx, b.onnx
                    ));
                }
                let i = self.emit(node, "sum", format!("{} + {}", a.name, b.name), vec![], Kind::Other);
                Ok(self.node_out(i, a.shape.clone(), a.onnx.clone()))
            }
            (Val::Node(a), Val::Const(c)) => {
                let c = broadcast(&c, &a.onnx).ok_or(Fail::Unsupported(format!(
                    "the constant {:?} does not broadcast to the tensor's shape {:?}",
                    c.dims, a.onnx
                )))?;
                let n = c.len();
                let (w, b): (Vec<f64>, Vec<f64>) = match op {
                    "Add" => (vec![1.0; n], c.data),
                    "Sub" => (vec![1.0; n], c.data.iter().map(|v| -v).collect()),
                    "Mul" => (c.data, vec![0.0; n]),
                    _ => {
                        if c.data.contains(&0.0) {
                            return bad("division by zero");
                        }
                        (c.data.iter().map(|v| 1.0 / v).collect(), vec![0.0; n])
                    }
                };
                self.affine(node, 0, a, w, b)
            }
            (Val::Const(c), Val::Node(a)) => {
                let c = broadcast(&c, &a.onnx).ok_or(Fail::Unsupported(format!(
                    "the constant {:?} does not broadcast to the tensor's shape {:?}",
                    c.dims, a.onnx
                )))?;
                let n = c.len();
                let (w, b) = match op {
                    "Add" => (vec![1.0; n], c.data),
                    "Sub" => (vec![-1.0; n], c.data),
                    "Mul" => (c.data, vec![0.0; n]),
                    _ => return unsup("division of a constant by a computed tensor is not supported"),
                };
                self.affine(node, 1, a, w, b)
            }
        }
    }

    /// `y = w ⊙ a + b` (in the network's element order): folded into the preceding statement when it is the
    /// only consumer and the map allows (a bias into `linear`/`conv2d`, anything into `scale_shift`), else a new
    /// `scale_shift` node.
    fn affine(&mut self, node: &NodeProto, which: usize, a: NodeRef, w: Vec<f64>, b: Vec<f64>) -> R<Val> {
        if let (Some(e), true) = (a.emit, self.single_use(node, which)) {
            let kind = self.emits[e].kind;
            let unit_scale = w.iter().all(|&v| v == 1.0);
            match kind {
                Kind::Linear if unit_scale => {
                    if let Some((_, bias)) = self.emits[e].params.iter_mut().find(|(s, _)| *s == "bias") {
                        for (x, y) in bias.data.iter_mut().zip(&b) {
                            *x += y;
                        }
                        return Ok(self.folded(e, node, a));
                    }
                }
                Kind::Conv if unit_scale => {
                    let (c, hw) = (a.shape[0], a.shape[1] * a.shape[2]);
                    let per_channel = (0..c).all(|ch| b[ch * hw..(ch + 1) * hw].iter().all(|&v| v == b[ch * hw]));
                    if per_channel {
                        if let Some((_, bias)) = self.emits[e].params.iter_mut().find(|(s, _)| *s == "bias") {
                            for (ch, x) in bias.data.iter_mut().enumerate() {
                                *x += b[ch * hw];
                            }
                            return Ok(self.folded(e, node, a));
                        }
                    }
                }
                Kind::ScaleShift => {
                    let params = &mut self.emits[e].params;
                    for (s, t) in params.iter_mut() {
                        if *s == "weight" {
                            for (x, m) in t.data.iter_mut().zip(&w) {
                                *x *= m;
                            }
                        } else {
                            for ((x, m), add) in t.data.iter_mut().zip(&w).zip(&b) {
                                *x = *x * m + add;
                            }
                        }
                    }
                    return Ok(self.folded(e, node, a));
                }
                _ => {}
            }
        }
        let dims = a.shape.clone();
        let i = self.emit(
            node,
            "norm",
            format!("scale_shift({})", a.name),
            vec![("weight", Arr { dims: dims.clone(), data: w }), ("bias", Arr { dims, data: b })],
            Kind::ScaleShift,
        );
        Ok(self.node_out(i, a.shape.clone(), a.onnx.clone()))
    }

    /// `node` folded into statement `e`: noted in its comment.
    fn folded(&mut self, e: usize, node: &NodeProto, a: NodeRef) -> Val {
        let what =
            if node.name.is_empty() { node.op_type.clone() } else { format!("{} `{}`", node.op_type, node.name) };
        self.emits[e].comment.push_str(&format!(" + {what}"));
        Val::Node(a)
    }

    pub(super) fn finish(self, file: &str, net_name: &str, crc32: u32, model: &ModelProto) -> Result<Imported> {
        let mut diags = self.invalid;
        if !self.unsupported.is_empty() {
            let n = self.unsupported.len();
            diags.push(
                Diagnostic::new(
                    Code::OnnxUnsupported,
                    format!(
                        "`{file}`: {n} node{} cannot be imported:\n{}",
                        if n == 1 { "" } else { "s" },
                        self.unsupported.iter().map(|u| format!("  - {u}")).collect::<Vec<_>>().join("\n")
                    ),
                )
                .help(
                    "dualnet imports Gemm, MatMul+Add, Conv (group 1, square kernels), Relu, \
                     Sigmoid, Tanh, LeakyRelu, Flatten, Reshape to a vector, BatchNormalization, AveragePool, MaxPool, \
                     Transpose of an image's axes, Pad (constant 0, spatial), residual Add, input normalisation (Add/Sub/Mul/Div by constants), Identity, Constant, Dropout; \
                     export the network without the others (e.g. fold them into neighbouring layers)",
                ),
            );
        }
        if !diags.is_empty() {
            return Err(Error::Input(diags));
        }
        let graph = self.graph;
        let [out] = graph.output.as_slice() else {
            return Err(invalid(
                file,
                format!("the graph has {} outputs; dualnet takes networks with one output", graph.output.len()),
                "export the network with a single output tensor (the class scores)",
            ));
        };
        let out = match self.vals.get(&out.name) {
            Some(Val::Node(n)) if n.emit.is_some() => n.clone(),
            Some(Val::Node(_)) => {
                return Err(invalid(file, "the output is the input itself", "export a network with at least one layer"))
            }
            Some(Val::Const(_)) => {
                return Err(invalid(file, "the output does not depend on the input", "export the real network"))
            }
            None => return Err(invalid(file, format!("the output `{}` is never computed", out.name), "export again")),
        };
        if out.shape.len() != 1 {
            return Err(Error::input(
                Diagnostic::new(
                    Code::OnnxUnsupported,
                    format!("`{file}`: the output has shape {:?}, not a vector of scores", out.onnx),
                )
                .help("end the network with a Gemm/MatMul (a flattened vector of outputs)"),
            ));
        }
        let producer = if model.producer_name.is_empty() {
            String::new()
        } else {
            format!(", producer `{}`", format!("{} {}", model.producer_name, model.producer_version).trim())
                .replace('\n', " ")
        };
        let opset = model.opset_import.iter().map(|o| o.version).max().unwrap_or(0);
        let mut text = String::new();
        text.push_str(&format!(
            "# Imported from `{}` (crc32 {crc32:08x}) by `dualnet import`.\n",
            file.replace('\n', " ")
        ));
        text.push_str(&format!(
            "# ONNX input `{}` {:?}{producer}, opset {opset}; weights in `{net_name}.safetensors`.\n",
            self.input_onnx_name.replace('\n', " "),
            self.input.onnx
        ));
        text.push_str(&format!("network {net_name} {{\n"));
        let shape = self.input.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let mut lines = vec![(format!("input {}: [{shape}]", self.input.name), String::new())];
        let mut tensors = std::collections::BTreeMap::new();
        for e in &self.emits {
            lines.push((format!("{} = {}", e.name, e.rhs), e.comment.replace('\n', " ")));
            for (s, t) in &e.params {
                tensors.insert(format!("{}.{s}", e.name), t.clone());
            }
        }
        lines.push((format!("output {}", out.name), String::new()));
        let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0).min(70);
        for (l, c) in lines {
            if c.is_empty() {
                text.push_str(&format!("    {l}\n"));
            } else {
                text.push_str(&format!("    {l:width$}  # {c}\n"));
            }
        }
        text.push_str("}\n");
        let f32_weights = self.all_f32 && tensors.values().all(|t: &Arr| t.data.iter().all(|&v| v as f32 as f64 == v));
        Ok(Imported {
            name: net_name.to_string(),
            text,
            tensors,
            // float32 when every value is one (folded biases and scales may not be: then float64, exact).
            f32_weights,
            onnx_input: self.input.onnx.clone(),
            input_shape: self.input.shape.clone(),
            outputs: out.shape[0],
            source: file.to_string(),
            crc32,
        })
    }
}

/// An attribute read from float32, written with the fewest digits that give it back (`1e-5`, not
/// `9.999999747378752e-6`).
/// A node's attributes as ` name=value, ...` for diagnostics (tensors and graphs by their kind only).
fn attrs_text(node: &NodeProto) -> String {
    use onnx_protobuf::attribute_proto::AttributeType as T;
    let parts: Vec<String> = node
        .attribute
        .iter()
        .map(|a| {
            let v = match a.type_.enum_value() {
                Ok(T::INT) => a.i.to_string(),
                Ok(T::FLOAT) => fmt_f(a.f as f64),
                Ok(T::STRING) => format!("{:?}", String::from_utf8_lossy(&a.s)),
                Ok(T::INTS) => format!("{:?}", a.ints),
                Ok(T::FLOATS) => format!("{:?}", a.floats),
                Ok(T::TENSOR) => "<tensor>".into(),
                _ => "<…>".into(),
            };
            format!("{}={v}", a.name)
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(", {}", parts.join(", "))
    }
}

fn fmt_f32(v: f64) -> String {
    fmt_f(format!("{:?}", v as f32).parse::<f64>().unwrap_or(v))
}

/// A number as `.net` text (always with a decimal point or exponent so that it reads as a float).
fn fmt_f(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

fn transpose2(a: &Arr) -> Arr {
    let (r, c) = (a.dims[0], a.dims[1]);
    let mut d = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            d[j * r + i] = a.data[i * c + j];
        }
    }
    Arr { dims: vec![c, r], data: d }
}

/// `a` broadcast (numpy rules) to exactly `dims`, or `None`.
fn broadcast(a: &Arr, dims: &[usize]) -> Option<Arr> {
    if a.dims.len() > dims.len() {
        // Leading ones beyond the target's rank are harmless.
        let extra = a.dims.len() - dims.len();
        if a.dims[..extra].iter().any(|&d| d != 1) {
            return None;
        }
        return broadcast(&Arr { dims: a.dims[extra..].to_vec(), data: a.data.clone() }, dims);
    }
    let pad = dims.len() - a.dims.len();
    let src: Vec<usize> = std::iter::repeat_n(1, pad).chain(a.dims.iter().copied()).collect();
    if src.iter().zip(dims).any(|(&s, &d)| s != 1 && s != d) {
        return None;
    }
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let idx = crate::finite::unflatten(flat, dims);
        let mut off = 0;
        for (k, &i) in idx.iter().enumerate() {
            off = off * src[k] + if src[k] == 1 { 0 } else { i };
        }
        out.push(*a.data.get(off)?);
    }
    Some(Arr { dims: dims.to_vec(), data: out })
}

/// Elementwise `f(a, b)` with broadcasting of both.
fn elementwise(a: &Arr, b: &Arr, f: impl Fn(f64, f64) -> f64) -> Option<Arr> {
    let r = a.dims.len().max(b.dims.len());
    let pa: Vec<usize> = std::iter::repeat_n(1, r - a.dims.len()).chain(a.dims.iter().copied()).collect();
    let pb: Vec<usize> = std::iter::repeat_n(1, r - b.dims.len()).chain(b.dims.iter().copied()).collect();
    let mut dims = Vec::with_capacity(r);
    for (&x, &y) in pa.iter().zip(&pb) {
        dims.push(match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    let a = broadcast(a, &dims)?;
    let b = broadcast(b, &dims)?;
    Some(Arr { data: a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(), dims })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        let a = Arr { dims: vec![2, 1, 1], data: vec![1.0, 2.0] };
        let b = broadcast(&a, &[1, 2, 2, 2]).unwrap();
        assert_eq!(b.data, vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
        assert!(broadcast(&Arr { dims: vec![3], data: vec![0.0; 3] }, &[1, 2]).is_none());
        let t = transpose2(&Arr { dims: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] });
        assert_eq!(t.data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(fmt_f(1.0), "1.0");
        assert_eq!(fmt_f(1e-5), "1e-5");
    }
}

//! Small networks shared by the soundness and relaxation-family tests: small networks of every supported kind with
//! random weights (scaled so that every ReLU regime occurs), random inputs, and true margins.

use candle_core::{DType, Device, Tensor};
use dualnet::check::check_source;
use dualnet::dual::Model;
use dualnet::weights::Weights;
use rand::{Rng, SeedableRng};

pub const SPECS: &[(&str, &str)] = &[
    ("mlp", "network m { input x: [1, 6, 6]  f = flatten(x)  l1 = linear(f, out=12)  r1 = relu(l1)  l2 = linear(r1, out=10)  r2 = relu(l2)  l3 = linear(r2, out=4)  output l3 }"),
    ("conv", "network m { input x: [2, 8, 8]  c1 = conv2d(x, out=4, kernel=3, stride=2, padding=1)  r1 = relu(c1)  c2 = conv2d(r1, out=4, kernel=2, stride=1, padding=0)  r2 = relu(c2)  f = flatten(r2)  l = linear(f, out=3)  output l }"),
    ("residual", "network m { input x: [1, 8, 8]  c0 = conv2d(x, out=3, kernel=3, padding=1)  r0 = relu(c0)  c1 = conv2d(r0, out=3, kernel=3, padding=1)  r1 = relu(c1)  k = conv2d(r0, out=3, kernel=1)  s = r1 + k + c0  r2 = relu(s)  f = flatten(r2)  l = linear(f, out=5)  output l }"),
    ("batchnorm", "network m { input x: [1, 8, 8]  n = scale_shift(x)  c1 = conv2d(n, out=4, kernel=3, stride=1, padding=1)  b1 = batchnorm2d(c1)  r1 = relu(b1)  p = avgpool2d(r1, kernel=2)  f = flatten(p)  i = identity(f)  l = linear(i, out=4)  output l }"),
    ("smooth", "network m { input x: [1, 6, 6]  c = conv2d(x, out=3, kernel=3, padding=1)  s = sigmoid(c)  f = flatten(s)  l1 = linear(f, out=10)  t = tanh(l1)  l2 = linear(t, out=8)  k = leaky_relu(l2, slope=0.1)  l3 = linear(k, out=4)  output l3 }"),
    ("maxpool", "network m { input x: [2, 8, 8]  c1 = conv2d(x, out=3, kernel=3, padding=1)  r1 = relu(c1)  p1 = maxpool2d(r1, kernel=2)  c2 = conv2d(p1, out=4, kernel=3, padding=1)  t = tanh(c2)  p2 = maxpool2d(t, kernel=2, stride=1)  f = flatten(p2)  d = sub(f, f)  s = f + d  l = linear(s, out=3)  output l }"),
    ("layout", "network m { input x: [6, 6, 3]  t = transpose(x, d0=2, d1=0, d2=1)  p = pad2d(t, top=1, right=1)  c = conv2d(p, out=4, kernel=3)  r = relu(c)  q = maxpool2d(r, kernel=3, stride=2, padding=1)  u = transpose(q, d0=1, d1=2, d2=0)  f = flatten(u)  l = linear(f, out=4)  output l }"),
    ("hardtanh", "network m { input x: [6]  l1 = linear(x, out=10)  h1 = hardtanh(l1)  l2 = linear(h1, out=8)  h2 = hardtanh(l2, min_val=-0.5, max_val=0.7)  l3 = linear(h2, out=3)  output l3 }"),
];

/// A model of `spec` with PyTorch-default weights times `scale`, random biases and batchnorm statistics.
pub fn model(spec: &str, seed: u64, scale: f64) -> Model {
    let checked = check_source("t.net", spec);
    let g = checked.graph.unwrap_or_else(|| {
        panic!("spec checks: {:?}", checked.diagnostics.iter().map(|d| d.message.clone()).collect::<Vec<_>>())
    });
    let mut w = Weights::init(&g, seed, DType::F64, &Device::Cpu).expect("init");
    // Non-trivial batchnorm statistics and larger weights, so that every ReLU regime occurs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    for node in w.per_node.iter_mut() {
        for (k, t) in node.iter_mut() {
            let n = t.elem_count();
            let v: Vec<f64> = match k.as_str() {
                "running_var" => (0..n).map(|_| rng.random_range(0.2..2.0)).collect(),
                "running_mean" | "bias" => (0..n).map(|_| rng.random_range(-0.3..0.3)).collect(),
                "weight" if t.rank() == 1 => {
                    (0..n).map(|_| rng.random_range(0.5..1.5) * if rng.random_bool(0.3) { -1.0 } else { 1.0 }).collect()
                }
                _ => {
                    let v: Vec<f64> = t.flatten_all().and_then(|t| t.to_vec1()).expect("weights");
                    v.into_iter().map(|x| x * scale).collect()
                }
            };
            *t = Tensor::from_vec(v, t.shape(), &Device::Cpu).expect("tensor");
        }
    }
    Model::new(g, w, DType::F64, Device::Cpu)
}

pub fn inputs(m: &Model, b: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = m.graph.input_shape().clone();
    let n: usize = shape.iter().product();
    let x: Vec<f64> = (0..b * n).map(|_| rng.random_range(0.0..1.0)).collect();
    let mut s = vec![b];
    s.extend(shape);
    let k = m.graph.num_classes() as u32;
    (Tensor::from_vec(x, s, &Device::Cpu).expect("x"), (0..b).map(|_| rng.random_range(0..k)).collect())
}

pub fn margins(m: &Model, x: &Tensor, labels: &[u32]) -> Vec<Vec<f64>> {
    let logits: Vec<Vec<f64>> = m.forward(x).expect("forward").to_vec2().expect("logits");
    logits.iter().zip(labels).map(|(row, &y)| row.iter().map(|v| row[y as usize] - v).collect()).collect()
}

/// An MLP as host values: per layer `W [out][in]` and `b [out]`, ReLU between layers.
pub type Layers = Vec<(Vec<Vec<f64>>, Vec<f64>)>;

/// The spec of an MLP with these layer widths.
pub fn mlp_spec(widths: &[usize]) -> String {
    let mut s = format!("network m {{ input x: [{}]", widths[0]);
    let mut prev = "x".to_string();
    for (k, w) in widths[1..].iter().enumerate() {
        s.push_str(&format!("  l{k} = linear({prev}, out={w})"));
        prev = format!("l{k}");
        if k + 2 < widths.len() {
            s.push_str(&format!("  r{k} = relu({prev})"));
            prev = format!("r{k}");
        }
    }
    s.push_str(&format!("  output {prev} }}"));
    s
}

/// The model of `spec` with these exact layer values, in `dtype` (every value must be exact in it).
pub fn mlp_model(spec: &str, names: &[&str], layers: &Layers, dtype: DType) -> Model {
    let checked = check_source("t.net", spec);
    let g = checked
        .graph
        .unwrap_or_else(|| panic!("spec: {:?}", checked.diagnostics.iter().map(|d| &d.message).collect::<Vec<_>>()));
    let mut map = std::collections::HashMap::new();
    for (name, (w, b)) in names.iter().zip(layers) {
        let (o, i) = (w.len(), w[0].len());
        let flat: Vec<f64> = w.iter().flatten().copied().collect();
        map.insert(format!("{name}.weight"), Tensor::from_vec(flat, (o, i), &Device::Cpu).expect("w"));
        map.insert(format!("{name}.bias"), Tensor::from_vec(b.clone(), o, &Device::Cpu).expect("b"));
    }
    let w = Weights::from_map(&g, map, "t.safetensors", dtype).expect("weights");
    Model::new(g, w, dtype, Device::Cpu)
}

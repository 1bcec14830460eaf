//! ONNX import: the imported network computes what onnxruntime computed on the fixtures (their outputs are stored
//! beside them, made by `scripts/make_onnx_fixtures.py`); the files `dualnet import` writes load back to the same
//! network; bad models (truncated, unsupported nodes, shapes that do not fit) are coded diagnostics, never panics.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dualnet::diagnostics::Code;
use dualnet::dual::Model;
use dualnet::error::Error;
use dualnet::onnx::{import_bytes, import_file};
use onnx_protobuf::{Message, ModelProto};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures/onnx").join(name)
}

/// The rows of numbers under key `k` of a fixture or reference JSON.
fn rows(v: &serde_json::Value, k: &str) -> Vec<Vec<f64>> {
    v[k].as_array()
        .expect("array")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("number")).collect())
        .collect()
}

fn io(name: &str) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(fixture(&format!("{name}.json"))).expect("fixture json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    (rows(&v, "inputs"), rows(&v, "outputs"))
}

fn forward(model: &Model, x: &[f64]) -> Vec<f64> {
    let mut shape = vec![1];
    shape.extend_from_slice(model.graph.input_shape());
    let t = Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).expect("tensor").to_dtype(model.dtype).expect("dtype");
    let y = model.forward(&t).expect("forward");
    y.to_dtype(DType::F64).and_then(|y| y.flatten_all()).and_then(|y| y.to_vec1()).expect("read")
}

fn close(got: &[f64], want: &[f64], tol: f64) {
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol * scale, "got {got:?}\nwant {want:?}");
    }
}

fn model_of(name: &str, dtype: DType) -> Model {
    let imp = import_file(&fixture(&format!("{name}.onnx"))).expect("import");
    let (g, w) = imp.graph_and_weights(dtype, &Device::Cpu).expect("graph");
    Model::new(g, w, dtype, Device::Cpu)
}

#[test]
fn imported_networks_compute_what_onnxruntime_computed() {
    for name in ["tiny_conv", "tiny_fc"] {
        let (xs, ys) = io(name);
        for dtype in [DType::F64, DType::F32] {
            let m = model_of(name, dtype);
            for (x, y) in xs.iter().zip(&ys) {
                // onnxruntime computes in float32.
                close(&forward(&m, x), y, 1e-5);
            }
        }
    }
}

#[test]
fn the_written_spec_and_weights_load_back_to_the_same_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["tiny_conv", "tiny_fc"] {
        let imp = import_file(&fixture(&format!("{name}.onnx"))).expect("import");
        let (spec, weights) = imp.write(dir.path()).expect("write");
        let text = std::fs::read_to_string(&spec).expect("spec");
        assert!(text.starts_with(&format!("# Imported from `{}` (crc32 ", fixture(&format!("{name}.onnx")).display())));
        assert!(text.contains(&format!("{:08x}", imp.crc32)));
        let loaded = dualnet::cli::bounds::load_model(&spec, &weights, DType::F64, &Device::Cpu).expect("load");
        let direct = model_of(name, DType::F64);
        let (xs, _) = io(name);
        for x in &xs {
            close(&forward(&loaded, x), &forward(&direct, x), 1e-12);
        }
    }
    // Node names are kept where they are valid names; the input `input` is a keyword and becomes `x`.
    let text = import_file(&fixture("tiny_conv.onnx")).expect("import").text;
    for stmt in [
        "input x: [3, 8, 8]",
        "conv1 = conv2d(center, out=4, kernel=3, stride=1, padding=1)",
        "bn = batchnorm2d(conv1, eps=1e-5)",
        "residual = conv2 + relu1",
        "down = conv2d(pool, out=6, kernel=2, stride=2, padding=0)",
        "fc2 = linear(relu4, out=5)",
    ] {
        assert!(text.contains(stmt), "`{stmt}` missing from\n{text}");
    }
    // The normalisation's Sub and Div are one exact scale_shift; MatMul + Add one linear.
    assert!(text.contains("center = scale_shift(x)") && text.contains("+ Div `scale`"), "{text}");
    assert!(text.contains("+ Add `fc2_bias`"), "{text}");
}

fn decode(name: &str) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(fixture(name)).expect("read")).expect("decode")
}

fn codes(r: dualnet::error::Result<dualnet::onnx::Imported>) -> Vec<(Code, String)> {
    match r {
        Err(Error::Input(d)) => d.iter().map(|d| (d.code, d.render(false))).collect(),
        Err(e) => panic!("not a diagnostic: {e}"),
        Ok(_) => panic!("imported"),
    }
}

#[test]
fn every_unsupported_node_is_reported_at_once() {
    let mut m = decode("tiny_fc.onnx");
    let g = m.graph.as_mut().expect("graph");
    g.node[1].op_type = "Softsign".into();
    g.node[3].op_type = "Elu".into();
    let bytes = m.write_to_bytes().expect("encode");
    let d = codes(import_bytes("two_unsupported.onnx", &bytes));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].0, Code::OnnxUnsupported);
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_snapshot!("onnx_two_unsupported", d[0].1);
    });
}

fn set_ints(m: &mut ModelProto, node: &str, name: &str, v: Vec<i64>) {
    let g = m.graph.as_mut().expect("graph");
    for n in g.node.iter_mut().filter(|n| n.name == node) {
        for a in n.attribute.iter_mut().filter(|a| a.name == name) {
            a.ints = v.clone();
        }
    }
}

/// The diagnostic of an unsupported node names the node, its op, its attributes and what is wrong.
#[test]
fn unsupported_attributes_are_named() {
    let mut m = decode("tiny_conv.onnx");
    set_ints(&mut m, "conv1", "strides", vec![1, 2]);
    let d = codes(import_bytes("strided.onnx", &m.write_to_bytes().expect("encode")));
    assert_eq!(d[0].0, Code::OnnxUnsupported);
    let msg = &d[0].1;
    assert!(msg.contains("node `conv1` (Conv, ") && msg.contains("strides=[1, 2]"), "{msg}");
    assert!(msg.contains("kernel_shape=[3, 3]") && msg.contains("only equal strides"), "{msg}");
}

/// Pads that differ by side (`[top, left, bottom, right] = [2, 2, 0, 0]`) become a `pad2d` before the convolution,
/// whose own padding is then 0. The output has the size of the symmetric `[1, 1, 1, 1]`'s, shifted by one row and
/// one column: `a[i, j] = b[i − 1, j − 1]` for `i, j >= 1`.
#[test]
fn asymmetric_conv_pads_become_a_pad_node() {
    let sym = import_bytes("sym.onnx", &decode("tiny_conv.onnx").write_to_bytes().expect("encode")).expect("import");
    let mut m = decode("tiny_conv.onnx");
    set_ints(&mut m, "conv1", "pads", vec![2, 2, 0, 0]);
    let imp = import_bytes("asymmetric.onnx", &m.write_to_bytes().expect("encode")).expect("import");
    assert!(imp.text.contains("pad1 = pad2d(center, top=2, bottom=0, left=2, right=0)"), "{}", imp.text);
    assert!(imp.text.contains("conv1 = conv2d(pad1, out=4, kernel=3, stride=1, padding=0)"), "{}", imp.text);
    let (g, w) = imp.graph_and_weights(DType::F64, &Device::Cpu).expect("graph");
    let (gs, ws) = sym.graph_and_weights(DType::F64, &Device::Cpu).expect("graph");
    let (m, ms) = (Model::new(g, w, DType::F64, Device::Cpu), Model::new(gs, ws, DType::F64, Device::Cpu));
    let x: Vec<f64> =
        (0..ms.graph.input_shape().iter().product::<usize>()).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
    let shape = [vec![1], ms.graph.input_shape().to_vec()].concat();
    let t = Tensor::from_vec(x, shape, &Device::Cpu).expect("x");
    let conv = |m: &Model| {
        let i = m.graph.order().into_iter().find(|&i| m.graph.node(i).kind.op().is_some_and(|o| o.name() == "conv2d"));
        m.forward_all(&t).expect("forward")[i.expect("conv").index()].clone().expect("value")
    };
    let (a, b) = (conv(&m), conv(&ms));
    let (h, w) = (a.dims()[2], a.dims()[3]);
    assert_eq!((b.dims()[2], b.dims()[3]), (h, w));
    let a = a.narrow(2, 1, h - 1).and_then(|a| a.narrow(3, 1, w - 1)).expect("crop");
    let b = b.narrow(2, 0, h - 1).and_then(|b| b.narrow(3, 0, w - 1)).expect("crop");
    let d: f64 = (a - b).and_then(|d| d.abs()).and_then(|d| d.max_all()).and_then(|d| d.to_scalar()).expect("diff");
    assert_eq!(d, 0.0);
}

#[test]
fn truncated_and_malformed_models_are_diagnostics() {
    let bytes = std::fs::read(fixture("tiny_conv.onnx")).expect("read");
    let d = codes(import_bytes("truncated.onnx", &bytes[..bytes.len() / 2]));
    assert_eq!(d[0].0, Code::OnnxInvalid);
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_snapshot!("onnx_truncated", d[0].1);
    });
    // A weight whose shape does not fit its layer.
    let mut m = decode("tiny_fc.onnx");
    let g = m.graph.as_mut().expect("graph");
    for a in g.node[4].attribute.iter_mut() {
        if a.name == "transB" {
            a.i = 0;
        }
    }
    let d = codes(import_bytes("bad_shape.onnx", &m.write_to_bytes().expect("encode")));
    assert_eq!(d[0].0, Code::OnnxInvalid);
    assert!(d[0].1.contains("does not fit an input of size 12"), "{}", d[0].1);
    // A weight with fewer values than its shape.
    let mut m = decode("tiny_fc.onnx");
    m.graph.as_mut().expect("graph").initializer[0].dims = vec![6, 13];
    let d = codes(import_bytes("short.onnx", &m.write_to_bytes().expect("encode")));
    assert_eq!(d[0].0, Code::OnnxInvalid);
    // Two inputs.
    let mut m = decode("tiny_fc.onnx");
    let g = m.graph.as_mut().expect("graph");
    let extra = g.input[0].clone();
    g.input.push(onnx_protobuf::ValueInfoProto { name: "x2".into(), ..extra });
    let d = codes(import_bytes("two_inputs.onnx", &m.write_to_bytes().expect("encode")));
    assert_eq!(d[0].0, Code::OnnxInvalid);
}

#[test]
fn damaged_files_never_panic() {
    let bytes = std::fs::read(fixture("tiny_conv.onnx")).expect("read");
    let mut state = 0x1234_5678_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        let b = if next() % 3 == 0 { &b[..cut] } else { &b[..] };
        // Ok (a still valid model) or a diagnostic; either way no panic, and what imports also checks.
        if let Ok(imp) = import_bytes("damaged.onnx", b) {
            let _ = imp.graph_and_weights(DType::F32, &Device::Cpu);
        }
    }
}

#[test]
fn mnistfc_networks_import() {
    let Some(dir) = common::shared("vnncomp/mnistfc", "the mnistfc import test") else { return };
    for n in ["mnist-net_256x2", "mnist-net_256x4", "mnist-net_256x6"] {
        let imp = import_file(&dir.join(format!("{n}.onnx"))).expect("import");
        assert_eq!(imp.input_shape, vec![784]);
        assert_eq!(imp.outputs, 10);
        assert!(imp.f32_weights);
    }
}

/// MaxPool, Sigmoid, Tanh and LeakyRelu import as the ops of the same name; whether they have a dual rule yet is
/// the checker's word (E0003, or E0002 for an op not yet in the registry), never a silent change of the network.
#[test]
fn nonlinearities_import_as_the_ops_of_the_same_name() {
    for (onnx_op, stmt) in
        [("Sigmoid", "a1 = sigmoid(l1)"), ("Tanh", "a1 = tanh(l1)"), ("LeakyRelu", "a1 = leaky_relu(l1, slope=")]
    {
        let mut m = decode("tiny_fc.onnx");
        m.graph.as_mut().expect("graph").node[1].op_type = onnx_op.into();
        let imp = import_bytes("nonlinear.onnx", &m.write_to_bytes().expect("encode")).expect("import");
        assert!(imp.text.contains(stmt), "{}", imp.text);
        match imp.graph() {
            Ok(_) => {}
            Err(Error::Input(d)) => {
                assert!(d.iter().all(|d| matches!(d.code, Code::NoDualRule | Code::UnknownOp)), "{onnx_op}: {d:?}")
            }
            Err(e) => panic!("{onnx_op}: {e}"),
        }
    }
}

/// Every network of the shared VNN-COMP benchmarks imports, and its forward pass on the points of
/// `../shared/vnncomp/forward_reference/` equals ONNX Runtime's outputs (f32, within 1e-5 of the output's scale):
/// fully connected nets (mnistfc, ACAS Xu, ERAN), conv + average / max pooling with a `Pad` (verivital), and
/// tf2onnx exports in NHWC with two `Transpose`s (marabou-cifar10).
#[test]
fn every_shared_network_computes_what_onnxruntime_computed() {
    let Some(dir) = common::shared("vnncomp/forward_reference", "the forward-reference test") else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("forward_reference")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no references in {}", dir.display());
    let mut checked = 0;
    for f in &files {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("json");
        let bench = v["benchmark"].as_str().expect("benchmark");
        let onnx = dir.parent().expect("vnncomp").join(bench).join(v["onnx"].as_str().expect("onnx"));
        let imp = import_file(&onnx).unwrap_or_else(|e| panic!("{}: {e}", onnx.display()));
        let (g, w) =
            imp.graph_and_weights(DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", onnx.display()));
        let m = Model::new(g, w, DType::F32, Device::Cpu);
        for (x, y) in rows(&v, "inputs").iter().zip(&rows(&v, "outputs")) {
            let got = forward(&m, x);
            let scale = y.iter().fold(1e-6f64, |s, v| s.max(v.abs()));
            assert_eq!(got.len(), y.len(), "{}", f.display());
            for (g, w) in got.iter().zip(y) {
                assert!((g - w).abs() <= 1e-5 * scale, "{}: got {got:?}\nwant {y:?}", f.display());
            }
        }
        checked += 1;
    }
    eprintln!("{checked} shared networks agree with ONNX Runtime");
}

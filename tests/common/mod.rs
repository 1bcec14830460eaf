//! Helpers shared by the integration tests: the fixtures inside the repository, and the optional larger data
//! outside it.
//!
//! Everything a test needs by default is in the repository: `tests/fixtures/` (the reference vectors as
//! safetensors, their models, weights and inputs) and `data/mnist/` (the MNIST test split). Training and cascade
//! tests write small MNIST-format folders of their own from that test split ([`write_mnist_subset`]).
//!
//! The larger data (the full reference vectors as JSON, the MNIST training split) lives under the folder named by
//! the environment variable `DUALNET_SHARED` (default: `../shared` beside the repository root). A test that wants
//! it calls [`shared`]: when the folder is there the test runs on it; when it is missing the test fails if
//! `CI=true` (CI must not skip it silently), and otherwise prints a note and returns. `.ci/run` runs the suite
//! twice: with the data, and with `DUALNET_SHARED` pointed at an empty folder and `CI=false`.
#![allow(dead_code)]

pub mod nets;

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/reference`: one folder per reference case.
pub fn reference_fixtures() -> PathBuf {
    repo().join("tests/fixtures/reference")
}

/// The reference cases held in `tests/fixtures/reference`.
pub const REFERENCE_CASES: &[&str] = &["batchnorm", "mlp", "mnist_small", "mnist_small_trained", "resnet_tiny"];

/// `data/mnist`: the MNIST test split shipped with the repository.
pub fn embedded_mnist() -> PathBuf {
    repo().join("data/mnist")
}

/// The root of the optional larger data: `$DUALNET_SHARED`, or `../shared` beside the repository root.
pub fn shared_root() -> PathBuf {
    match std::env::var_os("DUALNET_SHARED") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo().join("../shared"),
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `shared_root()/rel` when it exists. When it does not: panics under `CI=true`, otherwise prints a note naming
/// what was skipped and returns `None`.
pub fn shared(rel: &str, what: &str) -> Option<PathBuf> {
    let p = shared_root().join(rel);
    if p.exists() {
        return Some(p);
    }
    if ci() {
        panic!(
            "CI=true but `{}` is missing, so {what} cannot run; set DUALNET_SHARED to the folder that holds `{rel}` \
             (or run with CI=false to skip it)",
            p.display()
        );
    }
    eprintln!(
        "note: skipped {what}: `{}` not found (set DUALNET_SHARED to the folder that holds `{rel}`)",
        p.display()
    );
    None
}

/// Pixels back to bytes: the loaders store `byte / 255` in `f32`, which rounds back exactly.
fn bytes_of(pixels: &[f32]) -> Vec<u8> {
    pixels.iter().map(|&p| (p * 255.0).round() as u8).collect()
}

/// Write an idx image file and an idx label file named `images` and `labels` in `dir` from examples `range` of
/// `data`.
fn write_idx(dir: &Path, images: &str, labels: &str, data: &dualnet::data::Dataset, range: std::ops::Range<usize>) {
    let sel = data.select(&range.collect::<Vec<_>>());
    let [_, h, w] = sel.shape;
    let mut im: Vec<u8> = [dualnet::data::mnist::IMAGES_MAGIC, sel.len() as u32, h as u32, w as u32]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    im.extend(bytes_of(sel.pixels()));
    let mut lb: Vec<u8> =
        [dualnet::data::mnist::LABELS_MAGIC, sel.len() as u32].iter().flat_map(|v| v.to_be_bytes()).collect();
    lb.extend(sel.labels.iter().copied());
    std::fs::write(dir.join(images), im).expect("write idx images");
    std::fs::write(dir.join(labels), lb).expect("write idx labels");
}

/// A small MNIST folder in `dir` made from the shipped test split: its examples `train` as the training split
/// and its examples `test` as the test split (plain idx files).
pub fn write_mnist_subset(dir: &Path, train: std::ops::Range<usize>, test: std::ops::Range<usize>) {
    let data = dualnet::data::load("mnist", &embedded_mnist(), dualnet::data::Split::Test).expect("data/mnist loads");
    std::fs::create_dir_all(dir).expect("mkdir");
    write_idx(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", &data, train);
    write_idx(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", &data, test);
}

/// A property on the box `lo..hi`: violated when one of the `other` outputs reaches output `label`.
pub fn property(lo: &[f64], hi: &[f64], label: usize, outputs: usize) -> String {
    let mut s = String::new();
    for i in 0..lo.len() {
        s.push_str(&format!("(declare-const X_{i} Real)\n"));
    }
    for j in 0..outputs {
        s.push_str(&format!("(declare-const Y_{j} Real)\n"));
    }
    for i in 0..lo.len() {
        s.push_str(&format!("(assert (<= X_{i} {:?}))\n(assert (>= X_{i} {:?}))\n", hi[i], lo[i]));
    }
    s.push_str("(assert (or\n");
    for j in (0..outputs).filter(|j| *j != label) {
        s.push_str(&format!("    (and (>= Y_{j} Y_{label}))\n"));
    }
    s.push_str("))\n");
    s
}

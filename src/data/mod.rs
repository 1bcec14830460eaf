//! Datasets: MNIST (idx files, [`mnist`]) and CIFAR-10 (binary release, [`cifar`], or JPEGs in class folders,
//! [`cifar_jpeg`]), held in memory.
//!
//! A [`Dataset`] keeps every image as `f32` pixels in `[0, 1]` (`byte / 255`, computed in `f32`, no
//! normalisation) in one `ndarray` array of shape `[N, C, H, W]` (standard, row-major layout), and the labels in
//! an array of `N` bytes. [`Dataset::batch`] turns a list of example indices into the tensors the rest of the
//! crate uses: `x` `[B, C, H, W]` in the requested dtype and `y` `[B]` as `u32`. Every problem with the user's
//! files is a coded diagnostic that names the file: [`Code::DataMissing`](crate::diagnostics::Code::DataMissing)
//! when the files are not there, [`Code::DataInvalid`](crate::diagnostics::Code::DataInvalid) when they are
//! there but wrong; a file that exists but cannot be read is an I/O error.

pub mod cifar;
pub mod cifar_jpeg;
pub mod mnist;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use ndarray::{Array1, Array4, ArrayView3, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::diagnostics::{did_you_mean, Code, Diagnostic};
use crate::error::{Context, Error, Result};

/// The dataset names [`load`] accepts.
pub const DATASETS: &[&str] = &["mnist", "cifar10"];

/// The folder, relative to the repository root, that holds the MNIST test split shipped with dualnet; the default
/// of every `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "data/mnist";

/// Images and labels held in memory.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    /// Pixels in `[0, 1]`, `[N, C, H, W]` in standard (row-major) layout.
    pub images: Array4<f32>,
    /// One label per image, each `< num_classes`.
    pub labels: Array1<u8>,
    /// `[C, H, W]` of one image (the last three axes of `images`).
    pub shape: [usize; 3],
    pub num_classes: usize,
    /// `mnist` or `cifar10`.
    pub name: String,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("num_classes", &self.num_classes)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// A data set from flat row-major pixels (`N * C * H * W` of them) and `N` labels. A length that does not fit
    /// `shape` is an internal error (the loaders check the files first).
    pub fn new(pixels: Vec<f32>, labels: Vec<u8>, shape: [usize; 3], num_classes: usize, name: &str) -> Result<Self> {
        let [c, h, w] = shape;
        let n = labels.len();
        let images = Array4::from_shape_vec((n, c, h, w), pixels).map_err(|e| {
            Error::Internal(Box::new(Diagnostic::new(
                Code::DataInvalid,
                format!("`{name}`: {n} labels do not fit the pixels of images {c}x{h}x{w}: {e}"),
            )))
        })?;
        Ok(Dataset { images, labels: Array1::from(labels), shape, num_classes, name: name.into() })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of pixels of one image, `C * H * W`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Example `i` as a `[C, H, W]` view. Panics if `i >= len()`.
    pub fn image_view(&self, i: usize) -> ArrayView3<'_, f32> {
        self.images.index_axis(Axis(0), i)
    }

    /// The pixels of example `i`, `[C, H, W]` row-major. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.pixels()[i * n..(i + 1) * n]
    }

    /// Every pixel, row-major `[N, C, H, W]`.
    pub fn pixels(&self) -> &[f32] {
        // Every constructor builds `images` in standard layout (`new`, `select`, `limit`).
        self.images.as_slice().expect("dataset images are kept in standard layout")
    }

    /// The first `n` examples (all of them if there are fewer).
    pub fn limit(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images.slice_axis(Axis(0), (0..n).into()).to_owned(),
            labels: self.labels.slice_axis(Axis(0), (0..n).into()).to_owned(),
            shape: self.shape,
            num_classes: self.num_classes,
            name: self.name.clone(),
        }
    }

    /// The examples at `indices`, in that order (repeats allowed). Panics if an index is `>= len()`; use
    /// [`Dataset::batch`] for indices that are not known to be in range.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: self.images.select(Axis(0), indices),
            labels: self.labels.select(Axis(0), indices),
            shape: self.shape,
            num_classes: self.num_classes,
            name: self.name.clone(),
        }
    }

    /// The examples at `indices` as tensors on `device`: `x` `[B, C, H, W]` in `dtype` and `y` `[B]` as `u32`.
    pub fn batch(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::input(
                Diagnostic::new(
                    Code::BadOption,
                    format!("example {bad} is out of range: `{}` has {} examples", self.name, self.len()),
                )
                .help(format!("indices run from 0 to {}", self.len().saturating_sub(1))),
            ));
        }
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels: Vec<u32> = indices.iter().map(|&i| u32::from(self.labels[i])).collect();
        let [c, h, w] = self.shape;
        let what = || format!("building a batch of {} `{}` examples", indices.len(), self.name);
        let x =
            Tensor::from_vec(pixels, (indices.len(), c, h, w), device).and_then(|x| x.to_dtype(dtype)).context(what)?;
        let y = Tensor::from_vec(labels, indices.len(), device).context(what)?;
        Ok((x, y))
    }

    /// A permutation of `0..len()` that depends only on `seed` and `epoch` (rand's `StdRng` seeded with both).
    pub fn shuffled_indices(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&epoch.to_le_bytes());
        let mut rng = StdRng::from_seed(key);
        let mut indices: Vec<usize> = (0..self.len()).collect();
        indices.shuffle(&mut rng);
        indices
    }
}

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("unknown split `{s}`")).help("use `train` or `test`"),
            )),
        }
    }
}

/// Load split `split` of dataset `name` (`mnist` or `cifar10`) from the folder `dir`.
pub fn load(name: &str, dir: &Path, split: Split) -> Result<Dataset> {
    match name {
        "mnist" => mnist::load(dir, split),
        "cifar10" => cifar::load(dir, split),
        _ => {
            let list = DATASETS.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ");
            let help = match did_you_mean(name, DATASETS.iter().copied()) {
                Some(m) => format!("did you mean `{m}`? the datasets are {list}"),
                None => format!("the datasets are {list}"),
            };
            Err(Error::input(Diagnostic::new(Code::BadOption, format!("unknown dataset `{name}`")).help(help)))
        }
    }
}

// ---- helpers shared by the loaders ----

/// A pixel byte as a value in `[0, 1]`: `byte / 255` in `f32`.
pub(crate) fn pixel(byte: u8) -> f32 {
    f32::from(byte) / 255.0
}

/// [`pixel`] of every byte.
pub(crate) fn to_unit(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| pixel(b)).collect()
}

/// Read a whole file, decompressing it if its content is gzip (whatever its name says).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io("cannot read data file", path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    match flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(Error::input(
            Diagnostic::new(Code::DataInvalid, format!("cannot decompress `{}`: {e}", path.display()))
                .help("the file starts like gzip but does not decompress; download it again"),
        )),
    }
}

/// Check that the data folder exists; `what` names the dataset and `hint` says where its files are found.
pub(crate) fn check_dir(dir: &Path, what: &str, hint: &str) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let (code, msg) = if dir.exists() {
        (Code::DataInvalid, format!("data folder `{}` is not a folder", dir.display()))
    } else {
        (Code::DataMissing, format!("data folder `{}` does not exist", dir.display()))
    };
    Err(Error::input(
        Diagnostic::new(code, msg)
            .help(format!("point `--data-dir` at the folder that holds the {what} files; {hint}")),
    ))
}

/// The first of `folders × names` that is a file.
pub(crate) fn find_file(folders: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    folders.iter().flat_map(|f| names.iter().map(move |n| f.join(n))).find(|p| p.is_file())
}

/// Folders to search, shown in backticks and separated by commas.
pub(crate) fn list_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
}

/// Check every label against `num_classes`; `file` names the file for the message.
pub(crate) fn check_labels(labels: &[u8], num_classes: usize, file: &Path) -> std::result::Result<(), Diagnostic> {
    let mut bad = labels.iter().enumerate().filter(|(_, &l)| usize::from(l) >= num_classes);
    let Some((first, &value)) = bad.next() else { return Ok(()) };
    let count = 1 + bad.count();
    let max = num_classes.saturating_sub(1);
    let msg = if count == 1 {
        format!("`{}` has label {value} at example {first}, expected 0 to {max}", file.display())
    } else {
        format!("`{}` has {count} labels outside 0 to {max} (the first, {value}, at example {first})", file.display())
    };
    Err(Diagnostic::new(Code::DataInvalid, msg)
        .help("the file is corrupt or belongs to another dataset; download it again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset::new(
            (0..n * 4).map(|v| v as f32).collect(),
            (0..n).map(|i| (i % 10) as u8).collect(),
            [1, 2, 2],
            10,
            "toy",
        )
        .unwrap()
    }

    #[test]
    fn limit_and_select_keep_images_with_labels() {
        let d = toy(5);
        let l = d.limit(2);
        assert_eq!(l.len(), 2);
        assert_eq!(l.pixels(), (0..8).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(l.images.dim(), (2, 1, 2, 2));
        assert_eq!(d.limit(99).len(), 5);
        assert!(d.limit(0).is_empty());
        let s = d.select(&[3, 0, 3]);
        assert_eq!(s.labels.to_vec(), vec![3, 0, 3]);
        assert_eq!(s.image_view(0)[[0, 1, 1]], d.image(3)[3]);
        assert_eq!(s.image(0), d.image(3));
        assert_eq!(s.image(1), d.image(0));
    }

    #[test]
    fn batch_shapes_dtypes_and_range() {
        let d = toy(5);
        let (x, y) = d.batch(&[4, 1], &Device::Cpu, DType::F64).unwrap();
        assert_eq!(x.dims(), &[2, 1, 2, 2]);
        assert_eq!(x.dtype(), DType::F64);
        assert_eq!(y.dtype(), DType::U32);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![4, 1]);
        assert_eq!(x.flatten_all().unwrap().to_vec1::<f64>().unwrap()[..4], [16.0, 17.0, 18.0, 19.0]);
        let err = d.batch(&[5], &Device::Cpu, DType::F32).unwrap_err();
        assert!(matches!(&err, Error::Input(ds) if ds[0].code == Code::BadOption), "{err}");
    }

    #[test]
    fn shuffles_are_deterministic_permutations() {
        let d = toy(50);
        let a = d.shuffled_indices(1, 0);
        assert_eq!(a, d.shuffled_indices(1, 0));
        assert_ne!(a, d.shuffled_indices(1, 1));
        assert_ne!(a, d.shuffled_indices(2, 0));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn split_and_dataset_names() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
        assert_eq!(Split::Test.to_string(), "test");
        let err = "valid".parse::<Split>().unwrap_err();
        assert!(err.to_string().contains("`valid`"));
        let err = load("mnsit", Path::new("."), Split::Test).unwrap_err();
        match err {
            Error::Input(ds) => {
                assert_eq!(ds[0].code, Code::BadOption);
                assert_eq!(ds[0].message, "unknown dataset `mnsit`");
                assert!(ds[0].help.as_deref().unwrap_or("").contains("did you mean `mnist`?"));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn label_check_reports_first_and_count() {
        assert!(check_labels(&[0, 9, 3], 10, Path::new("f")).is_ok());
        let d = check_labels(&[0, 12, 3, 10], 10, Path::new("f")).unwrap_err();
        assert_eq!(d.message, "`f` has 2 labels outside 0 to 9 (the first, 12, at example 1)");
        let d = check_labels(&[11], 10, Path::new("f")).unwrap_err();
        assert_eq!(d.message, "`f` has label 11 at example 0, expected 0 to 9");
    }

    #[test]
    fn pixels_are_bytes_over_255() {
        assert_eq!(to_unit(&[0, 255, 51]), vec![0.0, 1.0, 51.0f32 / 255.0]);
    }
}

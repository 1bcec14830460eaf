//! CIFAR-10 from the binary release (`cifar-10-binary.tar.gz`, unpacked).
//!
//! The images may also be JPEGs in class folders (`<split>/<class>/<n>.jpg`, or the archive `<split>.tar.gz`
//! that holds them): when the binary files are not there, [`super::cifar_jpeg`] loads that layout.
//!
//! Files: `data_batch_1.bin` … `data_batch_5.bin` (train, 10,000 records each in the release) and `test_batch.bin`
//! (test, 10,000), looked for in the data folder itself, then in its `cifar-10-batches-bin/` subfolder (the
//! folder the release unpacks to). Gzipped files are recognised by their content and decompressed.
//!
//! Format: records of 3073 bytes, no header: 1 label byte in `0..=9`, then 3072 pixel bytes: the red plane,
//! the green plane, the blue plane, each 32x32 row-major. That is already `[C, H, W]` order.
//!
//! Result: a [`Dataset`] named `cifar10` of shape `[3, 32, 32]`, 10 classes ([`CLASSES`]), pixels `byte / 255`,
//! not normalised. Models that expect normalised inputs use [`CIFAR10_MEAN`] and [`CIFAR10_STD`]; ε stays in
//! pixel units and is divided by each channel's std inside the input set.

use std::path::{Path, PathBuf};

use super::{check_dir, check_labels, find_file, list_paths, pixel, read_bytes, Dataset, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};

/// Bytes of one image: 3 planes of 32x32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes of one record: the label byte and the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// The class names in label order 0 to 9.
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
/// The training files, in the order their records are concatenated.
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The subfolder the binary release unpacks to.
pub const SUBFOLDER: &str = "cifar-10-batches-bin";

/// Per-channel (R, G, B) mean that the reference implementation (Wong et al. 2018) subtracts from CIFAR-10
/// inputs in `[0, 1]`. These are the ImageNet means, not statistics of CIFAR-10; weights trained by the
/// reference expect exactly these values.
pub const CIFAR10_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel (R, G, B) standard deviation that the reference divides CIFAR-10 inputs by (after subtracting
/// [`CIFAR10_MEAN`]). An ε given in pixel units becomes `ε / std` in normalised units.
pub const CIFAR10_STD: [f32; 3] = [0.225, 0.225, 0.225];

const HINT: &str =
    "the binary release (`cifar-10-binary.tar.gz`, from https://www.cs.toronto.edu/~kriz/cifar.html) unpacks \
                    to a `cifar-10-batches-bin` folder";

/// The file names of a split.
pub fn file_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &TRAIN_FILES,
        Split::Test => std::slice::from_ref(&TEST_FILE),
    }
}

/// Load split `split` of CIFAR-10 from the folder `dir`.
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    check_dir(dir, "CIFAR-10 binary", HINT)?;
    let folders = [dir.to_path_buf(), dir.join(SUBFOLDER)];
    let names = file_names(split);
    let mut paths = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match find_file(&folders, &[name]) {
            Some(p) => paths.push(p),
            None => missing.push(*name),
        }
    }
    if !missing.is_empty() {
        if let Some(source) = super::cifar_jpeg::find(dir, split) {
            return super::cifar_jpeg::load(&source);
        }
        return Err(Error::input(missing_files(dir, &folders, &missing, split)));
    }

    let mut records = Vec::new();
    let mut problems = Vec::new();
    for path in &paths {
        let bytes = read_bytes(path)?;
        match check_records(&bytes, path) {
            Ok(()) => records.push(bytes),
            Err(d) => problems.push(d),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Input(problems));
    }

    let count: usize = records.iter().map(|b| b.len() / RECORD_BYTES).sum();
    let mut images = Vec::with_capacity(count * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(count);
    for bytes in &records {
        for record in bytes.chunks_exact(RECORD_BYTES) {
            labels.push(record[0]);
            images.extend(record[1..].iter().map(|&b| pixel(b)));
        }
    }
    Dataset::new(images, labels, [3, 32, 32], CLASSES.len(), "cifar10")
}

fn missing_files(dir: &Path, folders: &[PathBuf], missing: &[&str], split: Split) -> Diagnostic {
    let names = missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let noun = if missing.len() == 1 { "file" } else { "files" };
    Diagnostic::new(Code::DataMissing, format!("no CIFAR-10 {noun} {names} in `{}`", dir.display())).help(format!(
        "looked in {}; point `--data-dir` at the folder that holds the CIFAR-10 binary files, or JPEGs as \
         `{split}/<class>/<n>.jpg` or `{split}.tar.gz`; {HINT}",
        list_paths(folders)
    ))
}

/// Check that `bytes` is a whole, non-zero number of records with labels in `0..=9`.
fn check_records(bytes: &[u8], file: &Path) -> std::result::Result<(), Diagnostic> {
    let f = file.display();
    if bytes.is_empty() {
        return Err(Diagnostic::new(
            Code::DataInvalid,
            format!("`{f}` is empty, expected CIFAR-10 records of {RECORD_BYTES} bytes"),
        )
        .help("download the file again"));
    }
    let extra = bytes.len() % RECORD_BYTES;
    if extra != 0 {
        return Err(Diagnostic::new(
            Code::DataInvalid,
            format!(
                "`{f}` has {} bytes, not a multiple of the {RECORD_BYTES}-byte CIFAR-10 record ({} whole records and {} over)",
                bytes.len(),
                bytes.len() / RECORD_BYTES,
                if extra == 1 { "1 byte".to_string() } else { format!("{extra} bytes") }
            ),
        )
        .help("each record is 1 label byte and 3072 pixel bytes; the file is truncated or not the CIFAR-10 binary version (the python and matlab versions are other formats)"));
    }
    let labels: Vec<u8> = bytes.iter().step_by(RECORD_BYTES).copied().collect();
    check_labels(&labels, CLASSES.len(), file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_checks() {
        let p = Path::new("b.bin");
        let mut b = vec![0u8; 2 * RECORD_BYTES];
        b[RECORD_BYTES] = 9;
        assert!(check_records(&b, p).is_ok());
        b[RECORD_BYTES] = 10;
        assert_eq!(check_records(&b, p).unwrap_err().message, "`b.bin` has label 10 at example 1, expected 0 to 9");
        b.push(0);
        assert_eq!(
            check_records(&b, p).unwrap_err().message,
            "`b.bin` has 6147 bytes, not a multiple of the 3073-byte CIFAR-10 record (2 whole records and 1 byte over)"
        );
        assert!(check_records(&[], p).unwrap_err().message.contains("is empty"));
    }

    #[test]
    fn split_files() {
        assert_eq!(file_names(Split::Test), &["test_batch.bin"]);
        assert_eq!(file_names(Split::Train).len(), 5);
    }
}

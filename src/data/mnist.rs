//! MNIST from the standard idx files.
//!
//! Files: `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` (train, 60,000 examples) and
//! `t10k-images-idx3-ubyte` + `t10k-labels-idx1-ubyte` (test, 10,000), each plain or gzipped (`NAME.gz`; gzip is
//! recognised by its content, so a gzipped file without `.gz` or a decompressed one that kept `.gz` both load).
//! They are looked for in the data folder itself, then in its `mnist/` and `MNIST/raw/` (torchvision's layout)
//! subfolders; a plain file wins over `.gz` in the same folder.
//!
//! Format (all integers big-endian `u32`):
//! - images: magic 2051 (`0x00000803`: unsigned bytes, 3 dimensions), count `N`, rows `H`, columns `W`, then
//!   `N * H * W` pixel bytes, image after image, row-major;
//! - labels: magic 2049 (`0x00000801`), count `N`, then `N` label bytes in `0..=9`.
//!
//! Result: a [`Dataset`] named `mnist` of shape `[1, H, W]` (`[1, 28, 28]` for MNIST), 10 classes, pixels
//! `byte / 255`. The header, the file length, the two counts and every label are checked; each failure is a
//! `DataInvalid` diagnostic naming the file.

use std::path::{Path, PathBuf};

use super::{check_dir, check_labels, find_file, list_paths, read_bytes, to_unit, Dataset, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};

/// Magic number of an idx image file (unsigned bytes, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an idx label file (unsigned bytes, 1 dimension).
pub const LABELS_MAGIC: u32 = 2049;
/// MNIST has the digits 0 to 9.
pub const NUM_CLASSES: usize = 10;

const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;
/// Where the files come from, for the diagnostics.
const HINT: &str = "they are the standard MNIST idx files (from http://yann.lecun.com/exdb/mnist/ or any mirror, e.g. \
                    torchvision's MNIST download); this repository ships the test split in `data/mnist` (the \
                    default `--data-dir`), not the training split";

/// The images and labels file names (without `.gz`) of a split.
pub fn file_names(split: Split) -> [&'static str; 2] {
    match split {
        Split::Train => ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        Split::Test => ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    }
}

/// Load split `split` of MNIST from the folder `dir`.
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    check_dir(dir, "MNIST idx", HINT)?;
    let [images_name, labels_name] = file_names(split);
    let folders = [dir.to_path_buf(), dir.join("mnist"), dir.join("MNIST").join("raw")];
    let (images_path, labels_path) = match (locate(&folders, images_name), locate(&folders, labels_name)) {
        (Some(i), Some(l)) => (i, l),
        (i, l) => {
            let missing: Vec<&str> =
                [(i, images_name), (l, labels_name)].into_iter().filter(|(p, _)| p.is_none()).map(|(_, n)| n).collect();
            return Err(Error::input(missing_files(dir, &folders, split, &missing)));
        }
    };
    let images_bytes = read_bytes(&images_path)?;
    let labels_bytes = read_bytes(&labels_path)?;
    let (images, labels) = match (parse_images(&images_bytes, &images_path), parse_labels(&labels_bytes, &labels_path))
    {
        (Ok(i), Ok(l)) => (i, l),
        (i, l) => return Err(Error::Input([i.err(), l.err()].into_iter().flatten().collect())),
    };
    if images.count != labels.len() {
        return Err(Error::input(
            Diagnostic::new(
                Code::DataInvalid,
                format!(
                    "`{}` holds {} images but `{}` holds {} labels",
                    images_path.display(),
                    images.count,
                    labels_path.display(),
                    labels.len()
                ),
            )
            .help("the two files must belong to the same split; download them again"),
        ));
    }
    Dataset::new(to_unit(images.pixels), labels.to_vec(), [1, images.rows, images.cols], NUM_CLASSES, "mnist")
}

/// Find `base` or `base.gz` in `folders`.
fn locate(folders: &[PathBuf], base: &str) -> Option<PathBuf> {
    find_file(folders, &[base, &format!("{base}.gz")])
}

/// The [`Code::DataMissing`] diagnostic for the files `missing` (names without `.gz`) of split `split`.
fn missing_files(dir: &Path, folders: &[PathBuf], split: Split, missing: &[&str]) -> Diagnostic {
    let names = missing.iter().map(|n| format!("`{n}[.gz]`")).collect::<Vec<_>>().join(", ");
    let what = match split {
        Split::Train => "training",
        Split::Test => "test",
    };
    Diagnostic::new(Code::DataMissing, format!("`{}` has no MNIST {what} split: missing {names}", dir.display())).help(
        format!(
            "looked in {}; {HINT}; put the files in one folder (gzipped or not) and pass it with `--data-dir DIR`",
            list_paths(folders)
        ),
    )
}

/// The parts of an idx image file.
#[derive(Debug)]
struct IdxImages<'a> {
    count: usize,
    rows: usize,
    cols: usize,
    pixels: &'a [u8],
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Check the magic number and the header length. `kind` is `image` or `label`.
fn check_header(
    bytes: &[u8],
    file: &Path,
    magic: u32,
    header: usize,
    kind: &str,
) -> std::result::Result<(), Diagnostic> {
    let f = file.display();
    if bytes.len() < 4 {
        return Err(Diagnostic::new(
            Code::DataInvalid,
            format!(
                "`{f}` is truncated: {} bytes, expected an MNIST {kind} file with a {header}-byte header",
                bytes.len()
            ),
        )
        .help("download the file again"));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        let other = if magic == IMAGES_MAGIC { (LABELS_MAGIC, "label") } else { (IMAGES_MAGIC, "image") };
        let d = if found == other.0 {
            Diagnostic::new(
                Code::DataInvalid,
                format!(
                    "`{f}` is an MNIST {} file (magic number {found}), expected {} {kind} file (magic number {magic})",
                    other.1,
                    if kind == "image" { "an" } else { "a" }
                ),
            )
            .help("the image and label files seem swapped or misnamed")
        } else {
            Diagnostic::new(
                Code::DataInvalid,
                format!("`{f}` has magic number {found}, expected {magic} (an MNIST {kind} file in the idx format)"),
            )
            .help("the file is not an MNIST idx file or is corrupt; download it again")
        };
        return Err(d);
    }
    if bytes.len() < header {
        return Err(Diagnostic::new(
            Code::DataInvalid,
            format!(
                "`{f}` is truncated: {} bytes, shorter than the {header}-byte header of an MNIST {kind} file",
                bytes.len()
            ),
        )
        .help("download the file again"));
    }
    Ok(())
}

/// Check the file length against the `expected` length its header promises (`what` describes the promise).
fn check_length(bytes: &[u8], file: &Path, expected: u128, what: &str) -> std::result::Result<(), Diagnostic> {
    let len = bytes.len() as u128;
    let f = file.display();
    if len < expected {
        Err(Diagnostic::new(
            Code::DataInvalid,
            format!("`{f}` is truncated: its header promises {what} ({expected} bytes) but the file has {len} bytes"),
        )
        .help("the download or decompression was cut short; download the file again"))
    } else if len > expected {
        Err(Diagnostic::new(
            Code::DataInvalid,
            format!("`{f}` has {} after the {what} its header promises", plural_bytes(len - expected)),
        )
        .help("the file is corrupt or its header is wrong; download it again"))
    } else {
        Ok(())
    }
}

fn plural_bytes(n: u128) -> String {
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

fn parse_images<'a>(bytes: &'a [u8], file: &Path) -> std::result::Result<IdxImages<'a>, Diagnostic> {
    check_header(bytes, file, IMAGES_MAGIC, IMAGES_HEADER, "image")?;
    let (count, rows, cols) = (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12));
    let f = file.display();
    if rows == 0 || cols == 0 {
        return Err(Diagnostic::new(
            Code::DataInvalid,
            format!("`{f}` declares images of {rows}x{cols} pixels, expected positive sizes (28x28 for MNIST)"),
        )
        .help("the file is corrupt; download it again"));
    }
    if count == 0 {
        return Err(Diagnostic::new(Code::DataInvalid, format!("`{f}` holds no images"))
            .help("the file is empty or its header is wrong; download it again"));
    }
    let expected = IMAGES_HEADER as u128 + u128::from(count) * u128::from(rows) * u128::from(cols);
    check_length(bytes, file, expected, &format!("{count} images of {rows}x{cols} pixels"))?;
    // The length check bounds every size by the length of `bytes`, so these conversions are lossless.
    Ok(IdxImages { count: count as usize, rows: rows as usize, cols: cols as usize, pixels: &bytes[IMAGES_HEADER..] })
}

fn parse_labels<'a>(bytes: &'a [u8], file: &Path) -> std::result::Result<&'a [u8], Diagnostic> {
    check_header(bytes, file, LABELS_MAGIC, LABELS_HEADER, "label")?;
    let count = be_u32(bytes, 4);
    if count == 0 {
        return Err(Diagnostic::new(Code::DataInvalid, format!("`{}` holds no labels", file.display()))
            .help("the file is empty or its header is wrong; download it again"));
    }
    check_length(bytes, file, LABELS_HEADER as u128 + u128::from(count), &format!("{count} labels"))?;
    let labels = &bytes[LABELS_HEADER..];
    check_labels(labels, NUM_CLASSES, file)?;
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn parses_a_small_image_file() {
        let mut b = header(&[IMAGES_MAGIC, 2, 2, 3]);
        b.extend(0..12u8);
        let im = parse_images(&b, Path::new("x")).unwrap();
        assert_eq!((im.count, im.rows, im.cols), (2, 2, 3));
        assert_eq!(im.pixels, &(0..12u8).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn rejects_bad_headers_and_lengths() {
        let p = Path::new("x");
        let msg = |r: std::result::Result<IdxImages, Diagnostic>| r.unwrap_err().message;
        assert_eq!(
            msg(parse_images(&[0, 0], p)),
            "`x` is truncated: 2 bytes, expected an MNIST image file with a 16-byte header"
        );
        assert_eq!(
            msg(parse_images(&header(&[LABELS_MAGIC, 1]), p)),
            "`x` is an MNIST label file (magic number 2049), expected an image file (magic number 2051)"
        );
        assert_eq!(
            msg(parse_images(&header(&[7]), p)),
            "`x` has magic number 7, expected 2051 (an MNIST image file in the idx format)"
        );
        assert_eq!(
            msg(parse_images(&header(&[IMAGES_MAGIC, 1, 2]), p)),
            "`x` is truncated: 12 bytes, shorter than the 16-byte header of an MNIST image file"
        );
        assert_eq!(
            msg(parse_images(&header(&[IMAGES_MAGIC, 1, 0, 28]), p)),
            "`x` declares images of 0x28 pixels, expected positive sizes (28x28 for MNIST)"
        );
        assert_eq!(msg(parse_images(&header(&[IMAGES_MAGIC, 0, 28, 28]), p)), "`x` holds no images");
        let mut b = header(&[IMAGES_MAGIC, 2, 2, 2]);
        b.extend([0; 7]);
        assert_eq!(
            msg(parse_images(&b, p)),
            "`x` is truncated: its header promises 2 images of 2x2 pixels (24 bytes) but the file has 23 bytes"
        );
        b.extend([0; 3]);
        assert_eq!(msg(parse_images(&b, p)), "`x` has 2 bytes after the 2 images of 2x2 pixels its header promises");
        b.pop();
        assert_eq!(msg(parse_images(&b, p)), "`x` has 1 byte after the 2 images of 2x2 pixels its header promises");
        // A huge count must not overflow.
        assert!(msg(parse_images(&header(&[IMAGES_MAGIC, u32::MAX, u32::MAX, u32::MAX]), p)).contains("is truncated"));
    }

    #[test]
    fn parses_and_checks_labels() {
        let p = Path::new("y");
        let mut b = header(&[LABELS_MAGIC, 3]);
        b.extend([7, 2, 1]);
        assert_eq!(parse_labels(&b, p).unwrap(), &[7, 2, 1]);
        b[10] = 10;
        assert_eq!(parse_labels(&b, p).unwrap_err().message, "`y` has label 10 at example 2, expected 0 to 9");
        b.pop();
        assert!(parse_labels(&b, p).unwrap_err().message.contains("is truncated"));
        assert!(parse_labels(&header(&[IMAGES_MAGIC, 3]), p).unwrap_err().message.contains("is an MNIST image file"));
    }
}

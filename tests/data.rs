//! Data loaders: the real MNIST test split shipped in `data/mnist`, the training split from the shared data when
//! present (`$DUALNET_SHARED/data/mnist`, see `tests/common`), and small MNIST idx and CIFAR-10 binary files
//! written by the tests (plain and gzipped, valid and broken).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use dualnet::data::{self, cifar, mnist, Dataset, Split};
use dualnet::diagnostics::{Code, Diagnostic};
use dualnet::error::Error;

fn mnist_dir() -> PathBuf {
    common::embedded_mnist()
}

/// The diagnostics of an input error; any other outcome fails the test.
fn diagnostics(r: dualnet::error::Result<Dataset>) -> Vec<Diagnostic> {
    match r {
        Err(Error::Input(ds)) => ds,
        Err(other) => panic!("expected an input error, got {other}"),
        Ok(d) => panic!("expected an error, loaded {d:?}"),
    }
}

/// The single diagnostic of a failed load, which must have code `code`.
fn coded_error(r: dualnet::error::Result<Dataset>, code: Code) -> Diagnostic {
    let ds = diagnostics(r);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].code, code, "{ds:?}");
    ds[0].clone()
}

/// The single `DataInvalid` diagnostic of a failed load.
fn data_error(r: dualnet::error::Result<Dataset>) -> Diagnostic {
    coded_error(r, Code::DataInvalid)
}

// ---- real MNIST ----

#[test]
fn mnist_test_split_loads() {
    let d = data::load("mnist", &mnist_dir(), Split::Test).unwrap();
    assert_eq!(d.name, "mnist");
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.shape, [1, 28, 28]);
    assert_eq!(d.num_classes, 10);
    assert_eq!(d.images.dim(), (10_000, 1, 28, 28));
    assert_eq!(d.pixels().len(), 10_000 * 784);
    assert_eq!(d.labels.as_slice().map(|l| &l[..5]), Some(&[7u8, 2, 1, 0, 4][..]));
    assert!(d.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert_eq!(d.images.iter().copied().fold(f32::MIN, f32::max), 1.0);
    // Class counts of the MNIST test set.
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[usize::from(l)] += 1;
    }
    assert_eq!(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    // The first image is a 7: blank corners, ink in the middle.
    let first = d.image(0);
    assert_eq!(first[0], 0.0);
    assert!(first.iter().filter(|&&p| p > 0.5).count() > 50);
    assert_eq!(d.image_view(0)[[0, 14, 14]], first[14 * 28 + 14]);
}

/// The training split is not shipped: the shared data's copy, when present.
#[test]
fn mnist_train_split_loads() {
    let Some(dir) = common::shared("data/mnist", "the MNIST training split check") else { return };
    let d = mnist::load(&dir, Split::Train).unwrap();
    assert_eq!(d.len(), 60_000);
    assert_eq!(d.shape, [1, 28, 28]);
    assert_eq!(d.labels.iter().take(5).copied().collect::<Vec<_>>(), vec![5, 0, 4, 1, 9]);
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[usize::from(l)] += 1;
    }
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    // The shared test split is the shipped one.
    assert_eq!(mnist::load(&dir, Split::Test).unwrap(), mnist::load(&mnist_dir(), Split::Test).unwrap());
}

/// CIFAR-10 as the shared JPEGs (`test.tar.gz`: `test/<class>/<n>.jpg`), when present: 1000 per class, the
/// classes interleaved (image i has label i mod 10 while every class still has images).
#[test]
fn cifar10_jpeg_test_split_loads() {
    let Some(dir) = common::shared("data/cifar10-jpeg", "the CIFAR-10 JPEG check") else { return };
    let d = data::load("cifar10", &dir, Split::Test).unwrap();
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.shape, [3, 32, 32]);
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[usize::from(l)] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    assert_eq!(
        d.labels.iter().take(20).copied().collect::<Vec<_>>(),
        (0..20).map(|i| (i % 10) as u8).collect::<Vec<_>>()
    );
    // Real photographs: not constant, every pixel in [0, 1].
    let first = d.image(0);
    assert!(first.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let mean = first.iter().sum::<f32>() / first.len() as f32;
    assert!(first.iter().any(|&p| (p - mean).abs() > 0.1));
}

/// The shipped folder has the test split only; asking it for the training split is E0109 with the way out.
#[test]
fn shipped_folder_lacks_the_training_split() {
    let e = coded_error(mnist::load(&mnist_dir(), Split::Train), Code::DataMissing);
    assert!(e.message.contains("has no MNIST training split"), "{}", e.message);
    assert!(e.message.contains("`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`"), "{}", e.message);
    let help = e.help.unwrap();
    assert!(help.contains("--data-dir") && help.contains("yann.lecun.com") && help.contains("data/mnist"), "{help}");
}

/// Small MNIST folders written from the shipped test split (what the training tests use) load back exactly.
#[test]
fn mnist_subsets_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_mnist_subset(tmp.path(), 5..25, 100..110);
    let full = mnist::load(&mnist_dir(), Split::Test).unwrap();
    let train = mnist::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train, full.select(&(5..25).collect::<Vec<_>>()));
    assert_eq!(mnist::load(tmp.path(), Split::Test).unwrap(), full.select(&(100..110).collect::<Vec<_>>()));
}

#[test]
fn mnist_batches() {
    let d = data::load("mnist", &mnist_dir(), Split::Test).unwrap().limit(100);
    assert_eq!(d.len(), 100);
    let (x, y) = d.batch(&[0, 1, 2, 3, 4], &Device::Cpu, DType::F32).unwrap();
    assert_eq!(x.dims(), &[5, 1, 28, 28]);
    assert_eq!(x.dtype(), DType::F32);
    assert_eq!(y.dims(), &[5]);
    assert_eq!(y.dtype(), DType::U32);
    assert_eq!(y.to_vec1::<u32>().unwrap(), vec![7, 2, 1, 0, 4]);
    let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(&flat[..784], d.image(0));

    let (x64, _) = d.batch(&[3], &Device::Cpu, DType::F64).unwrap();
    assert_eq!(x64.dtype(), DType::F64);
    let back: Vec<f64> = x64.flatten_all().unwrap().to_vec1().unwrap();
    assert!(back.iter().zip(d.image(3)).all(|(a, b)| *a == f64::from(*b)));

    let order = d.shuffled_indices(7, 3);
    assert_eq!(order, d.shuffled_indices(7, 3));
    let (_, y) = d.batch(&order[..10], &Device::Cpu, DType::F32).unwrap();
    let expect: Vec<u32> = order[..10].iter().map(|&i| u32::from(d.labels[i])).collect();
    assert_eq!(y.to_vec1::<u32>().unwrap(), expect);

    let sel = d.select(&[4, 0]);
    assert_eq!(sel.labels.to_vec(), vec![4, 7]);
    assert_eq!(sel.image(1), d.image(0));
}

#[test]
fn mnist_missing_folder_and_files() {
    let e = coded_error(mnist::load(Path::new("/no/such/folder"), Split::Test), Code::DataMissing);
    assert_eq!(e.message, "data folder `/no/such/folder` does not exist");
    assert!(e.help.unwrap().contains("--data-dir"));
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = data_error(mnist::load(file.path(), Split::Test));
    assert!(e.message.ends_with("is not a folder"), "{}", e.message);

    let tmp = tempfile::tempdir().unwrap();
    let e = coded_error(mnist::load(tmp.path(), Split::Test), Code::DataMissing);
    assert!(
        e.message
            .ends_with("has no MNIST test split: missing `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`"),
        "{}",
        e.message
    );
    let help = e.help.unwrap();
    assert!(help.contains("--data-dir") && help.contains("MNIST/raw") && help.contains("yann.lecun.com"), "{help}");
    // Only the missing one is named.
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte"), [0u8; 8]).unwrap();
    let e = coded_error(mnist::load(tmp.path(), Split::Test), Code::DataMissing);
    assert!(e.message.ends_with("missing `t10k-images-idx3-ubyte[.gz]`"), "{}", e.message);
}

// ---- small idx files ----

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = [mnist::IMAGES_MAGIC, count, rows, cols].iter().flat_map(|v| v.to_be_bytes()).collect();
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = [mnist::LABELS_MAGIC, labels.len() as u32].iter().flat_map(|v| v.to_be_bytes()).collect();
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Three 2x3 test images with pixels 0, 1, ..., 17 scaled and labels 3, 1, 4, plain or gzipped.
fn write_small_mnist(dir: &Path, gz: bool) {
    let pixels: Vec<u8> = (0..18u8).map(|v| v * 15).collect();
    let files =
        [("t10k-images-idx3-ubyte", idx_images(3, 2, 3, &pixels)), ("t10k-labels-idx1-ubyte", idx_labels(&[3, 1, 4]))];
    for (name, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn check_small_mnist(d: &Dataset) {
    assert_eq!(d.len(), 3);
    assert_eq!(d.shape, [1, 2, 3]);
    assert_eq!(d.labels.to_vec(), vec![3, 1, 4]);
    let expect: Vec<f32> = (0..18u8).map(|v| f32::from(v * 15) / 255.0).collect();
    assert_eq!(d.pixels(), expect);
}

#[test]
fn small_idx_plain_and_gzipped() {
    for gz in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        write_small_mnist(tmp.path(), gz);
        check_small_mnist(&mnist::load(tmp.path(), Split::Test).unwrap());
        // The train split's files are not there.
        let e = coded_error(mnist::load(tmp.path(), Split::Train), Code::DataMissing);
        assert!(e.message.contains("train-images-idx3-ubyte"));
    }
}

#[test]
fn small_idx_in_subfolders_and_misnamed_gzip() {
    // torchvision's layout.
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    write_small_mnist(&raw, true);
    check_small_mnist(&mnist::load(tmp.path(), Split::Test).unwrap());

    // Gzipped content under the plain name, plain content under the `.gz` name.
    let tmp = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..18u8).map(|v| v * 15).collect();
    std::fs::write(tmp.path().join("t10k-images-idx3-ubyte"), gzip(&idx_images(3, 2, 3, &pixels))).unwrap();
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte.gz"), idx_labels(&[3, 1, 4])).unwrap();
    check_small_mnist(&mnist::load(tmp.path(), Split::Test).unwrap());
}

/// Write a test split with the given images and labels bytes (plain) and load it.
fn load_small(images: &[u8], labels: &[u8]) -> dualnet::error::Result<Dataset> {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte"), labels).unwrap();
    mnist::load(tmp.path(), Split::Test)
}

#[test]
fn truncated_idx_files_are_rejected() {
    let pixels = [0u8; 18];
    let e = data_error(load_small(&idx_images(3, 2, 3, &pixels[..17]), &idx_labels(&[3, 1, 4])));
    assert!(e.message.contains("t10k-images-idx3-ubyte` is truncated"), "{}", e.message);
    assert!(e.message.contains("3 images of 2x3 pixels (34 bytes) but the file has 33 bytes"), "{}", e.message);

    let mut labels = idx_labels(&[3, 1, 4]);
    labels.pop();
    let e = data_error(load_small(&idx_images(3, 2, 3, &pixels), &labels));
    assert!(e.message.contains("t10k-labels-idx1-ubyte` is truncated"), "{}", e.message);

    let e = data_error(load_small(&idx_images(3, 2, 3, &pixels)[..10], &idx_labels(&[3, 1, 4])));
    assert!(e.message.contains("t10k-images-idx3-ubyte` is truncated: 10 bytes"), "{}", e.message);

    // A gzip stream cut short.
    let tmp = tempfile::tempdir().unwrap();
    let gz = gzip(&idx_images(3, 2, 3, &pixels));
    std::fs::write(tmp.path().join("t10k-images-idx3-ubyte.gz"), &gz[..gz.len() / 2]).unwrap();
    std::fs::write(tmp.path().join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_labels(&[3, 1, 4]))).unwrap();
    let e = data_error(mnist::load(tmp.path(), Split::Test));
    assert!(
        e.message.starts_with("cannot decompress `") && e.message.contains("t10k-images-idx3-ubyte.gz"),
        "{}",
        e.message
    );

    // Trailing bytes.
    let mut long = idx_images(3, 2, 3, &pixels);
    long.push(0);
    let e = data_error(load_small(&long, &idx_labels(&[3, 1, 4])));
    assert!(e.message.contains("t10k-images-idx3-ubyte` has 1 byte after"), "{}", e.message);
}

#[test]
fn bad_magic_is_rejected() {
    let pixels = [0u8; 18];
    let mut images = idx_images(3, 2, 3, &pixels);
    images[3] = 0x02;
    let e = data_error(load_small(&images, &idx_labels(&[3, 1, 4])));
    assert!(e.message.contains("t10k-images-idx3-ubyte` has magic number 2050, expected 2051"), "{}", e.message);

    // Swapped files: each error names its file; both are reported.
    let ds = diagnostics(load_small(&idx_labels(&[3, 1, 4]), &idx_images(3, 2, 3, &pixels)));
    assert_eq!(ds.len(), 2);
    assert!(ds[0].message.contains("t10k-images-idx3-ubyte` is an MNIST label file"), "{}", ds[0].message);
    assert!(ds[1].message.contains("t10k-labels-idx1-ubyte` is an MNIST image file"), "{}", ds[1].message);
    assert!(ds[1].message.ends_with("expected a label file (magic number 2049)"), "{}", ds[1].message);
}

#[test]
fn mismatched_counts_and_bad_labels_are_rejected() {
    let pixels = [0u8; 18];
    let e = data_error(load_small(&idx_images(3, 2, 3, &pixels), &idx_labels(&[3, 1])));
    assert!(e.message.contains("t10k-images-idx3-ubyte` holds 3 images but `"), "{}", e.message);
    assert!(e.message.contains("t10k-labels-idx1-ubyte` holds 2 labels"), "{}", e.message);

    let e = data_error(load_small(&idx_images(3, 2, 3, &pixels), &idx_labels(&[3, 10, 4])));
    assert!(e.message.contains("t10k-labels-idx1-ubyte` has label 10 at example 1, expected 0 to 9"), "{}", e.message);
}

// ---- CIFAR-10 binary ----

/// A record whose red, green and blue planes are constant `r`, `g`, `b`, except the first red pixel, which is
/// `first`.
fn cifar_record(label: u8, first: u8, r: u8, g: u8, b: u8) -> Vec<u8> {
    let mut rec = vec![label];
    for v in [r, g, b] {
        rec.extend(std::iter::repeat_n(v, 1024));
    }
    rec[1] = first;
    rec
}

/// Five train batches of `per` records each (labels `(batch + i) % 10`) and a test batch of 3 records.
fn write_cifar(dir: &Path, per: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, name) in cifar::TRAIN_FILES.iter().enumerate() {
        let bytes: Vec<u8> = (0..per).flat_map(|i| cifar_record(((k + i) % 10) as u8, k as u8, 10, 20, 30)).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let test: Vec<u8> =
        [(9, 255), (0, 0), (5, 51)].iter().flat_map(|&(l, f)| cifar_record(l, f, 100, 150, 200)).collect();
    std::fs::write(dir.join(cifar::TEST_FILE), test).unwrap();
}

#[test]
fn cifar_binary_loads_with_labels_and_channel_order() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 2);
    let test = data::load("cifar10", tmp.path(), Split::Test).unwrap();
    assert_eq!(test.name, "cifar10");
    assert_eq!(test.shape, [3, 32, 32]);
    assert_eq!(test.num_classes, 10);
    assert_eq!(test.labels.to_vec(), vec![9, 0, 5]);
    let im = test.image(2);
    assert_eq!(im.len(), 3072);
    assert_eq!(im[0], 51.0 / 255.0);
    assert!(im[1..1024].iter().all(|&p| p == 100.0 / 255.0), "red plane first");
    assert!(im[1024..2048].iter().all(|&p| p == 150.0 / 255.0), "then green");
    assert!(im[2048..].iter().all(|&p| p == 200.0 / 255.0), "then blue");
    assert_eq!(test.image(0)[0], 1.0);

    let (x, y) = test.batch(&[2, 0], &Device::Cpu, DType::F32).unwrap();
    assert_eq!(x.dims(), &[2, 3, 32, 32]);
    assert_eq!(y.to_vec1::<u32>().unwrap(), vec![5, 9]);
    let green = x.get(0).unwrap().get(1).unwrap().get(5).unwrap().get(7).unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(green, 150.0 / 255.0);

    let train = cifar::load(tmp.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels.to_vec(), vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 5], "batches 1 to 5 in order");
    let firsts: Vec<f32> = (0..10).map(|i| train.image(i)[0]).collect();
    assert_eq!(firsts, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4].map(|k: u8| f32::from(k) / 255.0));
}

#[test]
fn cifar_binary_in_release_subfolder() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(&tmp.path().join(cifar::SUBFOLDER), 1);
    let d = cifar::load(tmp.path(), Split::Test).unwrap();
    assert_eq!(d.labels.to_vec(), vec![9, 0, 5]);
    assert_eq!(cifar::load(tmp.path(), Split::Train).unwrap().len(), 5);
}

#[test]
fn cifar_bad_lengths_labels_and_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 1);
    let path = tmp.path().join("data_batch_3.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(3000);
    std::fs::write(&path, &bytes).unwrap();
    let e = data_error(cifar::load(tmp.path(), Split::Train));
    assert!(e.message.contains("data_batch_3.bin` has 3000 bytes, not a multiple of the 3073-byte"), "{}", e.message);
    // The test split does not read that file.
    assert_eq!(cifar::load(tmp.path(), Split::Test).unwrap().len(), 3);

    let mut test = std::fs::read(tmp.path().join(cifar::TEST_FILE)).unwrap();
    test[cifar::RECORD_BYTES] = 10;
    std::fs::write(tmp.path().join(cifar::TEST_FILE), &test).unwrap();
    let e = data_error(cifar::load(tmp.path(), Split::Test));
    assert!(e.message.contains("test_batch.bin` has label 10 at example 1"), "{}", e.message);

    std::fs::remove_file(tmp.path().join("data_batch_2.bin")).unwrap();
    std::fs::remove_file(tmp.path().join("data_batch_5.bin")).unwrap();
    let e = coded_error(cifar::load(tmp.path(), Split::Train), Code::DataMissing);
    assert!(e.message.starts_with("no CIFAR-10 files `data_batch_2.bin`, `data_batch_5.bin` in `"), "{}", e.message);
    let help = e.help.unwrap();
    assert!(help.contains("--data-dir") && help.contains("cifar-10-batches-bin"), "{help}");
}

#[test]
fn cifar_normalisation_constants() {
    assert_eq!(cifar::CIFAR10_MEAN, [0.485, 0.456, 0.406]);
    assert_eq!(cifar::CIFAR10_STD, [0.225, 0.225, 0.225]);
    assert_eq!(cifar::CLASSES[0], "airplane");
    assert_eq!(cifar::CLASSES[9], "truck");
}

#[test]
fn unknown_dataset_is_a_bad_option() {
    let ds = diagnostics(data::load("imagenet", &mnist_dir(), Split::Test));
    assert_eq!(ds[0].code, Code::BadOption);
    assert_eq!(ds[0].message, "unknown dataset `imagenet`");
    assert!(ds[0].help.as_deref().unwrap_or("").contains("`mnist`, `cifar10`"));
    let e = "validation".parse::<Split>().unwrap_err();
    assert!(matches!(e, Error::Input(ref ds) if ds[0].code == Code::BadOption));
}

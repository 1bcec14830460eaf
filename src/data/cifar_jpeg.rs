//! CIFAR-10 as JPEG images in class folders: `<split>/<class>/<n>.jpg`, as a folder or as the archive
//! `<split>.tar.gz` (or `<split>.tar`) that holds it.
//!
//! Layout: `<split>` is `train` or `test`; `<class>` is one of [`CLASSES`](super::cifar::CLASSES) (the folder
//! name gives the label); each image is a 32x32 RGB JPEG (grey JPEGs are expanded to three equal planes). Other
//! files (no `.jpg`/`.jpeg` ending) are ignored.
//!
//! Order: by the file's stem (the number in `0338.jpg`; names that are not numbers sort after numbers, by
//! name), then by label. So image 0 is the first airplane, image 1 the first automobile, … and every prefix of
//! the test split (`--limit 100`) holds the classes in equal parts. This layout carries no other order.
//!
//! Result: the same [`Dataset`] as the binary release (`cifar10`, `[3, 32, 32]`, pixels `byte / 255` after JPEG
//! decoding, not normalised). JPEG is lossy: these are not the binary release's pixels, so accuracies on them are
//! close to, not equal to, those on the release.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::cifar::{CLASSES, IMAGE_BYTES};
use super::{pixel, Dataset, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};

/// Where the JPEG images of a split are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The folder `<dir>/<split>` with one subfolder per class.
    Folder(PathBuf),
    /// The archive `<dir>/<split>.tar.gz` or `<dir>/<split>.tar`.
    Archive(PathBuf),
}

/// The JPEG source of `split` in `dir`, if there is one: the folder first, then the archives.
pub fn find(dir: &Path, split: Split) -> Option<Source> {
    let name = split.as_str();
    let folder = dir.join(name);
    if folder.is_dir() && CLASSES.iter().any(|c| folder.join(c).is_dir()) {
        return Some(Source::Folder(folder));
    }
    [format!("{name}.tar.gz"), format!("{name}.tgz"), format!("{name}.tar")]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .map(Source::Archive)
}

/// One image file before decoding: its label, its stem and its bytes; `name` is its path for messages.
struct Entry {
    label: u8,
    stem: String,
    name: String,
    bytes: Vec<u8>,
}

/// Load the images of `source`.
pub fn load(source: &Source) -> Result<Dataset> {
    let (mut entries, where_) = match source {
        Source::Folder(f) => (read_folder(f)?, f),
        Source::Archive(a) => (read_archive(a)?, a),
    };
    if entries.is_empty() {
        return Err(Error::input(
            Diagnostic::new(Code::DataInvalid, format!("no CIFAR-10 JPEG images in `{}`", where_.display())).help(
                format!(
                    "expected `<class>/<n>.jpg` files, with the class folders named {}",
                    CLASSES.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                ),
            ),
        ));
    }
    entries.sort_by(|a, b| order_key(&a.stem).cmp(&order_key(&b.stem)).then(a.label.cmp(&b.label)));

    let mut images = Vec::with_capacity(entries.len() * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    for e in &entries {
        match decode(&e.bytes, &e.name) {
            Ok(planes) => {
                images.extend(planes.iter().map(|&b| pixel(b)));
                labels.push(e.label);
            }
            Err(d) => problems.push(d),
        }
        if problems.len() >= 10 {
            break;
        }
    }
    if !problems.is_empty() {
        return Err(Error::Input(problems));
    }
    Dataset::new(images, labels, [3, 32, 32], CLASSES.len(), "cifar10")
}

/// Numbers first, in numeric order; other stems after them, by name.
fn order_key(stem: &str) -> (u8, u64, &str) {
    match stem.parse::<u64>() {
        Ok(n) => (0, n, ""),
        Err(_) => (1, 0, stem),
    }
}

fn is_jpeg(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

/// The label of a class folder name, or a diagnostic that lists the names.
fn label_of(class: &str, path: &str) -> std::result::Result<u8, Diagnostic> {
    match CLASSES.iter().position(|c| *c == class) {
        Some(i) => Ok(i as u8),
        None => Err(Diagnostic::new(
            Code::DataInvalid,
            format!("`{path}` is in the folder `{class}`, which is not a CIFAR-10 class"),
        )
        .help(format!(
            "the class folders are {}",
            CLASSES.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn read_folder(folder: &Path) -> Result<Vec<Entry>> {
    let io = |p: &Path, e| Error::io("cannot read CIFAR-10 JPEG folder", p, e);
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for class_dir in std::fs::read_dir(folder).map_err(|e| io(folder, e))? {
        let class_dir = class_dir.map_err(|e| io(folder, e))?.path();
        if !class_dir.is_dir() {
            continue;
        }
        let class = class_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for file in std::fs::read_dir(&class_dir).map_err(|e| io(&class_dir, e))? {
            let path = file.map_err(|e| io(&class_dir, e))?.path();
            if !path.is_file() || !is_jpeg(&path) {
                continue;
            }
            let name = path.display().to_string();
            match label_of(&class, &name) {
                Ok(label) => {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read image", &path, e))?;
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    entries.push(Entry { label, stem, name, bytes });
                }
                Err(d) => {
                    problems.push(d);
                    break;
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Input(problems));
    }
    Ok(entries)
}

fn read_archive(archive: &Path) -> Result<Vec<Entry>> {
    let raw = std::fs::read(archive).map_err(|e| Error::io("cannot read CIFAR-10 archive", archive, e))?;
    let bad = |what: String| {
        Error::input(
            Diagnostic::new(Code::DataInvalid, format!("cannot read the archive `{}`: {what}", archive.display()))
                .help("the file is truncated or not a tar archive (optionally gzipped); download it again"),
        )
    };
    let reader: Box<dyn Read> = if raw.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(raw.as_slice()))
    } else {
        Box::new(raw.as_slice())
    };
    let mut tar = tar::Archive::new(reader);
    let mut entries = Vec::new();
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        if !is_jpeg(&path) {
            continue;
        }
        let name = format!("{}:{}", archive.display(), path.display());
        let class = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or_default();
        let label = label_of(class, &name).map_err(Error::input)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| bad(format!("`{}`: {e}", path.display())))?;
        entries.push(Entry { label, stem, name, bytes });
    }
    Ok(entries)
}

/// Decode one 32x32 JPEG into the three planes R, G, B (`[C, H, W]` order, like the binary release).
fn decode(bytes: &[u8], name: &str) -> std::result::Result<Vec<u8>, Diagnostic> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).map_err(|e| {
        Diagnostic::new(Code::DataInvalid, format!("cannot decode the JPEG `{name}`: {e}"))
            .help("the file is damaged or not a JPEG; remove it or download the data again")
    })?;
    if img.width() != 32 || img.height() != 32 {
        return Err(Diagnostic::new(
            Code::DataInvalid,
            format!("`{name}` is {}x{}, CIFAR-10 images are 32x32", img.width(), img.height()),
        )
        .help("resize the image to 32x32 or remove it"));
    }
    let rgb = img.to_rgb8();
    let mut planes = vec![0u8; IMAGE_BYTES];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            planes[c * 1024 + i] = p.0[c];
        }
    }
    Ok(planes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    fn write_split(root: &Path, split: &str, files: &[(&str, &str, [u8; 3])]) {
        for (class, stem, rgb) in files {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{stem}.jpg")), jpeg(32, 32, *rgb)).unwrap();
        }
    }

    #[test]
    fn folder_order_labels_and_planes() {
        let tmp = tempfile::tempdir().unwrap();
        // Two classes, two images each: the order interleaves them by stem, then label.
        write_split(
            tmp.path(),
            "test",
            &[
                ("cat", "0001", [0, 0, 255]),
                ("airplane", "0001", [255, 0, 0]),
                ("cat", "0000", [0, 255, 0]),
                ("airplane", "0000", [200, 200, 200]),
            ],
        );
        let src = find(tmp.path(), Split::Test).unwrap();
        assert_eq!(src, Source::Folder(tmp.path().join("test")));
        assert!(find(tmp.path(), Split::Train).is_none());
        let d = load(&src).unwrap();
        // (stem 0, airplane=0), (stem 0, cat=3), (stem 1, airplane), (stem 1, cat).
        assert_eq!(d.labels.to_vec(), vec![0, 3, 0, 3]);
        // A flat colour survives JPEG within a few levels; R, G, B are the planes in that order.
        let near = |v: f32, b: u8| (v - f32::from(b) / 255.0).abs() < 8.0 / 255.0;
        let img2 = d.image_view(1); // the green cat
        assert!(near(img2[[0, 5, 5]], 0) && near(img2[[1, 5, 5]], 255) && near(img2[[2, 5, 5]], 0));
        let img3 = d.image_view(2); // the red airplane
        assert!(near(img3[[0, 31, 31]], 255) && near(img3[[1, 0, 0]], 0));
    }

    #[test]
    fn archive_matches_folder() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), "test", &[("dog", "0000", [10, 20, 30]), ("ship", "0000", [90, 80, 70])]);
        let tar_path = tmp.path().join("test.tar.gz");
        {
            let f = std::fs::File::create(&tar_path).unwrap();
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            let mut b = tar::Builder::new(gz);
            b.append_dir_all("test", tmp.path().join("test")).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        let from_folder = load(&Source::Folder(tmp.path().join("test"))).unwrap();
        let from_archive = load(&Source::Archive(tar_path)).unwrap();
        assert_eq!(from_folder, from_archive);
        assert_eq!(from_archive.labels.to_vec(), vec![5, 8]);
    }

    #[test]
    fn bad_class_size_and_bytes_are_diagnostics() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("test").join("cat");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.jpg"), jpeg(16, 16, [1, 2, 3])).unwrap();
        let Err(Error::Input(d)) = load(&Source::Folder(tmp.path().join("test"))) else {
            panic!("expected an input error")
        };
        assert!(d[0].message.ends_with("is 16x16, CIFAR-10 images are 32x32"), "{}", d[0].message);

        std::fs::write(dir.join("0.jpg"), b"not a jpeg").unwrap();
        let Err(Error::Input(d)) = load(&Source::Folder(tmp.path().join("test"))) else {
            panic!("expected an input error")
        };
        assert!(d[0].message.starts_with("cannot decode the JPEG"), "{}", d[0].message);

        let other = tmp.path().join("test").join("kitten");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("1.jpg"), jpeg(32, 32, [1, 2, 3])).unwrap();
        let Err(Error::Input(d)) = load(&Source::Folder(tmp.path().join("test"))) else {
            panic!("expected an input error")
        };
        assert!(d.iter().any(|d| d.message.contains("`kitten`, which is not a CIFAR-10 class")));
    }
}

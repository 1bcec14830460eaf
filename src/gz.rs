//! Reading files that benchmarks ship gzipped (VNN-COMP keeps `.onnx.gz` and `.vnnlib.gz` beside instance lists
//! that name the plain files): gzip is recognised by its content, and a missing `PATH` falls back to `PATH.gz`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `path`, or `path.gz` when only that exists.
pub fn resolve(path: &Path) -> PathBuf {
    if !path.exists() {
        let mut gz = path.as_os_str().to_owned();
        gz.push(".gz");
        let gz = PathBuf::from(gz);
        if gz.exists() {
            return gz;
        }
    }
    path.to_path_buf()
}

/// The bytes of `path` (see [`resolve`]), decompressed when they are gzip. `what` names the file in errors.
pub fn read(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    let p = resolve(path);
    let bytes = std::fs::read(&p).map_err(|e| Error::io(what, path, e))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).map_err(|e| Error::io(what, &p, e))?;
        return Ok(out);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn plain_gzipped_and_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, b"hello").expect("write");
        assert_eq!(read(&plain, "cannot read").expect("read"), b"hello");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"zipped").expect("gz");
        std::fs::write(dir.path().join("b.txt.gz"), enc.finish().expect("gz")).expect("write");
        assert_eq!(read(&dir.path().join("b.txt"), "cannot read").expect("read"), b"zipped");
        assert!(read(&dir.path().join("c.txt"), "cannot read").is_err());
    }
}

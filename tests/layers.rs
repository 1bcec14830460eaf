//! Layers point one way: `cli` → `run` → `dual` → `ops`/`kernels`. No module of a lower layer names a higher
//! one (the bounds are a library API taking plain structs; the command line parses into it).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())).flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().and_then(|x| x.to_str()) == Some("rs") {
            out.push(p);
        }
    }
}

#[test]
fn lower_layers_never_name_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // (layer folder, modules above it)
    let rules: &[(&str, &[&str])] = &[
        ("run", &["crate::cli"]),
        ("dual", &["crate::cli", "crate::run"]),
        ("ops", &["crate::cli", "crate::run", "crate::dual"]),
        ("kernels", &["crate::cli", "crate::run", "crate::dual", "crate::ops"]),
        ("check", &["crate::cli", "crate::run", "crate::dual"]),
    ];
    let mut problems = Vec::new();
    let mut files_seen = 0;
    for (layer, above) in rules {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no files under src/{layer}");
        files_seen += files.len();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for a in *above {
                    if line.contains(a) {
                        problems.push(format!("{}:{}: `{a}` in layer `{layer}`", f.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(files_seen > 20, "only {files_seen} files checked");
    assert!(problems.is_empty(), "layering violations:\n{}", problems.join("\n"));
}

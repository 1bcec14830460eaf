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
        ("onnx", &["crate::cli", "crate::run", "crate::dual"]),
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

/// An op's typed arguments are parsed by name (`Attrs::get_*`); a name the op does not declare is an error at
/// lowering. This check finds such a misspelling without running the op: every name read in `src/ops/<op>.rs`
/// must be one of that op's declared parameters (the registry's `params()`); every registered op must have its file.
#[test]
fn ops_read_only_the_arguments_they_declare() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
    let mut reads = 0;
    let mut problems = Vec::new();
    for op in dualnet::ops::REGISTRY {
        let path = dir.join(format!("{}.rs", op.name()));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("op `{}` has no file {}: {e}", op.name(), path.display()));
        let declared: Vec<&str> = op.params().iter().map(|p| p.name).collect();
        for getter in [".get_int(\"", ".get_usize(\"", ".get_float(\""] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(getter) {
                let after = &rest[i + getter.len()..];
                let name = &after[..after.find('"').unwrap_or(0)];
                reads += 1;
                if !declared.contains(&name) {
                    problems.push(format!("{}: reads `{name}`, declares {declared:?}", path.display()));
                }
                rest = after;
            }
        }
    }
    assert!(reads >= 5, "only {reads} argument reads found");
    assert!(problems.is_empty(), "undeclared arguments:\n{}", problems.join("\n"));
}

/// Every op's typed arguments parse from the arguments its declared parameters give (lowering fills in each
/// declared one), and fail, rather than read 0, when any declared one is missing.
#[test]
fn every_op_parses_its_declared_arguments() {
    use dualnet::ops::{Attrs, Default, ParamKind, Value};
    for op in dualnet::ops::REGISTRY {
        let mut full = Attrs::default();
        for p in op.params() {
            let v = match (p.kind, p.default) {
                (ParamKind::Int, Default::Int(i)) => Value::Int(i),
                (ParamKind::Float, Default::Float(x)) => Value::Float(x),
                (ParamKind::Float, _) => Value::Float(0.5),
                (ParamKind::Int, _) => Value::Int(2),
            };
            full.0.insert(p.name.to_string(), v);
        }
        assert!(op.parse_args(&full).is_ok(), "`{}` does not parse its declared arguments {full}", op.name());
        for p in op.params() {
            let mut less = full.clone();
            less.0.remove(p.name);
            assert!(op.parse_args(&less).is_err(), "`{}` parses without `{}`: it never reads it", op.name(), p.name);
        }
    }
}

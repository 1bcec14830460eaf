//! The training recipes in `specs/recipes/`: every one loads, validates, and names a spec that checks cleanly;
//! every Table 2 recipe cites the paper (a comment line with "paper" and a percentage), says where its settings
//! come from, and carries the commands to run it; each cascade recipe is its single-model recipe plus the stage
//! count; the ε in the file name is the ε in the file; CIFAR recipes keep ε in pixel units with the reference's
//! normalisation.

use std::path::{Path, PathBuf};

use dualnet::check::check_source;
use dualnet::run::train::config::{Optimizer, TrainConfig};

/// Recipes that are not rows of the paper's Table 2 (so they need not quote the paper).
const NOT_TABLE2: &[&str] = &[
    "mnist_small_10k.yaml",
    "mnist_small_full2.yaml",
    "mnist_small_crown_ibp_eps0.1.yaml",
    "mnist_small_ibp_eps0.1.yaml",
    "mnist_small_ibp_eps0.3.yaml",
    "mnist_small_ibp_fast_eps0.3.yaml",
    "cifar_small_bab_eps2.yaml",
    "cifar_resnet_small_bab_eps2.yaml",
];

/// The Table 2 rows that must have a recipe (single-model names; each also has a `_cascade` twin).
const TABLE2: &[&str] = &[
    "mnist_small_eps0.1",
    "mnist_small_eps0.3",
    "mnist_large_eps0.1",
    "mnist_large_eps0.3",
    "cifar_small_eps2",
    "cifar_small_eps8",
    "cifar_large_eps2",
    "cifar_large_eps8",
    "cifar_resnet_eps2",
    "cifar_resnet_eps8",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipes() -> Vec<PathBuf> {
    let dir = root().join("specs/recipes");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no recipes in {}", dir.display());
    v
}

fn name(p: &Path) -> String {
    p.file_name().expect("file name").to_string_lossy().into_owned()
}

fn comments(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_start).filter(|l| l.starts_with('#')).collect()
}

fn load(p: &Path) -> TrainConfig {
    TrainConfig::load(p).unwrap_or_else(|e| panic!("{} does not load: {e}", p.display()))
}

/// True if the line has a number directly followed by `%` (e.g. `3.67%`).
fn has_percentage(line: &str) -> bool {
    let b = line.as_bytes();
    (1..b.len()).any(|i| b[i] == b'%' && b[i - 1].is_ascii_digit())
}

#[test]
fn every_recipe_loads_validates_and_names_a_spec_that_checks() {
    for p in recipes() {
        let cfg = load(&p);
        cfg.validate().unwrap_or_else(|e| panic!("{} does not validate: {e}", p.display()));
        let spec = cfg.spec.clone().unwrap_or_else(|| panic!("{} names no spec", p.display()));
        let spec_path = root().join(&spec);
        let text = std::fs::read_to_string(&spec_path)
            .unwrap_or_else(|e| panic!("{}: spec {} cannot be read: {e}", p.display(), spec_path.display()));
        let checked = check_source(&spec.display().to_string(), &text);
        let errors: Vec<String> =
            checked.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.message.clone()).collect();
        assert!(errors.is_empty(), "{}: spec {} has errors: {errors:?}", p.display(), spec.display());
        assert!(checked.graph.is_some(), "{}: spec {} gives no graph", p.display(), spec.display());
        assert!(["mnist", "cifar10"].contains(&cfg.data.as_str()), "{}: unknown data set `{}`", p.display(), cfg.data);
        let raw = std::fs::read_to_string(&p).expect("read recipe");
        assert!(
            !raw.lines().any(|l| l.trim_start().starts_with("data_dir:")),
            "{}: leave `data_dir` out (users pass `--data-dir`)",
            p.display()
        );
        assert_eq!(cfg.data_dir.as_deref(), Some(std::path::Path::new("data/mnist")), "{}: the default", p.display());
    }
}

#[test]
fn every_table2_recipe_cites_the_paper_and_its_sources() {
    for p in recipes() {
        let n = name(&p);
        if NOT_TABLE2.contains(&n.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("read recipe");
        let c = comments(&text);
        assert!(
            c.iter().any(|l| l.to_lowercase().contains("paper") && has_percentage(l)),
            "{n}: no comment line with \"paper\" and a percentage"
        );
        assert!(
            c.iter().any(|l| l.contains("robust (certified) error")),
            "{n}: the row's robust error (or \"not verified\") is missing"
        );
        assert!(
            c.iter().any(|l| l.to_lowercase().contains("clean error")),
            "{n}: the row's clean error (or \"not verified\") is missing"
        );
        assert!(
            c.iter().any(|l| l.contains("hyperparameters come from")),
            "{n}: no line saying where the hyperparameters come from"
        );
        let stem = n.trim_end_matches(".yaml");
        if stem.ends_with("_cascade") {
            assert!(
                c.iter().any(|l| l.contains("stages the paper used")),
                "{n}: no line stating the paper's stage count"
            );
            let cmd = format!("dualnet cascade train --config specs/recipes/{n} --stages ");
            assert!(c.iter().any(|l| l.contains(&cmd)), "{n}: no `{cmd}N ...` command line");
        } else {
            let cmd = format!("dualnet train --config specs/recipes/{n} ");
            assert!(c.iter().any(|l| l.contains(&cmd)), "{n}: no `{cmd}...` command line");
        }
    }
}

#[test]
fn every_table2_row_has_a_single_and_a_cascade_recipe_with_the_same_config() {
    let dir = root().join("specs/recipes");
    for row in TABLE2 {
        let single = dir.join(format!("{row}.yaml"));
        let cascade = dir.join(format!("{row}_cascade.yaml"));
        assert!(single.is_file(), "missing {}", single.display());
        assert!(cascade.is_file(), "missing {}", cascade.display());
    }
    for p in recipes() {
        let n = name(&p);
        if let Some(stem) = n.strip_suffix("_cascade.yaml") {
            let single = dir.join(format!("{stem}.yaml"));
            assert!(single.is_file(), "{n} has no single-model twin {}", single.display());
            assert_eq!(load(&p), load(&single), "{n} and {stem}.yaml differ: a cascade recipe is the same config");
        }
    }
}

#[test]
fn the_eps_in_the_file_name_is_the_eps_in_the_file() {
    for p in recipes() {
        let n = name(&p);
        let stem = n.trim_end_matches(".yaml").trim_end_matches("_cascade");
        let Some((_, tag)) = stem.rsplit_once("_eps") else { continue };
        let cfg = load(&p);
        let want = if cfg.data == "cifar10" {
            // CIFAR-10 names give ε in 1/255 steps (pixel units).
            tag.parse::<f64>().unwrap_or_else(|_| panic!("{n}: bad ε tag `{tag}`")) / 255.0
        } else {
            tag.parse::<f64>().unwrap_or_else(|_| panic!("{n}: bad ε tag `{tag}`"))
        };
        // The name gives the ε that is certified (a recipe may train at a larger one, `eps_eval` below it).
        assert!((cfg.eval_eps() - want).abs() < 1e-12, "{n}: eps {} but the name says {want}", cfg.eval_eps());
        assert!(cfg.eps_start <= cfg.eps, "{n}: eps_start above eps");
    }
}

#[test]
fn cifar_recipes_follow_the_reference_setup() {
    for p in recipes() {
        let cfg = load(&p);
        if cfg.data != "cifar10" {
            continue;
        }
        let n = name(&p);
        assert_eq!(cfg.mean.as_deref(), Some(&[0.485, 0.456, 0.406][..]), "{n}: mean");
        assert_eq!(cfg.std.as_deref(), Some(&[0.225, 0.225, 0.225][..]), "{n}: std");
        assert!(cfg.augment, "{n}: the reference augments CIFAR-10 (random crop + flip)");
        assert_eq!(
            (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay),
            (Optimizer::Sgd, 0.05, 0.9, 0.0005),
            "{n}: optimizer"
        );
        assert_eq!(cfg.grad_clip, Some(1.0), "{n}: the reference clips the gradient norm to 1");
        assert!(!cfg.bounded, "{n}: the reference's CIFAR training has no box constraint (bounded_input=False)");
        // ε stays in pixel units: at most 8/255, never a hand-normalised value like 0.0348 or 0.139.
        assert!(cfg.eps <= 8.0 / 255.0 + 1e-12, "{n}: eps {} looks normalised; give it in pixel units", cfg.eps);
        let text = std::fs::read_to_string(&p).expect("read recipe");
        assert!(text.contains("pixel units"), "{n}: say that ε is in pixel units");
    }
}

/// Each shipped model sits beside its recipe (`models/NAME.yaml`, the same settings as the recipe in
/// `specs/recipes/` it names), its weights fit the spec the recipe names, and each file is under 1 MB.
#[test]
fn shipped_models_sit_beside_their_recipes() {
    for (name, recipe) in
        [("mnist_small_eps0.1", "mnist_small_ibp_eps0.1.yaml"), ("mnist_small_eps0.3", "mnist_small_ibp_eps0.3.yaml")]
    {
        let beside = load(&root().join(format!("models/{name}.yaml")));
        let text = std::fs::read_to_string(root().join(format!("models/{name}.yaml"))).expect("read");
        assert!(text.contains(recipe), "models/{name}.yaml does not name its recipe {recipe}");
        let spec = root().join(beside.spec.as_deref().expect("spec"));
        let weights = root().join(format!("models/{name}.safetensors"));
        let model =
            dualnet::cli::bounds::load_model(&spec, &weights, candle_core::DType::F32, &candle_core::Device::Cpu);
        assert!(model.is_ok(), "{name}: the shipped weights do not load against {}", spec.display());
        let bytes = std::fs::metadata(&weights).expect("weights").len();
        assert!(bytes < 1_000_000, "{name}: {bytes} bytes");
        assert_eq!(beside, load(&root().join("specs/recipes").join(recipe)), "{name}: not the recipe's settings");
    }
}

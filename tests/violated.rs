//! On every shared VNN-COMP instance where the 2021 tools found a counterexample, `verify` never answers
//! `unsat`; where it answers `sat`, its counterexample is confirmed by a float64 forward pass (`verify`'s own rule,
//! checked here again against the property).
//!
//! Which instances: those of `../shared/vnncomp/*/results_2021.csv` where more tools answered `violated` than
//! `holds`. The README there lists the tools that answered against the rest (NV.jl and RPM on acasxu, Debona on
//! eran, nnv and Marabou on verivital); "go by the tools that agree" is this majority. Instances where a
//! `violated` stands against as many `holds` are contested: they are run and reported, and an `unsat` there is
//! printed for a person to look at, not asserted (a `holds` of another tool backs it).
//!
//! Each instance gets `DUALNET_VIOLATED_TIMEOUT` seconds (default 0.3, so that the whole test stays within a
//! minute); the full runs are `scripts/bench_verify.sh`, whose csvs `scripts/check_violated.py` holds to the same
//! rule at the benchmarks' own timeouts.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use dualnet::run::verify::{verify_files, Answer, VerifyConfig};

/// `(benchmark, onnx, vnnlib) -> (violated, holds)` counts over the 2021 tools.
fn reports(root: &Path) -> BTreeMap<(String, String, String), (usize, usize)> {
    let mut out = BTreeMap::new();
    for bench in ["mnistfc", "acasxu", "eran", "verivital", "marabou-cifar10"] {
        let Ok(text) = std::fs::read_to_string(root.join(bench).join("results_2021.csv")) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 4 {
                continue;
            }
            let e = out.entry((bench.to_string(), f[0].to_string(), f[1].to_string())).or_insert((0, 0));
            match f[3] {
                "violated" => e.0 += 1,
                "holds" => e.1 += 1,
                _ => {}
            }
        }
    }
    out
}

#[test]
fn violated_instances_are_never_unsat() {
    let Some(root) = common::shared("vnncomp", "the violated-never-unsat test") else { return };
    let timeout: f64 = std::env::var("DUALNET_VIOLATED_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(0.3);
    let cfg = VerifyConfig { timeout, ..VerifyConfig::default() };
    let mut nets = HashMap::new();
    let mut tally: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let (mut wrong, mut contested) = (Vec::new(), Vec::new());
    let start = std::time::Instant::now();
    for ((bench, onnx, vnnlib), (v, h)) in reports(&root) {
        if v == 0 || v < h {
            continue;
        }
        let dir = root.join(&bench);
        let (onnx_path, vnnlib_path): (PathBuf, PathBuf) = (dir.join(&onnx), dir.join(&vnnlib));
        let (answer, _) = verify_files(&mut nets, &onnx_path, &vnnlib_path, &cfg);
        let what = format!("{bench} {onnx} {vnnlib} ({v} violated, {h} holds)");
        match &answer {
            Answer::Unsat if v > h => wrong.push(what),
            Answer::Unsat => contested.push(what),
            Answer::Sat { x, .. } => {
                // Again, here: the network in float64 at `x`, and the property's own constraints.
                let net = nets[&onnx_path].as_ref().expect("loaded");
                let y = net.eval_f64(&[x.clone()]).expect("eval").remove(0);
                let prop = dualnet::vnnlib::parse_file(&vnnlib_path).expect("parse");
                let inside =
                    |r: &dualnet::vnnlib::Region| x.iter().zip(&r.lo).zip(&r.hi).all(|((v, l), h)| l <= v && v <= h);
                assert!(
                    prop.regions.iter().any(|r| inside(r) && r.disjuncts.iter().any(|d| d.iter().all(|c| c.holds(&y)))),
                    "{what}: {x:?} -> {y:?} does not violate the property"
                );
            }
            Answer::Error(m) => panic!("{what}: error\n{m}"),
            _ => {}
        }
        *tally.entry(bench).or_default().entry(answer.word()).or_insert(0) += 1;
    }
    eprintln!("answers on the violated instances ({timeout} s each, {:.1} s in all):", start.elapsed().as_secs_f64());
    for (b, t) in &tally {
        eprintln!("  {b}: {t:?}");
    }
    for c in &contested {
        eprintln!("  unsat on a contested instance (a `holds` of another tool backs it): {c}");
    }
    assert!(wrong.is_empty(), "unsat where the tools that agree found a counterexample:\n{}", wrong.join("\n"));
    assert!(!tally.is_empty(), "no violated instances found under {}", root.display());
}

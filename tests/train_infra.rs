//! The training infrastructure without a training loop: run folders, checkpoints that resume exactly, metrics
//! files, configs with their overrides, charts and the Ctrl-C flag; and, as it needs that process-wide flag, one
//! short training run stopped and resumed mid-epoch.

mod common;

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use clap::Parser;
use dualnet::diagnostics::Code;
use dualnet::error::Error;
use dualnet::run::train::config::{Optimizer, TrainConfig, TrainOverrides};
use dualnet::run::train::interrupt;
use dualnet::run::train::optim::{Optim, Params};
use dualnet::run::train::plot::{plot_metrics, plot_series, ChartKind, Series, SeriesChart};
use dualnet::run::train::runfolder::{epoch_seed, EpochMetrics, RunFolder, TrainState};
use dualnet::run::train::runfolder::{Record, StepMetrics};

fn codes(e: &Error) -> Vec<Code> {
    match e {
        Error::Input(ds) => ds.iter().map(|d| d.code).collect(),
        _ => vec![],
    }
}

fn help(e: &Error) -> String {
    match e {
        Error::Input(ds) => ds[0].help.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

fn metrics(epoch: usize) -> EpochMetrics {
    let t = epoch as f64;
    EpochMetrics {
        epoch,
        eps: 0.01 * (t + 1.0),
        lr: 1e-3,
        train_robust_loss: 2.3 / (t + 1.0),
        train_robust_err: 0.3 + 0.6 / (1.0 + 0.3 * t),
        train_clean_err: 0.3 / (t + 1.0),
        test_clean_err: 0.25 / (t + 1.0) + 0.01,
        test_certified_err: if epoch % 3 == 2 { None } else { Some(0.35 + 0.5 / (1.0 + 0.3 * t)) },
        seconds: 12.5,
        examples: 60000,
        eval_bound: Some("crown".into()),
        eval_eps: Some(0.1),
    }
}

fn step(step: u64) -> StepMetrics {
    let t = step as f64;
    StepMetrics {
        kind: "step".into(),
        step,
        epoch: (step / 100) as usize,
        at: t / 100.0,
        eps: (0.001 * t).min(0.1),
        kappa: 1.0 - (0.005 * t).min(0.5),
        beta: 1.0 - (0.01 * t).min(1.0),
        lr: 1e-3,
        loss: 2.3 / (1.0 + 0.01 * t),
        batch_robust_err: 0.9 / (1.0 + 0.01 * t),
        batch_clean_err: 0.3 / (1.0 + 0.01 * t),
        reg: 0.5 / (1.0 + t),
    }
}

#[test]
fn run_folder_refuses_non_empty_unless_resuming() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let f = RunFolder::create(&out, false).unwrap();
    assert!(out.is_dir());
    // An empty existing folder is fine.
    RunFolder::create(&out, false).unwrap();
    f.write_config(&TrainConfig::default()).unwrap();
    let e = RunFolder::create(&out, false).unwrap_err();
    assert_eq!(codes(&e), vec![Code::BadOption]);
    assert_eq!(help(&e), "use --resume or another --out");
    // Resuming needs a checkpoint.
    let e = RunFolder::create(&out, true).unwrap_err();
    assert!(e.to_string().starts_with("nothing to resume"), "{e}");
    let e = RunFolder::create(&dir.path().join("missing"), true).unwrap_err();
    assert_eq!(codes(&e), vec![Code::BadOption]);
    // A file is not a folder.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    assert!(RunFolder::create(&dir.path().join("file"), false).is_err());
    // Config round trip through the folder.
    let cfg = TrainConfig { epochs: 7, spec: Some("a.net".into()), ..Default::default() };
    f.write_config(&cfg).unwrap();
    assert_eq!(f.read_config().unwrap(), cfg);
    // No temp files left behind.
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["config.yaml".to_string()]);
}

/// A tiny least-squares model `y = x·wᵀ + b` with fixed data.
fn model() -> Params {
    let w = Var::from_tensor(&Tensor::new(&[[0.1f32, -0.2, 0.3], [0.0, 0.5, -0.5]], &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.05f32, -0.05], &Device::Cpu).unwrap()).unwrap();
    vec![("fc.weight".into(), w), ("fc.bias".into(), b)]
}

fn grads(p: &Params, step: usize) -> GradStore {
    let k = step as f32;
    let x = Tensor::new(&[[1.0f32, 2.0, -1.0], [0.5, -k * 0.1, 2.0]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let out = x.matmul(&p[0].1.as_tensor().t().unwrap()).unwrap().broadcast_add(p[1].1.as_tensor()).unwrap();
    (out - y).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap()
}

fn weights(p: &Params) -> HashMap<String, Tensor> {
    p.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
}

fn params_from(map: &HashMap<String, Tensor>) -> Params {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    // Same order as `model()`.
    let order = ["fc.weight", "fc.bias"];
    assert_eq!(names.len(), 2);
    order.iter().map(|n| (n.to_string(), Var::from_tensor(&map[*n]).unwrap())).collect()
}

#[test]
fn checkpoint_resumes_exactly() {
    for kind in [Optimizer::Adam, Optimizer::Sgd] {
        let dir = tempfile::tempdir().unwrap();
        let folder = RunFolder::create(dir.path(), false).unwrap();
        let cfg = TrainConfig { optimizer: kind, weight_decay: 1e-2, ..Default::default() };
        let mut a = Optim::from_config(&cfg, model());
        for s in 0..4 {
            let g = grads(a.params(), s);
            a.step(&g, 0.01).unwrap();
        }
        let state = TrainState {
            epoch: 2,
            step: 4,
            best_metric: Some(0.25),
            best_epoch: Some(1),
            seed: 9,
            eps: 0.02,
            lr: 0.01,
            ..Default::default()
        };
        folder.save_checkpoint("last", &weights(a.params()), &a.state_tensors().unwrap(), &state).unwrap();
        assert!(folder.has_checkpoint("last") && !folder.has_checkpoint("best"));

        let resumed = RunFolder::create(dir.path(), true).unwrap();
        let (w, o, st) = resumed.load_checkpoint("last").unwrap();
        assert_eq!((st.epoch, st.step, st.best_metric, st.best_epoch, st.seed), (2, 4, Some(0.25), Some(1), 9));
        assert_eq!(st.weights_checksum.len(), 16);
        let mut b = Optim::from_config(&cfg, params_from(&w));
        b.load_state(&o).unwrap();
        assert_eq!(b.step_count(), 4);
        for s in 4..8 {
            let ga = grads(a.params(), s);
            a.step(&ga, 0.01).unwrap();
            let gb = grads(b.params(), s);
            b.step(&gb, 0.01).unwrap();
        }
        for ((_, va), (_, vb)) in a.params().iter().zip(b.params()) {
            let (x, y) = (
                va.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                vb.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(x, y, "{kind:?}");
        }
        // Weights file: PyTorch keys only, readable by candle/safetensors.
        let raw = candle_core::safetensors::load(dir.path().join("last.safetensors"), &Device::Cpu).unwrap();
        let mut keys: Vec<&String> = raw.keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["fc.bias", "fc.weight"]);
        assert_eq!(raw["fc.weight"].dtype(), DType::F32);
    }
}

#[test]
fn damaged_checkpoint_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let folder = RunFolder::create(dir.path(), false).unwrap();
    let p = model();
    let opt = Optim::from_config(&TrainConfig::default(), model());
    folder.save_checkpoint("best", &weights(&p), &opt.state_tensors().unwrap(), &TrainState::default()).unwrap();
    assert!(folder.load_checkpoint("best").is_ok());
    // A weights file from another save (as if the run died between writes).
    let other: HashMap<String, Tensor> =
        [("fc.bias".to_string(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())].into();
    candle_core::safetensors::save(&other, dir.path().join("best.safetensors")).unwrap();
    let e = folder.load_checkpoint("best").unwrap_err();
    assert_eq!(codes(&e), vec![Code::WeightFile]);
    assert!(e.to_string().contains("does not match"), "{e}");
    std::fs::write(dir.path().join("best.state.json"), b"{ not json").unwrap();
    assert_eq!(codes(&folder.load_checkpoint("best").unwrap_err()), vec![Code::DataInvalid]);
}

#[test]
fn metrics_append_read_and_truncate_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let folder = RunFolder::create(dir.path(), false).unwrap();
    assert!(folder.read_metrics().unwrap().is_empty());
    for e in 0..5 {
        folder.append_metrics(&metrics(e)).unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().all(|l| l.starts_with('{') && l.ends_with('}')));
    let back = folder.read_metrics().unwrap();
    assert_eq!(back.len(), 5);
    for (b, m) in back.iter().zip((0..5).map(metrics)) {
        // serde_json parses floats to within an ulp (exact only with its `float_roundtrip` feature).
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs().max(1.0);
        assert_eq!(
            (b.epoch, b.examples, b.test_certified_err.is_some()),
            (m.epoch, m.examples, m.test_certified_err.is_some())
        );
        assert!(
            close(b.train_clean_err, m.train_clean_err) && close(b.train_robust_loss, m.train_robust_loss),
            "{b:?} vs {m:?}"
        );
        assert!(close(b.test_certified_err.unwrap_or(0.0), m.test_certified_err.unwrap_or(0.0)) && close(b.eps, m.eps));
    }
    // Resuming after 3 completed epochs drops epochs 3 and 4.
    let kept = folder.truncate_metrics(3, 0).unwrap();
    assert_eq!(kept.len(), 3);
    folder.append_metrics(&metrics(3)).unwrap();
    let back = folder.read_metrics().unwrap();
    assert_eq!(back.iter().map(|m| m.epoch).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // A torn last line is skipped; a damaged middle line is an error naming the line.
    let path = dir.path().join("metrics.jsonl");
    let mut t = std::fs::read_to_string(&path).unwrap();
    t.push_str("{\"epoch\": 4, \"eps\"");
    std::fs::write(&path, &t).unwrap();
    assert_eq!(folder.read_metrics().unwrap().len(), 4);
    std::fs::write(&path, format!("garbage\n{t}\n")).unwrap();
    let e = folder.read_metrics().unwrap_err();
    assert_eq!(codes(&e), vec![Code::DataInvalid]);
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn step_records_share_the_file_and_truncate_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let folder = RunFolder::create(dir.path(), false).unwrap();
    // Two epochs of 100 steps, a step record every 50 steps, as the trainer writes them.
    for e in 0..2u64 {
        folder.append_step(&step(100 * e + 50)).unwrap();
        folder.append_step(&step(100 * e + 100)).unwrap();
        folder.append_metrics(&metrics(e as usize)).unwrap();
    }
    let recs = folder.read_records().unwrap();
    assert_eq!(recs.len(), 6);
    assert_eq!(folder.read_metrics().unwrap().len(), 2, "read_metrics returns the epoch records only");
    assert!(matches!(&recs[0], Record::Step(s) if s.step == 50 && s.kind == "step"));
    // Resuming from a checkpoint taken mid-epoch 1 (after step 150): epoch 1's record and step 200 go.
    let kept = folder.truncate_metrics(1, 150).unwrap();
    let steps: Vec<u64> = kept.iter().filter_map(|r| r.step().map(|s| s.step)).collect();
    assert_eq!(steps, vec![50, 100, 150]);
    assert_eq!(folder.read_metrics().unwrap().iter().map(|m| m.epoch).collect::<Vec<_>>(), vec![0]);
    // A NaN loss is written as null and read back as NaN.
    let mut s = step(300);
    s.loss = f64::NAN;
    s.beta = f64::NAN;
    folder.append_step(&s).unwrap();
    let back = folder.read_records().unwrap();
    assert!(matches!(back.last(), Some(Record::Step(s)) if s.loss.is_nan() && s.beta.is_nan()));
}

#[test]
fn epoch_seeds_differ_per_epoch() {
    let seeds: std::collections::HashSet<u64> = (0..100).map(|e| epoch_seed(0, e)).collect();
    assert_eq!(seeds.len(), 100);
}

#[test]
fn config_file_errors_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.yaml");
    std::fs::write(&path, "spec: a.net\nepochs: 5\nbatsh: 10\n").unwrap();
    let e = TrainConfig::load(&path).unwrap_err();
    let Error::Input(ds) = &e else { panic!("{e}") };
    assert_eq!(ds[0].code, Code::BadOption);
    assert!(ds[0].message.contains("line 3, column 1") && ds[0].message.contains("`batsh`"), "{}", ds[0].message);
    assert!(ds[0].help.as_deref().unwrap_or("").contains("did you mean `batch`?"));
    let rendered = ds[0].render(false);
    assert!(rendered.contains("batsh: 10") && rendered.contains("E0106"), "{rendered}");
    let missing = TrainConfig::load(&dir.path().join("nope.yaml")).unwrap_err();
    assert_eq!(missing.exit_code(), 2);

    std::fs::write(&path, "spec: a.net\nepochs: 5\nbatch: 10\n").unwrap();
    let mut cfg = TrainConfig::load(&path).unwrap();
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: TrainOverrides,
    }
    let cli =
        Cli::try_parse_from(["train", "--batch", "64", "--eps", "0.3", "--eps-start", "0.4", "--proj", "0"]).unwrap();
    cli.o.apply(&mut cfg);
    assert_eq!((cfg.epochs, cfg.batch, cfg.eps, cfg.proj), (5, 64, 0.3, None));
    let e = cfg.validate().unwrap_err();
    assert!(e.to_string().contains("`eps_start` (0.4) is larger than `eps` (0.3)"), "{e}");
    // The help text of every flag is there.
    let help = <Cli as clap::CommandFactory>::command().render_long_help().to_string();
    for flag in [
        "--epochs",
        "--eps-start",
        "--bounded <true|false>",
        "--proj",
        "--optimizer",
        "--mode",
        "--data-dir",
        "--test-limit",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[test]
fn charts_are_written_as_png() {
    let dir = tempfile::tempdir().unwrap();
    let ms: Vec<Record> = (0..20).map(|e| Record::Epoch(metrics(e))).collect();
    let p = dir.path().join("metrics.png");
    plot_metrics(&ms, &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(png_size(&bytes), (1000, 1180));
    // With step records: an extra panel of batch errors, loss and schedules per step.
    let mut mixed: Vec<Record> = (0..2000).step_by(50).map(|s| Record::Step(step(s))).collect();
    mixed.extend((0..20).map(|e| Record::Epoch(metrics(e))));
    plot_metrics(&mixed, &dir.path().join("steps.png")).unwrap();
    // Degenerate inputs still draw.
    plot_metrics(&[], &dir.path().join("empty.png")).unwrap();
    plot_metrics(&ms[..1], &dir.path().join("one.png")).unwrap();
    plot_metrics(&mixed[..1], &dir.path().join("one_step.png")).unwrap();

    let mut chart = SeriesChart::new(
        "robust error per cascade stage",
        (1..=4).map(|i| format!("stage {i}")).collect(),
        vec![
            Series::new("certified robust error", vec![0.42, 0.31, 0.27, 0.25]),
            Series::new("clean error", vec![0.2, 0.22, 0.24, 0.26]),
        ],
    );
    chart.kind = ChartKind::Bars;
    chart.percent = true;
    chart.x_label = "stage".into();
    chart.y_label = "error (%)".into();
    let p = dir.path().join("cascade.png");
    plot_series(&chart, &p).unwrap();
    assert_eq!(png_size(&std::fs::read(&p).unwrap()), (1000, 560));
    chart.kind = ChartKind::Line;
    plot_series(&chart, &dir.path().join("cascade_line.png")).unwrap();
    if let Ok(keep) = std::env::var("DUALNET_KEEP_PLOTS") {
        for f in ["metrics.png", "empty.png", "one.png", "cascade.png", "cascade_line.png"] {
            std::fs::copy(dir.path().join(f), std::path::Path::new(&keep).join(f)).unwrap();
        }
    }
}

/// The interrupt flag is process-wide: the tests that set it take turns.
static FLAG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn interrupt_flag() {
    let _turn = FLAG.lock().unwrap_or_else(|e| e.into_inner());
    interrupt::install().unwrap();
    interrupt::install().unwrap();
    interrupt::clear();
    assert!(!interrupt::requested());
    interrupt::request();
    assert!(interrupt::requested());
    interrupt::clear();
    assert!(!interrupt::requested());
}

/// A checkpoint written mid-epoch (the path Ctrl-C and the timed checkpoints share) resumes exactly: a run stopped
/// after its first step and resumed ends with the same weights as an uninterrupted one, and a run that writes a
/// timed checkpoint after every step (`checkpoint_minutes` tiny) ends with the same weights as one that never does.
#[test]
fn mid_epoch_checkpoints_resume_exactly() {
    use dualnet::check::check_source;
    use dualnet::run::train::config::{Init, Method};
    use dualnet::run::train::trainer::train;
    let _turn = FLAG.lock().unwrap_or_else(|e| e.into_inner());
    const SPEC: &str = "network tiny { input x: [1, 28, 28]  c1 = conv2d(x, out=4, kernel=4, stride=4, padding=0)  r1 = relu(c1)  f = flatten(r1)  l1 = linear(f, out=20)  r2 = relu(l1)  l2 = linear(r2, out=10)  output l2 }";
    let graph = || check_source("tiny.net", SPEC).graph.expect("spec");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mnist");
    common::write_mnist_subset(&data, 0..150, 9000..9020);
    let cfg = |minutes: f64| TrainConfig {
        spec: Some("tiny.net".into()),
        data_dir: Some(data.clone()),
        limit: Some(150),
        test_limit: 20,
        epochs: 2,
        batch: 50,
        method: Method::CrownIbp,
        init: Init::Ibp,
        eps: 0.1,
        eps_start: 0.0,
        eps_schedule_epochs: 1,
        eps_ramp: dualnet::run::train::config::EpsRamp::Smooth,
        kappa_start: Some(1.0),
        kappa: 0.5,
        beta_start: 1.0,
        beta: 0.0,
        reg_lambda: 0.5,
        proj: None,
        step_metrics_every: 1,
        checkpoint_minutes: minutes,
        ..TrainConfig::default()
    };
    let load = |dir: &std::path::Path| {
        let m = candle_core::safetensors::load(dir.join("weights.safetensors"), &Device::Cpu).unwrap();
        let mut keys: Vec<_> = m.keys().cloned().collect();
        keys.sort();
        keys.iter().flat_map(|k| m[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect::<Vec<f32>>()
    };
    let straight = tmp.path().join("straight");
    train(&cfg(0.0), graph(), &straight, false, false).expect("straight run");
    let timed = tmp.path().join("timed");
    train(&cfg(1e-9), graph(), &timed, false, false).expect("run with a checkpoint after every step");
    assert_eq!(load(&straight), load(&timed), "timed checkpoints changed the run");

    // Stopped after the first step of epoch 1: `last` is a mid-epoch checkpoint.
    let split = tmp.path().join("split");
    interrupt::clear();
    interrupt::request();
    let e = train(&cfg(0.0), graph(), &split, false, false).unwrap_err();
    interrupt::clear();
    assert!(e.to_string().contains("interrupted at epoch 1 batch 1"), "{e}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("last.state.json")).unwrap()).unwrap();
    assert_eq!((state["epoch"].as_u64(), state["batch_in_epoch"].as_u64()), (Some(0), Some(1)));
    train(&cfg(0.0), graph(), &split, true, false).expect("resumed");
    assert_eq!(load(&straight), load(&split), "resuming mid-epoch is not exact");
    // The metrics of the resumed run: one step record per step (3 per epoch), each once, and both epochs.
    let recs = RunFolder::create(&split, true).unwrap().read_records().unwrap();
    let steps: Vec<u64> = recs.iter().filter_map(|r| r.step().map(|s| s.step)).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    let epochs = RunFolder::create(&split, true).unwrap().read_metrics().unwrap();
    assert_eq!(epochs.len(), 2);
    assert!(epochs.iter().all(|m| m.eval_bound.as_deref() == Some("crown") && m.eval_eps == Some(0.1)));
}

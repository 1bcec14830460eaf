//! The run folder of `dualnet train --out DIR`: everything a run writes, each file written atomically
//! (temp file + rename), so an interrupted run never leaves a half-written file behind.
//!
//! ```text
//! DIR/config.yaml              the full configuration (defaults, config file and flags merged)
//! DIR/last.safetensors         weights after the last completed epoch (keys NODE.weight, NODE.bias: PyTorch-readable)
//! DIR/last.optim.safetensors   optimizer state (moments, momentum buffers, step counts)
//! DIR/last.state.json          TrainState: epochs done, steps, best metric, seed, ε, lr, file checksums
//! DIR/best.*                   the same three for the epoch with the lowest test error
//! DIR/metrics.jsonl            one JSON object per line, appended and flushed: an EpochMetrics after each epoch,
//!                              and a StepMetrics (`"kind": "step"`) every `step_metrics_every` steps
//! ```
//!
//! A checkpoint is three files; `NAME.state.json` is written last and records a checksum of the other two, so a
//! run killed between the writes is detected on load instead of resuming from mismatched files.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Deserializer, Serialize};

use super::config::TrainConfig;
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Error, Result};
use crate::weights::{save_tensors, write_atomic};

/// Where a run stands, saved beside each checkpoint (`NAME.state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainState {
    /// Epochs completed; a resumed run starts at epoch index `epoch` (0-based).
    pub epoch: usize,
    /// Optimizer steps taken over the whole run.
    pub step: u64,
    /// Batches of epoch `epoch` already done when the checkpoint was saved mid-epoch (after Ctrl-C); 0 at an
    /// epoch boundary. The per-epoch shuffle is derived from [`epoch_seed`], so the same batches can be skipped.
    pub batch_in_epoch: usize,
    /// The lowest test error seen so far (certified error when evaluated, else clean error).
    pub best_metric: Option<f64>,
    /// The epoch (0-based) that reached `best_metric`.
    pub best_epoch: Option<usize>,
    /// The run's seed (`seed` of the config); per-epoch random streams come from [`epoch_seed`].
    pub seed: u64,
    /// ε of the last completed step.
    pub eps: f64,
    /// Learning rate of the last completed step.
    pub lr: f64,
    /// FNV-1a 64 checksum of `NAME.safetensors` (hex), filled in by [`RunFolder::save_checkpoint`].
    pub weights_checksum: String,
    /// FNV-1a 64 checksum of `NAME.optim.safetensors` (hex).
    pub optim_checksum: String,
    /// Format version of this file.
    pub version: u32,
}

impl Default for TrainState {
    fn default() -> Self {
        TrainState {
            epoch: 0,
            step: 0,
            batch_in_epoch: 0,
            best_metric: None,
            best_epoch: None,
            seed: 0,
            eps: 0.0,
            lr: 0.0,
            weights_checksum: String::new(),
            optim_checksum: String::new(),
            version: 1,
        }
    }
}

/// A seed for the random stream of one epoch (shuffling, projections, augmentation), derived from the run's seed
/// with splitmix64, so a resumed run draws exactly what an uninterrupted one would.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one epoch measured; one line of `metrics.jsonl`. Error rates are fractions in [0, 1]. A NaN (e.g. a
/// diverged loss) is written as `null` and read back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 0-based epoch index.
    pub epoch: usize,
    /// Training ε of the epoch (its last step's, for the per-step ramp).
    pub eps: f64,
    pub lr: f64,
    /// Mean training loss (robust cross-entropy in `robust` mode; the mode's loss otherwise).
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_robust_loss: f64,
    /// Fraction of training examples not certified (or, in `pgd` mode, broken by PGD) at the epoch's ε.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_robust_err: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_clean_err: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_clean_err: f64,
    /// Certified error on the first `test_limit` test images at the final ε (`None` when skipped).
    #[serde(default)]
    pub test_certified_err: Option<f64>,
    /// Wall-clock seconds of the epoch (training and evaluation).
    pub seconds: f64,
    /// Training examples seen in the epoch.
    pub examples: usize,
    /// The bound and ε of `test_certified_err` (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_bound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_eps: Option<f64>,
}

/// The running values of the last `step_metrics_every` steps; one line of `metrics.jsonl` with `"kind": "step"`.
/// Losses and errors are means over those steps' examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Always `"step"` (what tells the two kinds of line apart).
    pub kind: String,
    /// Optimizer steps done in the run (after this one).
    pub step: u64,
    /// 0-based epoch, and the position in the run in epochs (`epoch + fraction of the epoch done`).
    pub epoch: usize,
    pub at: f64,
    /// The schedules at this step (`beta` is null, read as NaN, unless the method is `crown-ibp`).
    #[serde(deserialize_with = "f64_or_nan")]
    pub eps: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kappa: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub beta: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Mean loss, and the fractions of the batches' examples not certified (PGD: broken) and misclassified.
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub batch_robust_err: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub batch_clean_err: f64,
    /// Mean value of the warm-up regularisers (0 when off).
    #[serde(deserialize_with = "f64_or_nan")]
    pub reg: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Epoch(EpochMetrics),
    Step(StepMetrics),
}

impl Record {
    /// The epoch record, if this is one.
    pub fn epoch(&self) -> Option<&EpochMetrics> {
        match self {
            Record::Epoch(m) => Some(m),
            Record::Step(_) => None,
        }
    }

    /// The step record, if this is one.
    pub fn step(&self) -> Option<&StepMetrics> {
        match self {
            Record::Step(m) => Some(m),
            Record::Epoch(_) => None,
        }
    }

    fn parse(line: &str) -> serde_json::Result<Record> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("step") {
            Ok(Record::Step(serde_json::from_value(v)?))
        } else {
            Ok(Record::Epoch(serde_json::from_value(v)?))
        }
    }

    fn to_line(&self) -> serde_json::Result<String> {
        match self {
            Record::Epoch(m) => serde_json::to_string(m),
            Record::Step(m) => serde_json::to_string(m),
        }
    }
}

fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// FNV-1a, 64 bits, as 16 hex digits.
fn checksum(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn file_checksum(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    Ok(checksum(&bytes))
}

/// A loaded checkpoint: weights (`NODE.weight`, ...), optimizer state, and where the run stood.
pub type Checkpoint = (HashMap<String, Tensor>, HashMap<String, Tensor>, TrainState);

/// A training run's output folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    path: PathBuf,
}

pub const CONFIG_FILE: &str = "config.yaml";
pub const METRICS_FILE: &str = "metrics.jsonl";

impl RunFolder {
    /// Open `path` for a new run (created if missing; refused if it exists and is not empty) or, with `resume`,
    /// for continuing the run in it (it must hold `last.state.json`).
    pub fn create(path: &Path, resume: bool) -> Result<RunFolder> {
        let shown = path.display();
        if path.exists() && !path.is_dir() {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("run folder `{shown}` is a file"))
                    .help("give a folder with `--out`"),
            ));
        }
        let folder = RunFolder { path: path.to_path_buf() };
        if resume {
            if !folder.has_checkpoint("last") {
                return Err(Error::input(
                    Diagnostic::new(Code::BadOption, format!("nothing to resume in `{shown}`"))
                        .help(format!("`{shown}` has no `last.state.json`; drop `--resume` to start a new run there")),
                ));
            }
            return Ok(folder);
        }
        if path.exists() {
            let mut entries = std::fs::read_dir(path).map_err(|e| Error::io("cannot read folder", path, e))?;
            if entries.next().is_some() {
                return Err(Error::input(
                    Diagnostic::new(Code::BadOption, format!("run folder `{shown}` already exists and is not empty"))
                        .help("use --resume or another --out"),
                ));
            }
        } else {
            std::fs::create_dir_all(path).map_err(|e| Error::io("cannot create folder", path, e))?;
        }
        Ok(folder)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of a file in the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Write `config.yaml`.
    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        write_atomic(&self.file(CONFIG_FILE), cfg.to_yaml().as_bytes())
    }

    /// Read `config.yaml` back (for `--resume`).
    pub fn read_config(&self) -> Result<TrainConfig> {
        TrainConfig::load(&self.file(CONFIG_FILE))
    }

    /// Whether checkpoint `name` (`last`, `best`) has been saved.
    pub fn has_checkpoint(&self, name: &str) -> bool {
        self.file(&format!("{name}.state.json")).is_file()
    }

    /// Save checkpoint `name`: `NAME.safetensors` (weights only), `NAME.optim.safetensors`, then
    /// `NAME.state.json` (with the checksums of the other two) — each atomically.
    pub fn save_checkpoint(
        &self,
        name: &str,
        weights: &HashMap<String, Tensor>,
        optim_state: &HashMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<()> {
        let wpath = self.file(&format!("{name}.safetensors"));
        let opath = self.file(&format!("{name}.optim.safetensors"));
        save_tensors(weights, &wpath)?;
        save_tensors(optim_state, &opath)?;
        let mut state = state.clone();
        state.weights_checksum = file_checksum(&wpath)?;
        state.optim_checksum = file_checksum(&opath)?;
        let spath = self.file(&format!("{name}.state.json"));
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::io("cannot write", &spath, std::io::Error::other(e.to_string())))?;
        write_atomic(&spath, format!("{json}\n").as_bytes())
    }

    /// Load checkpoint `name` (tensors on the CPU): weights, optimizer state and [`TrainState`]. Files that do
    /// not match the checksums in `NAME.state.json` (a run killed while saving) are reported.
    pub fn load_checkpoint(&self, name: &str) -> Result<Checkpoint> {
        let spath = self.file(&format!("{name}.state.json"));
        let text = std::fs::read_to_string(&spath).map_err(|e| Error::io("cannot read checkpoint", &spath, e))?;
        let state: TrainState = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                Diagnostic::new(Code::DataInvalid, format!("`{}` is not a valid training state: {e}", spath.display()))
                    .help("the run folder is damaged; start a new run with another `--out`"),
            )
        })?;
        let weights = self.load_checked(&format!("{name}.safetensors"), &state.weights_checksum)?;
        let optim = self.load_checked(&format!("{name}.optim.safetensors"), &state.optim_checksum)?;
        Ok((weights, optim, state))
    }

    fn load_checked(&self, file: &str, expected: &str) -> Result<HashMap<String, Tensor>> {
        let path = self.file(file);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read checkpoint", &path, e))?;
        if !expected.is_empty() && checksum(&bytes) != expected {
            return Err(Error::input(
                Diagnostic::new(Code::WeightFile, format!("`{}` does not match its checkpoint state", path.display()))
                    .help("the run was stopped while saving this checkpoint; resume from `best` or start a new run"),
            ));
        }
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            Error::input(
                Diagnostic::new(Code::WeightFile, format!("`{}` is not a valid safetensors file", path.display()))
                    .help(format!("{e}; the run folder is damaged")),
            )
        })
    }

    /// Append one epoch's line to `metrics.jsonl` and flush it to disk.
    pub fn append_metrics(&self, m: &EpochMetrics) -> Result<()> {
        self.append_record(&Record::Epoch(m.clone()))
    }

    /// Append one per-step line to `metrics.jsonl` and flush it to disk.
    pub fn append_step(&self, m: &StepMetrics) -> Result<()> {
        self.append_record(&Record::Step(m.clone()))
    }

    fn append_record(&self, r: &Record) -> Result<()> {
        let path = self.file(METRICS_FILE);
        let line = r.to_line().map_err(|e| Error::io("cannot write", &path, std::io::Error::other(e.to_string())))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("cannot write", &path, e))?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(|e| Error::io("cannot write", &path, e))?;
        f.flush().map_err(|e| Error::io("cannot write", &path, e))?;
        f.sync_data().map_err(|e| Error::io("cannot write", &path, e))
    }

    /// Every record of `metrics.jsonl`, both kinds, in file order (none if the file is missing). A torn last line
    /// (a run killed while writing it) is skipped.
    pub fn read_records(&self) -> Result<Vec<Record>> {
        let path = self.file(METRICS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match Record::parse(line) {
                Ok(m) => out.push(m),
                Err(_) if i + 1 == lines.len() && !complete => {}
                Err(e) => {
                    return Err(Error::input(
                        Diagnostic::new(Code::DataInvalid, format!("`{}` line {}: {e}", path.display(), i + 1)).help(
                            "each line must be one epoch's or one step's metrics as JSON; remove the damaged line",
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The epoch records of `metrics.jsonl`.
    pub fn read_metrics(&self) -> Result<Vec<EpochMetrics>> {
        Ok(self.read_records()?.iter().filter_map(Record::epoch).cloned().collect())
    }

    /// Keep only the records of what the checkpoint holds: the epoch records of the first `epochs_done` epochs
    /// and the step records up to step `steps_done` (on resume, later ones are dropped, as that part of the run
    /// runs again). Returns the records kept.
    pub fn truncate_metrics(&self, epochs_done: usize, steps_done: u64) -> Result<Vec<Record>> {
        let kept: Vec<Record> = self
            .read_records()?
            .into_iter()
            .filter(|r| match r {
                Record::Epoch(m) => m.epoch < epochs_done,
                Record::Step(m) => m.step <= steps_done,
            })
            .collect();
        let path = self.file(METRICS_FILE);
        let mut text = String::new();
        for r in &kept {
            let line =
                r.to_line().map_err(|e| Error::io("cannot write", &path, std::io::Error::other(e.to_string())))?;
            text.push_str(&line);
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_and_epoch_seed_are_stable() {
        assert_eq!(checksum(b""), "cbf29ce484222325");
        assert_eq!(checksum(b"a"), "af63dc4c8601ec8c");
        assert_ne!(epoch_seed(0, 0), epoch_seed(0, 1));
        assert_ne!(epoch_seed(0, 1), epoch_seed(1, 0));
        assert_eq!(epoch_seed(7, 3), epoch_seed(7, 3));
    }

    #[test]
    fn nan_metrics_round_trip_as_null() {
        let m = EpochMetrics {
            epoch: 0,
            eps: 0.01,
            lr: 1e-3,
            train_robust_loss: f64::NAN,
            train_robust_err: 1.0,
            train_clean_err: 0.5,
            test_clean_err: 0.4,
            test_certified_err: None,
            seconds: 1.5,
            examples: 100,
            eval_bound: None,
            eval_eps: None,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("\"train_robust_loss\":null"), "{s}");
        let back: EpochMetrics = serde_json::from_str(&s).unwrap();
        assert!(back.train_robust_loss.is_nan());
        assert_eq!(back.test_certified_err, None);
    }
}

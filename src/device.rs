//! Where tensors live: `--device cpu|cuda[:N]` (and `device:` in a training config), parsed in one place and
//! opened into a candle [`Device`].
//!
//! CUDA needs a build with the cargo feature `cuda` (`cargo build --release --features cuda`, or
//! `scripts/build-cuda.sh` on a machine without a system CUDA toolkit). Without it, or when the GPU cannot be
//! opened, [`DeviceSpec::open`] returns a [`Code::DeviceUnavailable`] diagnostic; nothing falls back to the CPU.
//!
//! On the CPU a batch is split across one worker thread per core (independent examples parallelise well, candle's
//! kernels at these sizes do not); on a GPU the whole batch runs in one thread, since the kernels parallelise
//! there ([`workers`]).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Context, Error, Result};

/// A device as the user names it: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!("unknown device `{s}`: expected `cpu`, `cuda` or `cuda:N` (N = GPU number)")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether this binary was built with CUDA support (the cargo feature `cuda`).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceSpec {
    /// Open the device. `Cuda` without the `cuda` feature, or a GPU that cannot be opened, is a
    /// [`Code::DeviceUnavailable`] error.
    pub fn open(&self) -> Result<Device> {
        match *self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n, self),
        }
    }

    /// The diagnostic for a device this build cannot use at all (CUDA without the `cuda` feature), found without
    /// opening anything, so that configs are checked before a run starts.
    pub fn not_built(&self) -> Option<Diagnostic> {
        match self {
            DeviceSpec::Cuda(_) if !CUDA_BUILT => Some(
                Diagnostic::new(
                    Code::DeviceUnavailable,
                    format!("`--device {self}` needs CUDA support, but this dualnet was built without it"),
                )
                .help(
                    "rebuild with `cargo build --release --features cuda` (a CUDA toolkit installed), or with \
                     `scripts/build-cuda.sh` (no toolkit needed); or use `--device cpu`",
                ),
            ),
            _ => None,
        }
    }

    /// [`DeviceSpec::open`], then seed the device's own random generator (cuRAND on CUDA), from which the bounds
    /// draw their projections on a GPU. The CPU is left alone: there the bounds draw from seeded `StdRng`s.
    pub fn open_seeded(&self, seed: u64) -> Result<Device> {
        let d = self.open()?;
        if !d.is_cpu() {
            d.set_seed(seed).context(|| format!("seeding the random generator of `{self}`"))?;
        }
        Ok(d)
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize, spec: &DeviceSpec) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| {
        // The driver's message, without the backtrace candle attaches under RUST_BACKTRACE.
        let e = match e {
            candle_core::Error::WithBacktrace { inner, .. } => *inner,
            e => e,
        };
        Error::input(
            Diagnostic::new(Code::DeviceUnavailable, format!("cannot open the CUDA device `{spec}`: {e}")).help(
                "check that `nvidia-smi` lists the GPU and that N is below the number of GPUs; the run-time \
                 libraries (libcuda.so.1 from the driver, cuBLAS, cuRAND, cudart 13) must be on LD_LIBRARY_PATH \
                 (README, section CUDA); or use `--device cpu`",
            ),
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_n: usize, spec: &DeviceSpec) -> Result<Device> {
    Err(Error::input(spec.not_built().unwrap_or_else(|| Diagnostic::new(Code::DeviceUnavailable, "no CUDA"))))
}

/// `cpu` or `cuda:N`, for reports.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Worker threads to split a batch across: one per core on the CPU, one on a GPU (its kernels parallelise).
pub fn workers(device: &Device) -> usize {
    if device.is_cpu() {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, d) in [("cpu", DeviceSpec::Cpu), ("cuda", DeviceSpec::Cuda(0)), ("CUDA:3", DeviceSpec::Cuda(3))] {
            assert_eq!(s.parse::<DeviceSpec>(), Ok(d));
        }
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
        assert_eq!(DeviceSpec::Cpu.to_string().parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_opens_and_uses_every_core() {
        let d = DeviceSpec::Cpu.open().expect("cpu");
        assert!(d.is_cpu());
        assert!(workers(&d) >= 1);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_coded_error() {
        match DeviceSpec::Cuda(0).open() {
            Err(Error::Input(ds)) => {
                assert_eq!(ds[0].code, Code::DeviceUnavailable);
                assert!(ds[0].help.as_deref().unwrap_or("").contains("--features cuda"));
            }
            other => panic!("expected a diagnostic, got {other:?}"),
        }
    }
}

//! The command line: one file per subcommand. Exit codes: 0 success, 1 the input has errors, 2 usage or I/O,
//! 3 an internal error (a bug to report, e.g. a certificate an attack contradicts).

use crate::error::{Error, Result};

pub mod attack;
pub mod bench;
pub mod bounds;
pub mod cascade;
pub mod certify;
pub mod check;
pub mod compile;
pub mod import;
pub mod init;
pub mod ops;
pub mod train;
pub mod verify;

pub use crate::check::{load_graph, read_spec};

/// Whether standard error takes colour.
pub fn color() -> bool {
    crate::diagnostics::stderr_color()
}

/// Print an error the way every command does, and return its exit code.
pub fn report(e: &Error) -> i32 {
    match e {
        Error::Input(diags) => {
            for d in diags {
                eprintln!("{}", d.render(color()));
            }
        }
        Error::Internal(d) => eprintln!("{}", d.render(color())),
        other => eprintln!("error: {other}"),
    }
    e.exit_code()
}

/// `--dtype f32|f64`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F64,
}

/// The floating-point inference a certificate also covers (`--deployed`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployedArg {
    /// An f32 forward pass, in any summation order, with or without FMA (PyTorch, ONNX Runtime).
    F32,
    /// An f64 forward pass.
    F64,
    /// None: the network in real arithmetic only.
    None,
}

impl DeployedArg {
    pub fn dtype(self) -> Option<candle_core::DType> {
        match self {
            DeployedArg::F32 => Some(candle_core::DType::F32),
            DeployedArg::F64 => Some(candle_core::DType::F64),
            DeployedArg::None => None,
        }
    }
}

impl DTypeArg {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeArg::F32 => candle_core::DType::F32,
            DTypeArg::F64 => candle_core::DType::F64,
        }
    }
}

/// The data set's image shape must be the spec's input shape.
pub fn check_data_shape(model: &crate::dual::Model, data: &crate::data::Dataset) -> Result<()> {
    let want = model.graph.input_shape();
    if data.shape.as_slice() != want.as_slice() {
        return Err(Error::input(
            crate::diagnostics::Diagnostic::new(
                crate::diagnostics::Code::DataInvalid,
                format!("`{}` images are {:?} but the spec's input is {:?}", data.name, data.shape, want),
            )
            .help("use a spec whose `input` matches the data set"),
        ));
    }
    Ok(())
}

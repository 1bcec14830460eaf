//! The command line: one file per subcommand. Exit codes: 0 success, 1 the input has errors, 2 usage or I/O,
//! 3 an internal error (a bug to report, e.g. a certificate an attack contradicts).

use std::io::IsTerminal;
use std::path::Path;

use crate::check::{check_source, Checked};
use crate::diagnostics::Diagnostic;
use crate::error::{Error, Result};
use crate::ir::Graph;

pub mod attack;
pub mod bench;
pub mod bounds;
pub mod cascade;
pub mod certify;
pub mod check;
pub mod compile;
pub mod init;
pub mod ops;
pub mod train;

/// Read a spec file as UTF-8 text.
pub fn read_spec(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read spec", path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::io(
            "cannot read spec",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")),
        )
    })
}

/// Read and check a spec; warnings are printed, errors returned.
pub fn load_graph(path: &Path) -> Result<Graph> {
    let text = read_spec(path)?;
    let Checked { graph, diagnostics, .. } = check_source(&path.display().to_string(), &text);
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) = diagnostics.into_iter().partition(|d| d.is_error());
    for w in &warnings {
        eprintln!("{}", w.render(color()));
    }
    match graph {
        Some(g) if errors.is_empty() => Ok(g),
        _ => Err(Error::Input(errors)),
    }
}

pub fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
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

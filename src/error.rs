//! Errors of the running tools (weights, data, tensors). Each converts to a coded [`Diagnostic`] so that
//! a user never sees a raw candle error or a Rust type name; [`Error::exit_code`] is the process exit status.

use crate::diagnostics::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's input has errors (spec, weights, inputs, data): exit 1.
    #[error("{}", .0.first().map(|d| d.message.clone()).unwrap_or_default())]
    Input(Vec<Diagnostic>),
    /// A file could not be read or written: exit 2.
    #[error("{what} `{path}`: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    /// Bad command-line usage: exit 2.
    #[error("{0}")]
    Usage(String),
    /// A tensor operation failed; `context` says what the user was doing.
    #[error("{context}: {source}")]
    Tensor { context: String, source: candle_core::Error },
    /// A bug: results that contradict each other (a certified example that an attack breaks). Exit 3; the
    /// diagnostic names the example and asks for a report.
    #[error("{}", .0.message)]
    Internal(Box<Diagnostic>),
    /// The run was interrupted or stopped on purpose (e.g. a NaN loss); the message says what was kept.
    #[error("{0}")]
    Stopped(String),
    /// A computation given a deadline ([`crate::dual::bounds::Options::deadline`]) stopped at it: the caller
    /// answers `timeout` (never a bound).
    #[error("the time limit was reached")]
    Deadline,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn input(d: Diagnostic) -> Self {
        Error::Input(vec![d])
    }
    pub fn io(what: &'static str, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { what, path: path.as_ref().display().to_string(), source }
    }
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) | Error::Tensor { .. } | Error::Stopped(_) | Error::Deadline => 1,
            Error::Io { .. } | Error::Usage(_) => 2,
            Error::Internal(_) => 3,
        }
    }
}

/// Attach what the user was doing to a candle error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, candle_core::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Tensor { context: what(), source })
    }
}

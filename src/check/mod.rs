//! The checker: parse, lower, run the lint passes, and collect every diagnostic before reporting.

use std::sync::Arc;

use std::path::Path;

use crate::diagnostics::{Code, Diagnostic, SourceFile};
use crate::error::{Error, Result};
use crate::ir::lower::lower;
use crate::ir::Graph;
use crate::syntax::parse;

pub mod unused;

/// The result of checking one source file.
pub struct Checked {
    pub source: Arc<SourceFile>,
    /// The graph, when there are no errors (warnings allowed).
    pub graph: Option<Graph>,
    /// Errors and warnings in source order, each with its source attached.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.is_error())
    }
}

/// Check a spec given as text.
pub fn check_source(name: &str, text: &str) -> Checked {
    let source = SourceFile::new(name, text);
    let mut diagnostics = Vec::new();
    let mut graph = None;
    match parse(text) {
        Err(d) => diagnostics.push(d),
        Ok(file) => {
            let lowered = lower(&file);
            diagnostics.extend(lowered.diagnostics.iter().cloned());
            diagnostics.extend(unused::unused_nodes(&lowered));
            let errors = diagnostics.iter().any(|d| d.is_error());
            if let (false, Some(input), Some((output, _))) = (errors, lowered.input, lowered.output) {
                let g = Graph { name: lowered.name, dag: lowered.dag, input, output };
                diagnostics.extend(large_model(&g, lowered.network_span));
                graph = Some(g);
            }
        }
    }
    diagnostics.sort_by_key(|d| (d.labels.first().map(|l| l.span.start).unwrap_or(0), d.code.as_str()));
    let diagnostics = diagnostics.into_iter().map(|d| d.with_source(source.clone())).collect();
    Checked { source, graph, diagnostics }
}

/// W0003: the parameters in f32 need more than the available memory (`init`, `train`, `bounds` and `certify`
/// then refuse the work with E0112).
fn large_model(g: &Graph, span: crate::syntax::ast::Span) -> Option<Diagnostic> {
    let params = g.parameter_count();
    let bytes = 4.0 * params as f64;
    let avail = crate::memory::available_bytes()? as f64;
    (bytes > avail).then(|| {
        Diagnostic::new(
            Code::LargeModel,
            format!("network `{}` needs {} for its {params} parameters in f32", g.name, crate::memory::human(bytes)),
        )
        .label(span, "this network")
        .help(format!(
            "this machine has {} available; make the layers narrower (`init`, `train`, `bounds` and `certify` refuse work that does not fit)",
            crate::memory::human(avail)
        ))
    })
}

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
        eprintln!("{}", w.render(crate::diagnostics::stderr_color()));
    }
    match graph {
        Some(g) if errors.is_empty() => Ok(g),
        _ => Err(Error::Input(errors)),
    }
}

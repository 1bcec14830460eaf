//! The checker: parse, lower, run the lint passes, and collect every diagnostic before reporting.

use std::sync::Arc;

use crate::diagnostics::{Diagnostic, SourceFile};
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
                graph = Some(Graph { name: lowered.name, dag: lowered.dag, input, output });
            }
        }
    }
    diagnostics.sort_by_key(|d| (d.labels.first().map(|l| l.span.start).unwrap_or(0), d.code.as_str()));
    let diagnostics = diagnostics.into_iter().map(|d| d.with_source(source.clone())).collect();
    Checked { source, graph, diagnostics }
}

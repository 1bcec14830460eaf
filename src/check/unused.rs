//! Lint: nodes whose value never reaches the output (warning `W0001`).

use petgraph::visit::{Bfs, Reversed};

use crate::diagnostics::{Code, Diagnostic};
use crate::ir::lower::Lowered;

pub fn unused_nodes(l: &Lowered) -> Vec<Diagnostic> {
    let Some((out, _)) = l.output else { return Vec::new() };
    let mut live = vec![false; l.dag.node_count()];
    let rev = Reversed(&l.dag);
    let mut bfs = Bfs::new(rev, out);
    while let Some(n) = bfs.next(rev) {
        live[n.index()] = true;
    }
    let mut seen = std::collections::HashSet::new();
    l.dag
        .node_indices()
        .filter(|i| !live[i.index()])
        .filter(|i| seen.insert(l.dag[*i].span.start))
        .map(|i| {
            let n = &l.dag[i];
            Diagnostic::new(Code::UnusedNode, format!("`{}` does not contribute to the output", n.name))
                .label(n.span, "unused")
                .help("remove it, or use it in a later node (a sum can add skip connections)")
        })
        .collect()
}

//! Text and Graphviz renderings of the primal and dual graphs (`dualnet compile --emit primal|dual|dot`).

use std::fmt::Write;

use crate::ir::dual::{dual_name, DualGraph};
use crate::ir::{Graph, NodeKind};
use crate::ops::shape::fmt as fmt_shape;

/// The checked primal graph: one line per node with op, arguments, inputs, shape and weights.
pub fn primal(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "network {}  # {} nodes, definition order = topological order", g.name, g.dag.node_count());
    let mut rows = Vec::new();
    for i in g.order() {
        let n = g.node(i);
        let inputs: Vec<&str> = n.inputs.iter().map(|j| g.node(*j).name.as_str()).collect();
        let call = match n.kind {
            NodeKind::Input => "input".to_string(),
            NodeKind::Op(op) => {
                let mut args = inputs.join(", ");
                for p in op.params() {
                    if let Some(v) = n.attrs.0.get(p.name) {
                        let _ = write!(args, ", {}={v}", p.name);
                    }
                }
                format!("{}({args})", op.name())
            }
        };
        let w: Vec<String> =
            n.weights.iter().map(|w| format!("{}.{} {}", n.name, w.suffix, fmt_shape(&w.shape))).collect();
        rows.push((n.name.clone(), call, fmt_shape(&n.shape), w.join(", ")));
    }
    table(&mut s, &rows);
    let _ = writeln!(s, "  output {}", g.node(g.output).name);
    s
}

fn table(s: &mut String, rows: &[(String, String, String, String)]) {
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
    for (a, b, c, d) in rows {
        let line = format!("  {a:<w0$} = {b:<w1$}  {c:<w2$}  {d}");
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// The emitted dual graph, in execution order (output first).
pub fn dual(g: &Graph, d: &DualGraph) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dual network {}  # reverse topological order; ν_n is the dual variable at the output of n; c = e_y - e_j",
        g.name
    );
    let mut rows = Vec::new();
    for &i in &d.order {
        let n = &d.dag[i];
        let rhs = if n.primal == g.output {
            "-c".to_string()
        } else if n.terms.is_empty() {
            "0  (unused)".to_string()
        } else {
            n.terms.iter().map(|t| t.text.clone()).collect::<Vec<_>>().join(" + ")
        };
        rows.push((n.name.clone(), fmt_shape(&n.shape), rhs, n.objective.clone()));
    }
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    for (name, shape, rhs, objective) in rows {
        let _ = writeln!(s, "  {name:<w0$} {shape:<w1$} = {rhs}");
        for o in objective {
            let _ = writeln!(s, "  {:w0$} {:w1$}   {o}", "", "");
        }
    }
    let _ =
        writeln!(s, "  bound: J(c) = sum of the objective terms above  (a lower bound on c·f(x') over the input set)");
    s
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

/// Graphviz DOT of both graphs side by side: primal edges forward, dual edges reversed.
pub fn dot(g: &Graph, d: &DualGraph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", dot_id(&g.name));
    let _ = writeln!(s, "  rankdir=TB; node [shape=box, fontname=\"monospace\", fontsize=10];");
    let _ = writeln!(s, "  subgraph cluster_primal {{\n    label=\"primal network\"; color=\"#4477aa\";");
    for i in g.order() {
        let n = g.node(i);
        let label = format!("{} = {}\\n{}", n.name, n.kind.name(), fmt_shape(&n.shape));
        let _ = writeln!(s, "    {} [label={}];", dot_id(&format!("p:{}", n.name)), dot_id(&label));
    }
    for e in g.dag.edge_indices() {
        if let Some((a, b)) = g.dag.edge_endpoints(e) {
            let _ = writeln!(
                s,
                "    {} -> {};",
                dot_id(&format!("p:{}", g.node(a).name)),
                dot_id(&format!("p:{}", g.node(b).name))
            );
        }
    }
    let _ = writeln!(
        s,
        "  }}\n  subgraph cluster_dual {{\n    label=\"dual network (edges reversed)\"; color=\"#cc6677\";"
    );
    for &i in &d.order {
        let n = &d.dag[i];
        let rule = g.node(n.primal).kind.op().and_then(|o| o.dual_name()).unwrap_or("input set");
        let label = if n.primal == g.output {
            format!("{} = -c\\n{}", n.name, fmt_shape(&n.shape))
        } else {
            format!("{}\\n{}", n.name, fmt_shape(&n.shape))
        };
        let _ = writeln!(
            s,
            "    {} [label={}, tooltip={}];",
            dot_id(&format!("d:{}", n.name)),
            dot_id(&label),
            dot_id(rule)
        );
    }
    for e in d.dag.edge_indices() {
        if let Some((a, b)) = d.dag.edge_endpoints(e) {
            let from = d.dag[a].primal;
            let rule = g.node(from).kind.op().and_then(|o| o.dual_name()).unwrap_or("");
            let _ = writeln!(
                s,
                "    {} -> {} [label={}, fontsize=8];",
                dot_id(&format!("d:{}", d.dag[a].name)),
                dot_id(&format!("d:{}", d.dag[b].name)),
                dot_id(rule)
            );
        }
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  {} -> {} [style=dashed, label=\"-c\", constraint=false];",
        dot_id(&format!("p:{}", g.node(g.output).name)),
        dot_id(&format!("d:{}", dual_name(g, g.output)))
    );
    let _ = writeln!(s, "}}");
    s
}

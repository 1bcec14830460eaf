//! `dualnet ops`: the op registry — which ops exist, their arguments, and which have dual rules.

use crate::ops::{Default as PDefault, REGISTRY};

pub fn run() {
    for op in REGISTRY {
        let params: Vec<String> = op
            .params()
            .iter()
            .map(|p| match p.default {
                PDefault::Required => p.name.to_string(),
                PDefault::Int(i) => format!("{}={i}", p.name),
                PDefault::Float(x) => format!("{}={x}", p.name),
                PDefault::SameAs(o) => format!("{}={o}", p.name),
            })
            .collect();
        let dual = op.dual_name().map(|d| format!("dual: {d}")).unwrap_or_else(|| "NO DUAL RULE".into());
        println!("{:<12} ({:<34}) {:<24} {}", op.name(), params.join(", "), dual, op.summary());
    }
}

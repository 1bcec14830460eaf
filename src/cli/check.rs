//! `dualnet check SPEC... [--format json]`: parse, build and check every file; print every diagnostic.

use std::path::PathBuf;

use crate::check::check_source;
use crate::diagnostics::JsonDiagnostic;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Spec files (`.net`) to check.
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    /// Output format of the diagnostics.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

pub fn run(args: &Args) -> i32 {
    let mut io_failed = false;
    let (mut errors, mut warnings) = (0usize, 0usize);
    let mut json: Vec<JsonDiagnostic> = Vec::new();
    for path in &args.specs {
        let text = match super::read_spec(path) {
            Ok(t) => t,
            Err(e) => {
                io_failed = true;
                if args.format == Format::Json {
                    json.push(JsonDiagnostic {
                        code: "io",
                        severity: crate::diagnostics::Severity::Error,
                        message: e.to_string(),
                        file: Some(path.display().to_string()),
                        line: None,
                        column: None,
                        help: Some("check the path and that the file is UTF-8 text".into()),
                    });
                } else {
                    eprintln!("error: {e}");
                }
                continue;
            }
        };
        let checked = check_source(&path.display().to_string(), &text);
        for d in &checked.diagnostics {
            if d.is_error() {
                errors += 1;
            } else {
                warnings += 1;
            }
            match args.format {
                Format::Json => json.push(d.to_json()),
                Format::Human => eprintln!("{}", d.render(super::color())),
            }
        }
        if args.format == Format::Human && !checked.has_errors() {
            if let Some(g) = &checked.graph {
                let params = g.parameter_count();
                println!(
                    "{}: ok — network `{}`, {} nodes, {} parameters ({} in f32)",
                    path.display(),
                    g.name,
                    g.dag.node_count(),
                    params,
                    crate::memory::human(4.0 * params as f64)
                );
            }
        }
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json).unwrap_or_else(|_| "[]".into())),
        Format::Human => {
            if errors + warnings > 0 {
                eprintln!("{} file(s) checked: {errors} error(s), {warnings} warning(s)", args.specs.len());
            }
        }
    }
    if io_failed {
        2
    } else if errors > 0 {
        1
    } else {
        0
    }
}

//! Keeps the diagnostic codes, their pages and their specs in step:
//! - every code in `Code::ALL` has a page `docs/codes/<CODE>.md` whose title is `# <CODE>: <title>`;
//! - every front-end code (`E00xx`, `W0xxx`) has exactly one spec `specs/err/<CODE>_<what>.net` whose check
//!   yields that code, and no other code except a cascade listed in `COMPANIONS`;
//! - every page and every spec under `specs/err/` names an existing code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dualnet::check::check_source;
use dualnet::diagnostics::Code;

/// Codes a spec may yield besides its own, because the error cannot occur alone.
/// E0016: a network without an `input` has no tensor to compute from, so the name meant for the input is
/// undefined too (an `output` of a defined node needs an input).
const COMPANIONS: &[(&str, &str)] = &[("E0016", "E0009")];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(file stem, path)` of every file in `dir` with extension `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    v.sort();
    v
}

fn is_front_end(code: &str) -> bool {
    code.starts_with("E00") || code.starts_with('W')
}

fn known_codes() -> BTreeSet<&'static str> {
    Code::ALL.iter().map(|c| c.as_str()).collect()
}

#[test]
fn codes_are_unique_and_well_formed() {
    let mut seen = BTreeSet::new();
    for c in Code::ALL {
        let s = c.as_str();
        assert!(seen.insert(s), "code {s} appears twice in the table");
        let (letter, digits) = s.split_at(1);
        assert!(
            matches!(letter, "E" | "W") && digits.len() == 4 && digits.chars().all(|d| d.is_ascii_digit()),
            "bad code {s}"
        );
        assert_eq!(
            letter == "W",
            c.severity() == dualnet::diagnostics::Severity::Warning,
            "{s}: letter and severity disagree"
        );
        let t = c.title();
        assert!(
            !t.is_empty() && !t.ends_with('.') && t.chars().next().is_some_and(|ch| !ch.is_uppercase()),
            "{s}: title `{t}`"
        );
    }
}

#[test]
fn every_code_has_a_page() {
    let dir = root().join("docs/codes");
    let mut missing = Vec::new();
    for c in Code::ALL {
        let path = dir.join(format!("{}.md", c.as_str()));
        match std::fs::read_to_string(&path) {
            Err(_) => missing.push(c.as_str().to_string()),
            Ok(text) => {
                let first = text.lines().next().unwrap_or("");
                let want = format!("# {}: {}", c.as_str(), c.title());
                assert_eq!(first, want, "{}: the page title differs from the table", path.display());
                for section in ["## What triggers it", "## Example", "## How to fix it"] {
                    assert!(text.contains(section), "{} lacks the section `{section}`", path.display());
                }
                if is_front_end(c.as_str()) {
                    let link = format!("specs/err/{}_", c.as_str());
                    assert!(text.contains(&link), "{} does not link its spec `{link}*.net`", path.display());
                }
            }
        }
    }
    assert!(missing.is_empty(), "codes without a page under docs/codes/: {missing:?}");
}

#[test]
fn every_page_names_a_code() {
    let known = known_codes();
    for (stem, path) in files(&root().join("docs/codes"), "md") {
        if stem == "README" {
            continue;
        }
        assert!(known.contains(stem.as_str()), "{} names no code in the table", path.display());
    }
}

#[test]
fn every_err_spec_names_a_front_end_code() {
    let known = known_codes();
    for (stem, path) in files(&root().join("specs/err"), "net") {
        let (code, rest) = stem.split_once('_').unwrap_or((stem.as_str(), ""));
        assert!(known.contains(code), "{}: `{code}` is not a code", path.display());
        assert!(is_front_end(code), "{}: `{code}` is not a front-end code", path.display());
        assert!(!rest.is_empty(), "{}: name it `{code}_what_is_wrong.net`", path.display());
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("# {code}: ")),
            "{}: the first line must be `# {code}: what is wrong`",
            path.display()
        );
    }
}

#[test]
fn every_front_end_code_has_a_spec_that_triggers_it() {
    let specs = files(&root().join("specs/err"), "net");
    let mut problems = Vec::new();
    for c in Code::ALL.iter().filter(|c| is_front_end(c.as_str())) {
        let code = c.as_str();
        let mine: Vec<&(String, PathBuf)> = specs.iter().filter(|(s, _)| s.split('_').next() == Some(code)).collect();
        let [(stem, path)] = mine.as_slice() else {
            problems.push(format!("{code}: {} specs under specs/err/ (want exactly 1)", mine.len()));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let checked = check_source(&format!("specs/err/{stem}.net"), &text);
        let got: BTreeSet<&str> = checked.diagnostics.iter().map(|d| d.code.as_str()).collect();
        if !got.contains(code) {
            problems.push(format!("{stem}: does not yield {code}, yields {got:?}"));
            continue;
        }
        let allowed: BTreeSet<&str> =
            std::iter::once(code).chain(COMPANIONS.iter().filter(|(c, _)| *c == code).map(|(_, o)| *o)).collect();
        let extra: Vec<&&str> = got.difference(&allowed).collect();
        if !extra.is_empty() {
            problems.push(format!("{stem}: yields {extra:?} besides {code}"));
        }
        // Only one diagnostic of the spec's own kind, so the spec shows exactly one problem.
        let n = checked.diagnostics.iter().filter(|d| d.code == *c).count();
        if n != 1 {
            problems.push(format!("{stem}: yields {code} {n} times"));
        }
        if c.severity() == dualnet::diagnostics::Severity::Warning && checked.graph.is_none() {
            problems.push(format!("{stem}: a spec with only warnings must still build its graph"));
        }
    }
    assert!(problems.is_empty(), "specs out of step with the codes:\n{}", problems.join("\n"));
}

#[test]
fn companions_only_name_front_end_codes() {
    let known = known_codes();
    for (a, b) in COMPANIONS {
        assert!(known.contains(a) && known.contains(b) && is_front_end(a) && is_front_end(b), "{a} / {b}");
    }
}

//! VNN-LIB properties: malformed files are coded diagnostics with spans into the text (snapshots of the rendered
//! text), variables out of a network's range are refused, and every property of the mnistfc benchmark parses.

mod common;

use dualnet::diagnostics::Code;
use dualnet::error::Error;
use dualnet::vnnlib::parse;

const GOOD: &str = "; two inputs, two outputs\n(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (<= X_0 1.0))\n(assert (>= X_0 0.0))\n(assert (<= X_1 1.0))\n(assert (>= X_1 0.0))\n(assert (or (and (>= Y_1 Y_0))))\n";

fn render(name: &str, text: &str) -> (Vec<Code>, String) {
    match parse(name, text) {
        Err(Error::Input(d)) => {
            (d.iter().map(|d| d.code).collect(), d.iter().map(|d| d.render(false)).collect::<Vec<_>>().join("\n"))
        }
        Err(e) => panic!("not a diagnostic: {e}"),
        Ok(_) => panic!("`{name}` parsed"),
    }
}

fn snapshot(name: &str, text: &str, code: Code) {
    let (codes, rendered) = render(name, text);
    assert_eq!(codes, vec![code], "{rendered}");
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_snapshot!(format!("vnnlib_{name}"), rendered);
    });
}

#[test]
fn truncated() {
    snapshot("truncated", &GOOD[..GOOD.len() - 6], Code::VnnlibSyntax);
}

#[test]
fn unknown_variable() {
    snapshot("unknown_variable", &GOOD.replace("(>= Y_1 Y_0)", "(>= Y_2 Y_0)"), Code::VnnlibVariable);
}

#[test]
fn not_a_number() {
    snapshot("not_a_number", &GOOD.replace("(<= X_1 1.0)", "(<= X_1 one)"), Code::VnnlibSyntax);
}

#[test]
fn nonlinear() {
    snapshot("nonlinear", &GOOD.replace("(>= Y_1 Y_0)", "(>= (* Y_1 Y_0) 0.0)"), Code::VnnlibUnsupported);
}

#[test]
fn unbounded_input() {
    snapshot("unbounded_input", &GOOD.replace("(assert (>= X_1 0.0))\n", ""), Code::VnnlibUnsupported);
}

#[test]
fn inputs_out_of_range_of_the_network() {
    let p = parse("good.vnnlib", GOOD).expect("parse");
    assert!(p.check_sizes(2, 2).is_ok());
    let d = match p.check_sizes(1, 2) {
        Err(Error::Input(d)) => d,
        _ => panic!("accepted"),
    };
    assert_eq!(d[0].code, Code::VnnlibVariable);
    insta::with_settings!({ omit_expression => true }, {
        insta::assert_snapshot!("vnnlib_out_of_range", d[0].render(false));
    });
}

#[test]
fn garbage_never_panics() {
    let mut state = 0x9e37_79b9_u64;
    for _ in 0..500 {
        let mut b = GOOD.as_bytes().to_vec();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % b.len();
            b[i] = b"()XY_ 0.5-<=>;\n"[(state >> 32) as usize % 15];
        }
        let _ = parse("fuzz.vnnlib", &String::from_utf8_lossy(&b));
    }
}

#[test]
fn every_mnistfc_property_parses() {
    let Some(dir) = common::shared("vnncomp/mnistfc", "the mnistfc property test") else { return };
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("dir").flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("vnnlib") {
            continue;
        }
        let prop = dualnet::vnnlib::parse_file(&p).expect("parse");
        assert_eq!((prop.n_inputs, prop.n_outputs), (784, 10));
        assert_eq!(prop.regions.len(), 1);
        assert_eq!(prop.regions[0].disjuncts.len(), 9);
        assert!(prop.regions[0].lo.iter().zip(&prop.regions[0].hi).all(|(l, h)| 0.0 <= *l && l <= h && *h <= 1.0));
        n += 1;
    }
    assert_eq!(n, 30);
}

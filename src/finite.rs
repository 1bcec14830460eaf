//! Non-finite numbers are refused at the door (diagnostic E0110): a NaN or ±∞ in a weight, an input, a box or
//! an option makes every bound computed from it meaningless, and IEEE comparisons hide it (`NaN > 0` is false,
//! `f32::min` drops a NaN), so such numbers never reach the bound computations. Bounds that still turn
//! non-finite (overflow) are caught per example by [`crate::dual::bounds`] and never certify.

use candle_core::{DType, Tensor};

use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Context, Error, Result};

/// The first non-finite element of `t`: its flat index and value.
pub fn first_nonfinite(t: &Tensor) -> candle_core::Result<Option<(usize, f64)>> {
    let v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])))
}

/// Row-major multi-index of flat position `i` in `dims`.
pub fn unflatten(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        let d = d.max(1);
        idx[k] = i % d;
        i /= d;
    }
    idx
}

/// `[3, 0, 1, 2]`.
pub fn fmt_index(idx: &[usize]) -> String {
    format!("[{}]", idx.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
}

/// `NaN`, `+inf` or `-inf`.
pub fn fmt_value(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+inf"
    } else {
        "-inf"
    }
}

/// E0110 for a weight tensor `key` of `file` that holds a non-finite number; `None` when all are finite.
pub fn weight_diagnostic(key: &str, file: &str, t: &Tensor) -> Result<Option<Diagnostic>> {
    let bad = first_nonfinite(t).context(|| format!("reading `{key}`"))?;
    Ok(bad.map(|(i, v)| {
        Diagnostic::new(
            Code::NonFinite,
            format!("`{key}` in `{file}` holds {} at index {}", fmt_value(v), fmt_index(&unflatten(i, t.dims()))),
        )
        .help("every weight must be a finite number; retrain, or repair the file (a diverged run stops before it saves such weights)")
    }))
}

/// The elements of `t` on the host, in f64 (one read for every check of the same tensor).
pub fn host_values(t: &Tensor, what: &str) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).context(|| format!("reading {what}"))
}

/// Refuse an input tensor `[B, *in]` (`name` says which file or batch) with a non-finite element, naming the
/// example and the element.
pub fn check_inputs(x: &Tensor, name: &str) -> Result<()> {
    check_input_values(&host_values(x, name)?, x.dims(), name)
}

/// [`check_inputs`] on values already read (`dims` = `[B, *in]`).
pub fn check_input_values(values: &[f64], dims: &[usize], name: &str) -> Result<()> {
    let Some(i) = values.iter().position(|x| !x.is_finite()) else { return Ok(()) };
    let v = values[i];
    let n: usize = dims.iter().skip(1).product::<usize>().max(1);
    Err(Error::input(
        Diagnostic::new(
            Code::NonFinite,
            format!(
                "{name}: example {} holds {} at element {}",
                i / n,
                fmt_value(v),
                fmt_index(&unflatten(i % n, &dims[1..]))
            ),
        )
        .help("inputs must be finite numbers (pixels in [0, 1])"),
    ))
}

/// Refuse a non-finite numeric option or config value `name` (e.g. `--eps`, `mean[1]`).
pub fn check_option(name: &str, v: f64) -> Result<()> {
    if v.is_finite() {
        return Ok(());
    }
    Err(Error::input(
        Diagnostic::new(Code::NonFinite, format!("`{name}` is {}, not a finite number", fmt_value(v)))
            .help(format!("give `{name}` a finite value")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finds_the_first_bad_element_and_its_index() {
        let t = Tensor::from_vec(vec![0f32, 1.0, 2.0, f32::NAN, f32::INFINITY, 5.0], (2, 3), &Device::Cpu).unwrap();
        let (i, v) = first_nonfinite(&t).unwrap().unwrap();
        assert_eq!(i, 3);
        assert!(v.is_nan());
        // flat 3 in [2, 3] is row 1, column 0.
        assert_eq!(unflatten(3, &[2, 3]), vec![1, 0]);
        assert_eq!(unflatten(23, &[2, 3, 4]), vec![1, 2, 3]);
        let ok = Tensor::from_vec(vec![0f64, -1e308], 2, &Device::Cpu).unwrap();
        assert!(first_nonfinite(&ok).unwrap().is_none());
    }

    #[test]
    fn weight_and_input_messages_name_the_place() {
        let t = Tensor::from_vec(vec![0f32, f32::NEG_INFINITY], (1, 2), &Device::Cpu).unwrap();
        let d = weight_diagnostic("c2.weight", "w.safetensors", &t).unwrap().unwrap();
        assert_eq!(d.code, Code::NonFinite);
        assert_eq!(d.message, "`c2.weight` in `w.safetensors` holds -inf at index [0, 1]");
        let x = Tensor::from_vec(vec![0f32, 0.5, 0.2, f32::NAN], (2, 1, 2), &Device::Cpu).unwrap();
        match check_inputs(&x, "`x`") {
            Err(Error::Input(d)) => assert_eq!(d[0].message, "`x`: example 1 holds NaN at element [0, 1]"),
            other => panic!("{:?}", other.err()),
        }
        assert!(check_option("--eps", f64::NAN).is_err());
        assert!(check_option("--eps", 0.1).is_ok());
    }
}

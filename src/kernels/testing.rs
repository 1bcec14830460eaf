//! Helpers for the kernels' tests: comparing a fused op with the candle composition it replaces.

use candle_core::{DType, Result, Tensor, Var};

/// Largest absolute difference of two tensors of the same shape (any float dtype).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Asserts that `ours` and `plain` agree within `tol`, and so do their gradients w.r.t. each of `vars` under the
/// loss `Σ out ⊙ g` (`what` names the case in a failure).
pub(crate) fn assert_same_value_and_grads(
    ours: &Tensor,
    plain: &Tensor,
    g: &Tensor,
    vars: &[&Var],
    tol: f64,
    what: &str,
) -> Result<()> {
    assert!(max_diff(ours, plain)? < tol, "{what}: values differ");
    let g1 = (ours * g)?.sum_all()?.backward()?;
    let g2 = (plain * g)?.sum_all()?.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let (a, b) = (g1.get(v.as_tensor()).expect("grad"), g2.get(v.as_tensor()).expect("grad"));
        assert!(max_diff(a, b)? < tol, "{what}: gradients of operand {i} differ");
    }
    Ok(())
}

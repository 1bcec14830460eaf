//! `transpose(src, d0=A, d1=B, d2=C)`: `[S0, S1, S2] -> [S_A, S_B, S_C]`, a permutation of the axes of one
//! example: output axis `i` is input axis `d_i` (ONNX's `perm` without the batch axis). The layouts that
//! TensorFlow and Keras export, an `[H, W, C]` input turned to `[C, H, W]` for a convolution
//! (`d0=2, d1=0, d2=1`) and back before a flatten (`d0=1, d1=2, d2=0`), are the ones it is there for.
//!
//! A permutation is linear with one coefficient 1 per entry: exact in every bound family, no rounding. Dual rule:
//! the inverse permutation (the adjoint of a permutation is its inverse). On a vector `[N]` only the identity
//! (`d0=0`) is a permutation.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct Transpose;

static PARAMS: &[ParamSpec] = &[
    ParamSpec::int("d0", 0, Min::NonNegative),
    ParamSpec::int("d1", 1, Min::NonNegative),
    ParamSpec::int("d2", 2, Min::NonNegative),
];

/// `transpose`'s typed arguments: the permutation of the example's axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm(pub [usize; 3]);

impl Args for Perm {
    fn parse(a: &Attrs) -> std::result::Result<Self, ShapeError> {
        let p = [a.get_usize("d0")?, a.get_usize("d1")?, a.get_usize("d2")?];
        let mut seen = [false; 3];
        for &d in &p {
            if d > 2 || std::mem::replace(&mut seen[d], true) {
                return Err(ShapeError::BadValue {
                    param: "d0",
                    detail: format!("`d0, d1, d2` = {p:?} is not a permutation of 0, 1, 2"),
                });
            }
        }
        Ok(Perm(p))
    }
}

impl Perm {
    /// The inverse permutation: `inverse()[p[i]] = i`.
    pub fn inverse(self) -> Perm {
        let mut q = [0; 3];
        for (i, &d) in self.0.iter().enumerate() {
            q[d] = i;
        }
        Perm(q)
    }
    fn is_identity(self) -> bool {
        self.0 == [0, 1, 2]
    }
    /// `t` (`[N, S0, S1, S2]`, or `[N, n]` under the identity) permuted, contiguous.
    fn apply(self, t: &Tensor) -> candle_core::Result<Tensor> {
        if self.is_identity() {
            return Ok(t.clone());
        }
        let [a, b, c] = self.0;
        t.permute((0, a + 1, b + 1, c + 1))?.contiguous()
    }
}

impl Op for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn summary(&self) -> &'static str {
        "a permutation of an example's axes (output axis i is input axis d_i)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn parse_args(&self, a: &Attrs) -> std::result::Result<(), ShapeError> {
        Perm::parse(a).map(|_| ())
    }
    fn infer_shape(&self, a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        let p = Perm::parse(a)?;
        let s = inputs[0];
        match s.len() {
            3 => Ok(p.0.iter().map(|&d| s[d]).collect()),
            _ if p.is_identity() => Ok(s.clone()),
            _ => Err(ShapeError::NeedsImage { got: s.clone() }),
        }
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("transpose")
    }
    fn dual_text(&self, t: &DualText) -> String {
        match Perm::parse(t.attrs) {
            Ok(p) => {
                let q = p.inverse().0;
                format!("transpose({}; d0={}, d1={}, d2={})", t.nu, q[0], q[1], q[2])
            }
            Err(e) => format!("transpose({}; bad arguments: {e:?})", t.nu),
        }
    }
}

impl OpExec for Transpose {
    /// A permutation of ones is ones.
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// One coefficient 1 per entry: exact.
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        0
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let p = ctx.args::<Perm>()?;
        p.apply(&inputs[0]).context(|| format!("transpose `{}`", ctx.name))
    }
    /// A permutation: `|A| r = A r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    /// Points and radius alike: the permutation of the whole packed batch.
    fn interval_packed(&self, ctx: &NodeCtx, inputs: &[Tensor], _points: usize) -> Result<Tensor> {
        self.linear(ctx, inputs)
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        let q = ctx.args::<Perm>()?.inverse();
        Ok(vec![q.apply(nu).context(|| format!("dual of transpose `{}`", ctx.name))?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_undoes_the_permutation() {
        // [2, 0, 1]: out axis 0 = in axis 2. Inverse: in axis 2 goes to out 0, so q[2] = 0, q[0] = 1, q[1] = 2.
        assert_eq!(Perm([2, 0, 1]).inverse(), Perm([1, 2, 0]));
        for p in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let q = Perm(p).inverse();
            for i in 0..3 {
                assert_eq!(q.0[p[i]], i);
            }
        }
    }

    #[test]
    fn hwc_to_chw_moves_the_channel_first() {
        // x[0, h, w, c] = 100h + 10w + c over [2, 3, 4]; y = transpose(d0=2, d1=0, d2=1) has y[c, h, w] = x[h, w, c].
        let v: Vec<f64> =
            (0..2).flat_map(|h| (0..3).flat_map(move |w| (0..4).map(move |c| (100 * h + 10 * w + c) as f64))).collect();
        let x = Tensor::from_vec(v, (1, 2, 3, 4), &candle_core::Device::Cpu).unwrap();
        let y = Perm([2, 0, 1]).apply(&x).unwrap();
        assert_eq!(y.dims(), &[1, 4, 2, 3]);
        let y: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y[(3 * 2 + 1) * 3 + 2], 123.0); // c = 3, h = 1, w = 2
    }
}

//! `scale_shift(src)`: elementwise `y = weight ⊙ x + bias`, any shape; parameters `weight` and `bias` of the
//! input's shape. This is the exact form of an input normalisation such as `(x - mean) / std` (per element, per
//! channel or scalar, broadcast to the full shape), as ONNX files write it with `Sub`, `Div` and `Mul` nodes.
//!
//! Dual rule: the diagonal map `nu -> weight ⊙ nu` (it is symmetric); `bias` enters the objective like a bias.

use candle_core::Tensor;

use super::*;
use crate::error::{Context, Result};

pub struct ScaleShift;

impl Op for ScaleShift {
    fn name(&self) -> &'static str {
        "scale_shift"
    }
    fn summary(&self) -> &'static str {
        "elementwise y = weight * x + bias (input normalisation)"
    }
    fn infer_shape(&self, _a: &Attrs, inputs: &[&Shape]) -> std::result::Result<Shape, ShapeError> {
        Ok(inputs[0].clone())
    }
    fn weights(&self, _a: &Attrs, inputs: &[&Shape], _out: &Shape) -> Vec<WeightSpec> {
        let shape = inputs[0].clone();
        vec![
            WeightSpec { suffix: "weight", shape: shape.clone(), init: Init::Ones, trainable: true, nonneg: false },
            WeightSpec { suffix: "bias", shape, init: Init::Zeros, trainable: true, nonneg: false },
        ]
    }
    fn dual_name(&self) -> Option<&'static str> {
        Some("scale")
    }
}

impl OpExec for ScaleShift {
    /// All-ones weights give positive coefficients wherever the op's can be non-zero (it is diagonal).
    fn groupable(&self) -> bool {
        true
    }
    fn role(&self) -> Role {
        Role::Affine
    }
    /// One product per entry.
    fn terms(&self, _ctx: &NodeCtx) -> usize {
        1
    }
    fn linear(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let w = ctx.weight("weight")?;
        inputs[0].broadcast_mul(w).context(|| format!("scale_shift `{}`", ctx.name))
    }
    fn transpose(&self, ctx: &NodeCtx, nu: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![self.linear(ctx, std::slice::from_ref(nu))?])
    }
    /// `|weight| r`.
    fn linear_abs(&self, ctx: &NodeCtx, inputs: &[Tensor]) -> Result<Tensor> {
        let ctx_err = || format!("interval rule of scale_shift `{}`", ctx.name);
        let w = ctx.weight("weight")?.abs().context(ctx_err)?;
        inputs[0].broadcast_mul(&w).context(ctx_err)
    }
    fn bias(&self, ctx: &NodeCtx) -> Result<Option<Tensor>> {
        Ok(Some(ctx.weight("bias")?.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn adjoint_identity_and_interval_rule() {
        let dev = Device::Cpu;
        let shape: Shape = vec![2, 3];
        let w = Tensor::new(&[[1.5f64, -2.0, 0.5], [0.0, 3.0, -1.0]], &dev).unwrap();
        let b = Tensor::new(&[[0.1f64, 0.2, 0.3], [0.4, 0.5, 0.6]], &dev).unwrap();
        let mut weights = std::collections::BTreeMap::new();
        weights.insert("weight".to_string(), w);
        weights.insert("bias".to_string(), b);
        let attrs = Attrs::default();
        let ctx = NodeCtx { name: "n", attrs: &attrs, weights: &weights, in_shapes: vec![&shape], out_shape: &shape };
        let x = Tensor::randn(0f64, 1.0, (4, 2, 3), &dev).unwrap();
        let nu = Tensor::randn(0f64, 1.0, (4, 2, 3), &dev).unwrap();
        let ax = ScaleShift.linear(&ctx, std::slice::from_ref(&x)).unwrap();
        let atnu = ScaleShift.transpose(&ctx, &nu).unwrap().remove(0);
        let lhs: f64 = (ax * &nu).unwrap().sum_all().unwrap().to_scalar().unwrap();
        let rhs: f64 = (atnu * &x).unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
        let r = Tensor::ones((1, 2, 3), DType::F64, &dev).unwrap();
        let abs: Vec<f64> = ScaleShift.linear_abs(&ctx, &[r]).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(abs, vec![1.5, 2.0, 0.5, 0.0, 3.0, 1.0]);
    }
}

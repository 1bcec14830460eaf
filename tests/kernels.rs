//! `dualnet::kernels` against candle's built-in conv2d / conv_transpose2d: values, gradients (autograd), the adjoint
//! identity ⟨conv2d(x), ν⟩ = ⟨x, conv_transpose2d(ν)⟩, strided operands, and the chunked / parallel paths.

use candle_core::{DType, Device, Result, Tensor, Var};
use dualnet::kernels;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One convolution: `x [n, ci, h, w]`, `w [co, ci, kh, kw]`, stride `s`, padding `p`, transpose output padding `op`.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    s: usize,
    p: usize,
    op: usize,
}

impl Case {
    /// Whether conv_transpose2d of the conv2d output has a non-empty result.
    fn valid(&self) -> bool {
        let (ho, wo) = self.out();
        (ho - 1) * self.s + self.kh + self.op > 2 * self.p && (wo - 1) * self.s + self.kw + self.op > 2 * self.p
    }
    fn transposed(&self) -> (usize, usize) {
        let (ho, wo) = self.out();
        ((ho - 1) * self.s + self.kh + self.op - 2 * self.p, (wo - 1) * self.s + self.kw + self.op - 2 * self.p)
    }
    fn out(&self) -> (usize, usize) {
        ((self.h + 2 * self.p - self.kh) / self.s + 1, (self.w + 2 * self.p - self.kw) / self.s + 1)
    }
    /// The output padding that makes conv_transpose2d restore `x`'s size, if one does for both sides.
    fn restoring_op(&self) -> Option<usize> {
        let (ho, wo) = self.out();
        let oh = (self.h + 2 * self.p).checked_sub((ho - 1) * self.s + self.kh)?;
        let ow = (self.w + 2 * self.p).checked_sub((wo - 1) * self.s + self.kw)?;
        (oh == ow && (ho - 1) * self.s + self.kh + oh > 2 * self.p).then_some(oh)
    }
}

fn rand_tensor(rng: &mut StdRng, shape: &[usize], dt: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dt)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f64>()).expect("tensor values")
}

fn tol(dt: DType) -> f64 {
    if dt == DType::F32 {
        1e-4
    } else {
        1e-10
    }
}

/// `|a − b| ≤ tol · max(1, max |b|)` elementwise, with the same shape.
fn assert_close(a: &Tensor, b: &Tensor, dt: DType, what: &str, c: &Case) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ for {c:?}");
    assert_eq!(a.dtype(), dt, "{what}: dtype");
    let (va, vb) = (values(a), values(b));
    let scale = vb.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let worst = va.iter().zip(&vb).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst <= tol(dt) * scale, "{what}: max error {worst:e} (scale {scale}) for {c:?} in {dt:?}");
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    values(a).iter().zip(values(b)).map(|(x, y)| x * y).sum()
}

/// Forward values of both kernels against candle's built-ins.
fn check_forward(rng: &mut StdRng, c: &Case, dt: DType) -> Result<()> {
    let x = rand_tensor(rng, &[c.n, c.ci, c.h, c.w], dt)?;
    let w = rand_tensor(rng, &[c.co, c.ci, c.kh, c.kw], dt)?;
    assert_close(&kernels::conv2d(&x, &w, c.s, c.p)?, &x.conv2d(&w, c.p, c.s, 1, 1)?, dt, "conv2d", c);
    let (ho, wo) = c.out();
    let nu = rand_tensor(rng, &[c.n, c.co, ho, wo], dt)?;
    let ours = kernels::conv_transpose2d(&nu, &w, c.s, c.p, c.op)?;
    let theirs = nu.conv_transpose2d(&w, c.p, c.op, c.s, 1)?;
    assert_close(&ours, &theirs, dt, "conv_transpose2d", c);
    Ok(())
}

/// Gradients of `Σ r ⊙ f(a, w)` w.r.t. `a` and `w`, through autograd.
fn grads(
    a: &Tensor,
    w: &Tensor,
    r: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (av, wv) = (Var::from_tensor(a)?, Var::from_tensor(w)?);
    let y = f(av.as_tensor(), wv.as_tensor())?;
    let gs = (y * r)?.sum_all()?.backward()?;
    let get = |v: &Var| gs.get(v.as_tensor()).cloned().ok_or_else(|| candle_core::Error::Msg("missing grad".into()));
    Ok((get(&av)?, get(&wv)?))
}

/// The obvious loops: `Σ x[i, ci, oy·s + ky − p, ox·s + kx − p] · w[co, ci, ky, kx] · g[i, co, oy, ox]` visits every
/// term once; `f` receives (x index, w index, g index).
fn naive_terms(c: &Case, h: usize, wd: usize, ho: usize, wo: usize, mut f: impl FnMut(usize, usize, usize)) {
    for i in 0..c.n {
        for co in 0..c.co {
            for ci in 0..c.ci {
                for ky in 0..c.kh {
                    for kx in 0..c.kw {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let (iy, ix) =
                                    ((oy * c.s + ky) as isize - c.p as isize, (ox * c.s + kx) as isize - c.p as isize);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((i * c.ci + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((co * c.ci + ci) * c.kh + ky) * c.kw + kx;
                                let gi = ((i * c.co + co) * ho + oy) * wo + ox;
                                f(xi, wi, gi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn assert_close_vec(a: &Tensor, b: &[f64], dt: DType, what: &str, c: &Case) {
    let va = values(a);
    assert_eq!(va.len(), b.len(), "{what}: sizes differ for {c:?}");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let worst = va.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst <= tol(dt) * scale, "{what}: max error {worst:e} vs naive (scale {scale}) for {c:?} in {dt:?}");
}

/// Autograd gradients of both kernels against the naive loops (all cases) and candle's built-ins (where candle's
/// backward handles the shapes: it restores only the height, so it needs both sides to take the same padding).
fn check_grads(rng: &mut StdRng, c: &Case, dt: DType) -> Result<()> {
    let x = rand_tensor(rng, &[c.n, c.ci, c.h, c.w], dt)?;
    let w = rand_tensor(rng, &[c.co, c.ci, c.kh, c.kw], dt)?;
    let (ho, wo) = c.out();
    let r = rand_tensor(rng, &[c.n, c.co, ho, wo], dt)?;
    let (gx, gw) = grads(&x, &w, &r, |x, w| kernels::conv2d(x, w, c.s, c.p))?;
    let (vx, vw, vr) = (values(&x), values(&w), values(&r));
    let (mut nx, mut nw) = (vec![0.0; vx.len()], vec![0.0; vw.len()]);
    naive_terms(c, c.h, c.w, ho, wo, |xi, wi, gi| {
        nx[xi] += vw[wi] * vr[gi];
        nw[wi] += vx[xi] * vr[gi];
    });
    assert_close_vec(&gx, &nx, dt, "conv2d grad x", c);
    assert_close_vec(&gw, &nw, dt, "conv2d grad w", c);
    if c.restoring_op().is_some() {
        let (hx, hw) = grads(&x, &w, &r, |x, w| x.conv2d(w, c.p, c.s, 1, 1))?;
        assert_close(&gx, &hx, dt, "conv2d grad x vs candle", c);
        assert_close(&gw, &hw, dt, "conv2d grad w vs candle", c);
    }

    let nu = rand_tensor(rng, &[c.n, c.co, ho, wo], dt)?;
    let (h, wd) = c.transposed();
    let r = rand_tensor(rng, &[c.n, c.ci, h, wd], dt)?;
    let (gn, gw) = grads(&nu, &w, &r, |nu, w| kernels::conv_transpose2d(nu, w, c.s, c.p, c.op))?;
    let (vn, vr) = (values(&nu), values(&r));
    let (mut nn, mut nw) = (vec![0.0; vn.len()], vec![0.0; vw.len()]);
    naive_terms(c, h, wd, ho, wo, |ri, wi, ni| {
        nn[ni] += vw[wi] * vr[ri];
        nw[wi] += vn[ni] * vr[ri];
    });
    assert_close_vec(&gn, &nn, dt, "conv_transpose2d grad nu", c);
    assert_close_vec(&gw, &nw, dt, "conv_transpose2d grad w", c);
    let (hn, hw) = grads(&nu, &w, &r, |nu, w| nu.conv_transpose2d(w, c.p, c.op, c.s, 1))?;
    assert_close(&gn, &hn, dt, "conv_transpose2d grad nu vs candle", c);
    assert_close(&gw, &hw, dt, "conv_transpose2d grad w vs candle", c);
    Ok(())
}

/// ⟨conv2d(x), ν⟩ = ⟨x, conv_transpose2d(ν)⟩ with the output padding that restores `x`'s size.
fn check_adjoint(rng: &mut StdRng, c: &Case, dt: DType) -> Result<()> {
    let Some(op) = c.restoring_op() else { return Ok(()) };
    let x = rand_tensor(rng, &[c.n, c.ci, c.h, c.w], dt)?;
    let w = rand_tensor(rng, &[c.co, c.ci, c.kh, c.kw], dt)?;
    let (ho, wo) = c.out();
    let nu = rand_tensor(rng, &[c.n, c.co, ho, wo], dt)?;
    let lhs = dot(&kernels::conv2d(&x, &w, c.s, c.p)?, &nu);
    let back = kernels::conv_transpose2d(&nu, &w, c.s, c.p, op)?;
    assert_eq!(back.dims(), x.dims(), "adjoint shape for {c:?}");
    let rhs = dot(&x, &back);
    assert!((lhs - rhs).abs() <= tol(dt) * (1.0 + lhs.abs()), "adjoint: {lhs} vs {rhs} for {c:?} in {dt:?}");
    Ok(())
}

/// A random valid case with small sizes.
fn random_case(rng: &mut StdRng) -> Case {
    loop {
        let c = random_case_any(rng);
        if c.valid() {
            return c;
        }
    }
}

fn random_case_any(rng: &mut StdRng) -> Case {
    let (kh, kw) = if rng.random_bool(0.8) {
        let k = rng.random_range(1..=4);
        (k, k)
    } else {
        (rng.random_range(1..=4), rng.random_range(1..=4))
    };
    let s = rng.random_range(1..=3);
    let p = rng.random_range(0..=kh.min(kw).min(2));
    let h = rng.random_range(kh.max(1)..=9);
    let w = if rng.random_bool(0.7) && h >= kw { h } else { rng.random_range(kw..=9) };
    Case {
        n: [1, 1, 2, 3, 5][rng.random_range(0..5)],
        ci: [1, 1, 2, 3, 4][rng.random_range(0..5)],
        co: [1, 2, 3, 5][rng.random_range(0..4)],
        h,
        w,
        kh,
        kw,
        s,
        p,
        op: rng.random_range(0..s),
    }
}

/// The shapes the dual network uses (with small batches).
fn model_cases() -> Vec<Case> {
    let c = |n, ci, co, h, k, s, p, op| Case { n, ci, co, h, w: h, kh: k, kw: k, s, p, op };
    vec![
        c(3, 16, 32, 14, 4, 2, 1, 0),
        c(2, 1, 16, 28, 4, 2, 1, 0),
        c(2, 8, 8, 7, 3, 1, 1, 0),
        c(2, 4, 6, 5, 1, 1, 0, 0),
        c(2, 3, 5, 8, 2, 2, 0, 0),
        c(2, 3, 5, 7, 2, 2, 0, 1),
        c(2, 4, 3, 7, 3, 2, 1, 1),
        c(1, 1, 1, 1, 1, 1, 0, 0),
    ]
}

#[test]
fn forward_matches_candle() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut cases = model_cases();
    cases.extend((0..150).map(|_| random_case(&mut rng)));
    for c in &cases {
        for dt in [DType::F32, DType::F64] {
            check_forward(&mut rng, c, dt)?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_candle() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(2);
    let mut cases = model_cases();
    cases.extend((0..80).map(|_| random_case(&mut rng)));
    for c in &cases {
        for dt in [DType::F32, DType::F64] {
            check_grads(&mut rng, c, dt)?;
        }
    }
    Ok(())
}

#[test]
fn adjoint_identity() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(3);
    let mut cases = model_cases();
    cases.extend((0..150).map(|_| random_case(&mut rng)));
    for c in &cases {
        for dt in [DType::F32, DType::F64] {
            check_adjoint(&mut rng, c, dt)?;
        }
    }
    Ok(())
}

/// Large batches take the chunked, parallel path; a single big image the serial one with a parallel gemm.
#[test]
fn chunked_batches_match_candle() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(4);
    let big = Case { n: 301, ci: 16, co: 32, h: 14, w: 14, kh: 4, kw: 4, s: 2, p: 1, op: 0 };
    let first = Case { n: 257, ci: 1, co: 16, h: 28, w: 28, kh: 4, kw: 4, s: 2, p: 1, op: 0 };
    let single = Case { n: 1, ci: 8, co: 12, h: 40, w: 33, kh: 3, kw: 3, s: 1, p: 1, op: 0 };
    for c in [big, first, single] {
        for dt in [DType::F32, DType::F64] {
            check_forward(&mut rng, &c, dt)?;
            check_grads(&mut rng, &c, dt)?;
        }
    }
    Ok(())
}

/// Transposed, narrowed and broadcast operands give the same results as their contiguous copies.
#[test]
fn strided_operands() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(5);
    for dt in [DType::F32, DType::F64] {
        let c = Case { n: 4, ci: 3, co: 5, h: 9, w: 9, kh: 3, kw: 3, s: 2, p: 1, op: 0 };
        // x as a transpose of [ci, n, h, w]; w as a narrow of a wider kernel.
        let xt = rand_tensor(&mut rng, &[c.ci, c.n, c.h, c.w], dt)?.transpose(0, 1)?;
        let wide = rand_tensor(&mut rng, &[c.co, c.ci + 2, c.kh, c.kw], dt)?;
        let w = wide.narrow(1, 1, c.ci)?;
        assert!(!xt.is_contiguous() && !w.is_contiguous());
        let ours = kernels::conv2d(&xt, &w, c.s, c.p)?;
        assert_close(&ours, &kernels::conv2d(&xt.contiguous()?, &w.contiguous()?, c.s, c.p)?, dt, "strided conv2d", &c);
        assert_close(&ours, &xt.conv2d(&w, c.p, c.s, 1, 1)?, dt, "strided conv2d vs candle", &c);
        // nu as a broadcast along the batch and a narrow of the spatial dims.
        let (ho, wo) = c.out();
        let nu =
            rand_tensor(&mut rng, &[1, c.co, ho + 1, wo], dt)?.narrow(2, 1, ho)?.broadcast_as((c.n, c.co, ho, wo))?;
        let ours = kernels::conv_transpose2d(&nu, &w, c.s, c.p, c.op)?;
        let theirs = nu.contiguous()?.conv_transpose2d(&w.contiguous()?, c.p, c.op, c.s, 1)?;
        assert_close(&ours, &theirs, dt, "strided conv_transpose2d", &c);
    }
    Ok(())
}

#[test]
fn invalid_shapes_are_errors() -> Result<()> {
    let x = Tensor::zeros((1, 3, 5, 5), DType::F32, &Device::Cpu)?;
    let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(kernels::conv2d(&x, &w, 1, 0).is_err(), "channel mismatch");
    let w = Tensor::zeros((4, 3, 7, 7), DType::F32, &Device::Cpu)?;
    assert!(kernels::conv2d(&x, &w, 1, 0).is_err(), "kernel larger than the padded input");
    assert!(kernels::conv2d(&x, &w, 1, 1).is_ok(), "7x7 kernel fits 5 + 2");
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(kernels::conv2d(&x, &w, 0, 0).is_err(), "zero stride");
    assert!(kernels::conv2d(&x, &w.to_dtype(DType::F64)?, 1, 0).is_err(), "mixed dtypes");
    let nu = Tensor::zeros((1, 4, 1, 1), DType::F32, &Device::Cpu)?;
    assert!(kernels::conv_transpose2d(&nu, &w, 1, 2, 0).is_err(), "no output left after padding");
    Ok(())
}

#[test]
fn empty_batch() -> Result<()> {
    let x = Tensor::zeros((0, 3, 5, 5), DType::F32, &Device::Cpu)?;
    let w = Tensor::ones((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
    assert_eq!(kernels::conv2d(&x, &w, 2, 1)?.dims(), &[0, 4, 3, 3]);
    let nu = Tensor::zeros((0, 4, 3, 3), DType::F64, &Device::Cpu)?;
    assert_eq!(kernels::conv_transpose2d(&nu, &w.to_dtype(DType::F64)?, 2, 1, 0)?.dims(), &[0, 3, 5, 5]);
    Ok(())
}

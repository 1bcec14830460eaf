//! Input sets (paper Section 3.1, Corollaries 1–2 and Appendix F): the ℓ∞ ball, the ℓ∞ ball intersected with a
//! box, and the ℓ2 ball, each per example with its own ε.
//!
//! The ℓ∞ ball and its box intersection are both a per-pixel box `center ± radius` (`[B, *in]`); their dual norm
//! term is `Σ_i |ν_i| radius_i` (the paper's `ε‖ν̂_1‖_1`, or for the box `Σ [ν]_+ u + [ν]_- l` rewritten around the
//! center). The ℓ2 ball has dual norm `ε‖ν̂_1‖_2` and is never box-constrained.

use candle_core::Tensor;

use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Context, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    Linf,
    L2,
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        })
    }
}

/// The perturbation set of a batch.
#[derive(Clone)]
pub enum InputSet {
    /// `{x' : |x' - center| <= radius}` elementwise (ℓ∞ ball, possibly clipped to a box).
    Box { center: Tensor, radius: Tensor },
    /// `{x' : ||x' - center||_2 <= eps_b}`; `eps` is `[B]`.
    L2 { center: Tensor, eps: Tensor },
}

impl InputSet {
    /// Build the set for inputs `x: [B, *in]`, per-example `eps`, the norm, and an optional box `[lo, hi]`.
    pub fn new(x: &Tensor, eps: &[f64], norm: Norm, bounds: Option<(f64, f64)>) -> Result<Self> {
        let b = x.dims().first().copied().unwrap_or(0);
        if eps.len() != b {
            return Err(Error::Usage(format!("internal: {} epsilons for a batch of {b}", eps.len())));
        }
        if let Some(bad) = eps.iter().find(|e| !e.is_finite() || **e < 0.0) {
            return Err(Error::input(
                Diagnostic::new(Code::BadOption, format!("ε must be a finite number >= 0, got `{bad}`"))
                    .help("give ε in input units (pixels in [0, 1]), e.g. `--eps 0.1`"),
            ));
        }
        let host = crate::finite::host_values(x, "the inputs")?;
        crate::finite::check_input_values(&host, x.dims(), "the inputs")?;
        if let Some((lo, hi)) = bounds {
            check_box(&host, x.dims(), lo, hi)?;
        }
        let ctx = || "building the input set".to_string();
        // ε is the nearest f64 of the user's decimal: one ulp up contains it, then rounded up to the dtype.
        let eps_up: Vec<f64> = eps
            .iter()
            .map(|&e| {
                let e = if e > 0.0 { e.next_up() } else { e };
                match x.dtype() {
                    candle_core::DType::F64 => e,
                    _ => crate::float::up_f32(e) as f64,
                }
            })
            .collect();
        let eps_t = Tensor::from_vec(eps_up.clone(), b, x.device()).and_then(|t| t.to_dtype(x.dtype())).context(ctx)?;
        match norm {
            Norm::L2 => {
                if bounds.is_some() {
                    return Err(Error::input(
                        Diagnostic::new(Code::BadOption, "the ℓ2 ball cannot be box-constrained")
                            .help("drop `--bounded` with `--norm l2`"),
                    ));
                }
                Ok(InputSet::L2 { center: x.clone(), eps: eps_t })
            }
            Norm::Linf => {
                // `x ± ε` on the host, rounded outward (then clipped to the box, whose bounds are rounded
                // outward as decimals too): the set contains the user's ball (and its intersection with the box).
                let per = host.len() / b.max(1);
                let clip = bounds.map(|(a, z)| (a.next_down(), z.next_up()));
                let (mut lo, mut hi) = (Vec::with_capacity(host.len()), Vec::with_capacity(host.len()));
                for (k, &v) in host.iter().enumerate() {
                    let e = eps_up[k / per.max(1)];
                    let (mut a, mut z) = ((v - e).next_down(), (v + e).next_up());
                    if e == 0.0 {
                        (a, z) = (v, v);
                    }
                    if let Some((ca, cz)) = clip {
                        (a, z) = (a.max(ca).min(cz), z.min(cz).max(ca));
                    }
                    lo.push(a);
                    hi.push(z);
                }
                InputSet::from_host_box(&lo, &hi, x.dims(), x.dtype(), x.device(), false)
            }
        }
    }

    /// The per-element box `{x' : lo <= x' <= hi}` (`lo`, `hi`: `[B, *in]`), e.g. a VNN-LIB property's input
    /// bounds; the ε ball clipped to `[0, 1]` is the special case `lo = max(x - ε, 0)`, `hi = min(x + ε, 1)`.
    /// Refuses non-finite bounds (E0110), shapes that differ and empty intervals (E0106).
    pub fn from_box(lo: &Tensor, hi: &Tensor) -> Result<Self> {
        if lo.dims() != hi.dims() || lo.rank() < 1 {
            return Err(Error::Usage(format!("internal: box bounds of shapes {:?} and {:?}", lo.dims(), hi.dims())));
        }
        let l = crate::finite::host_values(lo, "the box's lower bounds")?;
        let h = crate::finite::host_values(hi, "the box's upper bounds")?;
        crate::finite::check_input_values(&l, lo.dims(), "the box's lower bounds")?;
        crate::finite::check_input_values(&h, hi.dims(), "the box's upper bounds")?;
        if let Some(i) = l.iter().zip(&h).position(|(a, b)| !(a <= b)) {
            return Err(Error::input(
                Diagnostic::new(
                    Code::BadOption,
                    format!("empty box: element {i} has lower bound {} above its upper bound {}", l[i], h[i]),
                )
                .help("every lower bound must be at most its upper bound"),
            ));
        }
        InputSet::from_host_box(&l, &h, lo.dims(), lo.dtype(), lo.device(), false)
    }

    /// The box `[lo, hi]` given on the host in f64 (`dims` its shape `[B, *in]`) as a set in `dtype` that
    /// contains it in real arithmetic. With `decimal`, each bound is taken as the nearest f64 of a decimal the
    /// user wrote, so it is first moved one ulp outward (the decimal lies within half an ulp of it). Centre and
    /// radius are chosen in f64 and rounded outward to `dtype`, so `centre ± radius` contains the box exactly.
    pub fn from_host_box(
        l: &[f64],
        h: &[f64],
        dims: &[usize],
        dtype: candle_core::DType,
        device: &candle_core::Device,
        decimal: bool,
    ) -> Result<Self> {
        let ctx = || "building the input box".to_string();
        let f32 = dtype != candle_core::DType::F64;
        let mut c = Vec::with_capacity(l.len());
        let mut r = Vec::with_capacity(l.len());
        for (&a, &b) in l.iter().zip(h) {
            let (a, b) = if decimal { (a.next_down(), b.next_up()) } else { (a, b) };
            let (a, b) = if f32 { (crate::float::down_f32(a) as f64, crate::float::up_f32(b) as f64) } else { (a, b) };
            let mid = 0.5 * a + 0.5 * b;
            let mid = if f32 { mid as f32 as f64 } else { mid };
            // `b − mid` may round: one ulp up makes it an upper bound of the real half-width.
            let rad = (b - mid).max(mid - a).max(0.0);
            let rad = if rad > 0.0 { rad.next_up() } else { rad };
            let rad = if f32 { crate::float::up_f32(rad) as f64 } else { rad };
            c.push(mid);
            r.push(rad);
        }
        let t = |v: Vec<f64>| Tensor::from_vec(v, dims, device).and_then(|t| t.to_dtype(dtype)).context(ctx);
        Ok(InputSet::Box { center: t(c)?, radius: t(r)? })
    }

    /// The mean radius of the set per input entry: the box's mean half-width, or the ℓ2 ball's mean ε (the
    /// radius of the ℓ∞ box that encloses it).
    pub fn mean_radius(&self) -> Result<f64> {
        let t = match self {
            InputSet::Box { radius, .. } => radius,
            InputSet::L2 { eps, .. } => eps,
        };
        t.mean_all()
            .and_then(|m| m.to_dtype(candle_core::DType::F64))
            .and_then(|m| m.to_scalar::<f64>())
            .context(|| "the input set's radius".to_string())
    }

    pub fn center(&self) -> &Tensor {
        match self {
            InputSet::Box { center, .. } | InputSet::L2 { center, .. } => center,
        }
    }
}

/// Refuse a box that is not a finite, non-empty interval, and inputs outside it (E0111). The ε ball intersected
/// with the box would then be empty or would not contain the input, so a certificate over it would say nothing
/// about the input. Inputs rounded to f32 may sit a few ulps outside: `4 · ε_f32 · max(1, |lo|, |hi|)` is allowed.
/// `values` are the inputs `[B, *in]` (`dims`) read on the host.
pub fn check_box(values: &[f64], dims: &[usize], lo: f64, hi: f64) -> Result<()> {
    crate::finite::check_option("--box-lo", lo)?;
    crate::finite::check_option("--box-hi", hi)?;
    if !(lo < hi) {
        return Err(Error::input(
            Diagnostic::new(Code::BadOption, format!("empty box [{lo}, {hi}]"))
                .help("`--box-lo` must be below `--box-hi`"),
        ));
    }
    let tol = 4.0 * f32::EPSILON as f64 * 1f64.max(lo.abs()).max(hi.abs());
    let v = values;
    let n: usize = dims.iter().skip(1).product::<usize>().max(1);
    match v.iter().position(|&e| e < lo - tol || e > hi + tol) {
        None => Ok(()),
        Some(i) => Err(Error::input(
            Diagnostic::new(
                Code::OutsideBox,
                format!(
                    "example {} element {} is {}, outside the box [{lo}, {hi}]",
                    i / n,
                    crate::finite::fmt_index(&crate::finite::unflatten(i % n, &dims[1..])),
                    v[i]
                ),
            )
            .help("scale the inputs into the box, or give the box they live in with `--box-lo`/`--box-hi`"),
        )),
    }
}

impl InputSet {
    /// Project points `x': [B, *in]` onto the set (PGD's projection step).
    pub fn project(&self, xp: &Tensor) -> Result<Tensor> {
        let ctx = || "projecting onto the input set".to_string();
        match self {
            InputSet::Box { center, radius } => {
                let lo = (center - radius).context(ctx)?;
                let hi = (center + radius).context(ctx)?;
                xp.maximum(&lo).and_then(|t| t.minimum(&hi)).context(ctx)
            }
            InputSet::L2 { center, eps } => {
                let b = center.dims()[0];
                let delta = (xp - center).context(ctx)?;
                let norm = delta
                    .reshape((b, ()))
                    .and_then(|d| d.sqr())
                    .and_then(|d| d.sum(1))
                    .and_then(|d| d.sqrt())
                    .context(ctx)?;
                let scale =
                    eps.broadcast_div(&(norm + 1e-12).context(ctx)?).and_then(|s| s.clamp(0.0, 1.0)).context(ctx)?;
                let mut shape = vec![b];
                shape.extend(std::iter::repeat_n(1, center.rank() - 1));
                let scale = scale.reshape(shape).context(ctx)?;
                (center + delta.broadcast_mul(&scale).context(ctx)?).context(ctx)
            }
        }
    }

    /// A uniformly random point of the ℓ∞ box, or a random direction scaled into the ℓ2 ball.
    pub fn random_point(&self, rng: &mut impl rand::Rng) -> Result<Tensor> {
        let ctx = || "sampling from the input set".to_string();
        let center = self.center();
        let n = center.elem_count();
        match self {
            InputSet::Box { radius, .. } => {
                let u: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..=1.0)).collect();
                let u = Tensor::from_vec(u, center.shape(), center.device())
                    .and_then(|t| t.to_dtype(center.dtype()))
                    .context(ctx)?;
                (center + (u * radius).context(ctx)?).context(ctx)
            }
            InputSet::L2 { .. } => {
                let g: Vec<f64> = (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
                let g = Tensor::from_vec(g, center.shape(), center.device())
                    .and_then(|t| t.to_dtype(center.dtype()))
                    .context(ctx)?;
                // Scale each example's direction to a random radius (uniform in [0, 1] of ε), then project.
                let far = (center + (g * 1e3).context(ctx)?).context(ctx)?;
                let on_sphere = self.project(&far)?;
                let t: f64 = rng.random_range(0.0..=1.0);
                (center + ((on_sphere - center).context(ctx)? * t).context(ctx)?).context(ctx)
            }
        }
    }

    /// A random corner of the ℓ∞ box (every pixel at one end of its interval), or a point on the ℓ2 sphere.
    pub fn random_corner(&self, rng: &mut impl rand::Rng) -> Result<Tensor> {
        let ctx = || "sampling from the input set".to_string();
        let center = self.center();
        let n = center.elem_count();
        match self {
            InputSet::Box { radius, .. } => {
                let s: Vec<f64> = (0..n).map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 }).collect();
                let s = Tensor::from_vec(s, center.shape(), center.device())
                    .and_then(|t| t.to_dtype(center.dtype()))
                    .context(ctx)?;
                (center + (s * radius).context(ctx)?).context(ctx)
            }
            InputSet::L2 { .. } => {
                let g: Vec<f64> = (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
                let g = Tensor::from_vec(g, center.shape(), center.device())
                    .and_then(|t| t.to_dtype(center.dtype()))
                    .context(ctx)?;
                self.project(&(center + (g * 1e3).context(ctx)?).context(ctx)?)
            }
        }
    }
}

impl InputSet {
    /// The same set seen by a network whose input is normalised per channel, `x_n = (x - mean_c) / std_c`: the
    /// box's center and radius are mapped channel by channel, so ε stays in pixel units.
    /// The ℓ2 ball becomes an ellipsoid under per-channel scaling and is refused unless every std is equal.
    pub fn normalized(&self, mean: &[f64], std: &[f64]) -> Result<Self> {
        let ctx = || "normalising the input set".to_string();
        let c = self.center();
        let ch = c.dims().get(1).copied().unwrap_or(0);
        for (i, v) in mean.iter().enumerate() {
            crate::finite::check_option(&format!("mean[{i}]"), *v)?;
        }
        for (i, v) in std.iter().enumerate() {
            crate::finite::check_option(&format!("std[{i}]"), *v)?;
        }
        if mean.len() != ch || std.len() != ch || std.iter().any(|s| !(*s > 0.0)) {
            return Err(Error::input(
                Diagnostic::new(
                    Code::BadOption,
                    format!(
                        "normalisation needs {ch} means and {ch} positive stds, got {} and {}",
                        mean.len(),
                        std.len()
                    ),
                )
                .help("give one mean and one std per input channel"),
            ));
        }
        let shape = [1, ch, 1, 1];
        let m = Tensor::from_vec(mean.to_vec(), &shape[..c.rank().min(4)], c.device())
            .and_then(|t| t.to_dtype(c.dtype()))
            .context(ctx)?;
        let s = Tensor::from_vec(std.to_vec(), &shape[..c.rank().min(4)], c.device())
            .and_then(|t| t.to_dtype(c.dtype()))
            .context(ctx)?;
        match self {
            InputSet::Box { center, radius } => {
                // On the host in f64, each end rounded outward (two roundings: two ulps), then as a box.
                let cv = crate::finite::host_values(center, "the box's centre")?;
                let rv = crate::finite::host_values(radius, "the box's radius")?;
                let plane: usize = c.dims().iter().skip(2).product();
                let (mut lo, mut hi) = (Vec::with_capacity(cv.len()), Vec::with_capacity(cv.len()));
                for (k, (&cc, &rr)) in cv.iter().zip(&rv).enumerate() {
                    let chn = (k / plane.max(1)) % ch.max(1);
                    let (mu, sd) = (mean[chn], std[chn]);
                    let (a, z) = ((cc - rr).next_down(), (cc + rr).next_up());
                    lo.push(((a - mu).next_down() / sd).next_down());
                    hi.push(((z - mu).next_up() / sd).next_up());
                }
                InputSet::from_host_box(&lo, &hi, c.dims(), c.dtype(), c.device(), false)
            }
            InputSet::L2 { center, eps } => {
                if std.iter().any(|v| (v - std[0]).abs() > 1e-12) {
                    return Err(Error::input(
                        Diagnostic::new(
                            Code::BadOption,
                            "the ℓ2 ball with per-channel stds that differ is not a ball after normalisation",
                        )
                        .help("use equal stds, or the ℓ∞ norm"),
                    ));
                }
                Ok(InputSet::L2 {
                    center: center.broadcast_sub(&m).and_then(|t| t.broadcast_div(&s)).context(ctx)?,
                    // Rounded up: `ε / std · (1 + 4u)` is at least the real quotient.
                    eps: ((eps / std[0]).context(ctx)? * (1.0 + 4.0 * crate::float::unit(eps.dtype()))).context(ctx)?,
                })
            }
        }
    }
}

/// `(x - mean_c) / std_c` per channel for `x: [B, C, H, W]`.
pub fn normalize(x: &Tensor, mean: &[f64], std: &[f64]) -> Result<Tensor> {
    let ctx = || "normalising inputs".to_string();
    let ch = x.dims().get(1).copied().unwrap_or(0);
    let m =
        Tensor::from_vec(mean.to_vec(), (1, ch, 1, 1), x.device()).and_then(|t| t.to_dtype(x.dtype())).context(ctx)?;
    let s =
        Tensor::from_vec(std.to_vec(), (1, ch, 1, 1), x.device()).and_then(|t| t.to_dtype(x.dtype())).context(ctx)?;
    x.broadcast_sub(&m).and_then(|t| t.broadcast_div(&s)).context(ctx)
}

impl InputSet {
    /// The set of examples `start..start + len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let ctx = || "splitting the input set".to_string();
        Ok(match self {
            InputSet::Box { center, radius } => InputSet::Box {
                center: center.narrow(0, start, len).context(ctx)?,
                radius: radius.narrow(0, start, len).context(ctx)?,
            },
            InputSet::L2 { center, eps } => InputSet::L2 {
                center: center.narrow(0, start, len).context(ctx)?,
                eps: eps.narrow(0, start, len).context(ctx)?,
            },
        })
    }
}

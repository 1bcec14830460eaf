//! High-probability norm estimates from random projections (the paper's Appendix E.1, following Li, Hastie and
//! Church's geometric-mean estimator for Cauchy projections).
//!
//! With `k` projections `x_q = r_qᵀ ν` (`r_q` standard Cauchy: `x_q ~ C(0, ‖ν‖₁)`; standard normal:
//! `x_q ~ N(0, ‖ν‖₂²)`), the geometric mean `ĝ = (Π_q |x_q|)^{1/k}` concentrates around `‖ν‖₁` (Cauchy) or
//! `e^{−(γ+ln 2)/2} ‖ν‖₂` (normal). The median estimator used for training is not a bound. For certification we
//! need `c · ĝ ≥ ‖ν‖` with probability at least `1 − δ`, i.e. a small lower tail `Pr(ĝ ≤ a‖ν‖) ≤ δ`, `a = 1/c`.
//! A Chernoff bound on `ĝ^{−t}` (Markov's inequality, `0 < t < k`) gives it from the fractional moments
//!
//! ```text
//!   Cauchy:  E|x_q|^{−s} = ‖ν‖₁^{−s} / cos(πs/2)                         (|s| < 1)
//!   normal:  E|x_q|^{−s} = ‖ν‖₂^{−s} 2^{−s/2} Γ((1−s)/2) / √π             (s < 1)
//!   Pr(ĝ ≤ a‖ν‖) ≤ a^t · (E|x_q/‖ν‖|^{−t/k})^k,  minimised over t ∈ (0, k),
//! ```
//!
//! and [`correction`] returns the smallest `c = 1/a` whose bound is at most `δ` (for `k = 50`, `δ = 0.01`:
//! `c ≈ 1.98` for Cauchy, `3.21` for normal projections). The guarantee is per estimate: a layer's `n` bounds
//! all hold with probability at least `1 − nδ` (union bound).

/// `ln Pr(ĝ ≤ a‖ν‖)` bound for a given Chernoff parameter `t ∈ (0, k)`.
fn log_tail(t: f64, a: f64, k: f64, cauchy: bool) -> f64 {
    let s = t / k;
    let log_moment = if cauchy {
        -(std::f64::consts::FRAC_PI_2 * s).cos().ln()
    } else {
        -0.5 * s * std::f64::consts::LN_2 + ln_gamma((1.0 - s) / 2.0) - 0.5 * std::f64::consts::PI.ln()
    };
    t * a.ln() + k * log_moment
}

/// Smallest `c ≥ 0` with `Pr(c · ĝ < ‖ν‖) ≤ delta` for `k` Cauchy (`cauchy`) or normal projections.
pub fn correction(k: usize, delta: f64, cauchy: bool) -> f64 {
    let kf = k as f64;
    let target = delta.clamp(1e-300, 1.0).ln();
    let min_tail =
        |a: f64| (1..2000).map(|i| log_tail(kf * i as f64 / 2000.0, a, kf, cauchy)).fold(f64::INFINITY, f64::min);
    // The bound grows with a; bisect for the largest a whose bound is still <= delta.
    let (mut lo, mut hi) = (1e-12f64, 4.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if min_tail(mid) <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    1.0 / lo
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return std::f64::consts::PI.ln() - (std::f64::consts::PI * x).sin().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..].iter().enumerate().fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn ln_gamma_known_values() {
        // Γ(1/2) = √π, Γ(1) = 1, Γ(5) = 24, Γ(0.25) = 3.6256099082.
        assert!((ln_gamma(0.5) - 0.5 * std::f64::consts::PI.ln()).abs() < 1e-12);
        assert!(ln_gamma(1.0).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.25) - 3.625_609_908_221_908_f64.ln()).abs() < 1e-12);
    }

    /// The corrected geometric mean is below the true norm in at most a δ fraction of draws (Monte Carlo with
    /// unit norm), and the correction shrinks as k grows.
    #[test]
    fn corrected_estimate_fails_at_most_delta() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for cauchy in [true, false] {
            let (k, delta) = (50, 0.05);
            let c = correction(k, delta, cauchy);
            let trials = 4000;
            let fails = (0..trials)
                .filter(|_| {
                    let mean_log: f64 = (0..k)
                        .map(|_| {
                            let x: f64 = if cauchy {
                                (std::f64::consts::PI * (rng.random::<f64>() - 0.5)).tan()
                            } else {
                                rng.sample(rand_distr::StandardNormal)
                            };
                            x.abs().ln()
                        })
                        .sum::<f64>()
                        / k as f64;
                    c * mean_log.exp() < 1.0
                })
                .count();
            assert!((fails as f64) / (trials as f64) <= delta, "cauchy={cauchy}: {fails} of {trials}");
            assert!(correction(200, delta, cauchy) < c && c < correction(10, delta, cauchy));
        }
        // The values quoted in the module docs.
        assert!((correction(50, 0.01, true) - 1.98).abs() < 0.01);
        assert!((correction(50, 0.01, false) - 3.21).abs() < 0.01);
    }
}

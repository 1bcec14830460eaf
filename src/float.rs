//! Floating-point facts the sound bounds rest on ([`crate::dual::rounding`] says where each enters): the unit
//! roundoff `u` of a dtype, its smallest normal number, and `γ_n = n u / (1 − n u)`, the classical bound on the
//! relative error of a sum of `n` products computed in any order (Higham, *Accuracy and Stability of Numerical
//! Algorithms*, Lemma 3.1 and eq. (3.5)).

use candle_core::DType;

/// Unit roundoff `u` of `dt`.
pub fn unit(dt: DType) -> f64 {
    match dt {
        DType::F64 => f64::EPSILON / 2.0,
        DType::F32 => (f32::EPSILON / 2.0) as f64,
        // Half precisions: their own unit roundoff (never a compute dtype today, but never unsound).
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 0.5,
    }
}

/// The smallest normal number of `dt` (the absolute error of one product that underflows is below it).
pub fn tiny(dt: DType) -> f64 {
    match dt {
        DType::F64 => f64::MIN_POSITIVE,
        _ => f32::MIN_POSITIVE as f64,
    }
}

/// `γ_n = n u / (1 − n u)`; infinite once `n u ≥ 1/2` (no bound: whatever it charges is lost).
pub fn gamma(n: usize, dt: DType) -> f64 {
    gamma_unit(n, unit(dt))
}

/// `γ_n` for a unit roundoff `u` given directly (the deployed inference's precision).
pub fn gamma_unit(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    if nu >= 0.5 {
        f64::INFINITY
    } else {
        nu / (1.0 - nu)
    }
}

/// The smallest normal number of the precision whose unit roundoff is `u` (f32 or coarser: f32's).
pub fn tiny_unit(u: f64) -> f64 {
    match u < unit(DType::F32) {
        true => f64::MIN_POSITIVE,
        false => f32::MIN_POSITIVE as f64,
    }
}

/// The factor that turns a floating-point estimate `S̃` of a sum of `n` nonnegative terms into the charge
/// `γ_n S ≤ charge_gamma(n) · S̃`: `γ_n (1 + γ_{n+4}) ≤ γ_{2n+4}`, plus slack for the multiplication itself.
pub fn charge_gamma(n: usize, dt: DType) -> f64 {
    gamma(2 * n + 8, dt)
}

/// Rounding helpers on host values.
pub fn down_f32(x: f64) -> f32 {
    let y = x as f32;
    if (y as f64) > x {
        y.next_down()
    } else {
        y
    }
}

/// The smallest f32 at or above `x`.
pub fn up_f32(x: f64) -> f32 {
    let y = x as f32;
    if (y as f64) < x {
        y.next_up()
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `γ_n` in f32 for n = 1: u / (1 − u) with u = 2⁻²⁴; it is infinite once n u ≥ 1/2.
    #[test]
    fn gamma_values() {
        let u = 2f64.powi(-24);
        assert_eq!(gamma(1, DType::F32), u / (1.0 - u));
        assert_eq!(gamma(1 << 23, DType::F32), f64::INFINITY);
        assert!(gamma(10, DType::F64) < 1.2e-15);
        // γ_a (1 + γ_b) ≤ γ_{a+b}: the doubling in `charge_gamma` covers an estimate's own rounding.
        let (a, b) = (gamma(100, DType::F32), gamma(104, DType::F32));
        assert!(a * (1.0 + b) <= gamma(204, DType::F32));
    }

    /// Rounding a value between two f32 neighbours goes to the lower (`down`) and upper (`up`) one.
    #[test]
    fn directed_f32() {
        let x = 0.1f64;
        assert!((down_f32(x) as f64) <= x && (up_f32(x) as f64) >= x);
        assert_eq!(down_f32(x).next_up(), up_f32(x));
        assert_eq!(down_f32(0.5), 0.5);
        assert_eq!(up_f32(0.5), 0.5);
    }
}

//! Optimizers over named parameters, with PyTorch's update rules, and a state that a checkpoint saves and
//! restores exactly (moments, momentum buffers and step counts).
//!
//! - [`Adam`]: `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`, `p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)`,
//!   β = (0.9, 0.999), ε = 1e-8; weight decay is added to the gradient (`g ← g + λ p`, PyTorch's `Adam`, not
//!   `AdamW`).
//! - [`Sgd`]: `g ← g + λ p`; with momentum μ, `b ← g` on the first step and `b ← μ b + g` after, `p ← p − lr · b`
//!   (PyTorch's `SGD`, dampening 0, no Nesterov).
//!
//! Parameters without a gradient in the [`GradStore`] are left alone, as in PyTorch. State tensors are keyed
//! `PARAM.exp_avg`, `PARAM.exp_avg_sq`, `PARAM.step` (Adam) or `PARAM.momentum_buffer` (SGD), plus `adam.step` /
//! `sgd.step` (the number of `step` calls), so loading one optimizer's state into the other fails clearly.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::config::{Optimizer, TrainConfig};
use crate::diagnostics::{Code, Diagnostic};
use crate::error::{Context, Error, Result};

/// Named parameters, e.g. `("c1.weight", var)`.
pub type Params = Vec<(String, Var)>;

fn scalar(v: f64, like: &Tensor) -> Result<Tensor> {
    Tensor::new(&[v], like.device()).context(|| "building optimizer state".into())
}

fn read_scalar(map: &HashMap<String, Tensor>, key: &str, kind: &str) -> Result<f64> {
    let t = map.get(key).ok_or_else(|| state_error(format!("the optimizer state has no `{key}`"), kind))?;
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .ok()
        .and_then(|v| v.first().copied())
        .ok_or_else(|| state_error(format!("`{key}` in the optimizer state is not a number"), kind))
}

fn state_error(message: String, kind: &str) -> Error {
    Error::input(Diagnostic::new(Code::WeightFile, message).help(format!(
        "the checkpoint was written for another optimizer or model (this run uses {kind}); start a new run with another `--out`"
    )))
}

/// Read `key` from a state map, checked against the parameter's shape and moved to its dtype and device.
fn read_like(map: &HashMap<String, Tensor>, key: &str, param: &Tensor, kind: &str) -> Result<Option<Tensor>> {
    let Some(t) = map.get(key) else { return Ok(None) };
    if t.dims() != param.dims() {
        return Err(state_error(
            format!("`{key}` in the optimizer state has shape {:?}, the parameter {:?}", t.dims(), param.dims()),
            kind,
        ));
    }
    let t =
        t.to_dtype(param.dtype()).and_then(|t| t.to_device(param.device())).context(|| format!("loading `{key}`"))?;
    Ok(Some(t))
}

/// Gradient of `var` plus `weight_decay · var` (detached from any graph).
fn decayed_grad(grads: &GradStore, var: &Var, weight_decay: f64, name: &str) -> Result<Option<(Tensor, Tensor)>> {
    let Some(g) = grads.get(var.as_tensor()) else { return Ok(None) };
    let ctx = || format!("updating `{name}`");
    let p = var.as_tensor().detach();
    let g = g.detach();
    let g = if weight_decay != 0.0 { (&g + p.affine(weight_decay, 0.0).context(ctx)?).context(ctx)? } else { g };
    Ok(Some((p, g)))
}

/// Adam with bias correction (PyTorch defaults: betas 0.9 / 0.999, eps 1e-8).
pub struct Adam {
    params: Params,
    exp_avg: Vec<Option<Tensor>>,
    exp_avg_sq: Vec<Option<Tensor>>,
    param_steps: Vec<u64>,
    steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Adam {
    pub fn new(params: Params, weight_decay: f64) -> Self {
        let n = params.len();
        Adam {
            params,
            exp_avg: vec![None; n],
            exp_avg_sq: vec![None; n],
            param_steps: vec![0; n],
            steps: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Number of `step` calls so far (restored by [`Adam::load_state`]).
    pub fn step_count(&self) -> u64 {
        self.steps
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for i in 0..self.params.len() {
            let (name, var) = &self.params[i];
            let Some((p, g)) = decayed_grad(grads, var, self.weight_decay, name)? else { continue };
            let ctx = || format!("updating `{name}`");
            let (b1, b2) = (self.beta1, self.beta2);
            let m = match &self.exp_avg[i] {
                Some(m) => (m.affine(b1, 0.0).context(ctx)? + g.affine(1.0 - b1, 0.0).context(ctx)?).context(ctx)?,
                None => g.affine(1.0 - b1, 0.0).context(ctx)?,
            };
            let g2 = g.sqr().context(ctx)?;
            let v = match &self.exp_avg_sq[i] {
                Some(v) => (v.affine(b2, 0.0).context(ctx)? + g2.affine(1.0 - b2, 0.0).context(ctx)?).context(ctx)?,
                None => g2.affine(1.0 - b2, 0.0).context(ctx)?,
            };
            let t = self.param_steps[i] + 1;
            let bc1 = 1.0 - b1.powf(t as f64);
            let bc2 = 1.0 - b2.powf(t as f64);
            let denom = v.sqrt().context(ctx)?.affine(1.0 / bc2.sqrt(), self.eps).context(ctx)?;
            let update = (&m / &denom).context(ctx)?.affine(lr / bc1, 0.0).context(ctx)?;
            let new_p = (&p - &update).context(ctx)?;
            var.set(&new_p).context(ctx)?;
            self.exp_avg[i] = Some(m);
            self.exp_avg_sq[i] = Some(v);
            self.param_steps[i] = t;
        }
        self.steps += 1;
        Ok(())
    }

    /// Everything needed to continue exactly: moments, per-parameter steps and the step count.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for (i, (name, var)) in self.params.iter().enumerate() {
            if let (Some(m), Some(v)) = (&self.exp_avg[i], &self.exp_avg_sq[i]) {
                map.insert(format!("{name}.exp_avg"), m.clone());
                map.insert(format!("{name}.exp_avg_sq"), v.clone());
                map.insert(format!("{name}.step"), scalar(self.param_steps[i] as f64, var.as_tensor())?);
            }
        }
        if let Some((_, v)) = self.params.first() {
            map.insert("adam.step".into(), scalar(self.steps as f64, v.as_tensor())?);
        }
        Ok(map)
    }

    /// Restore a state written by [`Adam::state_tensors`] for the same parameters.
    pub fn load_state(&mut self, map: &HashMap<String, Tensor>) -> Result<()> {
        let steps = if self.params.is_empty() { 0.0 } else { read_scalar(map, "adam.step", "adam")? };
        let mut exp_avg = vec![None; self.params.len()];
        let mut exp_avg_sq = vec![None; self.params.len()];
        let mut param_steps = vec![0; self.params.len()];
        for (i, (name, var)) in self.params.iter().enumerate() {
            let m = read_like(map, &format!("{name}.exp_avg"), var.as_tensor(), "adam")?;
            let v = read_like(map, &format!("{name}.exp_avg_sq"), var.as_tensor(), "adam")?;
            match (m, v) {
                (Some(m), Some(v)) => {
                    param_steps[i] = read_scalar(map, &format!("{name}.step"), "adam")? as u64;
                    exp_avg[i] = Some(m);
                    exp_avg_sq[i] = Some(v);
                }
                (None, None) => {}
                _ => return Err(state_error(format!("the optimizer state of `{name}` is incomplete"), "adam")),
            }
        }
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
        self.param_steps = param_steps;
        self.steps = steps as u64;
        Ok(())
    }
}

/// Stochastic gradient descent with momentum and weight decay (PyTorch semantics, dampening 0).
pub struct Sgd {
    params: Params,
    buffers: Vec<Option<Tensor>>,
    steps: u64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    pub fn new(params: Params, momentum: f64, weight_decay: f64) -> Self {
        let n = params.len();
        Sgd { params, buffers: vec![None; n], steps: 0, momentum, weight_decay }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn step_count(&self) -> u64 {
        self.steps
    }

    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for i in 0..self.params.len() {
            let (name, var) = &self.params[i];
            let Some((p, g)) = decayed_grad(grads, var, self.weight_decay, name)? else { continue };
            let ctx = || format!("updating `{name}`");
            let d = if self.momentum != 0.0 {
                let b = match &self.buffers[i] {
                    Some(b) => (b.affine(self.momentum, 0.0).context(ctx)? + &g).context(ctx)?,
                    None => g.copy().context(ctx)?,
                };
                self.buffers[i] = Some(b.clone());
                b
            } else {
                g
            };
            let new_p = (&p - d.affine(lr, 0.0).context(ctx)?).context(ctx)?;
            var.set(&new_p).context(ctx)?;
        }
        self.steps += 1;
        Ok(())
    }

    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            if let Some(b) = &self.buffers[i] {
                map.insert(format!("{name}.momentum_buffer"), b.clone());
            }
        }
        if let Some((_, v)) = self.params.first() {
            map.insert("sgd.step".into(), scalar(self.steps as f64, v.as_tensor())?);
        }
        Ok(map)
    }

    pub fn load_state(&mut self, map: &HashMap<String, Tensor>) -> Result<()> {
        let steps = if self.params.is_empty() { 0.0 } else { read_scalar(map, "sgd.step", "sgd")? };
        let mut buffers = vec![None; self.params.len()];
        for (i, (name, var)) in self.params.iter().enumerate() {
            buffers[i] = read_like(map, &format!("{name}.momentum_buffer"), var.as_tensor(), "sgd")?;
        }
        self.buffers = buffers;
        self.steps = steps as u64;
        Ok(())
    }
}

/// The optimizer a [`TrainConfig`] asks for.
pub enum Optim {
    Adam(Adam),
    Sgd(Sgd),
}

impl Optim {
    pub fn from_config(cfg: &TrainConfig, params: Params) -> Self {
        match cfg.optimizer {
            Optimizer::Adam => Optim::Adam(Adam::new(params, cfg.weight_decay)),
            Optimizer::Sgd => Optim::Sgd(Sgd::new(params, cfg.momentum, cfg.weight_decay)),
        }
    }
    pub fn params(&self) -> &Params {
        match self {
            Optim::Adam(o) => o.params(),
            Optim::Sgd(o) => o.params(),
        }
    }
    pub fn step_count(&self) -> u64 {
        match self {
            Optim::Adam(o) => o.step_count(),
            Optim::Sgd(o) => o.step_count(),
        }
    }
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        match self {
            Optim::Adam(o) => o.step(grads, lr),
            Optim::Sgd(o) => o.step(grads, lr),
        }
    }
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        match self {
            Optim::Adam(o) => o.state_tensors(),
            Optim::Sgd(o) => o.state_tensors(),
        }
    }
    pub fn load_state(&mut self, map: &HashMap<String, Tensor>) -> Result<()> {
        match self {
            Optim::Adam(o) => o.load_state(map),
            Optim::Sgd(o) => o.load_state(map),
        }
    }
}

/// The global ℓ2 norm of the gradients of `params` (those that have one).
pub fn grad_norm(grads: &GradStore, params: &[(String, Var)]) -> Result<f64> {
    let mut total = 0.0;
    for (name, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            let s = g
                .to_dtype(DType::F64)
                .and_then(|g| g.sqr())
                .and_then(|g| g.sum_all())
                .and_then(|g| g.to_scalar::<f64>())
                .context(|| format!("gradient norm of `{name}`"))?;
            total += s;
        }
    }
    Ok(total.sqrt())
}

/// Scale the gradients so that their global ℓ2 norm is at most `max_norm` (PyTorch's `clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)` when below 1). Returns the norm before clipping; a non-finite norm is
/// returned without touching the gradients, so the caller can stop on it.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads, params)?;
    if !norm.is_finite() {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (name, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(coef, 0.0).context(|| format!("clipping the gradient of `{name}`"))?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quad_params(init: &[f32]) -> Params {
        vec![("w".to_string(), Var::new(init, &Device::Cpu).unwrap())]
    }

    /// Loss Σ (w - target)², gradients via candle's backprop.
    fn quad_grads(params: &Params, target: &[f32]) -> GradStore {
        let t = Tensor::new(target, &Device::Cpu).unwrap();
        let w = params[0].1.as_tensor();
        let loss = (w - &t).unwrap().sqr().unwrap().sum_all().unwrap();
        loss.backward().unwrap()
    }

    fn values(params: &Params) -> Vec<f32> {
        params[0].1.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn adam_converges_on_a_quadratic() {
        let target = [1.0f32, -2.0, 3.0];
        let mut opt = Adam::new(quad_params(&[0.0, 0.0, 0.0]), 0.0);
        for _ in 0..2000 {
            let g = quad_grads(opt.params(), &target);
            opt.step(&g, 0.05).unwrap();
        }
        for (a, b) in values(opt.params()).iter().zip(target) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        assert_eq!(opt.step_count(), 2000);
    }

    #[test]
    fn adam_first_step_matches_pytorch() {
        // PyTorch: the first Adam step moves each coordinate by lr · sign(g) (up to eps).
        let mut opt = Adam::new(quad_params(&[0.0, 5.0]), 0.0);
        let g = quad_grads(opt.params(), &[1.0, 1.0]);
        opt.step(&g, 0.1).unwrap();
        let v = values(opt.params());
        assert!((v[0] - 0.1).abs() < 1e-6 && (v[1] - 4.9).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn sgd_momentum_and_weight_decay_follow_pytorch() {
        // w = 1, loss = w² (g = 2w), wd 0.1, μ 0.9, lr 0.1:
        // step 1: g = 2 + 0.1 = 2.1, b = 2.1, w = 1 - 0.21 = 0.79
        // step 2: g = 1.58 + 0.079 = 1.659, b = 0.9·2.1 + 1.659 = 3.549, w = 0.79 - 0.3549 = 0.4351
        let mut opt = Sgd::new(quad_params(&[1.0]), 0.9, 0.1);
        for _ in 0..2 {
            let g = quad_grads(opt.params(), &[0.0]);
            opt.step(&g, 0.1).unwrap();
        }
        assert!((values(opt.params())[0] - 0.4351).abs() < 1e-6);
    }

    #[test]
    fn state_round_trip_gives_identical_next_steps() {
        let target = [0.5f32, -1.5];
        for kind in [Optimizer::Adam, Optimizer::Sgd] {
            let cfg = TrainConfig { optimizer: kind, weight_decay: 0.01, ..Default::default() };
            let mut a = Optim::from_config(&cfg, quad_params(&[2.0, 2.0]));
            for _ in 0..5 {
                let g = quad_grads(a.params(), &target);
                a.step(&g, 0.01).unwrap();
            }
            let state = a.state_tensors().unwrap();
            let mut b = Optim::from_config(&cfg, quad_params(&values(a.params())));
            b.load_state(&state).unwrap();
            assert_eq!(b.step_count(), 5);
            for _ in 0..5 {
                let ga = quad_grads(a.params(), &target);
                a.step(&ga, 0.01).unwrap();
                let gb = quad_grads(b.params(), &target);
                b.step(&gb, 0.01).unwrap();
            }
            assert_eq!(values(a.params()), values(b.params()));
            // Loading the other optimizer's state fails with a diagnostic.
            let other = TrainConfig {
                optimizer: if kind == Optimizer::Adam { Optimizer::Sgd } else { Optimizer::Adam },
                ..cfg
            };
            let mut c = Optim::from_config(&other, quad_params(&[0.0, 0.0]));
            assert!(matches!(c.load_state(&state), Err(Error::Input(_))));
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let params = quad_params(&[3.0, 4.0]);
        let mut g = quad_grads(&params, &[0.0, 0.0]); // gradient (6, 8), norm 10
        let n = clip_grad_norm(&mut g, &params, 5.0).unwrap();
        assert!((n - 10.0).abs() < 1e-9);
        assert!((grad_norm(&g, &params).unwrap() - 5.0).abs() < 1e-4);
        let n2 = clip_grad_norm(&mut g, &params, 100.0).unwrap();
        assert!((n2 - 5.0).abs() < 1e-4);
        assert!((grad_norm(&g, &params).unwrap() - n2).abs() < 1e-12);
    }
}

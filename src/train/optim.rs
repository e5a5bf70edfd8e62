//! Optimisers with PyTorch's update rules, in place on the parameters of a [`ParamStore`].
//!
//! YOLOX (yolox_base.py `get_optimizer`) builds three parameter groups: BN weights (no decay),
//! conv/linear weights (`weight_decay`) and all biases (no decay). Here the store's
//! [`TensorKind`] decides: weight decay applies to `TensorKind::Weight` only; `NoDecay` entries
//! are trained without it; `Buffer` entries (BN running statistics) are never touched.
//!
//! Every optimiser reads each parameter's accumulated `.grad()` and skips parameters without
//! one (as PyTorch skips `p.grad is None`). State (momentum buffers, Adam moments, step counts)
//! is kept per parameter name, so a checkpoint restores it into a freshly built model.

use std::collections::HashMap;

use super::config::{OptimizerKind, TrainConfig};
use crate::backend::cuda::{optim as cuda_optim, CudaDevice, CudaSlice};
use crate::nn::{NamedTensor, ParamStore, TensorKind};
use crate::tensor::{CudaHeld, CudaWriteGuard, Tensor};
use crate::{Error, Result};

/// What the trainer needs from an optimiser.
pub trait Optimizer: Send + Sync {
    /// One update of every parameter that has a gradient, at learning rate `lr`.
    fn step(&mut self, lr: f32) -> Result<()>;
    /// Forget every parameter's gradient (PyTorch `zero_grad(set_to_none=True)`).
    fn zero_grad(&self);
    /// The state under names `<param name>.<state name>` (`momentum_buffer`, `exp_avg`,
    /// `exp_avg_sq`, `step`), each a copy with the parameter's shape (`step`: one element).
    /// Fails (rather than leave a buffer out of a checkpoint) when a device buffer cannot be
    /// read back.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Replace the state with `state` (as [`Optimizer::state`] returned it). Nothing changes on
    /// error; errors name the offending tensor.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// Which optimiser this is (stored in checkpoints).
    fn kind(&self) -> OptimizerKind;
}

/// The optimiser a config asks for, over the trainable entries of `store`.
pub fn build_optimizer(config: &TrainConfig, store: &ParamStore) -> Box<dyn Optimizer> {
    let wd = config.weight_decay as f32;
    match config.optimizer {
        OptimizerKind::Sgd => {
            Box::new(Sgd::new(store, config.momentum as f32, config.nesterov, wd))
        }
        OptimizerKind::Adam | OptimizerKind::AdamW => {
            let (b1, b2) = config.adam_betas;
            let mut adam = Adam::new(store, b1 as f32, b2 as f32, config.adam_eps as f32, wd);
            adam.decoupled_weight_decay = config.optimizer == OptimizerKind::AdamW;
            Box::new(adam)
        }
    }
}

/// The multi-tensor launches' first split: CUDA parameters with their gradients, and the
/// parameters left to the other paths (those on the CPU). Parameters without a gradient are in
/// neither (skipped, as PyTorch skips `p.grad is None`).
#[allow(clippy::type_complexity)]
fn cuda_params_with_grads<'p>(
    params: &'p [NamedTensor],
    op: &str,
) -> Result<(Vec<(&'p NamedTensor, Tensor)>, Vec<&'p NamedTensor>)> {
    let (mut grads, mut rest) = (Vec::new(), Vec::new());
    for p in params {
        if !p.tensor.is_cuda() {
            rest.push(p);
        } else if let Some(g) = checked_grad(p, op)? {
            grads.push((p, g));
        }
    }
    Ok((grads, rest))
}

/// Hold every buffer of a multi-tensor launch: each parameter for writing, its gradient for
/// reading (a view as a contiguous copy). A parameter that cannot be held joins `rest`.
fn hold_for_launch<'g, 'p>(
    grads: &'g [(&'p NamedTensor, Tensor)],
    rest: &mut Vec<&'p NamedTensor>,
) -> Result<Vec<(&'p NamedTensor, CudaWriteGuard<'p>, CudaHeld<'g>)>> {
    let mut held = Vec::with_capacity(grads.len());
    for (p, g) in grads {
        match p.tensor.cuda_write() {
            Some(pg) => held.push((*p, pg, g.cuda_read_or_copy()?)),
            None => rest.push(p),
        }
    }
    Ok(held)
}

/// The weight decay a parameter gets: YOLOX's pg1 (conv/linear weights) only.
fn decay_for(kind: TensorKind, weight_decay: f32) -> f32 {
    match kind {
        TensorKind::Weight => weight_decay,
        TensorKind::NoDecay | TensorKind::Buffer => 0.0,
    }
}

fn trainable(store: &ParamStore) -> Vec<NamedTensor> {
    store
        .entries()
        .into_iter()
        .filter(|e| e.kind != TensorKind::Buffer)
        .collect()
}

/// The parameter's gradient values, checked against its shape.
fn grad_values(p: &NamedTensor, op: &str) -> Result<Option<Vec<f32>>> {
    Ok(checked_grad(p, op)?.map(|g| g.to_vec()))
}

/// The parameter's gradient tensor (on whatever device it lives), `None` without one; an error
/// naming the parameter when its shape differs from the parameter's.
fn checked_grad(p: &NamedTensor, op: &str) -> Result<Option<Tensor>> {
    let Some(g) = p.tensor.grad() else {
        return Ok(None);
    };
    if g.shape() != p.tensor.shape() {
        return Err(Error::ShapeMismatch {
            op: format!("{op}: gradient of `{}`", p.name),
            expected: p.tensor.shape().to_string(),
            got: g.shape().to_string(),
        });
    }
    Ok(Some(g))
}

/// `name.suffix` → (`name`, `suffix`), checked against the known parameters and shapes.
fn parse_state_name<'a>(
    op: &str,
    full: &'a str,
    tensor: &Tensor,
    params: &[NamedTensor],
    suffixes: &[&str],
) -> Result<(&'a str, &'a str)> {
    let (name, suffix) = full.rsplit_once('.').ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{op}: state tensor `{full}` is not named <parameter>.<state>"
        ))
    })?;
    if !suffixes.contains(&suffix) {
        return Err(Error::InvalidArgument(format!(
            "{op}: state tensor `{full}`: unknown state `{suffix}` (expected one of {})",
            suffixes.join(", ")
        )));
    }
    let param = params.iter().find(|p| p.name == name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{op}: state tensor `{full}` names no trainable parameter of the model"
        ))
    })?;
    let expected_numel = if suffix == "step" {
        1
    } else {
        param.tensor.numel()
    };
    if tensor.numel() != expected_numel
        || (suffix != "step" && tensor.shape() != param.tensor.shape())
    {
        return Err(Error::ShapeMismatch {
            op: format!("{op}: state tensor `{full}`"),
            expected: if suffix == "step" {
                "one element".into()
            } else {
                param.tensor.shape().to_string()
            },
            got: tensor.shape().to_string(),
        });
    }
    Ok((name, suffix))
}

/// PyTorch `torch.optim.SGD` (dampening 0), per element:
/// ```text
/// d   = g + wd·p                     (wd only for TensorKind::Weight)
/// buf = d            on the first step of this parameter
/// buf = μ·buf + d    afterwards
/// p  -= lr·(d + μ·buf)   Nesterov
/// p  -= lr·buf           plain momentum        (p -= lr·d when μ = 0: no buffer is kept)
/// ```
pub struct Sgd {
    params: Vec<NamedTensor>,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    momentum_buffers: HashMap<String, Vec<f32>>,
    /// Momentum buffers of parameters on CUDA (Nesterov there runs as one fused kernel per
    /// parameter, `sgd_nesterov_f32`); a buffer lives in one of the two maps, never both.
    device_buffers: HashMap<String, CudaSlice<f32>>,
}

impl Sgd {
    /// Over every trainable entry of `store` (YOLOX: momentum 0.9, Nesterov, wd 5e-4).
    pub fn new(store: &ParamStore, momentum: f32, nesterov: bool, weight_decay: f32) -> Self {
        Sgd {
            params: trainable(store),
            momentum,
            nesterov,
            weight_decay,
            momentum_buffers: HashMap::new(),
            device_buffers: HashMap::new(),
        }
    }

    /// `p`'s momentum buffer on the device, taken out of the state (the caller puts it back):
    /// the device copy, or the host one uploaded (a loaded checkpoint), or zeros. The kernel's
    /// buf = μ·buf + d equals torch's first-step buf = d when buf starts at 0.
    fn take_device_buffer(&mut self, dev: &CudaDevice, p: &NamedTensor) -> Result<CudaSlice<f32>> {
        Ok(match self.device_buffers.remove(&p.name) {
            Some(b) => b,
            None => match self.momentum_buffers.remove(&p.name) {
                Some(host) => dev.upload(&host)?,
                None => dev.zeros(p.tensor.numel())?,
            },
        })
    }

    /// The CUDA arm for every parameter at once: one `sgd_nesterov_multi` launch over the CUDA
    /// parameters with gradients (one fused update over all parameters; YOLOX-s has
    /// some three hundred). Returns the parameters left to [`Self::step_on_cuda`] and the host
    /// loop: those on the CPU, and any whose buffer cannot be held for the launch.
    fn step_all_on_cuda<'p>(
        &mut self,
        params: &'p [NamedTensor],
        lr: f32,
    ) -> Result<Vec<&'p NamedTensor>> {
        let any_cuda = params.iter().any(|p| p.tensor.is_cuda());
        if !(self.nesterov
            && self.momentum != 0.0
            && any_cuda
            && cuda_optim::multi_tensor_enabled())
        {
            return Ok(params.iter().collect());
        }
        let dev = crate::backend::cuda::device()?;
        let (grads, mut rest) = cuda_params_with_grads(params, "sgd")?;
        let mut held = hold_for_launch(&grads, &mut rest)?;
        let mut bufs = held
            .iter()
            .map(|(p, _, _)| self.take_device_buffer(&dev, p))
            .collect::<Result<Vec<_>>>()?;
        let mut tensors: Vec<cuda_optim::SgdTensor> = held
            .iter_mut()
            .zip(bufs.iter_mut())
            .map(|((p, pg, gh), buf)| cuda_optim::SgdTensor {
                p: pg.slice(),
                g: gh.slice(),
                buf,
                weight_decay: decay_for(p.kind, self.weight_decay),
            })
            .collect();
        let launched = cuda_optim::sgd_nesterov_multi(&dev, &mut tensors, lr, self.momentum);
        drop(tensors);
        // The buffers go back into the state whatever the launch did.
        for ((p, _, _), buf) in held.iter().zip(bufs) {
            self.device_buffers.insert(p.name.clone(), buf);
        }
        launched?;
        Ok(rest)
    }

    /// The CUDA arm of one parameter's step: `Ok(false)` when it does not apply (the parameter
    /// is not a whole CUDA buffer, or not Nesterov with momentum) and the host loop must run.
    fn step_on_cuda(&mut self, p: &NamedTensor, lr: f32) -> Result<bool> {
        if !(p.tensor.is_cuda() && self.nesterov && self.momentum != 0.0) {
            return Ok(false);
        }
        let Some(g) = checked_grad(p, "sgd")? else {
            return Ok(true);
        };
        let dev = crate::backend::cuda::device()?;
        let mut buf = self.take_device_buffer(&dev, p)?;
        let wd = decay_for(p.kind, self.weight_decay);
        let (mu, name) = (self.momentum, p.name.clone());
        let ran = p.tensor.with_cuda_mut(|dev, values| {
            g.with_cuda(|_, gs| cuda_optim::sgd_nesterov(dev, values, gs, &mut buf, lr, mu, wd))
        })?;
        self.device_buffers.insert(name, buf);
        Ok(ran.is_some())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, lr: f32) -> Result<()> {
        let params = self.params.clone();
        let mut on_host = Vec::new();
        for p in self.step_all_on_cuda(&params, lr)? {
            if !self.step_on_cuda(p, lr)? {
                on_host.push(p);
            }
        }
        let Sgd {
            momentum,
            nesterov,
            weight_decay,
            momentum_buffers,
            ..
        } = self;
        let (mu, nesterov) = (*momentum, *nesterov);
        for p in on_host {
            let Some(grad) = grad_values(p, "sgd")? else {
                continue;
            };
            let wd = decay_for(p.kind, *weight_decay);
            let mut buf = if mu != 0.0 {
                Some(momentum_buffers.remove(&p.name))
            } else {
                None
            };
            p.tensor.update_values(|values| {
                let first = matches!(buf, Some(None));
                if first {
                    buf = Some(Some(vec![0.0; values.len()]));
                }
                for (i, (v, &g)) in values.iter_mut().zip(grad.iter()).enumerate() {
                    // torch: d_p = d_p.add(param, alpha=weight_decay)
                    let d = if wd != 0.0 { g + wd * *v } else { g };
                    let step = match &mut buf {
                        Some(Some(b)) => {
                            // torch: buf = clone(d_p) first; then buf.mul_(μ).add_(d_p)
                            b[i] = if first { d } else { b[i] * mu + d };
                            if nesterov {
                                d + mu * b[i]
                            } else {
                                b[i]
                            }
                        }
                        _ => d,
                    };
                    // torch: param.add_(d_p, alpha=-lr)
                    *v += -lr * step;
                }
            })?;
            if let Some(Some(b)) = buf {
                momentum_buffers.insert(p.name.clone(), b);
            }
        }
        Ok(())
    }

    fn zero_grad(&self) {
        for p in &self.params {
            p.tensor.zero_grad();
        }
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for p in &self.params {
            let values = match (
                self.momentum_buffers.get(&p.name),
                self.device_buffers.get(&p.name),
            ) {
                (Some(b), _) => b.clone(),
                (None, Some(d)) => crate::backend::cuda::device()?.download(d)?,
                (None, None) => continue,
            };
            let t = Tensor::from_vec(values, p.tensor.shape().clone())?;
            out.push((format!("{}.momentum_buffer", p.name), t));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let mut buffers = HashMap::new();
        for (full, t) in state {
            let (name, _) = parse_state_name(
                "sgd.load_state",
                full,
                t,
                &self.params,
                &["momentum_buffer"],
            )?;
            buffers.insert(name.to_string(), t.to_vec());
        }
        self.momentum_buffers = buffers;
        self.device_buffers.clear();
        Ok(())
    }

    fn kind(&self) -> OptimizerKind {
        OptimizerKind::Sgd
    }
}

/// PyTorch `torch.optim.Adam` / `AdamW` (amsgrad off), per element with t = this parameter's
/// step count (incremented first):
/// ```text
/// Adam:   g = g + wd·p                       AdamW: p = p·(1 − lr·wd)
/// m = m + (1 − β1)·(g − m)                   (torch lerp_)
/// v = β2·v + (1 − β2)·g²
/// p = p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps)
/// ```
/// Weight decay (either form) applies to `TensorKind::Weight` only.
pub struct Adam {
    params: Vec<NamedTensor>,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// false: Adam (L2 added to the gradient); true: AdamW (decoupled decay).
    pub decoupled_weight_decay: bool,
    moments: HashMap<String, AdamMoments>,
    /// Moments of parameters on CUDA (one fused `adam_f32` kernel per parameter); a
    /// parameter's moments live in one of the two maps, never both.
    device_moments: HashMap<String, DeviceAdamMoments>,
}

#[derive(Clone)]
struct AdamMoments {
    step: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

struct DeviceAdamMoments {
    step: u64,
    exp_avg: CudaSlice<f32>,
    exp_avg_sq: CudaSlice<f32>,
}

impl Adam {
    /// Adam over every trainable entry of `store` (PyTorch defaults: β 0.9/0.999, eps 1e-8).
    pub fn new(store: &ParamStore, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Self {
        Adam {
            params: trainable(store),
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled_weight_decay: false,
            moments: HashMap::new(),
            device_moments: HashMap::new(),
        }
    }

    /// `p`'s moments on the device, taken out of the state (the caller puts them back): the
    /// device copy, or the host one uploaded (a loaded checkpoint), or zeros at step 0.
    fn take_device_moments(
        &mut self,
        dev: &CudaDevice,
        p: &NamedTensor,
    ) -> Result<DeviceAdamMoments> {
        Ok(match self.device_moments.remove(&p.name) {
            Some(s) => s,
            None => match self.moments.remove(&p.name) {
                Some(host) => DeviceAdamMoments {
                    step: host.step,
                    exp_avg: dev.upload(&host.exp_avg)?,
                    exp_avg_sq: dev.upload(&host.exp_avg_sq)?,
                },
                None => DeviceAdamMoments {
                    step: 0,
                    exp_avg: dev.zeros(p.tensor.numel())?,
                    exp_avg_sq: dev.zeros(p.tensor.numel())?,
                },
            },
        })
    }

    /// The CUDA arm for every parameter at once (`adam_multi`, as [`Sgd`]'s): returns the
    /// parameters left to [`Self::step_on_cuda`] and the host loop.
    fn step_all_on_cuda<'p>(
        &mut self,
        params: &'p [NamedTensor],
        lr: f32,
    ) -> Result<Vec<&'p NamedTensor>> {
        if !(params.iter().any(|p| p.tensor.is_cuda()) && cuda_optim::multi_tensor_enabled()) {
            return Ok(params.iter().collect());
        }
        let dev = crate::backend::cuda::device()?;
        let (grads, mut rest) = cuda_params_with_grads(params, self.kind().name())?;
        let mut held = hold_for_launch(&grads, &mut rest)?;
        let mut states = held
            .iter()
            .map(|(p, _, _)| {
                let mut s = self.take_device_moments(&dev, p)?;
                s.step += 1;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tensors: Vec<cuda_optim::AdamTensor> = held
            .iter_mut()
            .zip(states.iter_mut())
            .map(|((p, pg, gh), st)| cuda_optim::AdamTensor {
                p: pg.slice(),
                g: gh.slice(),
                m: &mut st.exp_avg,
                v: &mut st.exp_avg_sq,
                weight_decay: decay_for(p.kind, self.weight_decay),
                step: u32::try_from(st.step).unwrap_or(u32::MAX),
            })
            .collect();
        let h = cuda_optim::AdamParams {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: 0.0,
            decoupled: self.decoupled_weight_decay,
            step: 1,
        };
        let launched = cuda_optim::adam_multi(&dev, &mut tensors, &h);
        drop(tensors);
        // The moments go back into the state whatever the launch did (a failed launch does not
        // count as a step).
        for ((p, _, _), mut st) in held.iter().zip(states) {
            if launched.is_err() {
                st.step -= 1;
            }
            self.device_moments.insert(p.name.clone(), st);
        }
        launched?;
        Ok(rest)
    }

    /// The CUDA arm of one parameter's step: `Ok(false)` when the parameter is not a whole CUDA
    /// buffer and the host loop must run. Host moments (from a checkpoint) move to the device.
    fn step_on_cuda(&mut self, p: &NamedTensor, lr: f32) -> Result<bool> {
        if !p.tensor.is_cuda() {
            return Ok(false);
        }
        let Some(g) = checked_grad(p, self.kind().name())? else {
            return Ok(true);
        };
        let dev = crate::backend::cuda::device()?;
        let mut state = self.take_device_moments(&dev, p)?;
        state.step += 1;
        let h = cuda_optim::AdamParams {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: decay_for(p.kind, self.weight_decay),
            decoupled: self.decoupled_weight_decay,
            step: u32::try_from(state.step).unwrap_or(u32::MAX),
        };
        let ran = p.tensor.with_cuda_mut(|dev, values| {
            g.with_cuda(|_, gs| {
                cuda_optim::adam(
                    dev,
                    values,
                    gs,
                    &mut state.exp_avg,
                    &mut state.exp_avg_sq,
                    &h,
                )
            })
        })?;
        if ran.is_none() {
            // Not a whole device buffer: the host loop runs, with the moments back on the host.
            let moments = AdamMoments {
                step: state.step - 1,
                exp_avg: dev.download(&state.exp_avg)?,
                exp_avg_sq: dev.download(&state.exp_avg_sq)?,
            };
            self.moments.insert(p.name.clone(), moments);
            return Ok(false);
        }
        self.device_moments.insert(p.name.clone(), state);
        Ok(true)
    }

    /// AdamW (decoupled weight decay; PyTorch's default wd is 1e-2, YOLOX configs pass theirs).
    pub fn new_adamw(
        store: &ParamStore,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Self {
        let mut a = Adam::new(store, beta1, beta2, eps, weight_decay);
        a.decoupled_weight_decay = true;
        a
    }
}

impl Optimizer for Adam {
    fn step(&mut self, lr: f32) -> Result<()> {
        let op = self.kind().name();
        let params = self.params.clone();
        for p in self.step_all_on_cuda(&params, lr)? {
            if self.step_on_cuda(p, lr)? {
                continue;
            }
            let Some(grad) = grad_values(p, op)? else {
                continue;
            };
            let wd = decay_for(p.kind, self.weight_decay);
            let n = grad.len();
            let state = self
                .moments
                .entry(p.name.clone())
                .or_insert_with(|| AdamMoments {
                    step: 0,
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                });
            state.step += 1;
            // Python floats (f64) in torch's single-tensor Adam, then scalars for f32 kernels.
            let t = state.step as i32;
            let bias_correction1 = 1.0 - (self.beta1 as f64).powi(t);
            let bias_correction2 = 1.0 - (self.beta2 as f64).powi(t);
            let step_size = (lr as f64 / bias_correction1) as f32;
            let bias_correction2_sqrt = bias_correction2.sqrt() as f32;
            let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
            let decoupled = self.decoupled_weight_decay;
            let decay_factor = 1.0 - lr * wd;
            p.tensor.update_values(|values| {
                for (i, v) in values.iter_mut().enumerate() {
                    let mut g = grad[i];
                    if wd != 0.0 {
                        if decoupled {
                            // torch AdamW: param.mul_(1 - lr * weight_decay)
                            *v *= decay_factor;
                        } else {
                            // torch Adam: grad = grad.add(param, alpha=weight_decay)
                            g += wd * *v;
                        }
                    }
                    let m = &mut state.exp_avg[i];
                    *m += (1.0 - b1) * (g - *m);
                    let s = &mut state.exp_avg_sq[i];
                    *s = *s * b2 + (1.0 - b2) * g * g;
                    let denom = s.sqrt() / bias_correction2_sqrt + eps;
                    *v += -step_size * (*m / denom);
                }
            })?;
        }
        Ok(())
    }

    fn zero_grad(&self) {
        for p in &self.params {
            p.tensor.zero_grad();
        }
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for p in &self.params {
            let (step, exp_avg, exp_avg_sq) =
                match (self.moments.get(&p.name), self.device_moments.get(&p.name)) {
                    (Some(m), _) => (m.step, m.exp_avg.clone(), m.exp_avg_sq.clone()),
                    (None, Some(d)) => {
                        let dev = crate::backend::cuda::device()?;
                        (
                            d.step,
                            dev.download(&d.exp_avg)?,
                            dev.download(&d.exp_avg_sq)?,
                        )
                    }
                    (None, None) => continue,
                };
            let shape = p.tensor.shape().clone();
            let a = Tensor::from_vec(exp_avg, shape.clone())?;
            let b = Tensor::from_vec(exp_avg_sq, shape)?;
            out.push((format!("{}.exp_avg", p.name), a));
            out.push((format!("{}.exp_avg_sq", p.name), b));
            out.push((format!("{}.step", p.name), Tensor::scalar(step as f32)));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let op = format!("{}.load_state", self.kind().name());
        #[derive(Default)]
        struct Parts {
            step: Option<u64>,
            exp_avg: Option<Vec<f32>>,
            exp_avg_sq: Option<Vec<f32>>,
        }
        let mut parts: HashMap<String, Parts> = HashMap::new();
        for (full, t) in state {
            let (name, suffix) = parse_state_name(
                &op,
                full,
                t,
                &self.params,
                &["exp_avg", "exp_avg_sq", "step"],
            )?;
            let entry = parts.entry(name.to_string()).or_default();
            match suffix {
                "step" => {
                    let s = t.item()?;
                    if !(s.is_finite() && s >= 1.0 && s.fract() == 0.0) {
                        return Err(Error::InvalidArgument(format!(
                            "{op}: state tensor `{full}` must hold a whole step count >= 1, got {s}"
                        )));
                    }
                    entry.step = Some(s as u64);
                }
                "exp_avg" => entry.exp_avg = Some(t.to_vec()),
                _ => entry.exp_avg_sq = Some(t.to_vec()),
            }
        }
        let mut moments = HashMap::new();
        for (name, p) in parts {
            match (p.step, p.exp_avg, p.exp_avg_sq) {
                (Some(step), Some(exp_avg), Some(exp_avg_sq)) => {
                    moments.insert(
                        name,
                        AdamMoments {
                            step,
                            exp_avg,
                            exp_avg_sq,
                        },
                    );
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{op}: parameter `{name}` needs all of exp_avg, exp_avg_sq and step"
                    )))
                }
            }
        }
        self.moments = moments;
        self.device_moments.clear();
        Ok(())
    }

    fn kind(&self) -> OptimizerKind {
        if self.decoupled_weight_decay {
            OptimizerKind::AdamW
        } else {
            OptimizerKind::Adam
        }
    }
}

//! `torch.optim.Adam` and `AdamW` (amsgrad off) on a store's parameters; on CUDA one fused
//! launch over every parameter.

use std::collections::HashMap;

use super::{
    checked_grad, cuda_params_with_grads, decay_for, grad_values, hold_for_launch,
    parse_state_name, trainable, Optimizer,
};
use crate::backend::cuda::{optim as cuda_optim, CudaDevice, CudaSlice};
use crate::nn::{NamedTensor, ParamStore};
use crate::tensor::Tensor;
use crate::train::config::OptimizerKind;
use crate::{Error, Result};

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

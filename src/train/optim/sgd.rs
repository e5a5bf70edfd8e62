//! `torch.optim.SGD` (dampening 0, Nesterov or plain momentum) on a store's parameters; on CUDA
//! one fused launch over every parameter.

use std::collections::HashMap;

use super::{
    checked_grad, cuda_params_with_grads, decay_for, grad_values, hold_for_launch,
    parse_state_name, trainable, Optimizer,
};
use crate::backend::cuda::{optim as cuda_optim, CudaDevice, CudaSlice};
use crate::nn::{NamedTensor, ParamStore};
use crate::tensor::Tensor;
use crate::train::config::OptimizerKind;
use crate::Result;

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

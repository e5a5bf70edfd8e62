//! softmax and log_softmax along an axis (max-subtracted, so large logits do not overflow).
//! Kernels: `backend::cpu::softmax` and `backend::cuda::softmax` (`kernels/softmax.cu`); this
//! file validates, dispatches (`fwd`, `bwd`) and records. Both backwards read the saved output.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cpu::softmax::{self as cpu_softmax, AxisSplit};
use crate::backend::cuda::softmax as cuda_softmax;
use crate::tensor::{Device, Tensor};
use crate::Result;

/// Which of the two ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Softmax,
    LogSoftmax,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Softmax => "softmax",
            Kind::LogSoftmax => "log_softmax",
        }
    }
}

pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    softmax_op(x, axis, Kind::LogSoftmax)
}

pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    softmax_op(x, axis, Kind::Softmax)
}

fn softmax_op(x: &Tensor, axis: isize, kind: Kind) -> Result<Tensor> {
    let a = x.shape().axis(kind.name(), axis)?;
    let split = split_at_axis(x.dims(), a);
    let device = x.device();
    let out = fwd(device, x, split, kind)?;
    let saved = out.detach();
    record(kind.name(), out, &[x], move |g| {
        Ok(vec![Some(bwd(device, g, &saved, split, kind)?)])
    })
}

/// The forward on `device` (x's).
fn fwd(device: Device, x: &Tensor, split: AxisSplit, kind: Kind) -> Result<Tensor> {
    match device {
        Device::Cpu => cpu_fwd(x, split, kind),
        Device::Cuda => cuda_fwd(x, split, kind),
    }
}

/// The input gradient from the output gradient `g` and the saved output `y`.
fn bwd(device: Device, g: &Tensor, y: &Tensor, split: AxisSplit, kind: Kind) -> Result<Tensor> {
    match device {
        Device::Cpu => cpu_bwd(g, y, split, kind),
        Device::Cuda => cuda_bwd(g, y, split, kind),
    }
}

fn cpu_fwd(x: &Tensor, split: AxisSplit, kind: Kind) -> Result<Tensor> {
    let y = x.with_values(|v| match kind {
        Kind::Softmax => cpu_softmax::softmax(v, split),
        Kind::LogSoftmax => cpu_softmax::log_softmax(v, split),
    })?;
    Tensor::from_vec(y, x.shape().clone())
}

fn cpu_bwd(g: &Tensor, y: &Tensor, split: AxisSplit, kind: Kind) -> Result<Tensor> {
    let (gv, yv) = (g.to_vec(), y.to_vec());
    let dx = match kind {
        Kind::Softmax => cpu_softmax::softmax_bwd(&gv, &yv, split),
        Kind::LogSoftmax => cpu_softmax::log_softmax_bwd(&gv, &yv, split),
    };
    Tensor::from_vec(dx, y.shape().clone())
}

fn cuda_fwd(x: &Tensor, (outer, len, inner): AxisSplit, kind: Kind) -> Result<Tensor> {
    let log = kind == Kind::LogSoftmax;
    let y = x.with_cuda(|dev, xs| cuda_softmax::fwd(dev, xs, outer, len, inner, log))?;
    Tensor::from_cuda(y, x.shape().clone())
}

fn cuda_bwd(g: &Tensor, y: &Tensor, (outer, len, inner): AxisSplit, kind: Kind) -> Result<Tensor> {
    let log = kind == Kind::LogSoftmax;
    let dx = g.with_cuda(|dev, gs| {
        y.with_cuda(|_, ys| cuda_softmax::bwd(dev, gs, ys, outer, len, inner, log))
    })?;
    Tensor::from_cuda(dx, y.shape().clone())
}

//! Launchers of `kernels/optim.cu`: fused optimizer steps and the EMA update over flat buffers,
//! updated in place, one tensor per launch or every tensor of a model in one launch (`*_multi`).
//! CPU reference: the PyTorch formulas (see the kernel file's contract).

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};

use super::context::{grid_1d, grid_per_item, CudaDevice};
use super::launch::Kernel;
use super::structs::cuda_struct;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

fn finite(op: &str, named: &[(&str, f32)]) -> Result<()> {
    for (name, v) in named {
        if !v.is_finite() {
            return Err(Error::op(op, format!("{name} = {v} is not finite")));
        }
    }
    Ok(())
}

/// SGD with Nesterov momentum (dampening 0): `buf` is the momentum buffer (zeros at first).
pub fn sgd_nesterov(
    dev: &CudaDevice,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    buf: &mut CudaSlice<f32>,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> Result<()> {
    let sym = "sgd_nesterov_f32";
    finite(
        sym,
        &[
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
        ],
    )?;
    let n = p.len();
    check_len(sym, "g", g, n)?;
    check_len(sym, "momentum buffer", buf, n)?;
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Optim, sym)
        .writes("p", p, n)
        .reads("g", g, n)
        .writes("momentum buffer", buf, n)
        .value(&n64)
        .value(&lr)
        .value(&momentum)
        .value(&weight_decay)
        .launch(grid_1d(n))
}

/// Adam hyper-parameters; `step` counts from 1 (bias corrections `1 − β^step`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW (decoupled decay) when true, Adam's L2 term otherwise.
    pub decoupled: bool,
    pub step: u32,
}

/// Adam's hyper-parameters finite, betas in [0, 1), steps counted from 1.
fn check_adam(op: &str, h: &AdamParams, weight_decay: f32, step: u32) -> Result<()> {
    finite(
        op,
        &[
            ("lr", h.lr),
            ("beta1", h.beta1),
            ("beta2", h.beta2),
            ("eps", h.eps),
            ("weight_decay", weight_decay),
        ],
    )?;
    if step == 0 || !(0.0..1.0).contains(&h.beta1) || !(0.0..1.0).contains(&h.beta2) {
        return Err(Error::op(
            op,
            format!("need step >= 1 and betas in [0, 1), got step {step}: {h:?}"),
        ));
    }
    Ok(())
}

/// One Adam/AdamW step over `p` with moment buffers `m`, `v` (zeros at first).
pub fn adam(
    dev: &CudaDevice,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    h: &AdamParams,
) -> Result<()> {
    let sym = "adam_f32";
    check_adam(sym, h, h.weight_decay, h.step)?;
    let n = p.len();
    check_len(sym, "g", g, n)?;
    check_len(sym, "m", m, n)?;
    check_len(sym, "v", v, n)?;
    let step = h.step.min(i32::MAX as u32) as i32;
    let bc1 = 1.0 - h.beta1.powi(step);
    let bc2 = 1.0 - h.beta2.powi(step);
    let dec = h.decoupled as i32;
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Optim, sym)
        .writes("p", p, n)
        .reads("g", g, n)
        .writes("m", m, n)
        .writes("v", v, n)
        .value(&n64)
        .value(&h.lr)
        .value(&h.beta1)
        .value(&h.beta2)
        .value(&h.eps)
        .value(&h.weight_decay)
        .value(&bc1)
        .value(&bc2)
        .value(&dec)
        .launch(grid_1d(n))
}

/// `ema = decay·ema + (1 − decay)·p`.
pub fn ema(
    dev: &CudaDevice,
    ema: &mut CudaSlice<f32>,
    p: &CudaSlice<f32>,
    decay: f32,
) -> Result<()> {
    let sym = "ema_f32";
    if !(0.0..=1.0).contains(&decay) {
        return Err(Error::op(sym, format!("decay {decay} not in [0, 1]")));
    }
    let n = ema.len();
    check_len(sym, "p", p, n)?;
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Optim, sym)
        .writes("ema", ema, n)
        .reads("p", p, n)
        .value(&n64)
        .value(&decay)
        .launch(grid_1d(n))
}

// ---- multi-tensor forms ----

/// Whether the optimizers and the EMA use the multi-tensor launches: yes unless the environment
/// variable `SSOD_CUDA_MULTI_TENSOR` is `0` (read once; then every tensor takes the one-tensor
/// kernels, for A/B benchmarks or should the multi-tensor path misbehave on a GPU).
pub fn multi_tensor_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED
        .get_or_init(|| std::env::var("SSOD_CUDA_MULTI_TENSOR").map_or(true, |v| v.trim() != "0"))
}

/// Elements per chunk of the multi-tensor kernels (`MULTI_CHUNK` of optim.cu).
const MULTI_CHUNK: usize = 4096;

/// Mirrors `struct SgdRef` of optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdRef {
    p: u64,
    g: u64,
    buf: u64,
    n: i64,
    wd: f32,
    pad_: i32,
}
/// Mirrors `struct AdamRef` of optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamRef {
    p: u64,
    g: u64,
    m: u64,
    v: u64,
    n: i64,
    wd: f32,
    bc1: f32,
    bc2: f32,
    pad_: i32,
}
/// Mirrors `struct EmaRef` of optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct EmaRef {
    ema: u64,
    src: u64,
    n: i64,
}
/// Mirrors `struct Chunk` of optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    tensor: i64,
    start: i64,
}
// Device addresses (`float*`) as u64.
cuda_struct!(SgdRef mirrors "SgdRef" in KernelFile::Optim, size 40, align 8, {
    p @ 0, g @ 8, buf @ 16, n @ 24, wd @ 32, pad_ @ 36,
});
cuda_struct!(AdamRef mirrors "AdamRef" in KernelFile::Optim, size 56, align 8, {
    p @ 0, g @ 8, m @ 16, v @ 24, n @ 32, wd @ 40, bc1 @ 44, bc2 @ 48, pad_ @ 52,
});
cuda_struct!(EmaRef mirrors "EmaRef" in KernelFile::Optim, size 24, align 8, {
    ema @ 0, src @ 8, n @ 16,
});
cuda_struct!(Chunk mirrors "Chunk" in KernelFile::Optim, size 16, align 8, {
    tensor @ 0, start @ 8,
});

/// The chunks of tensors of lengths `lens`: `(tensor, first element)`, MULTI_CHUNK apart.
fn chunks_of(op: &str, lens: impl Iterator<Item = usize>) -> Result<Vec<Chunk>> {
    let mut chunks = Vec::new();
    for (t, n) in lens.enumerate() {
        for start in (0..n).step_by(MULTI_CHUNK) {
            chunks.push(Chunk {
                tensor: to_i64(op, t)?,
                start: to_i64(op, start)?,
            });
        }
    }
    Ok(chunks)
}

/// One tensor of [`sgd_nesterov_multi`]: parameter, gradient, momentum buffer (zeros at
/// first), and its weight decay.
pub struct SgdTensor<'a> {
    pub p: &'a mut CudaSlice<f32>,
    pub g: &'a CudaSlice<f32>,
    pub buf: &'a mut CudaSlice<f32>,
    pub weight_decay: f32,
}

/// [`sgd_nesterov`] over every tensor of `tensors` in one launch (a model's parameters: a few
/// hundred tensors cost one launch instead of a few hundred).
pub fn sgd_nesterov_multi(
    dev: &CudaDevice,
    tensors: &mut [SgdTensor],
    lr: f32,
    momentum: f32,
) -> Result<()> {
    let sym = "sgd_nesterov_multi_f32";
    finite(sym, &[("lr", lr), ("momentum", momentum)])?;
    let stream = dev.stream();
    let mut refs = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter_mut().enumerate() {
        let n = t.p.len();
        finite(sym, &[("weight_decay", t.weight_decay)])?;
        check_len(sym, &format!("g of tensor {i}"), t.g, n)?;
        check_len(sym, &format!("momentum buffer of tensor {i}"), t.buf, n)?;
        // The pointers outlive their guards: every buffer stays borrowed by `tensors` until the
        // launch below is queued, and the crate runs one stream (no events to record).
        refs.push(SgdRef {
            p: t.p.device_ptr_mut(stream).0,
            g: t.g.device_ptr(stream).0,
            buf: t.buf.device_ptr_mut(stream).0,
            n: to_i64(sym, n)?,
            wd: t.weight_decay,
            pad_: 0,
        });
    }
    let chunks = chunks_of(sym, tensors.iter().map(|t| t.p.len()))?;
    launch_multi(dev, sym, &refs, &chunks, &[lr, momentum], &[])
}

/// One tensor of [`adam_multi`]: parameter, gradient, moments (zeros at first), its weight
/// decay and its step count (from 1: the bias corrections are per tensor).
pub struct AdamTensor<'a> {
    pub p: &'a mut CudaSlice<f32>,
    pub g: &'a CudaSlice<f32>,
    pub m: &'a mut CudaSlice<f32>,
    pub v: &'a mut CudaSlice<f32>,
    pub weight_decay: f32,
    pub step: u32,
}

/// [`adam`] over every tensor of `tensors` in one launch; `h.weight_decay` and `h.step` are
/// ignored (each tensor brings its own).
pub fn adam_multi(dev: &CudaDevice, tensors: &mut [AdamTensor], h: &AdamParams) -> Result<()> {
    let sym = "adam_multi_f32";
    let stream = dev.stream();
    let mut refs = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter_mut().enumerate() {
        let n = t.p.len();
        check_adam(&format!("{sym} (tensor {i})"), h, t.weight_decay, t.step)?;
        check_len(sym, &format!("g of tensor {i}"), t.g, n)?;
        check_len(sym, &format!("m of tensor {i}"), t.m, n)?;
        check_len(sym, &format!("v of tensor {i}"), t.v, n)?;
        let step = t.step.min(i32::MAX as u32) as i32;
        // As in sgd_nesterov_multi: the buffers stay borrowed until the launch is queued.
        refs.push(AdamRef {
            p: t.p.device_ptr_mut(stream).0,
            g: t.g.device_ptr(stream).0,
            m: t.m.device_ptr_mut(stream).0,
            v: t.v.device_ptr_mut(stream).0,
            n: to_i64(sym, n)?,
            wd: t.weight_decay,
            bc1: 1.0 - h.beta1.powi(step),
            bc2: 1.0 - h.beta2.powi(step),
            pad_: 0,
        });
    }
    let chunks = chunks_of(sym, tensors.iter().map(|t| t.p.len()))?;
    let scalars = [h.lr, h.beta1, h.beta2, h.eps];
    launch_multi(dev, sym, &refs, &chunks, &scalars, &[h.decoupled as i32])
}

/// One tensor of [`ema_multi`]: the EMA copy and the model's tensor it follows.
pub struct EmaTensor<'a> {
    pub ema: &'a mut CudaSlice<f32>,
    pub src: &'a CudaSlice<f32>,
}

/// [`ema`] over every tensor of `tensors` in one launch.
pub fn ema_multi(dev: &CudaDevice, tensors: &mut [EmaTensor], decay: f32) -> Result<()> {
    let sym = "ema_multi_f32";
    if !(0.0..=1.0).contains(&decay) {
        return Err(Error::op(sym, format!("decay {decay} not in [0, 1]")));
    }
    let stream = dev.stream();
    let mut refs = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter_mut().enumerate() {
        let n = t.ema.len();
        check_len(sym, &format!("model tensor {i}"), t.src, n)?;
        // As in sgd_nesterov_multi: the buffers stay borrowed until the launch is queued.
        refs.push(EmaRef {
            ema: t.ema.device_ptr_mut(stream).0,
            src: t.src.device_ptr(stream).0,
            n: to_i64(sym, n)?,
        });
    }
    let chunks = chunks_of(sym, tensors.iter().map(|t| t.ema.len()))?;
    launch_multi(dev, sym, &refs, &chunks, &[decay], &[])
}

/// Upload the ref and chunk tables and launch `sym(refs, chunks, num_chunks, scalars...,
/// flags...)`.
fn launch_multi<R: DeviceRepr>(
    dev: &CudaDevice,
    sym: &str,
    refs: &[R],
    chunks: &[Chunk],
    scalars: &[f32],
    flags: &[i32],
) -> Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let (refs_dev, chunks_dev) = (dev.upload(refs)?, dev.upload(chunks)?);
    let k = to_i64(sym, chunks.len())?;
    // Every ref points at live buffers of its `n` elements (checked by the callers, which
    // hold them borrowed until the launch is queued); chunk starts are below their tensor's n.
    Kernel::new(dev, KernelFile::Optim, sym)
        .reads("tensor table", &refs_dev, refs.len())
        .reads("chunk table", &chunks_dev, chunks.len())
        .value(&k)
        .values(scalars)
        .values(flags)
        .launch(grid_per_item(chunks.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunk table the multi-tensor kernels walk covers every element of every tensor once,
    /// in chunks of at most MULTI_CHUNK that start inside their tensor; empty tensors get none.
    #[test]
    fn chunks_cover_every_element_once() {
        let lens = [0usize, 1, 37, MULTI_CHUNK, MULTI_CHUNK + 1, 9001];
        let chunks = chunks_of("test", lens.iter().copied()).unwrap();
        let mut seen: Vec<Vec<u32>> = lens.iter().map(|&n| vec![0; n]).collect();
        for c in &chunks {
            let (t, start) = (c.tensor as usize, c.start as usize);
            assert!(start < lens[t], "chunk {c:?} starts outside its tensor");
            let end = (start + MULTI_CHUNK).min(lens[t]);
            seen[t][start..end].iter_mut().for_each(|k| *k += 1);
        }
        for (t, s) in seen.iter().enumerate() {
            assert!(s.iter().all(|&k| k == 1), "tensor {t}: {s:?}");
        }
        let want: usize = lens.iter().map(|n| n.div_ceil(MULTI_CHUNK)).sum();
        assert_eq!(chunks.len(), want);
    }
}

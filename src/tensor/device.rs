//! Tensors on the GPU: moving values between devices, the device buffer an op's CUDA arm works
//! on, and the host round trip that lets every op without a CUDA kernel still take CUDA tensors.
//!
//! Rules (the same as PyTorch's where it has one):
//! - `to_device` copies and is differentiable: the gradient goes back to the source device.
//! - An op with any input on CUDA computes on CUDA: its CUDA arm uploads CPU operands (small
//!   targets, masks made on the host), and an op without a CUDA arm reads its inputs through
//!   [`Tensor::with_values`] (a device-to-host copy) and `autograd::record` moves its output
//!   to the GPU. So every op accepts CUDA tensors; the arms with kernels are what makes it fast,
//!   and `host_round_trips()` counts the rest (the training benchmark prints it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::{Device, Layout, Shape, Storage, Tensor};
use crate::backend::cuda::bf16::{CudaBuffer, CudaValues};
use crate::backend::cuda::{self, layout, CudaDevice, CudaSlice};
use crate::{Error, Result};

static HOST_ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// How many CUDA tensors were read on the host so far (ops without a CUDA arm, `to_vec`,
/// `item`): a cost counter for benchmarks, not an error.
pub fn host_round_trips() -> u64 {
    HOST_ROUND_TRIPS.load(Ordering::Relaxed)
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

/// The values of the `l` view of a device buffer, on the host, in logical order.
pub(super) fn download_view(slice: &CudaSlice<f32>, l: &Layout) -> Result<Vec<f32>> {
    HOST_ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
    let dev = cuda::device()?;
    let n = l.shape.numel();
    if n == 0 {
        return Ok(Vec::new());
    }
    if l.is_contiguous() {
        dev.stream()
            .clone_dtoh(&slice.slice(l.offset..l.offset + n))
            .map_err(|e| cuda_err("device to host copy", e))
    } else {
        let c = layout::contiguous(&dev, l.shape.dims(), slice, &l.strides, l.offset)?;
        dev.download(&c)
    }
}

/// The `l` view of a bf16 storage buffer as a contiguous f32 buffer on the device: the bits
/// widened, a view's bits gathered first (a view may be a small part of its storage).
pub(super) fn widen_view(bits: &CudaSlice<u16>, l: &Layout) -> Result<CudaSlice<f32>> {
    let dev = cuda::device()?;
    if l.covers(bits.len()) {
        return cuda::bf16::to_f32(&dev, bits, bits.len());
    }
    let gathered = layout::contiguous(&dev, l.shape.dims(), bits, &l.strides, l.offset)?;
    cuda::bf16::to_f32(&dev, &gathered, gathered.len())
}

/// `f` on a host copy of `slice[offset..offset + n]`, written back afterwards.
pub(super) fn update_on_host(
    slice: &mut CudaSlice<f32>,
    offset: usize,
    n: usize,
    f: impl FnOnce(&mut [f32]),
) -> Result<()> {
    HOST_ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
    let dev = cuda::device()?;
    if n == 0 {
        f(&mut []);
        return Ok(());
    }
    let mut host = dev
        .stream()
        .clone_dtoh(&slice.slice(offset..offset + n))
        .map_err(|e| cuda_err("device to host copy", e))?;
    f(&mut host);
    dev.stream()
        .memcpy_htod(&host, &mut slice.slice_mut(offset..offset + n))
        .map_err(|e| cuda_err("host to device copy", e))
}

impl Device {
    /// `cpu`, `cuda` or `auto` as a device: `cuda` fails with the probe's one-line reason when no
    /// GPU is usable; `auto` takes the GPU when there is one, else the CPU with a note saying why.
    pub fn resolve(name: &str) -> Result<(Device, Option<String>)> {
        match name {
            "cpu" => Ok((Device::Cpu, None)),
            "cuda" => match cuda::CudaAvailability::probe() {
                Ok(_) => Ok((Device::Cuda, None)),
                Err(reason) => Err(Error::InvalidArgument(format!(
                    "--device cuda: no usable GPU: {reason}"
                ))),
            },
            "auto" => match cuda::CudaAvailability::probe() {
                Ok(_) => Ok((Device::Cuda, None)),
                Err(reason) => Ok((
                    Device::Cpu,
                    Some(format!("device auto: using the CPU ({reason})")),
                )),
            },
            other => Err(Error::InvalidArgument(format!(
                "--device `{other}`: expected cpu, cuda or auto"
            ))),
        }
    }
}

/// GPU memory in use on the device (total − free, all processes), in bytes.
pub fn cuda_memory_in_use() -> Result<usize> {
    let dev = cuda::device()?;
    let (free, total) = dev
        .context()
        .mem_get_info()
        .map_err(|e| cuda_err("memory info", e))?;
    Ok(total.saturating_sub(free))
}

/// The device an op on `inputs` computes on: CUDA when any input lives there.
pub fn compute_device(inputs: &[&Tensor]) -> Device {
    if inputs.iter().any(|t| t.device() == Device::Cuda) {
        Device::Cuda
    } else {
        Device::Cpu
    }
}

/// Write access to the device buffer of an f32 CUDA tensor that is its whole storage, held until
/// dropped ([`Tensor::cuda_write`]): what the multi-tensor optimizer and EMA updates hold, one per
/// tensor, while one launch updates them all.
pub struct CudaWriteGuard<'a>(RwLockWriteGuard<'a, Storage>);

impl CudaWriteGuard<'_> {
    pub fn slice(&mut self) -> &mut CudaSlice<f32> {
        match &mut *self.0 {
            Storage::Cuda(s) => s,
            // cuda_write builds guards over `Storage::Cuda` only, and nothing replaces a storage
            // while its write lock is held.
            _ => unreachable!("CudaWriteGuard over a non-CUDA storage"),
        }
    }
}

/// Read access to the device buffer of an f32 CUDA tensor that is its whole storage
/// ([`Tensor::cuda_read`]).
pub struct CudaReadGuard<'a>(RwLockReadGuard<'a, Storage>);

impl CudaReadGuard<'_> {
    pub fn slice(&self) -> &CudaSlice<f32> {
        match &*self.0 {
            Storage::Cuda(s) => s,
            // As in CudaWriteGuard::slice.
            _ => unreachable!("CudaReadGuard over a non-CUDA storage"),
        }
    }
}

/// A tensor's values held on the device for reading across a launch: its own buffer, or a
/// contiguous copy ([`Tensor::cuda_read_or_copy`]).
pub enum CudaHeld<'a> {
    Buffer(CudaReadGuard<'a>),
    Copy(CudaSlice<f32>),
}

impl CudaHeld<'_> {
    pub fn slice(&self) -> &CudaSlice<f32> {
        match self {
            CudaHeld::Buffer(g) => g.slice(),
            CudaHeld::Copy(s) => s,
        }
    }
}

impl Tensor {
    /// This tensor's f32 values on the device, held for reading: the buffer itself when
    /// [`Self::cuda_read`] can hold it, else a contiguous copy (a view, bf16, a CPU tensor).
    pub fn cuda_read_or_copy(&self) -> Result<CudaHeld<'_>> {
        Ok(match self.cuda_read() {
            Some(g) => CudaHeld::Buffer(g),
            None => CudaHeld::Copy(self.cuda_owned()?),
        })
    }

    /// Hold this tensor's device buffer for writing: `None` unless it is an f32 CUDA tensor that
    /// is its whole storage in order (parameters and buffers are), or when another guard holds
    /// the storage (the caller then takes a one-tensor path).
    pub fn cuda_write(&self) -> Option<CudaWriteGuard<'_>> {
        let guard = self.0.storage.try_write().ok()?;
        match &*guard {
            Storage::Cuda(s) if self.0.layout.covers(s.len()) => Some(CudaWriteGuard(guard)),
            _ => None,
        }
    }

    /// Hold this tensor's device buffer for reading, on the terms of [`Self::cuda_write`].
    pub fn cuda_read(&self) -> Option<CudaReadGuard<'_>> {
        let guard = self.0.storage.try_read().ok()?;
        match &*guard {
            Storage::Cuda(s) if self.0.layout.covers(s.len()) => Some(CudaReadGuard(guard)),
            _ => None,
        }
    }

    /// A contiguous CUDA tensor owning `slice`.
    pub fn from_cuda(slice: CudaSlice<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if slice.len() != shape.numel() {
            return Err(Error::ShapeMismatch {
                op: "from_cuda".into(),
                expected: format!("{} values for shape {shape}", shape.numel()),
                got: format!("a device buffer of {}", slice.len()),
            });
        }
        Ok(Tensor::from_storage(
            Storage::Cuda(slice),
            Layout::contiguous(shape),
        ))
    }

    /// A contiguous CUDA tensor owning bf16 bits (bf16 storage mode,
    /// [`crate::backend::cuda::bf16`]).
    pub fn from_cuda_bf16(bits: CudaSlice<u16>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if bits.len() != shape.numel() {
            return Err(Error::ShapeMismatch {
                op: "from_cuda_bf16".into(),
                expected: format!("{} values for shape {shape}", shape.numel()),
                got: format!("a device buffer of {} bf16", bits.len()),
            });
        }
        Ok(Tensor::from_storage(
            Storage::CudaBf16(bits),
            Layout::contiguous(shape),
        ))
    }

    /// A contiguous CUDA tensor owning an op's output in the format it was written in.
    pub fn from_cuda_buffer(buf: CudaBuffer, shape: impl Into<Shape>) -> Result<Tensor> {
        match buf {
            CudaBuffer::F32(s) => Tensor::from_cuda(s, shape),
            CudaBuffer::Bf16(b) => Tensor::from_cuda_bf16(b, shape),
        }
    }

    pub fn is_cuda(&self) -> bool {
        self.device() == Device::Cuda
    }

    /// Whether the values are stored as bf16 (on the GPU).
    pub fn is_bf16(&self) -> bool {
        let guard = self.0.storage.read().unwrap_or_else(|p| p.into_inner());
        matches!(&*guard, Storage::CudaBf16(_))
    }

    /// Run `f` on a contiguous device buffer of this tensor's values in the format they are
    /// stored in: bf16 bits for a bf16 tensor (the storage itself, or a strided copy of the
    /// view's bits), else f32 as [`Self::with_cuda`] gives them. For the ops that read bf16
    /// activations as they are.
    pub fn with_cuda_values<R>(
        &self,
        f: impl FnOnce(&CudaDevice, CudaValues<'_>) -> Result<R>,
    ) -> Result<R> {
        {
            let guard = self.0.storage.read().unwrap_or_else(|p| p.into_inner());
            if let Storage::CudaBf16(bits) = &*guard {
                let dev = cuda::device()?;
                let l = &self.0.layout;
                if l.covers(bits.len()) {
                    return f(&dev, CudaValues::Bf16(bits));
                }
                let c = layout::contiguous(&dev, l.shape.dims(), bits, &l.strides, l.offset)?;
                drop(guard);
                return f(&dev, CudaValues::Bf16(&c));
            }
        }
        self.with_cuda(|dev, xs| f(dev, CudaValues::F32(xs)))
    }

    /// Run `f` on a contiguous device buffer of this tensor's values: the storage itself when
    /// the tensor is all of it in order, else a fresh copy (a strided copy on the GPU, or an
    /// upload of a CPU tensor).
    pub fn with_cuda<R>(
        &self,
        f: impl FnOnce(&CudaDevice, &CudaSlice<f32>) -> Result<R>,
    ) -> Result<R> {
        let dev = cuda::device()?;
        let guard = self.0.storage.read().unwrap_or_else(|p| p.into_inner());
        let l = &self.0.layout;
        match &*guard {
            Storage::Cuda(slice) => {
                if l.covers(slice.len()) {
                    f(&dev, slice)
                } else {
                    let c = layout::contiguous(&dev, l.shape.dims(), slice, &l.strides, l.offset)?;
                    drop(guard);
                    f(&dev, &c)
                }
            }
            Storage::CudaBf16(bits) => {
                let wide = widen_view(bits, l)?;
                drop(guard);
                f(&dev, &wide)
            }
            Storage::Cpu(_) => {
                drop(guard);
                let up = self.with_values(|v| dev.upload_staged(v))??;
                f(&dev, &up)
            }
        }
    }

    /// Run `f` on this tensor's device buffer for an in-place update; `Ok(None)` (nothing run)
    /// unless the tensor is on CUDA and is its whole storage in order (parameters and buffers
    /// are).
    pub fn with_cuda_mut<R>(
        &self,
        f: impl FnOnce(&CudaDevice, &mut CudaSlice<f32>) -> Result<R>,
    ) -> Result<Option<R>> {
        let l = &self.0.layout;
        let mut guard = self
            .0
            .storage
            .write()
            .map_err(|_| Error::Msg("a tensor's storage lock was poisoned".into()))?;
        match &mut *guard {
            Storage::Cuda(slice) if l.covers(slice.len()) => {
                let dev = cuda::device()?;
                f(&dev, slice).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// `values` as a tensor on `device`: on the GPU straight from the vector through pinned
    /// staging (no host tensor in between), as the loaders' batches go up.
    pub fn from_vec_on(
        values: Vec<f32>,
        shape: impl Into<Shape>,
        device: Device,
    ) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::from_vec(values, shape),
            Device::Cuda => {
                let shape = shape.into();
                if values.len() != shape.numel() {
                    return Err(Error::shape("from_vec_on", &shape, values.len()));
                }
                Tensor::from_cuda(cuda::device()?.upload_staged(&values)?, shape)
            }
        }
    }

    /// Overwrite this tensor's values with `src`'s (same shape), where this tensor lives: a
    /// device-to-device copy when it is a whole CUDA buffer, so an update computed with ops is
    /// written back without a host round trip. No autograd.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::shape("assign", self.shape(), src.shape()));
        }
        if self.is_cuda() {
            let values = src.cuda_owned()?;
            let copied = self.with_cuda_mut(|dev, dst| {
                dev.stream()
                    .memcpy_dtod(&values, dst)
                    .map_err(|e| cuda_err("device to device copy", e))
            })?;
            if copied.is_some() {
                return Ok(());
            }
        }
        self.copy_values_from(&src.to_vec())
    }

    /// A fresh contiguous device buffer holding this tensor's values (the caller owns it).
    pub fn cuda_owned(&self) -> Result<CudaSlice<f32>> {
        let dev = cuda::device()?;
        let guard = self.0.storage.read().unwrap_or_else(|p| p.into_inner());
        let l = &self.0.layout;
        match &*guard {
            Storage::Cuda(slice) => {
                if l.covers(slice.len()) {
                    dev.stream()
                        .clone_dtod(slice)
                        .map_err(|e| cuda_err("device to device copy", e))
                } else {
                    layout::contiguous(&dev, l.shape.dims(), slice, &l.strides, l.offset)
                }
            }
            Storage::CudaBf16(bits) => widen_view(bits, l),
            Storage::Cpu(_) => {
                drop(guard);
                self.with_values(|v| dev.upload_staged(v))?
            }
        }
    }

    /// A contiguous copy of the values on `device`, without autograd.
    pub(crate) fn copy_to(&self, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::from_vec(self.to_vec(), self.shape().clone()),
            Device::Cuda => Tensor::from_cuda(self.cuda_owned()?, self.shape().clone()),
        }
    }

    /// Move this tensor's storage to `device` in place: every view of the storage follows (the
    /// way a model's parameters and buffers move, keeping the handles layers and optimisers
    /// hold). The tensor must be its whole storage in order, as parameters are.
    pub fn move_storage_to(&self, device: Device) -> Result<()> {
        if self.device() == device {
            return Ok(());
        }
        let l = &self.0.layout;
        let mut guard = self
            .0
            .storage
            .write()
            .map_err(|_| Error::Msg("a tensor's storage lock was poisoned".into()))?;
        let whole = l.covers(guard.len());
        if !whole {
            return Err(Error::op(
                "move_storage_to",
                format!("tensor {} is a view, not its whole storage", l.shape),
            ));
        }
        let moved = match (&*guard, device) {
            (Storage::Cpu(v), Device::Cuda) => Storage::Cuda(cuda::device()?.upload(v)?),
            (Storage::Cuda(s), Device::Cpu) => Storage::Cpu(cuda::device()?.download(s)?),
            (Storage::CudaBf16(bits), Device::Cpu) => {
                Storage::Cpu(cuda::device()?.download(&widen_view(bits, l)?)?)
            }
            _ => return Ok(()),
        };
        *guard = moved;
        Ok(())
    }

    /// The values on `device` (the same tensor when already there). Differentiable: the
    /// gradient flows back to this tensor's device.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let from = self.device();
        if from == device {
            return Ok(self.clone());
        }
        let out = self.copy_to(device)?;
        crate::autograd::record_as_is("to_device", out, &[self], move |g| {
            Ok(vec![Some(g.to_device(from)?)])
        })
    }
}

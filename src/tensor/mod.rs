//! `Tensor`: f32 values on a device, a shape and strides (views share storage), and the autograd
//! slot (`requires_grad`, `.grad`, the node that made it).
//!
//! Storage is shared behind `Arc<RwLock<..>>` so views, detached copies and the tape can point at
//! the same values, and optimisers can update parameters in place.

pub(crate) mod create;
mod device;
pub mod npy;
pub mod pth;
pub mod safetensors_io;
mod shape;
mod strided;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use device::{
    compute_device, cuda_memory_in_use, host_round_trips, CudaHeld, CudaReadGuard, CudaWriteGuard,
};
pub use shape::Shape;
pub(crate) use strided::StridedIter;

use crate::autograd::NodeSlot;
use crate::backend::cuda::CudaSlice;
use crate::{Error, Result};

/// Where a tensor's values live. `Cuda` is the process's one GPU
/// ([`crate::backend::cuda::device`]); a CUDA tensor exists only once that device opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda => write!(f, "cuda"),
        }
    }
}

/// The values behind one or more tensors. `CudaBf16` holds bf16 bits: activations in bf16
/// storage mode ([`crate::backend::cuda::bf16`]); every reader that wants f32 gets a converted
/// copy, and nothing updates such a tensor in place.
#[derive(Debug)]
pub enum Storage {
    Cpu(Vec<f32>),
    Cuda(CudaSlice<f32>),
    CudaBf16(CudaSlice<u16>),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(_) | Storage::CudaBf16(_) => Device::Cuda,
        }
    }
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            Storage::Cuda(s) => s.len(),
            Storage::CudaBf16(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shape, strides (in elements) and offset into the storage.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub shape: Shape,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Layout {
    pub fn contiguous(shape: Shape) -> Self {
        let strides = shape.contiguous_strides();
        Layout {
            shape,
            strides,
            offset: 0,
        }
    }
    /// Whether this view is all of a `storage_len`-element storage, in order (parameters and
    /// fresh op outputs are; device code can then use the buffer itself).
    pub fn covers(&self, storage_len: usize) -> bool {
        self.offset == 0 && self.is_contiguous() && storage_len == self.shape.numel()
    }
    pub fn is_contiguous(&self) -> bool {
        let expected = self.shape.contiguous_strides();
        self.shape
            .dims()
            .iter()
            .zip(self.strides.iter().zip(expected.iter()))
            .all(|(&d, (&s, &e))| d <= 1 || s == e)
    }
}

static NEXT_TENSOR_ID: AtomicU64 = AtomicU64::new(1);

pub struct TensorInner {
    id: u64,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
    pub(crate) node: Mutex<NodeSlot>,
}

/// A cheap-to-clone handle to a tensor.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = self.to_vec();
        let shown: Vec<f32> = values.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={}, requires_grad={}, values={:?}{})",
            self.shape(),
            self.requires_grad(),
            shown,
            if values.len() > 8 { " ..." } else { "" }
        )
    }
}

fn lock_poisoned(what: &str) -> Error {
    Error::Msg(format!(
        "internal lock on {what} was poisoned by a panic in another thread"
    ))
}

impl Tensor {
    /// A contiguous CPU tensor that owns `data`.
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.checked_numel() != Some(data.len()) {
            return Err(Error::ShapeMismatch {
                op: "from_vec".into(),
                expected: format!("{} values for shape {shape}", shape.numel()),
                got: format!("{} values", data.len()),
            });
        }
        Ok(Tensor::from_storage(
            Storage::Cpu(data),
            Layout::contiguous(shape),
        ))
    }

    pub(crate) fn from_storage(storage: Storage, layout: Layout) -> Tensor {
        Tensor::from_shared_storage(Arc::new(RwLock::new(storage)), layout)
    }

    pub(crate) fn from_shared_storage(storage: Arc<RwLock<Storage>>, layout: Layout) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: NEXT_TENSOR_ID.fetch_add(1, Ordering::Relaxed),
            storage,
            layout,
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
            node: Mutex::new(NodeSlot::Leaf),
        }))
    }

    /// A unique id (used by the tape).
    pub fn id(&self) -> u64 {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.layout.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.layout.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.layout.shape.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.shape.numel()
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn device(&self) -> Device {
        self.0
            .storage
            .read()
            .map(|s| s.device())
            .unwrap_or(Device::Cpu)
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = self.shape().axis("dim", axis)?;
        Ok(self.dims()[a])
    }

    /// Run `f` on the values in logical (row-major) order, without a copy when the tensor is
    /// contiguous and on the CPU. A CUDA tensor's values are copied to the host first (this is
    /// how the ops without a CUDA kernel run on CUDA tensors; see `tensor/device.rs`); a failed
    /// copy (a GPU out of memory for the gather of a strided view, a broken device) is an error.
    pub fn with_values<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        let guard = self.0.storage.read().unwrap_or_else(|p| p.into_inner());
        let l = &self.0.layout;
        match &*guard {
            Storage::Cpu(data) => Ok(if l.is_contiguous() {
                f(&data[l.offset..l.offset + l.shape.numel()])
            } else {
                f(&strided::gather_strided(data, l))
            }),
            Storage::Cuda(slice) => Ok(f(&device::download_view(slice, l)?)),
            Storage::CudaBf16(bits) => {
                let wide = device::widen_view(bits, l)?;
                Ok(f(&device::download_view(
                    &wide,
                    &Layout::contiguous(l.shape.clone()),
                )?))
            }
        }
    }

    /// The values in logical (row-major) order, or the error of a failed GPU read.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        self.with_values(|v| v.to_vec())
    }

    /// The values in logical (row-major) order.
    ///
    /// # Panics
    /// When reading a CUDA tensor fails; code that may hold one where a user's settings decide
    /// the memory (training, evaluation) reads through [`Tensor::try_to_vec`].
    pub fn to_vec(&self) -> Vec<f32> {
        self.try_to_vec()
            .unwrap_or_else(|e| panic!("reading a CUDA tensor on the host: {e}"))
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::op(
                "item",
                format!(
                    "needs a tensor with one element, got shape {}",
                    self.shape()
                ),
            ));
        }
        self.with_values(|v| v[0])
    }

    /// Overwrite the values in place (shape unchanged). Used by optimisers, EMA and checkpoint
    /// loading; views of the same storage see the change, as in PyTorch.
    pub fn copy_values_from(&self, values: &[f32]) -> Result<()> {
        if values.len() != self.numel() {
            return Err(Error::shape("copy_values_from", self.shape(), values.len()));
        }
        self.update_values(|dst| dst.copy_from_slice(values))
    }

    /// Mutate the values in place; the tensor must be contiguous (parameters and buffers are).
    pub fn update_values(&self, f: impl FnOnce(&mut [f32])) -> Result<()> {
        let l = &self.0.layout;
        if !l.is_contiguous() {
            return Err(Error::op("update_values", "needs a contiguous tensor"));
        }
        let mut guard = self
            .0
            .storage
            .write()
            .map_err(|_| lock_poisoned("tensor storage"))?;
        match &mut *guard {
            Storage::Cpu(data) => {
                f(&mut data[l.offset..l.offset + l.shape.numel()]);
                Ok(())
            }
            Storage::Cuda(slice) => device::update_on_host(slice, l.offset, l.shape.numel(), f),
            Storage::CudaBf16(_) => Err(Error::op(
                "update_values",
                format!(
                    "tensor {} is a bf16 activation (read-only); parameters and buffers are f32",
                    l.shape
                ),
            )),
        }
    }

    /// A view with another layout of the same storage (no autograd: `ops::shape` records it).
    pub(crate) fn view_with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_shared_storage(self.0.storage.clone(), layout)
    }

    // ---- autograd slot -------------------------------------------------------------------

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Mark this tensor as a leaf that collects gradients; returns the same tensor (so
    /// `let w = Tensor::randn(..).with_requires_grad(true)` reads naturally).
    pub fn with_requires_grad(self, on: bool) -> Tensor {
        self.0.requires_grad.store(on, Ordering::Relaxed);
        self
    }

    pub(crate) fn set_requires_grad_flag(&self, on: bool) {
        self.0.requires_grad.store(on, Ordering::Relaxed);
    }

    /// The accumulated gradient of a leaf, if any backward pass reached it.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap_or_else(|p| p.into_inner()) = g;
    }

    /// Forget the accumulated gradient.
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// The same values, cut from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        self.view_with_layout(self.0.layout.clone())
    }

    pub(crate) fn node_slot(&self) -> std::sync::MutexGuard<'_, NodeSlot> {
        self.0.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when both handles point at the same tensor object.
    pub fn same_as(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

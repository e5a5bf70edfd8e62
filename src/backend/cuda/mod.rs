//! CUDA backend: hand-written kernels (`kernels/*.cu`) compiled at run time by NVRTC and launched
//! through cudarc, cuBLAS for the matrix products.
//!
//! Like the CPU backend, launchers work on slices: device buffers (`CudaSlice<f32>`) and the
//! geometry in, fresh device buffers out, so `ops` can dispatch with one `match` on the storage.
//! Every launcher checks its buffers against the geometry and returns an error instead of
//! launching (no user input can make it read or write out of bounds, or panic).
//!
//! CUDA is optional at run time: cudarc loads `libcuda`, `libnvrtc` and `libcublas` dynamically
//! and panics when one is missing, so [`CudaAvailability::probe`] looks for each first and turns
//! every failure into one line of reason.
//!
//! # How the engine uses it (`src/tensor/device.rs`, DEVELOPERS.md "CUDA tensors")
//!
//! - `Storage::Cuda(CudaSlice<f32>)` next to `Storage::Cpu`; `Device::Cuda` is the process's one
//!   [`CudaDevice`] ([`device`], opened by [`CudaAvailability::probe`]). `Storage::CudaBf16`
//!   holds bf16 activations in bf16 product mode ([`bf16`]); f32 readers get a widened copy.
//! - An op's CUDA arm calls the launcher of the same stem with contiguous device buffers
//!   (`Tensor::with_cuda`: the storage itself, or a strided copy, [`layout::contiguous`]) and the
//!   geometry the CPU path computes (`Conv2dGeometry`, `[outer, len, inner]`, `BnShape`,
//!   `PoolGeometry`, ...). In-place launchers (`optim`, BN running stats) get the storage through
//!   `Tensor::with_cuda_mut`.
//! - Backward saves what the CPU rules save: unary ops the input or the output
//!   ([`elementwise::Unary::saves_output`]); BN `BnSaved` and the input; max pooling the `i32`
//!   argmax buffer; index_select its [`index::DeviceIndices`].
//! - Wired so far: conv2d, BN (+SiLU), unary ops with kernels, scalar arithmetic, broadcast
//!   arithmetic, sums, contiguous/cat/slice backward, max pooling, upsampling, bce_with_logits,
//!   index_select, SGD-Nesterov and EMA, SimOTA inside `detect::loss::yolox_loss`. Still on the
//!   host round trip although kernels exist: softmax, cosine similarity, gather, crop_patches
//!   ([`crop::CropBoxes`]), matmul/linear ([`gemm::matmul`]), box losses
//!   ([`loss::box_loss_fwd_bwd`]), decode + NMS ([`detect::decode_outputs`],
//!   [`detect::nms_by_score`]) for inference.
//! - Launches: every kernel launch goes through `launch::Kernel`, which checks each buffer
//!   against the elements its launcher declares the kernel touches and the grid against the
//!   GPU limits, and holds the one `unsafe` launch call.
//! - Errors: every launcher already returns `Error::ShapeMismatch`/`Error::Op` on bad lengths and
//!   `Error::Cuda` for driver/NVRTC/cuBLAS failures, naming the kernel.

pub mod context;
pub(crate) mod launch;
pub mod modules;
pub mod ptx_cache;

pub mod batch_norm;
pub mod bf16;
pub mod conv2d;
pub mod crop;
pub mod detect;
pub mod elementwise;
pub mod gemm;
pub mod index;
pub mod layout;
pub mod loss;
pub mod measure;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod similarity;
pub mod simota;
pub mod softmax;
pub mod structs;

use std::panic::catch_unwind;
use std::sync::OnceLock;

pub use context::{ConvAlgorithm, CudaDevice, MatrixPrecision};
pub use cudarc::driver::CudaSlice;
pub use modules::{
    compile_all_kernels, compile_ptx, compile_source, nvrtc_available, nvrtc_version, KernelFile,
};

use modules::short_candidates;

/// Probing for a usable GPU.
pub struct CudaAvailability;

impl CudaAvailability {
    /// Device 0, opened once per process, or one line saying why there is none (no driver
    /// library, no NVRTC, no cuBLAS, no device visible, or the driver refused).
    pub fn probe() -> Result<CudaDevice, String> {
        static DEVICE: OnceLock<Result<CudaDevice, String>> = OnceLock::new();
        DEVICE.get_or_init(probe_uncached).clone()
    }
}

/// The process's GPU, or `Error::Cuda` with the probe's reason (for code that holds CUDA
/// tensors, which exist only once the probe succeeded).
pub fn device() -> crate::Result<CudaDevice> {
    CudaAvailability::probe().map_err(|r| crate::Error::Cuda(format!("no usable GPU: {r}")))
}

fn present(check: unsafe fn() -> bool) -> bool {
    // SAFETY: the checks only try to dlopen cudarc's candidate library names.
    catch_unwind(|| unsafe { check() }).unwrap_or(false)
}

fn probe_uncached() -> Result<CudaDevice, String> {
    if !present(cudarc::driver::sys::is_culib_present) {
        return Err(format!(
            "no CUDA driver: none of {} could be loaded (no NVIDIA driver on this machine)",
            short_candidates("cuda")
        ));
    }
    nvrtc_available()?;
    if !present(cudarc::cublas::sys::is_culib_present) {
        return Err(format!(
            "cuBLAS not found: none of {} could be loaded (add the CUDA 13 lib folder, e.g. \
             /usr/local/cuda/lib64, to LD_LIBRARY_PATH)",
            short_candidates("cublas")
        ));
    }
    let count = catch_unwind(cudarc::driver::CudaContext::device_count)
        .map_err(|_| {
            "the CUDA driver library lacks a needed symbol (driver too old for CUDA 13?)"
                .to_string()
        })?
        .map_err(|e| format!("the CUDA driver did not initialise: {e:?}"))?;
    if count < 1 {
        return Err("the CUDA driver found no GPU".into());
    }
    CudaDevice::open(0).map_err(|e| e.to_string())
}

/// Check that a device buffer holds exactly `want` elements (the launchers' precondition).
pub(crate) fn check_len<T>(
    op: &str,
    what: &str,
    buf: &CudaSlice<T>,
    want: usize,
) -> crate::Result<()> {
    if buf.len() != want {
        return Err(crate::Error::ShapeMismatch {
            op: op.to_string(),
            expected: format!("{what} of {want} elements"),
            got: format!("{} elements", buf.len()),
        });
    }
    Ok(())
}

/// A dimension as the kernels' `long long`, refusing sizes that do not fit.
pub(crate) fn to_i64(op: &str, v: usize) -> crate::Result<i64> {
    i64::try_from(v).map_err(|_| crate::Error::op(op, format!("size {v} does not fit in i64")))
}

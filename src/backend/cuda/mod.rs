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
//! # Integration plan (for the engine owner)
//!
//! - `Storage::Cuda(CudaSlice<f32>)` next to `Storage::Cpu`, `Device::Cuda` holding a
//!   [`CudaDevice`] (cheap to clone; one per process from [`CudaAvailability::probe`]).
//! - Each op's forward/backward gets one `match` on the storage: the CPU arm stays as it is, the
//!   CUDA arm calls the launcher of the same stem with the contiguous device buffers and the same
//!   geometry the CPU path computes (`Conv2dGeometry`, `[outer, len, inner]`, `BnShape`,
//!   `PoolGeometry`, ...). Launchers return fresh buffers; in-place ones (`optim`, BN running
//!   stats) take `&mut`.
//! - Non-contiguous views: make them contiguous first (a strided-copy kernel is still to write),
//!   as the CPU path does with `to_vec`.
//! - What to save for backward matches the CPU rules: unary ops save the input or the output as
//!   [`elementwise::Unary::saves_output`] says; BN saves `BnSaved` (mean, invstd) and the input;
//!   max pooling saves the `i32` argmax buffer; softmax saves its output.
//! - `sum_to_shape` for broadcast backward is [`reduce::sum_keepdim`] with the broadcast dims.
//! - Detection: `detect::simota` on CUDA uploads grids/strides once per input size and calls
//!   [`simota::assign`] per image; `detect::loss::box_loss` can call
//!   [`loss::box_loss_fwd_bwd`] once (it returns the gradient with the loss: record it as the
//!   node's saved gradient scaled by the upstream `g`, or call it again in backward with `g`).
//! - Indexing: `ops::index_select` / `ops::gather` on CUDA build a [`index::DeviceIndices`] from
//!   the f32 index tensor once (`from_f32` checks them on the device and waits for the verdict),
//!   and keep it for backward; `ops::crop_patches` builds a [`crop::CropBoxes`] (checked on the
//!   host, uploaded once) and keeps it likewise.
//! - Inference: [`detect::decode_outputs`] with the grid from [`detect::upload_grid`] (once per
//!   input size), then per image and after the score threshold [`detect::nms_by_score`] (or
//!   [`detect::nms`] / [`detect::batched_nms`] on boxes already sorted on the device).
//! - Errors: every launcher already returns `Error::ShapeMismatch`/`Error::Op` on bad lengths and
//!   `Error::Cuda` for driver/NVRTC/cuBLAS failures, naming the kernel.

pub mod context;
pub mod modules;

pub mod batch_norm;
pub mod conv2d;
pub mod crop;
pub mod detect;
pub mod elementwise;
pub mod gemm;
pub mod index;
pub mod layout;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod selftest;
pub mod similarity;
pub mod simota;
pub mod softmax;

use std::panic::catch_unwind;
use std::sync::OnceLock;

pub use context::CudaDevice;
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

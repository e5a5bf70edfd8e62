//! The live device: cudarc context, one stream, one cuBLAS handle, and the loaded modules.
//!
//! Everything runs on one stream, in order; launchers never synchronise except where they copy
//! a result to the host.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUmemPool_attribute as PoolAttr, CUmemoryPool};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig,
    PinnedHostSlice,
};
use cudarc::nvrtc::Ptx;

use super::conv2d::algorithm::ConvChoices;
use super::modules::{cached_ptx, KernelFile, KERNEL_FILES};
use crate::{Error, Result};

/// Threads per block of every 1-D launch (the reduction kernels assume exactly this).
pub const BLOCK: u32 = 256;
/// Most blocks of a grid-stride launch (more gives no gain; any count is correct).
const MAX_BLOCKS: u64 = 65_535;

/// A handle on the GPU (cheap to clone).
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    name: String,
    arch: String,
    modules: [OnceLock<Arc<CudaModule>>; KERNEL_FILES],
    /// Page-locked staging buffers for large uploads, by length (the last two sizes used), each
    /// with the event recorded after the last copy out of it: f32, and bf16 bits.
    staging: Staging<f32>,
    staging_bf16: Staging<u16>,
    /// The [`MatrixPrecision`] of every later product, as its `u8`.
    matrix_precision: AtomicU8,
    /// The [`ConvAlgorithm`] of every later convolution with one group, as its `u8`.
    conv_algorithm: AtomicU8,
    /// What [`ConvAlgorithm::Auto`] chose for each conv so far.
    conv_choices: ConvChoices,
    /// Compute capability `(major, minor)`.
    capability: (u32, u32),
}

/// How convolutions with one group multiply (grouped and depthwise convs keep their kernels).
/// Spelled `im2col`, `implicit`, `auto` (the training recipe's `conv_algorithm`, `--conv`,
/// `SSOD_CUDA_CONV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvAlgorithm {
    /// im2col (or the input itself for 1×1) + cuBLAS, per batch chunk (`conv2d.rs`).
    Im2col = 0,
    /// Implicit GEMM on the tensor cores, one launch per batch (`conv2d/implicit_gemm/`).
    Implicit = 1,
    /// Per conv and pass, the faster of the two, measured at its first call after checking
    /// that they agree (`conv2d/algorithm.rs`; cuDNN's benchmark mode). Im2col on GPUs without
    /// the tensor cores the implicit kernels need.
    Auto = 2,
}

impl ConvAlgorithm {
    /// `im2col`, `implicit` or `auto`.
    pub fn from_name(name: &str) -> Result<ConvAlgorithm> {
        match name.trim() {
            "im2col" => Ok(ConvAlgorithm::Im2col),
            "implicit" => Ok(ConvAlgorithm::Implicit),
            "auto" => Ok(ConvAlgorithm::Auto),
            other => Err(Error::InvalidArgument(format!(
                "conv algorithm `{other}`: expected im2col, implicit or auto"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Im2col => "im2col",
            ConvAlgorithm::Implicit => "implicit",
            ConvAlgorithm::Auto => "auto",
        }
    }
    /// The process's default: `SSOD_CUDA_CONV` (im2col, implicit or auto), else auto: on the
    /// H200 (2026-11-27, BENCHMARKS.md) it took the implicit kernels for about half the conv
    /// passes and trained YOLOX-s 640/16 at 1.5× im2col's rate in bf16 and 1.6× in f32. An
    /// unknown value is a warning (once), not a silent default.
    pub fn process_default() -> ConvAlgorithm {
        const DEFAULT_ALGORITHM: ConvAlgorithm = ConvAlgorithm::Auto;
        static DEFAULT: OnceLock<ConvAlgorithm> = OnceLock::new();
        *DEFAULT.get_or_init(|| match std::env::var("SSOD_CUDA_CONV") {
            Ok(v) => ConvAlgorithm::from_name(&v).unwrap_or_else(|e| {
                eprintln!("SSOD_CUDA_CONV: {e}; using {}", DEFAULT_ALGORITHM.name());
                DEFAULT_ALGORITHM
            }),
            Err(_) => DEFAULT_ALGORITHM,
        })
    }
}

/// Arithmetic of the matrix products (cuBLAS) of this process: convolutions, matmul, linear.
/// Element-wise kernels and reductions compute in f32 in every mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatrixPrecision {
    /// f32 operands and FMA (cuBLAS default math): the CPU's function.
    F32 = 0,
    /// TF32 tensor cores: operands rounded to 10-bit mantissas, f32 accumulation.
    Tf32 = 1,
    /// bf16 tensor cores: both operands rounded to bf16 (8 significant bits), f32
    /// accumulation; weights stay f32 (master copies); activations between convs are stored
    /// as bf16 ([`super::bf16`]).
    Bf16 = 2,
}

/// Keep memory freed into the device's default pool (which serves every buffer: cudarc
/// allocates with `cuMemAllocAsync`) instead of returning it to the driver: the pool's release
/// threshold defaults to 0, which trims it at every synchronisation (a training step has
/// dozens), so the next step maps fresh memory for its buffers again. PyTorch's caching
/// allocator keeps its memory the same way. `SSOD_CUDA_POOL_RELEASE=1` keeps the driver's
/// default (for A/B benchmarks).
fn keep_freed_memory(ctx: &CudaContext) {
    if std::env::var("SSOD_CUDA_POOL_RELEASE").is_ok_and(|v| v.trim() == "1") {
        return;
    }
    // A speed setting only: a driver that refuses it leaves the default, and the device opens.
    if let Ok(Some(pool)) = default_pool(ctx) {
        let _ = set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX);
    }
}

/// The device's default memory pool, which serves every buffer (cudarc allocates with
/// `cuMemAllocAsync`), or `None` when the driver allocates synchronously (no pool).
fn default_pool(ctx: &CudaContext) -> Result<Option<CUmemoryPool>> {
    if !ctx.has_async_alloc() {
        return Ok(None);
    }
    ctx.bind_to_thread()
        .map_err(|e| cuda_err("bind context", e))?;
    let mut pool: CUmemoryPool = std::ptr::null_mut();
    // SAFETY: a driver query on the context's own device into a local of the type it names.
    let r = unsafe { cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
    Ok((r.result().is_ok() && !pool.is_null()).then_some(pool))
}

/// One u64 attribute of a pool ([`default_pool`]).
fn pool_attr(pool: CUmemoryPool, attr: PoolAttr) -> Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: `pool` came from the driver; the attributes used here are u64-valued.
    unsafe { cudarc::driver::sys::cuMemPoolGetAttribute(pool, attr, &mut v as *mut u64 as *mut _) }
        .result()
        .map_err(|e| cuda_err("memory pool attribute", e))?;
    Ok(v)
}

/// Set one u64 attribute of a pool ([`default_pool`]).
fn set_pool_attr(pool: CUmemoryPool, attr: PoolAttr, mut v: u64) -> Result<()> {
    // SAFETY: as in pool_attr; the driver copies the value.
    unsafe { cudarc::driver::sys::cuMemPoolSetAttribute(pool, attr, &mut v as *mut u64 as *mut _) }
        .result()
        .map_err(|e| cuda_err("memory pool attribute", e))
}

/// Pinned host buffers kept for uploads, each with the event of its last copy.
type Staging<T> = Mutex<Vec<(PinnedHostSlice<T>, Option<CudaEvent>)>>;

/// Uploads at least this long go through a pinned staging buffer (8 MiB of f32).
const STAGED_UPLOAD_MIN: usize = 1 << 21;

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({}, {})", self.inner.name, self.inner.arch)
    }
}

/// A driver, NVRTC or cuBLAS error as the crate's error, naming what failed.
pub(crate) fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

impl CudaDevice {
    /// Open device `ordinal`. The caller (the probe) has checked that the libraries load; a
    /// panic from cudarc is still turned into an error.
    pub(crate) fn open(ordinal: usize) -> Result<CudaDevice> {
        catch_unwind(AssertUnwindSafe(|| Self::open_inner(ordinal))).unwrap_or_else(|_| {
            Err(Error::Cuda(
                "cudarc panicked while opening the device (a CUDA library is missing a symbol?)"
                    .into(),
            ))
        })
    }

    fn open_inner(ordinal: usize) -> Result<CudaDevice> {
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("cuda context", e))?;
        // SAFETY: called before any allocation. cudarc's per-buffer events order uses across
        // streams; this crate runs every kernel, copy and cuBLAS call on one stream (and frees
        // in stream order), so they would only cost two cuEventCreate/Destroy per buffer, some
        // thousands per training step.
        unsafe { ctx.disable_event_tracking() };
        keep_freed_memory(&ctx);
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| cuda_err("compute capability", e))?;
        let name = ctx.name().map_err(|e| cuda_err("device name", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("cuBLAS handle", e))?;
        Ok(CudaDevice {
            inner: Arc::new(Inner {
                ctx,
                stream,
                blas,
                name,
                arch: format!("compute_{major}{minor}"),
                capability: (major as u32, minor as u32),
                modules: [const { OnceLock::new() }; KERNEL_FILES],
                staging: Mutex::new(Vec::new()),
                staging_bf16: Mutex::new(Vec::new()),
                matrix_precision: AtomicU8::new(MatrixPrecision::F32 as u8),
                conv_algorithm: AtomicU8::new(ConvAlgorithm::process_default() as u8),
                conv_choices: ConvChoices::default(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// NVRTC architecture of the device, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        &self.inner.arch
    }
    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.inner.capability
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }
    pub fn blas(&self) -> &CudaBlas {
        &self.inner.blas
    }

    /// The arithmetic of every later matrix product of this process (see [`MatrixPrecision`]).
    pub fn set_matrix_precision(&self, p: MatrixPrecision) -> Result<()> {
        use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode, cublasStatus_t};
        // TF32 is cuBLAS's math mode for f32 products; bf16 products pick their own (GemmEx).
        let mode = if p == MatrixPrecision::Tf32 {
            cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is alive for as long as `self`; the call only sets a flag on it.
        let status = unsafe { cublasSetMathMode(*self.inner.blas.handle(), mode) };
        if status != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(cuda_err("cublasSetMathMode", status));
        }
        self.inner
            .matrix_precision
            .store(p as u8, Ordering::Relaxed);
        Ok(())
    }

    /// The algorithm of every later convolution with one group (see [`ConvAlgorithm`]).
    pub fn set_conv_algorithm(&self, a: ConvAlgorithm) {
        self.inner.conv_algorithm.store(a as u8, Ordering::Relaxed);
    }

    pub fn conv_algorithm(&self) -> ConvAlgorithm {
        match self.inner.conv_algorithm.load(Ordering::Relaxed) {
            1 => ConvAlgorithm::Implicit,
            2 => ConvAlgorithm::Auto,
            _ => ConvAlgorithm::Im2col,
        }
    }

    /// What [`ConvAlgorithm::Auto`] chose so far (each conv and pass at its first call).
    pub fn conv_choices(&self) -> &ConvChoices {
        &self.inner.conv_choices
    }

    pub fn matrix_precision(&self) -> MatrixPrecision {
        match self.inner.matrix_precision.load(Ordering::Relaxed) {
            1 => MatrixPrecision::Tf32,
            2 => MatrixPrecision::Bf16,
            _ => MatrixPrecision::F32,
        }
    }

    /// `(peak, now)` bytes in use in the device's default memory pool, which serves the
    /// stream-ordered allocations every buffer of this crate comes from. `Ok(None)` when the
    /// driver allocates synchronously (no pool to ask).
    pub fn pool_memory(&self) -> Result<Option<(u64, u64)>> {
        let Some(pool) = default_pool(&self.inner.ctx)? else {
            return Ok(None);
        };
        let peak = pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
        let now = pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
        Ok(Some((peak, now)))
    }

    /// Restart the pool's peak ([`Self::pool_memory`]) from what is in use now.
    pub fn reset_pool_peak(&self) -> Result<()> {
        // Setting USED_MEM_HIGH to 0 is the documented reset.
        match default_pool(&self.inner.ctx)? {
            Some(pool) => set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0),
            None => Ok(()),
        }
    }

    /// Wait for everything queued on the stream (timings, host copies).
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }

    /// The module of `file`, compiled (once per process) and loaded (once per device).
    pub fn module(&self, file: KernelFile) -> Result<Arc<CudaModule>> {
        let idx = KernelFile::ALL.iter().position(|&f| f == file).unwrap_or(0);
        let slot = &self.inner.modules[idx];
        if let Some(m) = slot.get() {
            return Ok(m.clone());
        }
        let ptx = cached_ptx(file, &self.inner.arch)?;
        let module = self
            .inner
            .ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| cuda_err(&format!("loading {}", file.file_name()), e))?;
        // Two threads may race to load; either module is fine, keep the first.
        Ok(slot.get_or_init(|| module).clone())
    }

    /// Kernel `symbol` of `file`.
    pub fn function(&self, file: KernelFile, symbol: &str) -> Result<CudaFunction> {
        if !file.symbols().contains(&symbol) {
            return Err(Error::Cuda(format!(
                "{} has no kernel `{symbol}`",
                file.file_name()
            )));
        }
        self.module(file)?
            .load_function(symbol)
            .map_err(|e| cuda_err(&format!("{}: {symbol}", file.file_name()), e))
    }

    /// A zeroed device buffer of `len` f32 (an empty one for 0).
    pub fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        zeros_of(&self.inner.stream, len)
    }

    /// A device buffer of `len` f32 with unspecified contents, for outputs a kernel writes in
    /// full.
    pub fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.alloc_uninit(len)
    }

    /// A device buffer of `len` u16 (bf16 bits) with unspecified contents, for outputs a
    /// kernel writes in full.
    pub fn alloc_u16(&self, len: usize) -> Result<CudaSlice<u16>> {
        self.alloc_uninit(len)
    }

    fn alloc_uninit<T: cudarc::driver::DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        if len == 0 {
            return self.inner.stream.null().map_err(|e| cuda_err("alloc", e));
        }
        // SAFETY: callers overwrite every element before reading it (the kernels' contracts).
        unsafe { self.inner.stream.alloc(len) }.map_err(|e| {
            let what = std::any::type_name::<T>();
            cuda_err(&format!("alloc of {len} {what} elements"), e)
        })
    }

    /// A zeroed device buffer of `len` i32.
    pub fn zeros_i32(&self, len: usize) -> Result<CudaSlice<i32>> {
        zeros_of(&self.inner.stream, len)
    }

    /// Copy host values to a new device buffer.
    pub fn upload<T: cudarc::driver::DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        if v.is_empty() {
            return self.inner.stream.null().map_err(|e| cuda_err("alloc", e));
        }
        self.inner
            .stream
            .clone_htod(v)
            .map_err(|e| cuda_err("host to device copy", e))
    }

    /// [`Self::upload`] for batches of images: long inputs are copied into a page-locked
    /// staging buffer first, from which the copy engine reads at full speed (a copy from
    /// pageable memory measured 0.9 GB/s on an H200 machine of this project, 2026-11-27).
    pub fn upload_staged(&self, v: &[f32]) -> Result<CudaSlice<f32>> {
        if v.len() < STAGED_UPLOAD_MIN {
            return self.upload(v);
        }
        self.staged_upload(&self.inner.staging, v.len(), |dst, at| {
            dst.copy_from_slice(&v[at..at + dst.len()])
        })
    }

    /// `v` rounded to bf16 on the host (as `f32_to_bf16` on the GPU: nearest even), uploaded as
    /// bits: half the bytes of [`Self::upload_staged`] for an input whose reader rounds to bf16
    /// anyway (images in bf16 mode, whose first conv rounds its input).
    pub fn upload_staged_bf16(&self, v: &[f32]) -> Result<CudaSlice<u16>> {
        let round = |dst: &mut [u16], at: usize| {
            let n = dst.len();
            for (d, &x) in dst.iter_mut().zip(&v[at..at + n]) {
                *d = super::bf16::bf16_bits(x);
            }
        };
        if v.len() < STAGED_UPLOAD_MIN {
            let mut bits = vec![0u16; v.len()];
            round(&mut bits, 0);
            return self.upload(&bits);
        }
        self.staged_upload(&self.inner.staging_bf16, v.len(), round)
    }

    /// A device buffer of `len` values that `fill(chunk, offset)` writes into a pinned staging
    /// buffer, chunk by chunk on every rayon thread (one core copies a YOLOX-s batch at 640 px,
    /// 16 images, 79 MB, in ~5-10 ms, which the step waits for), then copied over by the copy
    /// engine.
    fn staged_upload<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Send>(
        &self,
        staging: &Staging<T>,
        len: usize,
        fill: impl Fn(&mut [T], usize) + Sync,
    ) -> Result<CudaSlice<T>> {
        let mut staging = staging.lock().unwrap_or_else(|p| p.into_inner());
        let at = match staging.iter().position(|(p, _)| p.len() == len) {
            Some(i) => i,
            None => {
                if staging.len() >= 2 {
                    // Its last copy must be over before the host memory goes back.
                    if let (_, Some(event)) = staging.remove(0) {
                        event
                            .synchronize()
                            .map_err(|e| cuda_err("staging buffer event", e))?;
                    }
                }
                // SAFETY: the buffer is written in full below before the copy reads it.
                let p = unsafe { self.inner.ctx.alloc_pinned::<T>(len) }
                    .map_err(|e| cuda_err("pinned host alloc", e))?;
                staging.push((p, None));
                staging.len() - 1
            }
        };
        // Most recently used last.
        let (mut pinned, copied) = staging.remove(at);
        // Wait until the previous copy out of this buffer has finished (cudarc records the
        // pinned buffer's own event only when it manages several streams, so this crate keeps
        // its own).
        if let Some(event) = copied {
            event
                .synchronize()
                .map_err(|e| cuda_err("staging buffer event", e))?;
        }
        {
            use rayon::prelude::*;
            const CHUNK: usize = 1 << 18;
            pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned host buffer", e))?
                .par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(i, dst)| fill(dst, i * CHUNK));
        }
        let mut out = self.alloc_uninit::<T>(len)?;
        self.inner
            .stream
            .memcpy_htod(&pinned, &mut out)
            .map_err(|e| cuda_err("host to device copy", e))?;
        let copied = self
            .inner
            .stream
            .record_event(None)
            .map_err(|e| cuda_err("staging buffer event", e))?;
        staging.push((pinned, Some(copied)));
        Ok(out)
    }

    /// Copy a device buffer to the host (waits for the stream).
    pub fn download<T: cudarc::driver::DeviceRepr + Clone + Default>(
        &self,
        d: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        if d.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .stream
            .clone_dtoh(d)
            .map_err(|e| cuda_err("device to host copy", e))
    }
}

fn zeros_of<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    len: usize,
) -> Result<CudaSlice<T>> {
    if len == 0 {
        return stream.null().map_err(|e| cuda_err("alloc", e));
    }
    stream
        .alloc_zeros(len)
        .map_err(|e| cuda_err(&format!("alloc of {len} elements"), e))
}

/// Grid-stride launch over `n` items: 256 threads, up to 65,535 blocks.
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = (n as u64).div_ceil(BLOCK as u64).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of 256 threads per item (`items` blocks; the kernels loop over
/// `blockIdx.x + k·gridDim.x` when there are more than the grid holds).
pub fn grid_per_item(items: usize) -> LaunchConfig {
    let blocks = (items as u64).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

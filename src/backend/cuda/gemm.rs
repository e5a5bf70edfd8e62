//! Matrix products on cuBLAS (no hand-written kernel yet): row-major `c = op(a)·op(b)`, batched
//! with shared or per-item operands. CPU twin: `src/backend/cpu/gemm.rs` (`ops::matmul`).
//!
//! cuBLAS is column-major: a row-major `c[m×n] = op(a)·op(b)` is the column-major
//! `cᵀ = op(b)ᵀ·op(a)ᵀ`, so the calls below swap the operands and never copy.

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut};

use super::bf16::{to_bf16, StoredElement};
use super::check_len;
use super::context::{cuda_err, CudaDevice, MatrixPrecision};
use crate::{Error, Result};

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// `out[j] = Σ_i m[i·n + j]`: the sum of the `rows` rows of a row-major `rows × n` f32 matrix,
/// as one product with a ones vector (`ones`, at least `rows` long) in f32 operands whatever
/// the device's [`MatrixPrecision`] says for products: it is a reduction of values already
/// computed, and bf16 mode's rounding of both operands would round every partial sum to 8
/// bits (and cost a conversion pass over the matrix). TF32 mode's math flag still applies.
pub(crate) fn sum_rows<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    (rows, n): (usize, usize),
    m: &B,
    ones: &A,
    out: &mut C,
) -> Result<()> {
    let one = |ld| Strided { ld, stride: 0 };
    let cfg = column_major_config(
        false,
        false,
        (1, n, rows),
        one(rows),
        one(n),
        one(n),
        1,
        0.0,
    );
    // SAFETY: `m` holds rows·n values, `ones` rows and `out` n (the caller's buffers, sized by
    // the same counts); all fit i32 (check_geometry).
    unsafe { dev.blas().gemm_strided_batched(cfg, m, ones, out) }
        .map_err(|e| cuda_err("cublasSgemmStridedBatched (row sum)", e))
}

/// One operand of [`sgemm_rm_batched`]: a matrix with row stride `ld`, item `i` at
/// `i·stride` elements (stride 0: shared by every item).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided {
    pub ld: usize,
    pub stride: usize,
}

/// Row-major `c[i] [m×n] = op(a[i])·op(b[i]) (+ beta·c[i])` for `batch` items at once, through
/// column-major cuBLAS (`cublasSgemmStridedBatched`): it computes `cᵀ = op(b)ᵀ·op(a)ᵀ`, so the
/// operands swap and nothing is copied. `c` items must not overlap.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_rm_batched<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    trans_a: bool,
    trans_b: bool,
    (m, n, k): (usize, usize, usize),
    a: &A,
    sa: Strided,
    b: &B,
    sb: Strided,
    c: &mut C,
    sc: Strided,
    batch: usize,
    beta: f32,
) -> Result<()> {
    let cfg = column_major_config(trans_a, trans_b, (m, n, k), sa, sb, sc, batch, beta);
    if dev.matrix_precision() == MatrixPrecision::Bf16 {
        return gemm_bf16(
            dev,
            &cfg,
            (a, sa, trans_a, m),
            (b, sb, trans_b, n),
            k,
            c,
            batch,
        );
    }
    // SAFETY: callers pass buffers that hold every item at the given strides (lengths derived
    // from the checked geometry); all sizes fit i32 (check_geometry).
    unsafe { dev.blas().gemm_strided_batched(cfg, b, a, c) }
        .map_err(|e| cuda_err("cublasSgemmStridedBatched", e))
}

/// The column-major cuBLAS call computing the row-major batched product `c = op(a)·op(b)` as
/// `cᵀ = op(b)ᵀ·op(a)ᵀ`: the operands (and their strides) swap places.
#[allow(clippy::too_many_arguments)]
fn column_major_config(
    trans_a: bool,
    trans_b: bool,
    (m, n, k): (usize, usize, usize),
    sa: Strided,
    sb: Strided,
    sc: Strided,
    batch: usize,
    beta: f32,
) -> StridedBatchedConfig<f32> {
    StridedBatchedConfig {
        gemm: GemmConfig {
            transa: op(trans_b),
            transb: op(trans_a),
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: sb.ld as i32,
            ldb: sa.ld as i32,
            beta,
            ldc: sc.ld as i32,
        },
        batch_size: batch as i32,
        stride_a: sb.stride as i64,
        stride_b: sa.stride as i64,
        stride_c: sc.stride as i64,
    }
}

/// [`sgemm_rm_batched`] in bf16 product mode with `b` already rounded to bf16 bits (the column
/// matrix of `conv2d_im2col_bf16`, or a bf16 activation): only `a` is rounded here. `c` is f32,
/// or bf16 bits (`T = u16`: a conv output in bf16 storage, rounded once from the f32
/// accumulator). Errors unless the device is in `MatrixPrecision::Bf16`, so an f32 or TF32 run
/// never takes this path by mistake.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_rm_batched_bf16_b<A: DevicePtr<f32>, T: StoredElement, C: DevicePtrMut<T>>(
    dev: &CudaDevice,
    trans_a: bool,
    trans_b: bool,
    (m, n, k): (usize, usize, usize),
    a: &A,
    sa: Strided,
    b16: &CudaView<u16>,
    sb: Strided,
    c: &mut C,
    sc: Strided,
    batch: usize,
    beta: f32,
) -> Result<()> {
    if dev.matrix_precision() != MatrixPrecision::Bf16 {
        return Err(Error::op(
            "gemm (bf16 operand)",
            "the device is not in bf16 product mode",
        ));
    }
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    let need = used_len(b_rows, b_cols, sb, batch);
    if b16.len() < need {
        return Err(Error::op(
            "gemm (bf16 operand)",
            format!("b holds {} elements, the product reads {need}", b16.len()),
        ));
    }
    let cfg = column_major_config(trans_a, trans_b, (m, n, k), sa, sb, sc, batch, beta);
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let a16 = to_bf16(dev, a, used_len(a_rows, a_cols, sa, batch))?;
    gemm_bf16_bits(dev, &cfg, &a16, b16, c)
}

/// Elements of a stored operand a batched product reads: `rows × cols` at row stride `ld`, item
/// `i` at `i·stride` (0: one shared matrix).
pub(crate) fn used_len(rows: usize, cols: usize, s: Strided, batch: usize) -> usize {
    if rows == 0 || cols == 0 || batch == 0 {
        return 0;
    }
    let items = if s.stride == 0 { 1 } else { batch };
    (items - 1) * s.stride + (rows - 1) * s.ld + cols
}

/// The bf16 arm of [`sgemm_rm_batched`] (`MatrixPrecision::Bf16`): both operands rounded to bf16
/// into scratch buffers, then `cublasGemmStridedBatchedEx` with bf16 inputs, f32 output and f32
/// accumulation (`CUBLAS_COMPUTE_32F`) on the tensor cores. `cfg` is the f32 call's column-major
/// configuration (operands already swapped); each operand comes with its stride, whether it is
/// transposed and its row count in the row-major product (`m` for a, `n` for b).
#[allow(clippy::type_complexity)]
fn gemm_bf16<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    cfg: &StridedBatchedConfig<f32>,
    (a, sa, trans_a, m): (&A, Strided, bool, usize),
    (b, sb, trans_b, n): (&B, Strided, bool, usize),
    k: usize,
    c: &mut C,
    batch: usize,
) -> Result<()> {
    // Stored shapes: a is [m×k] ([k×m] when transposed), b is [k×n] ([n×k]).
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    let a16 = to_bf16(dev, a, used_len(a_rows, a_cols, sa, batch))?;
    let b16 = to_bf16(dev, b, used_len(b_rows, b_cols, sb, batch))?;
    gemm_bf16_bits(dev, cfg, &a16, &b16, c)
}

/// `cublasGemmStridedBatchedEx` on bf16 operands (u16 bits) with f32 accumulation, output f32
/// or bf16 bits (`T`);
/// `cfg` is the f32 call's column-major configuration (operands already swapped).
fn gemm_bf16_bits<
    A16: DevicePtr<u16>,
    B16: DevicePtr<u16>,
    T: StoredElement,
    C: DevicePtrMut<T>,
>(
    dev: &CudaDevice,
    cfg: &StridedBatchedConfig<f32>,
    a16: &A16,
    b16: &B16,
    c: &mut C,
) -> Result<()> {
    use cudarc::cublas::result::gemm_strided_batched_ex;
    use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
    let g = &cfg.gemm;
    let stream = dev.stream();
    let (a_ptr, _ra) = a16.device_ptr(stream);
    let (b_ptr, _rb) = b16.device_ptr(stream);
    let (c_ptr, _wc) = c.device_ptr_mut(stream);
    let (alpha, beta) = (g.alpha, g.beta);
    // SAFETY: the bf16 operands hold every element the checked views reach (copies of the f32
    // operands, or a column matrix checked by the caller); c is the caller's checked output;
    // alpha/beta are host scalars (cuBLAS's default pointer mode); the operands are swapped as
    // in the f32 call (cᵀ = op(b)ᵀ·op(a)ᵀ).
    unsafe {
        gemm_strided_batched_ex(
            *dev.blas().handle(),
            g.transa,
            g.transb,
            g.m,
            g.n,
            g.k,
            (&alpha as *const f32).cast(),
            b_ptr as *const std::ffi::c_void,
            cudaDataType::CUDA_R_16BF,
            g.lda,
            cfg.stride_a,
            a_ptr as *const std::ffi::c_void,
            cudaDataType::CUDA_R_16BF,
            g.ldb,
            cfg.stride_b,
            (&beta as *const f32).cast(),
            c_ptr as *mut std::ffi::c_void,
            T::CUBLAS_TYPE,
            g.ldc,
            cfg.stride_c,
            cfg.batch_size,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )
    }
    .map_err(|e| cuda_err("cublasGemmStridedBatchedEx (bf16)", e))
}

/// Shapes of a (batched) row-major product `c[b] [m×n] = op(a[b]) [m×k] · op(b[b]) [k×n]`.
/// `a` is stored `[m×k]` (or `[k×m]` when `trans_a`), `b` `[k×n]` (or `[n×k]` when `trans_b`);
/// an operand that is not `*_batched` is shared by every batch item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub a_batched: bool,
    pub b_batched: bool,
}

/// `c [batch, m, n]`, fresh.
pub fn matmul(
    dev: &CudaDevice,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    s: &GemmShape,
) -> Result<CudaSlice<f32>> {
    let opname = "matmul (cuda)";
    let fits = |v: usize| v <= i32::MAX as usize;
    let (mk, kn, mn) = (s.m * s.k, s.k * s.n, s.m * s.n);
    if ![s.batch, s.m, s.n, s.k].into_iter().all(fits)
        || !fits(s.batch.saturating_mul(mn.max(mk).max(kn)))
    {
        return Err(Error::op(
            opname,
            format!("sizes too large for cuBLAS (i32): {s:?}"),
        ));
    }
    check_len(opname, "a", a, if s.a_batched { s.batch * mk } else { mk })?;
    check_len(opname, "b", b, if s.b_batched { s.batch * kn } else { kn })?;
    let mut c = dev.zeros(s.batch * mn)?;
    if s.batch == 0 || mn == 0 {
        return Ok(c);
    }
    if s.k == 0 {
        return Ok(c); // empty sum: zeros
    }
    let lda = if s.trans_a { s.m } else { s.k };
    let ldb = if s.trans_b { s.k } else { s.n };
    let item = |batched: bool, len: usize| if batched { len } else { 0 };
    sgemm_rm_batched(
        dev,
        s.trans_a,
        s.trans_b,
        (s.m, s.n, s.k),
        a,
        Strided {
            ld: lda,
            stride: item(s.a_batched, mk),
        },
        b,
        Strided {
            ld: ldb,
            stride: item(s.b_batched, kn),
        },
        &mut c,
        Strided {
            ld: s.n,
            stride: mn,
        },
        s.batch,
        0.0,
    )?;
    Ok(c)
}

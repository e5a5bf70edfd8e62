//! Matrix products on cuBLAS (no hand-written kernel yet): row-major `c = op(a)·op(b)`, batched
//! with shared or per-item operands. CPU twin: `src/backend/cpu/gemm.rs` (`ops::matmul`).
//!
//! cuBLAS is column-major: a row-major `c[m×n] = op(a)·op(b)` is the column-major
//! `cᵀ = op(b)ᵀ·op(a)ᵀ`, so the calls below swap the operands and never copy.

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::check_len;
use super::context::{cuda_err, CudaDevice};
use crate::{Error, Result};

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// Row-major `c[m×n] = op(a)·op(b) (+ beta·c)`: [`sgemm_rm_batched`] with one item. `lda`/`ldb`
/// are the row strides of `a`/`b` as stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_rm<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &A,
    lda: usize,
    b: &B,
    ldb: usize,
    c: &mut C,
    beta: f32,
) -> Result<()> {
    let one = |ld| Strided { ld, stride: 0 };
    sgemm_rm_batched(
        dev,
        trans_a,
        trans_b,
        (m, n, k),
        a,
        one(lda),
        b,
        one(ldb),
        c,
        one(n),
        1,
        beta,
    )
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
    let gemm = GemmConfig {
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
    };
    let cfg = StridedBatchedConfig {
        gemm,
        batch_size: batch as i32,
        stride_a: sb.stride as i64,
        stride_b: sa.stride as i64,
        stride_c: sc.stride as i64,
    };
    // SAFETY: callers pass buffers that hold every item at the given strides (lengths derived
    // from the checked geometry); all sizes fit i32 (check_geometry).
    unsafe { dev.blas().gemm_strided_batched(cfg, b, a, c) }
        .map_err(|e| cuda_err("cublasSgemmStridedBatched", e))
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

//! sgemm through the `gemm` crate with explicit row/column strides (in elements).

use std::mem::MaybeUninit;

/// A read-only matrix view: `data[row * row_stride + col * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major `rows × cols` matrix (i.e. a `cols × rows` view).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`, `c` row-major with row stride `ldc`.
/// `accumulate = false` overwrites `c`. `threads <= 1` runs on the calling thread.
///
/// Panics if a view does not cover its matrix: callers check user shapes before calling.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    // SAFETY: `c` is initialised, exclusively borrowed and `c.len()` long.
    unsafe {
        sgemm_raw(
            m,
            n,
            k,
            a,
            b,
            c.as_mut_ptr(),
            c.len(),
            ldc,
            accumulate,
            threads,
        )
    }
}

/// [`sgemm`] overwriting `c`, which may be uninitialised: every element of the `m × n` block is
/// written and none is read before it is written.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_overwrite_uninit(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    threads: usize,
) {
    // SAFETY: `c` is exclusively borrowed and `c.len()` long; with `accumulate = false` the
    // gemm crate stores before it loads (`read_dst = false` on the first k block).
    unsafe {
        sgemm_raw(
            m,
            n,
            k,
            a,
            b,
            c.as_mut_ptr().cast(),
            c.len(),
            ldc,
            false,
            threads,
        )
    }
}

/// The CPU's matrix-product rate as the conv kernels use it: one single-threaded `n³` sgemm per
/// rayon thread, all at once, best of `reps` (GFLOP/s, 2 per multiply-add). The reference of
/// the conv speed targets (`cargo bench --bench conv2d`, `ssod bench conv`).
pub fn concurrent_peak_gflops(n: usize, reps: usize) -> f64 {
    use rayon::prelude::*;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let pool = rayon::current_num_threads();
    let mut outs = vec![vec![0f32; n * n]; pool];
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) + 1 {
        let start = std::time::Instant::now();
        outs.par_iter_mut().for_each(|c| {
            let m = MatRef::row_major(&a, n);
            sgemm(n, n, n, m, m, c, n, false, 1);
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    pool as f64 * 2.0 * (n * n * n) as f64 / best / 1e9
}

/// # Safety
/// `c` points to `c_len` writable floats, exclusively ours; with `accumulate` they must be
/// initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    c_len: usize,
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c_len, "sgemm: dst view out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i's n elements lie inside `c` (asserted above).
                unsafe { std::ptr::write_bytes(c.add(i * ldc), 0, n) };
            }
        }
        return;
    }
    let last = |v: &MatRef, r: usize, cc: usize| (r - 1) * v.row_stride + (cc - 1) * v.col_stride;
    assert!(
        last(&a, m, k) < a.data.len(),
        "sgemm: lhs view out of bounds"
    );
    assert!(
        last(&b, k, n) < b.data.len(),
        "sgemm: rhs view out of bounds"
    );
    let parallelism = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the three views were bounds-checked above; `c` is ours (the caller's contract).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

//! sgemm through the `gemm` crate with explicit row/column strides (in elements).

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
        MatRef { data, row_stride: cols, col_stride: 1 }
    }
    /// The transpose of a row-major `rows × cols` matrix (i.e. a `cols × rows` view).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, row_stride: 1, col_stride: cols }
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`, `c` row-major with row stride `ldc`.
/// `accumulate = false` overwrites `c`. `threads <= 1` runs on the calling thread.
///
/// Panics if a view does not cover its matrix: callers check user shapes before calling.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, threads: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        return;
    }
    let last = |v: &MatRef, r: usize, cc: usize| (r - 1) * v.row_stride + (cc - 1) * v.col_stride;
    assert!(last(&a, m, k) < a.data.len(), "sgemm: lhs view out of bounds");
    assert!(last(&b, k, n) < b.data.len(), "sgemm: rhs view out of bounds");
    assert!((m - 1) * ldc + n <= c.len(), "sgemm: dst view out of bounds");
    let parallelism = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the three views were bounds-checked above; `c` is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
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

//! Matrix products on the CPU through sgemm (slices in, `Vec` out): `matmul` (2-D or batched)
//! and `linear` (x·Wᵀ + b), forward and backward. `ops::matmul` validates, dispatches and
//! records; the CUDA twin is `backend::cuda::gemm` (cuBLAS).

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};

/// `a [batch·m, k] · b`, b `[k, n]` shared by the batch or `[batch, k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub b_batched: bool,
}

/// `x [rows, in] · wᵀ` with `w [out, in]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub out_features: usize,
    pub in_features: usize,
}

/// One operand of a batched product: values, batch stride (0 = shared by every batch item) and
/// the row/column strides of each matrix.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    fn row_major(data: &'a [f32], batch_stride: usize, cols: usize) -> Self {
        Operand {
            data,
            batch_stride,
            row_stride: cols,
            col_stride: 1,
        }
    }
    fn transposed(data: &'a [f32], batch_stride: usize, cols: usize) -> Self {
        Operand {
            data,
            batch_stride,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn item(&self, i: usize) -> MatRef<'a> {
        MatRef {
            data: &self.data[i * self.batch_stride..],
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// `c[i] = a[i] · b[i]` for `batch` items, c row-major `[batch, m, n]`.
fn batched_gemm(batch: usize, m: usize, n: usize, k: usize, a: Operand, b: Operand) -> Vec<f32> {
    let mut c = vec![0f32; batch * m * n];
    if batch == 1 {
        sgemm(
            m,
            n,
            k,
            a.item(0),
            b.item(0),
            &mut c,
            n,
            false,
            rayon::current_num_threads(),
        );
    } else if m * n > 0 {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, ci)| sgemm(m, n, k, a.item(i), b.item(i), ci, n, false, 1));
    }
    c
}

/// `c[i] = a[i] · b[i]` for every batch item.
pub fn matmul_fwd(av: &[f32], bv: &[f32], s: MatmulShape) -> Vec<f32> {
    let MatmulShape {
        batch,
        m,
        n,
        k,
        b_batched,
    } = s;
    let b_bs = if b_batched { k * n } else { 0 };
    batched_gemm(
        batch,
        m,
        n,
        k,
        Operand::row_major(av, m * k, k),
        Operand::row_major(bv, b_bs, n),
    )
}

/// `(ga, gb)`: `ga[i] = g[i] · b[i]ᵀ`, `gb[i] = a[i]ᵀ · g[i]` (with a shared b, summed over the
/// batch: one product over batch·m rows).
pub fn matmul_bwd(gv: &[f32], av: &[f32], bv: &[f32], s: MatmulShape) -> (Vec<f32>, Vec<f32>) {
    let MatmulShape {
        batch,
        m,
        n,
        k,
        b_batched,
    } = s;
    let b_bs = if b_batched { k * n } else { 0 };
    let ga = batched_gemm(
        batch,
        m,
        k,
        n,
        Operand::row_major(gv, m * n, n),
        Operand::transposed(bv, b_bs, n),
    );
    let gb = if b_batched {
        batched_gemm(
            batch,
            k,
            n,
            m,
            Operand::transposed(av, m * k, k),
            Operand::row_major(gv, m * n, n),
        )
    } else {
        batched_gemm(
            1,
            k,
            n,
            batch * m,
            Operand::transposed(av, 0, k),
            Operand::row_major(gv, 0, n),
        )
    };
    (ga, gb)
}

/// `y = x · wᵀ (+ bias per row)`.
pub fn linear_fwd(xv: &[f32], wv: &[f32], bias: Option<&[f32]>, s: LinearShape) -> Vec<f32> {
    let (rows, out_f, in_f) = (s.rows, s.out_features, s.in_features);
    let mut y = batched_gemm(
        1,
        rows,
        out_f,
        in_f,
        Operand::row_major(xv, 0, in_f),
        Operand::transposed(wv, 0, in_f),
    );
    if let Some(bv) = bias {
        y.chunks_mut(out_f)
            .for_each(|row| row.iter_mut().zip(bv).for_each(|(v, bb)| *v += bb));
    }
    y
}

/// `(gx, gw, gb)`: `gx = g · w`, `gw = gᵀ · x`, and with a bias its per-column sum (f64).
pub fn linear_bwd(
    gv: &[f32],
    xv: &[f32],
    wv: &[f32],
    s: LinearShape,
    has_bias: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (rows, out_f, in_f) = (s.rows, s.out_features, s.in_features);
    let gx = batched_gemm(
        1,
        rows,
        in_f,
        out_f,
        Operand::row_major(gv, 0, out_f),
        Operand::row_major(wv, 0, in_f),
    );
    let gw = batched_gemm(
        1,
        out_f,
        in_f,
        rows,
        Operand::transposed(gv, 0, out_f),
        Operand::row_major(xv, 0, in_f),
    );
    let gb = has_bias.then(|| {
        let mut gb = vec![0f64; out_f];
        gv.chunks(out_f).for_each(|row| {
            row.iter()
                .zip(gb.iter_mut())
                .for_each(|(g, acc)| *acc += *g as f64)
        });
        gb.into_iter().map(|v| v as f32).collect()
    });
    (gx, gw, gb)
}

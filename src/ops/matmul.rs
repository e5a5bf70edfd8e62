//! Matrix products through sgemm: `matmul` (2-D or batched) and `linear` (x·Wᵀ + b).

use rayon::prelude::*;

use crate::autograd::record;
use crate::backend::cpu::gemm::{sgemm, MatRef};
use crate::tensor::Tensor;
use crate::{Error, Result};

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

/// `a [.., m, k] · b [k, n] | [.., k, n]` (b's batch dims equal to a's, or b 2-D).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() < 2 || (b.rank() != 2 && b.rank() != a.rank()) {
        return Err(Error::shape(
            "matmul",
            "a [.., m, k] and b [k, n] or [.., k, n]",
            (a.shape(), b.shape()),
        ));
    }
    let (m, k) = (a.dims()[a.rank() - 2], a.dims()[a.rank() - 1]);
    let (kb, n) = (b.dims()[b.rank() - 2], b.dims()[b.rank() - 1]);
    let batch_dims = &a.dims()[..a.rank() - 2];
    let b_batched = b.rank() > 2;
    if kb != k || (b_batched && &b.dims()[..b.rank() - 2] != batch_dims) {
        return Err(Error::ShapeMismatch {
            op: "matmul".into(),
            expected: format!(
                "b of shape [{k}, n] or {batch_dims:?} + [{k}, n] for a of shape {}",
                a.shape()
            ),
            got: format!("{}", b.shape()),
        });
    }
    let batch: usize = batch_dims.iter().product();
    let (av, bv) = (a.to_vec(), b.to_vec());
    let b_bs = if b_batched { k * n } else { 0 };
    let c = batched_gemm(
        batch,
        m,
        n,
        k,
        Operand::row_major(&av, m * k, k),
        Operand::row_major(&bv, b_bs, n),
    );
    let mut dims = batch_dims.to_vec();
    dims.extend([m, n]);
    let out = Tensor::from_vec(c, dims)?;
    let (a_shape, b_shape) = (a.shape().clone(), b.shape().clone());
    record("matmul", out, &[a, b], move |g| {
        let gv = g.to_vec();
        // ga[i] = g[i] · b[i]ᵀ
        let ga = batched_gemm(
            batch,
            m,
            k,
            n,
            Operand::row_major(&gv, m * n, n),
            Operand::transposed(&bv, b_bs, n),
        );
        // gb[i] = a[i]ᵀ · g[i]; with a shared b, sum over the batch: one product over batch·m rows.
        let gb = if b_batched {
            batched_gemm(
                batch,
                k,
                n,
                m,
                Operand::transposed(&av, m * k, k),
                Operand::row_major(&gv, m * n, n),
            )
        } else {
            batched_gemm(
                1,
                k,
                n,
                batch * m,
                Operand::transposed(&av, 0, k),
                Operand::row_major(&gv, 0, n),
            )
        };
        Ok(vec![
            Some(Tensor::from_vec(ga, a_shape.clone())?),
            Some(Tensor::from_vec(gb, b_shape.clone())?),
        ])
    })
}

/// `x [.., in] · wᵀ + b` with `w [out, in]`, `b [out]` (PyTorch's `nn.Linear`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if x.rank() < 1 || w.rank() != 2 || x.dims()[x.rank() - 1] != w.dims()[1] {
        return Err(Error::shape(
            "linear",
            "x [.., in], w [out, in]",
            (x.shape(), w.shape()),
        ));
    }
    let (out_f, in_f) = (w.dims()[0], w.dims()[1]);
    if let Some(b) = b {
        if b.dims() != [out_f] {
            return Err(Error::shape("linear", [out_f], b.shape()));
        }
    }
    let rows = x.numel() / in_f.max(1);
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let mut y = batched_gemm(
        1,
        rows,
        out_f,
        in_f,
        Operand::row_major(&xv, 0, in_f),
        Operand::transposed(&wv, 0, in_f),
    );
    if let Some(b) = b {
        b.with_values(|bv| {
            y.chunks_mut(out_f)
                .for_each(|row| row.iter_mut().zip(bv).for_each(|(v, bb)| *v += bb))
        });
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = out_f;
    let out = Tensor::from_vec(y, dims)?;
    let (x_shape, w_shape) = (x.shape().clone(), w.shape().clone());
    let mut inputs = vec![x, w];
    if let Some(b) = b {
        inputs.push(b);
    }
    let has_bias = b.is_some();
    record("linear", out, &inputs, move |g| {
        let gv = g.to_vec();
        let gx = batched_gemm(
            1,
            rows,
            in_f,
            out_f,
            Operand::row_major(&gv, 0, out_f),
            Operand::row_major(&wv, 0, in_f),
        );
        let gw = batched_gemm(
            1,
            out_f,
            in_f,
            rows,
            Operand::transposed(&gv, 0, out_f),
            Operand::row_major(&xv, 0, in_f),
        );
        let mut grads = vec![
            Some(Tensor::from_vec(gx, x_shape.clone())?),
            Some(Tensor::from_vec(gw, w_shape.clone())?),
        ];
        if has_bias {
            let mut gb = vec![0f64; out_f];
            gv.chunks(out_f).for_each(|row| {
                row.iter()
                    .zip(gb.iter_mut())
                    .for_each(|(g, acc)| *acc += *g as f64)
            });
            grads.push(Some(Tensor::from_vec(
                gb.into_iter().map(|v| v as f32).collect(),
                [out_f],
            )?));
        }
        Ok(grads)
    })
}
